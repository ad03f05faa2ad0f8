//! Resident memory under a flood of distinct entries, against `max_bytes`.
//!
//! A router with a `CacheLayer` over one route (`/e/{n}`, a 1 KiB JSON
//! body, an hour's TTL) in a cache of `max_bytes(64 << 20)` takes a
//! million GETs for distinct paths, one after the other on a
//! current-thread runtime (`oneshot`, each body read to its end, as a
//! server does). The process's resident memory (`VmRSS`) is read once the
//! router is built and the runtime warmed (a few thousand requests on a
//! route the layer passes through), and again after the flood. What the
//! flood added is set against the bound: the goal is at most 1.25 × the
//! bound. The store's own figures (`stats()`: entries, bytes weighed,
//! evictions) are printed beside it, and the invalidation index's after a
//! flood of distinct prefix flushes on the full cache.
//!
//! ```text
//! cargo bench --bench flood
//! ```
//!
//! A plain program, not a criterion bench: it measures memory, once.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer};

const MAX_BYTES: u64 = 64 << 20;
const ENTRIES: u64 = 1_000_000;
const BODY: usize = 1024;
const WARM_UP: u64 = 5_000;
const FLUSHES: u64 = 1_000_000;
const GOAL: f64 = 1.25;

/// The process's resident memory, in bytes (`VmRSS` of /proc/self/status).
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib << 10
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

async fn entry(Path(n): Path<u64>) -> Response<Body> {
    let mut body = vec![b'x'; BODY];
    body[..20].copy_from_slice(format!("{n:020}").as_bytes());
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn get_whole(app: &Router, uri: String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    response.into_body().collect().await.unwrap();
}

async fn run() {
    let cache = Cache::builder().max_bytes(MAX_BYTES).build();
    let app = Router::new()
        .route("/e/{n}", get(entry))
        .route("/warm/{n}", get(entry))
        .layer(CacheLayer::new(&cache).route("/e/{n}", Duration::from_secs(3600)));

    // The runtime, axum and the allocator warmed on requests the layer
    // passes through untouched (no rule matches `/warm`).
    for n in 0..WARM_UP {
        get_whole(&app, format!("/warm/{n}")).await;
    }
    let baseline = resident();

    let started = Instant::now();
    for n in 0..ENTRIES {
        get_whole(&app, format!("/e/{n}")).await;
    }
    let elapsed = started.elapsed();
    let after = resident();
    let stats = cache.stats();
    let added = after.saturating_sub(baseline);
    let ratio = added as f64 / MAX_BYTES as f64;
    println!(
        "{ENTRIES} distinct {BODY} B entries in {:.1} s ({:.0} requests/s), max_bytes {:.1} MiB",
        elapsed.as_secs_f64(),
        ENTRIES as f64 / elapsed.as_secs_f64(),
        mib(MAX_BYTES),
    );
    println!(
        "  resident: baseline {:.1} MiB, after {:.1} MiB, added {:.1} MiB = {ratio:.3} x max_bytes \
         (goal <= {GOAL}): {}",
        mib(baseline),
        mib(after),
        mib(added),
        if ratio <= GOAL { "met" } else { "NOT met" },
    );
    println!(
        "  stats: {} entries, {:.1} MiB weighed ({:.0} B each), index {:.1} MiB, {} evictions; \
         resident added per entry held {:.0} B",
        stats.entries,
        mib(stats.bytes),
        stats.bytes as f64 / stats.entries.max(1) as f64,
        mib(stats.index_bytes),
        stats.evictions,
        added as f64 / stats.entries.max(1) as f64,
    );

    // A million distinct prefixes flushed on the full cache: the index
    // takes its share of the bound, the store yields it.
    let started = Instant::now();
    for n in 0..FLUSHES {
        cache.invalidate_prefix(&format!("/flushed/{n}"));
    }
    let elapsed = started.elapsed();
    let after_flushes = resident();
    let stats = cache.stats();
    let added = after_flushes.saturating_sub(baseline);
    let ratio = added as f64 / MAX_BYTES as f64;
    println!(
        "{FLUSHES} distinct prefixes flushed in {:.1} s ({:.0} ns each)",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / FLUSHES as f64,
    );
    println!(
        "  resident: after {:.1} MiB, added {:.1} MiB = {ratio:.3} x max_bytes (goal <= {GOAL}): {}",
        mib(after_flushes),
        mib(added),
        if ratio <= GOAL { "met" } else { "NOT met" },
    );
    println!(
        "  stats: {} entries, {:.1} MiB weighed, index {} records in {:.1} MiB, \
         store + index {:.1} MiB",
        stats.entries,
        mib(stats.bytes),
        stats.index_records,
        mib(stats.index_bytes),
        mib(stats.bytes + stats.index_bytes),
    );
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run());
}
