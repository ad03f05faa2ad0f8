//! Load comparison of `tower-response-cache` against a plain axum handler
//! and the peer caching crates, over real HTTP, in one run.
//!
//! The comparison itself is the bench target `load`:
//!
//! ```sh
//! cargo bench --manifest-path loadbench/Cargo.toml --bench load
//! ```
//!
//! It starts one axum server process serving every route (pinned to one
//! CPU), drives each route with `wrk` from a second process (pinned to
//! another), interleaving every route with `plain` over several rounds,
//! then fills each cache with distinct entries in a fresh server to
//! measure resident memory per entry. It prints a table and writes
//! `BENCHMARKS.md` and `docs/loadbench.svg` at the repository root.
//!
//! This library holds the parts that do not depend on the crates under
//! test: child process control ([`child`]), `/proc` readings ([`proc`]),
//! the wrk driver ([`wrk`]), a small HTTP client ([`client`]), the figures
//! and the report ([`report`], its prose in `report-template.md`, filled
//! by [`template`]) and the chart ([`chart`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chart;
pub mod child;
pub mod client;
pub mod proc;
pub mod report;
pub mod template;
pub mod wrk;
