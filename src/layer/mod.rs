//! [`CacheLayer`]: the response cache middleware.
//!
//! `CacheLayer` makes [`CacheService`], whose [`ResponseFuture`] either
//! answers from the store without calling the inner service (a hit) or
//! forwards the request and, when the response may be stored, copies its
//! body as it streams to the client ([`CacheBody`]).
//!
//! A request goes through these files in turn:
//!
//! - `classify`: which rule covers it, what its headers ask, its key (or
//!   why it bypasses);
//! - `service`: the `Service` impl, with the fresh-hit fast path;
//! - `dispatch`: what the lookup's result leads to (hit, stale with one
//!   refresh, miss led or coalesced, the network-store path);
//! - `respond`: answers made from an entry (hit, HEAD, 304, stale);
//! - `miss`: deciding from the response head whether it may be stored, and
//!   handing the finished body to the store;
//! - `range`: one byte range answered from a stored full response;
//! - `revalidate`: conditional requests for stale entries, the `304`s that
//!   freshen them, and the request directives a layer may honour;
//! - `relay`: a coalesced leader's body, read from the origin at the
//!   origin's pace so that waiters never wait for a slow client;
//! - `future` and `body`: the named future and body the service returns.

mod body;
mod classify;
mod dispatch;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod miss;
mod range;
mod relay;
mod respond;
mod revalidate;
mod service;
mod trace;

pub use body::CacheBody;
pub(crate) use classify::client_uri;
pub use future::ResponseFuture;
pub use layer::CacheLayer;
pub use service::CacheService;
