//! Floods of hostile input, one per structure that grows with it, through
//! real axum routers: each checks its bound with the cache's own figures
//! (`stats()`) and, where bytes matter, with a counting global allocator.
//!
//! - distinct junk keys: the store stays within `max_bytes`;
//! - junk `Vary` values: every variant is an entry, weighed like any other;
//! - uncacheable distinct keys: pass markers, at most 4,096 slots;
//! - origin calls under way: the same 4,096 slots;
//! - a million distinct prefixes flushed: the index within its eighth of
//!   `max_bytes`, the store yielding it;
//! - distinct tags, stored and flushed;
//! - distinct paths: per-route statistics are per pattern, never per path;
//! - flushes a failing network store cannot record: a bounded number of
//!   retry tasks and owed hashes.
//!
//! The allocator counts every allocation of the process, so the tests take
//! turns (a lock), and each measures what its own cache holds.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderValue, Request, Response};
use axum::routing::get;
use axum::Router;
use support::{read, send};
use tower::ServiceExt;
use tower_response_cache::store::{Entry, Lookup, Store, StoreError, StoreErrorKind, Target};
use tower_response_cache::{Cache, CacheLayer, CacheTags, RoutePolicy};

fn live() -> i64 {
    counting_alloc::live() as i64
}

/// One test at a time: each reads the process's allocations as its own.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a test on a current-thread runtime of its own, its clock paused
/// or not, while no other test runs.
fn run(paused: bool, test: impl Future<Output = ()>) {
    let _serial = serial();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .expect("a runtime")
        .block_on(test);
}

// ---------------------------------------------------------------------------
// The caches, routers and requests of the floods.
// ---------------------------------------------------------------------------

/// Small enough that every flood fills it many times over.
const MAX_BYTES: u64 = 2 << 20;

/// The coalescing table's bound (see `src/cache/flight.rs`).
const MAX_SLOTS: u64 = 4096;

/// Slack for what a cache allocates besides its entries and index: its
/// shards' and tables' own structures, the router.
const SLACK: i64 = 512 << 10;

const MIN: Duration = Duration::from_secs(60);

fn small_cache() -> Cache {
    Cache::builder()
        .max_bytes(MAX_BYTES)
        .max_body_bytes(64 << 10)
        .build()
}

/// The memory bound holds: the entries and the index within `max_bytes`.
#[track_caller]
fn assert_within(cache: &Cache, max_bytes: u64) {
    let s = cache.stats();
    assert!(
        s.bytes + s.index_bytes <= max_bytes,
        "{} bytes of entries and {} of index, over {max_bytes}",
        s.bytes,
        s.index_bytes
    );
    assert!(s.index_bytes <= max_bytes / 8, "index {}", s.index_bytes);
    assert!(s.flights <= MAX_SLOTS, "{} flights", s.flights);
}

