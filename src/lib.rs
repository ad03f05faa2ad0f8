//! A [tower] middleware that caches HTTP responses for API servers built on
//! [axum] or [hyper]: repeated reads are served from memory, each route gets
//! its own TTL, and a successful write flushes what it changed before its
//! response reaches the client, so nobody reads stale data after their own
//! write and nobody ever sees another user's data.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
//! [hyper]: https://docs.rs/hyper
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, Target};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // One shared handle: store, invalidation index, statistics.
//! let cache = Cache::builder().max_bytes(64 << 20).max_body_bytes(1 << 20).build();
//!
//! let app = Router::new()
//!     .route("/products", get(|| async { "all products" }).post(|| async { "created" }))
//!     .route("/products/{id}", get(|| async { "one product" }))
//!     .route("/dashboard", get(|| async { "numbers" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             // A 2xx POST/PUT/PATCH/DELETE flushes what its rule names;
//!             // with no rule, its own path (as a whole-segment prefix).
//!             .layer(InvalidateOn::new(&cache).rule("/orders", [Target::tag("dashboard")]))
//!             .layer(
//!                 CacheLayer::new(&cache)
//!                     .route("/products", Duration::from_secs(60))
//!                     .route("/products/{id}", Duration::from_secs(300))
//!                     .route("/dashboard", RoutePolicy::ttl(Duration::from_secs(30)).tags(["dashboard"])),
//!             ),
//!     );
//!
//! // Sends a GET and reads the whole body, as a server does: a response is
//! // stored once its body has been streamed to the end.
//! let fetch = |uri: &'static str| {
//!     let app = app.clone();
//!     async move {
//!         let req = http::Request::get(uri).body(axum::body::Body::empty()).unwrap();
//!         let res = app.oneshot(req).await.unwrap();
//!         let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
//!         axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
//!         status
//!     }
//! };
//! assert_eq!(fetch("/products").await, "tower-response-cache; fwd=miss; stored");
//! assert_eq!(fetch("/products").await, "tower-response-cache; hit; ttl=60");
//!
//! // A successful write flushes /products and everything under it.
//! let post = http::Request::post("/products").body(axum::body::Body::empty()).unwrap();
//! app.clone().oneshot(post).await.unwrap();
//! assert_eq!(fetch("/products").await, "tower-response-cache; fwd=miss; stored");
//! assert_eq!(cache.stats().totals.hits, 1);
//! # }
//! ```
//!
//! # What is cached
//!
//! | request or response | cached? | `Cache-Status` detail |
//! |---|---|---|
//! | GET matching a rule (or a layer `ttl`) | yes | |
//! | HEAD | answered from the GET entry, never fills one | `head` on a miss |
//! | POST, PUT, PATCH, DELETE, ... on a path a rule covers | no | `method` |
//! | no rule matches, no layer `ttl` (any method) | passed through untouched (no header, not counted) | |
//! | `Authorization` or `Cookie`, route without a scope | no | `authorization`, `cookie` |
//! | route with a scope that returns `None` | no | `no-scope` |
//! | path + query longer than `max_key_bytes`, bad percent-encoding, `%00`, a malformed host | no | `uri-too-long`, `uri-malformed` |
//! | a path not in canonical form (lower-case `%c3`, encoded unreserved `%61` or `/`, `.`, `..` or empty segments); flushes take the canonical form of whatever spelling they name | no | `uri-not-canonical` |
//! | `Upgrade` or `Connection: upgrade` (a WebSocket handshake) | never answered from the store | `upgrade` |
//! | `Proxy-Authorization`, whatever the route's scope | no | `proxy-authorization` |
//! | a request body (`Content-Length` other than 0, `Transfer-Encoding`) | no | `request-body` |
//! | `If-Match` or `If-Unmodified-Since` (preconditions for the origin) | no | `precondition` |
//! | `Range` | one byte range of a stored 200 is answered 206 from it (416 when unsatisfiable); several ranges or another unit go to the origin; a miss neither waits for nor leads another request, and its 206 is not stored | `status` for a 206 |
//! | `Cache-Control: no-store` in the request | a stored response answers; on a miss nothing is stored | `request-no-store` |
//! | status outside the policy's set (default: RFC 9110's heuristically cacheable, less 206) | no | `status` |
//! | `Set-Cookie` | never | `set-cookie` |
//! | `Cache-Control: no-store` or `private`; `no-cache` without a validator | no | `cache-control` |
//! | `no-cache` with an `ETag` or `Last-Modified` | stored, revalidated on every use | |
//! | a [`RoutePolicy::from_headers`] route's response with no freshness (and no default or heuristic) | no | `no-freshness` |
//! | `Vary: *` | no | `vary-star` |
//! | `Vary: accept-encoding` (or any header) | one entry per value | |
//! | `text/event-stream` | streamed, never held back | `event-stream` |
//! | body over `max_body_bytes`, a body error, trailers | streamed whole, not stored | `too-large`, `body-error`, `trailers` |
//! | body longer or shorter than its `Content-Length` (or its exact size hint) | streamed as it comes, not stored | `length-mismatch` |
//! | the handler set [`NoStore`] | no | `handler` |
//!
//! The key is the path plus the query with its pairs sorted by name (stable
//! for repeated names), ignored parameters dropped, `?` alone equal to no
//! query; then the host the request named (its URI's authority, else its
//! `Host` header: lower-cased, without a default port or a final dot;
//! [`CacheLayer::any_host`] leaves it out); then the policy's key headers
//! and a keyed hash of its scope. Long keys are stored by
//! hash and compared in full on lookup.
//!
//! # Placing the layers
//!
//! - **Nested routers.** axum's `Router::nest` strips the prefix before the
//!   nested router's layers see a request. The cache keys, stores and
//!   flushes on the path the client sent (axum's `OriginalUri`, or the
//!   request's own URI in a plain tower stack), so a layer inside `nest`,
//!   on `nest_service`, on `route_layer` or outside the whole router keys
//!   `/api/products` the same way, and one [`Cache`] can serve routers
//!   nested at different prefixes without one answering for another.
//!   Rules (`CacheLayer::route`, `InvalidateOn::rule` and its targets) are
//!   written as the router they sit on sees its paths; a flush from code
//!   or the admin router names the client's path.
//! - **Compression.** tower-http's `CompressionLayer` *inside* the cache
//!   (added before it, next to the handlers) makes the cache keep the
//!   compressed bytes, one entry per `Accept-Encoding` (the compression
//!   layer adds `Vary`). Outside, every hit is compressed again. Both are
//!   correct: the `ETag` the cache computes is weak (`W/"..."`), since the
//!   bytes that leave may not be the ones it hashed.
//! - **Tracing.** `TraceLayer` *outside* the cache sees every request, hits
//!   included; inside, only those that reach the handlers.
//! - **`InvalidateOn` outside `CacheLayer`** (first in a `ServiceBuilder`),
//!   so that a write's flush is recorded before its response leaves.
//!
//! # Freshness: fixed or from the response
//!
//! A route's freshness is decided once, when its response is stored, so a
//! hit compares numbers whichever the mode:
//!
//! - **Fixed** ([`RoutePolicy::ttl`], a `Duration`, [`CacheLayer::ttl`]):
//!   the route's TTL (or the handler's [`CacheTtl`]), whatever `max-age` or
//!   `Expires` say. The default for an app's own routes: the app knows how
//!   long its data may be served.
//! - **From the response** ([`RoutePolicy::from_headers`], and every path of
//!   [`CacheLayer::shared_cache`]): RFC 9111's `s-maxage`, `max-age`, then
//!   `Expires` less `Date`, counted from the response's age on arrival
//!   (`Age` and the origin's delay); with an optional default, ceiling,
//!   heuristic freshness and targeted field (such as `CDN-Cache-Control`).
//!   For handlers that already say how long they are fresh, and for a
//!   cache in front of an upstream.
//!
//! In both, `no-store` and `private` refuse; `no-cache` is stored only with
//! a validator and revalidated on every use; `must-revalidate`,
//! `proxy-revalidate`, `s-maxage` and `no-cache` forbid stale answers. A
//! stale entry with the origin's `ETag` or `Last-Modified` (kept for
//! [`RoutePolicy::keep_for_revalidation`]) is revalidated with a
//! conditional request, coalesced like a miss; a `304` freshens it.
//! Requests' own directives (`max-age`, `no-cache`, `only-if-cached`, ...)
//! are honoured only with [`CacheLayer::request_directives`].
//!
//! # Headers
//!
//! Every response the layer handles carries `Cache-Status` (RFC 9211):
//! `tower-response-cache; hit; ttl=42`, `tower-response-cache; fwd=miss; stored`
//! or `tower-response-cache; fwd=bypass; detail=authorization`. Hits carry
//! `Age` and an exact `Content-Length`. A stored response without an
//! `ETag` gets a weak one of the cache's own, on the miss that stores it as
//! on its hits. [`CacheBuilder::lean_headers`] leaves out both.
//!
//! # Invalidation
//!
//! See [`invalidate`]: flushing a prefix or a tag costs O(1) whatever the
//! number of entries, a response whose read began before an invalidation is
//! never served after it, and [`InvalidateOn`] flushes before the write's
//! response is returned.
//!
//! # Memory
//!
//! The default store is [quick_cache](https://docs.rs/quick_cache) (S3-FIFO
//! eviction, sharded locks), weighed in bytes as allocated: an entry keeps
//! its body, key and header values in one buffer, and weighs that buffer,
//! about 290 bytes of bookkeeping (the entry, its reference counts, its
//! slot in the store) and 72 bytes per stored header other than a common
//! `Content-Type` and the `ETag`, plus, for a header name that is not a
//! standard one, its length and 24 bytes: a 1 KiB JSON response weighs
//! about 1.36 KB. The shard count
//! is chosen so that an entry of `max_body_bytes` always fits one shard;
//! heavier entries are refused and counted (`rejected_inserts`).
//!
//! Everything that grows with what clients send is bounded, whatever the
//! request rate; [`CacheBuilder::max_bytes`] bounds the entries and the
//! invalidation index together, and the rest has a fixed bound beside it:
//!
//! | structure | grows with | bound | in `max_bytes` |
//! |---|---|---|---|
//! | entries, `Vary` variants and the markers that point to them | distinct keys, distinct values of the headers a response varies on | weighed as above, evicted past what the index leaves ([`Stats::bytes`]) | yes |
//! | invalidation index | distinct prefixes, tags and requests flushed | an eighth of `max_bytes` at most, 63 bytes a record at most (114,688 records in 64 MiB, [`Stats::index_bytes`]); past it, the oldest record goes first and every entry born before it counts as flushed | yes: the store yields the room as the index needs it |
//! | coalescing table: origin calls under way, pass markers | concurrent misses, distinct uncacheable keys | 4,096 slots, under 3 MiB ([`Stats::flights`]) | beside it |
//! | flushes a network store could not record | failed flushes during an outage | 256 retried one by one, naming 4,096 record hashes and 256 KiB of prefixes and tags in all (about 1 MiB at most, with their tasks); past any of these, one flush of everything, retried for all of them, and nothing served from the cache until it lands | beside it |
//! | statistics and metric labels | — | one set of counters (under 400 bytes) per rule pattern and `*`, never per path or key | beside it |
//! | near cache (`redis` feature) | entries read from Redis | its own bound in bytes (`near_cache(max_bytes)`), weighed the same way; 65,536 invalidation records (about 2 MiB), then emptied | its own bound |
//! | admin listing (`axum` feature) | entries | a pointer per entry listed while a page is built (1,000 entries at most a page) | beside it |
//!
//! `benches/flood.rs` measures the process's resident memory after a
//! million distinct 1 KiB entries, and after a million distinct prefixes
//! flushed, against `max_bytes`; `tests/flood.rs` floods each structure
//! and checks its bound with a counting allocator.
//!
//! # A fleet of servers
//!
//! With the `redis` feature, [`CacheBuilder::store`] takes a `RedisStore`
//! (see [`store`]): entries, the invalidation clock and the index live in
//! Redis, so a write on one instance flushes every instance before its
//! response leaves, and an optional near cache keeps hits in process. Any
//! other [`store::Store`] works the same way.
//!
//! # Metrics
//!
//! With the `metrics` feature, every decision is reported through the
//! [`metrics`](https://docs.rs/metrics) 0.24 facade to whatever recorder
//! the application installs:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `http_cache_requests_total` | counter | `outcome` (`hit`, `stale`, `miss`, `coalesced`, `bypass`), `route` |
//! | `http_cache_bypasses_total` | counter | `reason` (the `Cache-Status` detail), `route` |
//! | `http_cache_not_stored_total` | counter | `reason`, `route` |
//! | `http_cache_stores_total` | counter | `route` |
//! | `http_cache_collapsed_total` | counter | `route`: waiters answered from a coalesced miss's entry |
//! | `http_cache_stale_dropped_total` | counter | `route`: entries found flushed on lookup |
//! | `http_cache_not_modified_total` | counter | `route`: 304s answered from an entry |
//! | `http_cache_invalidations_total` | counter | `kind` (`prefix`, `tag`, `key`) |
//! | `http_cache_entries` | gauge | responses held ([`Stats::entries`]) |
//! | `http_cache_bytes` | gauge | bytes held, as weighed |
//!
//! `route` is the rule's pattern (`/products/{id}`), `*` for a layer's
//! fallback `ttl`, and `(none)` for an event of no route (a request the
//! layers counted before any rule matched; none do today). Labels are
//! patterns and reasons, never paths or keys, so their number is bounded.
//! For Prometheus, `metrics-exporter-prometheus` 0.18 (the line built on
//! `metrics` 0.24) with `default-features = false` renders the text format
//! without its HTTP listener or TLS stack; serve `handle.render()` on a
//! route of the app (`examples/prometheus.rs`).
//!
//! # Time in tests
//!
//! TTLs follow the system's coarse monotonic clock. A cache built inside
//! `#[tokio::test(start_paused = true)]` follows tokio's clock instead, so
//! `tokio::time::advance` ages its entries; [`CacheBuilder::clock`] makes
//! the choice explicit, or takes a [`ManualClock`] a test moves itself:
//!
//! ```
//! use std::time::Duration;
//! use tower_response_cache::{Cache, ManualClock};
//!
//! let clock = ManualClock::new();
//! let cache = Cache::builder().clock(clock.clone()).build();
//! clock.advance(Duration::from_secs(30));
//! # let _ = cache;
//! ```
//!
//! # Cargo features
//!
//! | feature | adds | pulls in |
//! |---|---|---|
//! | `redis` | `store::RedisStore`: entries, clock and invalidation index in Redis or Valkey, shared by a fleet, with an optional near cache | `redis` (tokio, connection manager) |
//! | `axum` | `Cache::admin_router`: statistics, flushes and entries over HTTP (JSON); implies `serde` | `axum` (no default features), `serde_json` |
//! | `metrics` | counters and gauges through the [`metrics`](https://docs.rs/metrics) facade | `metrics` |
//! | `serde` | `Serialize` on [`Stats`] and [`Counts`] | `serde` |
//!
//! None is on by default: the crate alone needs `http`, `tower`'s traits,
//! `tokio`'s timer and `quick_cache`.
//!
//! # Failures
//!
//! The cache never turns a problem into a client error: a request the cache
//! cannot handle (a hostile URI, a store that is down or slow) is served by
//! the inner service, and the reason is counted in [`Cache::stats`] and
//! traced (`tracing`, debug level, one event per decision with key, outcome
//! and reason; a failing store at warn level).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(feature = "axum")]
mod admin;
mod cache;
mod freshness;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod host;
pub mod invalidate;
mod key;
pub mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod path;
mod policy;
mod scope;
pub mod store;

pub use cache::clock::{Clock, ManualClock};
pub use cache::stats::{Counts, Stats};
pub use cache::{BuildError, Cache, CacheBuilder};
pub use invalidate::{InvalidateOn, InvalidateService, Target};
pub use layer::{CacheBody, CacheLayer, CacheService};
pub use policy::{CacheTags, CacheTtl, NoStore, RoutePolicy, DEFAULT_STATUSES};