/// What the heap holds beyond `before`, at most the bound plus some slack
/// (the weight follows the heap within 5%: `tests/weight.rs`).
#[track_caller]
fn assert_heap_within(before: i64, bound: u64, what: &str) {
    let held = live() - before;
    let most = (bound as f64 * 1.05) as i64 + SLACK;
    println!("{what}: the heap holds {held} B for a bound of {bound} B");
    assert!(
        held <= most,
        "{what}: the heap holds {held} B, more than {most} B"
    );
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Junk of every length up to 600 bytes or so, so that some keys are
/// stored by hash (over 200 bytes) and some are not.
fn junk(n: u64) -> String {
    junk_within(n, 601)
}

/// Junk of up to `most` bytes (and the digits of `n`).
fn junk_within(n: u64, most: u64) -> String {
    let len = (n * 7919 % most) as usize;
    let mut s = format!("{n:x}");
    s.extend(std::iter::repeat_n('z', len));
    s
}

/// A first request through a throwaway router and cache, so that what a
/// process allocates once (tracing's call sites, the runtime's timers, the
/// entries' static heads) is not counted against a test's cache.
async fn warm_up() {
    let cache = small_cache();
    let app = Router::new()
        .route(
            "/w/{n}",
            get(|| async {
                let mut r = json(vec![b'w'; 10]);
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-language"));
                r
            }),
        )
        .layer(CacheLayer::new(&cache).route("/w/{n}", MIN));
    for n in 0..50 {
        send(&app, read(&format!("/w/{n}"))).await;
        send(&app, read(&format!("/w/{n}"))).await;
    }
    cache.invalidate_prefix("/w");
}

// ---------------------------------------------------------------------------
// The floods.
// ---------------------------------------------------------------------------

#[test]
fn distinct_junk_keys_stay_within_max_bytes() {
    run(true, async {
        warm_up().await;
        let before = live();
        let cache = small_cache();
        let app = Router::new()
            .route("/items/{*rest}", get(|| async { json(vec![b'x'; 512]) }))
            .layer(CacheLayer::new(&cache).route("/items/{*rest}", MIN));
        const N: u64 = 12_000;
        for n in 0..N {
            let uri = format!("/items/{}?{}={n}&b={}", junk(n), junk(n + 1), n % 13);
            let seen = send(&app, read(&uri)).await;
            assert!(seen.cache_status().contains("stored"), "{uri}");
            if n % 2_000 == 0 {
                assert_within(&cache, MAX_BYTES);
            }
        }
        let stats = cache.stats();
        assert_within(&cache, MAX_BYTES);
        assert_eq!(stats.totals.stores, N);
        assert!(
            stats.evictions > N / 2,
            "the store was filled many times over"
        );
        assert_eq!((stats.flights, stats.index_records), (0, 0));
        assert_heap_within(before, MAX_BYTES, "distinct junk keys");
    });
}

#[test]
fn junk_vary_values_are_entries_weighed_like_any_other() {
    run(true, async {
        warm_up().await;
        let before = live();
        let cache = small_cache();
        let app = Router::new()
            .route(
                "/v/{n}",
                get(|| async {
                    let mut r = json(vec![b'v'; 256]);
                    r.headers_mut().insert(
                        header::VARY,
                        HeaderValue::from_static("accept-language, x-junk"),
                    );
                    r
                }),
            )
            .layer(CacheLayer::new(&cache).route("/v/{n}", MIN));
        const N: u64 = 10_000;
        for n in 0..N {
            // A handful of URLs, a new variant each time: values of every
            // length, up to variant keys stored by hash.
            let request = Request::get(format!("/v/{}", n % 5))
                .header("accept-language", format!("en-{n}"))
                .header("x-junk", junk(n))
                .body(Body::empty())
                .unwrap();
            let seen = send(&app, request).await;
            assert!(seen.cache_status().contains("stored"));
            if n % 2_000 == 0 {
                assert_within(&cache, MAX_BYTES);
            }
        }
        let stats = cache.stats();
        assert_within(&cache, MAX_BYTES);
        assert!(
            stats.evictions > N / 2,
            "the store was filled many times over"
        );
        assert_eq!(stats.flights, 0);
        assert_heap_within(before, MAX_BYTES, "junk Vary values");
        // Variants still work after the flood: the last one is a hit.
        let last = N - 1;
        let again = Request::get(format!("/v/{}", last % 5))
            .header("accept-language", format!("en-{last}"))
            .header("x-junk", junk(last))
            .body(Body::empty())
            .unwrap();
        assert!(send(&app, again).await.is_hit());
    });
}

#[test]
fn uncacheable_distinct_keys_hold_at_most_4096_pass_markers() {
    run(true, async {
        warm_up().await;
        let cache = small_cache();
        let app = Router::new()
            .route(
                "/private/{*rest}",
                get(|| async {
                    let mut r = json(b"mine".to_vec());
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
                    r
                }),
            )
            .layer(CacheLayer::new(&cache).route("/private/{*rest}", MIN));
        // The table's own allocations, once its map and queue have grown.
        for n in 0..MAX_SLOTS {
            send(&app, read(&format!("/private/warm/{n}"))).await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        send(&app, read("/private/warm/again")).await;
        let before = live();
        const N: u64 = 20_000;
        for n in 0..N {
            // Keys as long as the table keeps them (200 bytes; longer are
            // looked up by a hash).
            let uri = format!("/private/{n:0>190}");
            send(&app, read(&uri)).await;
            if n % 1_000 == 0 {
                assert!(cache.stats().flights <= MAX_SLOTS);
            }
        }
        let stats = cache.stats();
        assert_eq!(
            stats.flights, MAX_SLOTS,
            "a marker per key, up to the bound"
        );
        assert!(stats.flights_full >= N - MAX_SLOTS);
        assert!(stats.pass_markers >= N);
        assert_eq!((stats.entries, stats.bytes), (0, 0));
        // Documented: under 3 MiB whatever the rate (`Stats::flights`).
        let held = live() - before;
        println!("pass markers: the table holds {held} B for {MAX_SLOTS} slots");
        assert!(held <= 3 << 20, "the table holds {held} B");
        // Markers expire: the next miss drops them.
        tokio::time::advance(Duration::from_secs(3)).await;
        send(&app, read("/private/after")).await;
        assert_eq!(cache.stats().flights, 1);
    });
}

#[test]
fn origin_calls_under_way_hold_at_most_4096_slots() {
    run(false, async {
        let cache = small_cache();
        let app = Router::new()
            .route("/hang/{id}", get(std::future::pending::<&'static str>))
            .layer(CacheLayer::new(&cache).route("/hang/{id}", MIN));
        type Waiting = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>>>>;
        let mut cx = Context::from_waker(Waker::noop());
        const N: u64 = 6_000;
        let mut waiting: Vec<Waiting> = Vec::with_capacity(N as usize);
        for n in 0..N {
            let request = Request::get(format!("/hang/{n}"))
                .body(Body::empty())
                .unwrap();
            let mut future: Waiting = Box::pin(app.clone().oneshot(request));
            assert!(future.as_mut().poll(&mut cx).is_pending());
            waiting.push(future);
        }
        let stats = cache.stats();
        assert_eq!(stats.flights, MAX_SLOTS);
        // Past the bound, each miss went to the origin without coalescing.
        assert_eq!(stats.flights_full, N - MAX_SLOTS);
        assert_eq!(stats.totals.misses, N);
        drop(waiting);
        assert_eq!(cache.stats().flights, 0, "a client gone frees its slot");
    });
}

#[test]
fn a_million_distinct_prefixes_flushed_keep_the_index_within_its_share() {
    run(true, async {
        warm_up().await;
        const MAX: u64 = 8 << 20;
        let before = live();
        // Four shards (1 MiB bodies): filled evenly, they fill the store.
        let cache = Cache::builder().max_bytes(MAX).build();
        let app = Router::new()
            .route("/e/{n}", get(|| async { json(vec![b'e'; 1024]) }))
            .layer(CacheLayer::new(&cache).route("/e/{n}", Duration::from_secs(3600)));
        // A full store, and an entry born before the flood.
        let mut n = 0;
        while cache.stats().evictions < 500 {
            send(&app, read(&format!("/e/{n}"))).await;
            n += 1;
        }
        send(&app, read("/e/old")).await;
        let full = cache.stats();
        assert!(full.bytes > MAX * 9 / 10, "{} bytes", full.bytes);

        const FLUSHES: u64 = 1_000_000;
        let mut records_at_half = 0;
        for i in 0..FLUSHES {
            cache.invalidate_prefix(&format!("/flushed/{i}"));
            if i % 50_000 == 0 {
                assert_within(&cache, MAX);
            }
            if i == FLUSHES / 2 {
                records_at_half = cache.stats().index_records;
            }
        }
        let stats = cache.stats();
        assert_within(&cache, MAX);
        assert_eq!(stats.invalidations, FLUSHES + full.invalidations);
        assert_eq!(
            stats.index_records, records_at_half,
            "the records reached their bound and stayed there"
        );
        assert!(
            stats.index_bytes > MAX / 16,
            "the index had its share: {}",
            stats.index_bytes
        );
        assert!(stats.bytes < full.bytes, "the store yielded it");
        assert_heap_within(before, MAX, "a million prefixes flushed");
        // Records dropped for room flush conservatively: what was born before
        // them misses; what is stored after them is served.
        assert!(!send(&app, read("/e/old")).await.is_hit());
        send(&app, read("/e/new")).await;
        assert!(send(&app, read("/e/new")).await.is_hit());
    });
}

#[test]
fn distinct_tags_stored_and_flushed_stay_bounded() {
    run(true, async {
        warm_up().await;
        let before = live();
        let cache = small_cache();
        let app = Router::new()
            .route(
                "/t/{n}",
                get(|Path(n): Path<u64>| async move {
                    let mut r = json(vec![b't'; 256]);
                    let tags = (0..8)
                        .map(|i| format!("{}-{i}", junk_within(n + i, 97)))
                        .collect();
                    r.extensions_mut().insert(CacheTags(tags));
                    r
                }),
            )
            .layer(CacheLayer::new(&cache).route("/t/{n}", RoutePolicy::ttl(MIN).tags(["t"])));
        const N: u64 = 8_000;
        for n in 0..N {
            send(&app, read(&format!("/t/{n}"))).await;
            for i in 0..5 {
                cache.invalidate_tag(&format!("{}-{i}", junk_within(n * 5 + i, 97)));
            }
            if n % 2_000 == 0 {
                assert_within(&cache, MAX_BYTES);
            }
        }
        let stats = cache.stats();
        assert_within(&cache, MAX_BYTES);
        assert!(stats.evictions > 0 && stats.index_records > 0);
        assert_heap_within(before, MAX_BYTES, "distinct tags");
    });
}

#[test]
fn statistics_are_per_pattern_whatever_the_paths() {
    run(true, async {
        let cache = Cache::builder()
            .pass_marker(Duration::ZERO)
            .max_bytes(MAX_BYTES)
            .build();
        let no_store = || async {
            let mut r = json(b"n".to_vec());
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        };
        let app = Router::new()
            .route("/items/{id}", get(no_store).post(no_store))
            .fallback(no_store)
            .layer(CacheLayer::new(&cache).route("/items/{id}", MIN).ttl(MIN));
        let flood = |from: u64, to: u64| {
            let app = app.clone();
            async move {
                for n in from..to {
                    send(&app, read(&format!("/items/{}", junk(n)))).await;
                    send(&app, read(&format!("/{}/{n}", junk(n)))).await;
                    send(&app, support::method("POST", &format!("/items/{n}"))).await;
                }
            }
        };
        flood(0, 1_000).await;
        let before = live();
        flood(1_000, 11_000).await;
        let held = live() - before;
        println!("statistics: the heap grew by {held} B over 30,000 requests");
        assert!(
            held <= 16 << 10,
            "statistics grew by {held} B over 30,000 requests"
        );
        let stats = cache.stats();
        let patterns: Vec<_> = stats.routes.keys().map(String::as_str).collect();
        assert_eq!(patterns, ["*", "/items/{id}"]);
        assert_eq!(stats.totals.misses, 2 * 11_000);
        assert_eq!(stats.totals.bypasses.get("method"), Some(&11_000));
        assert_eq!((stats.entries, stats.flights), (0, 0));
    });
}

// ---------------------------------------------------------------------------
// Flushes a network store cannot record.
// ---------------------------------------------------------------------------

/// A network store that has no entries and fails every invalidation while
/// it is down.
#[derive(Clone, Default)]
struct Flaky {
    down: Arc<AtomicBool>,
    clock: Arc<AtomicU64>,
}

impl Store for Flaky {
    async fn get(&self, _key: &str) -> Result<Lookup, StoreError> {
        Ok(Lookup::Miss)
    }

    async fn put(&self, _key: &str, _entry: Arc<Entry>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn remove(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.clock.load(Relaxed))
    }

    async fn invalidate(&self, _targets: &[Target]) -> Result<u64, StoreError> {
        if self.down.load(Relaxed) {
            return Err(StoreError::new(StoreErrorKind::Unavailable, "down"));
        }
        Ok(self.clock.fetch_add(1, Relaxed) + 1)
    }
}

#[test]
fn flushes_owed_to_a_failing_store_keep_a_bounded_backlog() {
    run(true, async {
        let store = Flaky::default();
        store.down.store(true, Relaxed);
        let cache = Cache::builder()
            .store(store.clone())
            .store_timeout(Duration::from_millis(1))
            .build();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let idle = tasks();
        // The first failures are owed one by one, each retried by a task.
        for n in 0..100 {
            let flushed = cache.flush(&[Target::prefix(format!("/one/{n}"))]).await;
            assert!(flushed.is_err());
        }
        assert_eq!(tasks() - idle, 100);
        assert_eq!(cache.stats().owed_flush_records, 100);
        let before = live();
        const N: u64 = 20_000;
        for n in 0..N {
            let target = Target::prefix(format!("/p/{}", junk_within(n, 97)));
            assert!(cache.flush(&[target]).await.is_err());
            assert!(tasks() - idle <= 257, "{} retry tasks", tasks() - idle);
        }
        // Past the bound, everything counts as flushed here until the merged
        // flush of everything lands.
        assert_eq!(cache.stats().owed_flush_records, u64::MAX);
        let held = live() - before;
        println!(
            "owed flushes: the backlog holds {held} B, {} retry tasks",
            tasks() - idle
        );
        assert!(held <= 1 << 20, "the backlog holds {held} B");
        let invalidations = cache.stats().invalidations;
        store.down.store(false, Relaxed);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = cache.stats();
        assert_eq!(stats.owed_flush_records, 0);
        assert_eq!(tasks(), idle, "every retry ended");
        // The first ones landed one by one, the rest as one flush of `/`.
        assert!(stats.invalidations > invalidations);
    });
}

/// A network store whose writes never end (a store that has stalled).
#[derive(Clone, Default)]
struct Stalled;

impl Store for Stalled {
    async fn get(&self, _key: &str) -> Result<Lookup, StoreError> {
        Ok(Lookup::Miss)
    }

    async fn put(&self, _key: &str, _entry: Arc<Entry>) -> Result<(), StoreError> {
        std::future::pending().await
    }

    async fn remove(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn invalidate(&self, _targets: &[Target]) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[test]
fn writes_to_a_stalled_store_are_bounded_in_count() {
    run(false, async {
        const WRITES: u64 = 1024;
        let cache = Cache::builder().store(Stalled).build();
        let app = Router::new()
            .route("/w/{n}", get(|| async { "x" }))
            .layer(CacheLayer::new(&cache).route("/w/{n}", Duration::from_secs(60)));
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let idle = tasks();
        for n in 0..WRITES + 100 {
            let seen = send(&app, read(&format!("/w/{n}"))).await;
            assert_eq!(seen.text(), "x", "every request is served");
        }
        assert_eq!(tasks() - idle, WRITES as usize, "writes under way");
        let stats = cache.stats();
        assert_eq!(stats.totals.not_stored.get("store-error"), Some(&100));
    });
}
