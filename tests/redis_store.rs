//! `RedisStore` at the store level, against real `redis-server`s started on
//! free loopback ports: encoding, TTLs, the shared clock and index across
//! instances, the race rule, the index's bound, the near cache's staleness
//! window, and faults (a server killed and restarted mid-run).
//!
//! Run with `cargo test --features redis --test redis_store`; needs
//! `redis-server` on PATH.
#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use redis::AsyncCommands;
use tower_response_cache::store::{
    Entry, Lookup, RedisStore, RedisStoreBuilder, Store, StoreErrorKind,
};
use tower_response_cache::Target;

use redis_server::RedisServer;

/// What a test's entry is made of; [`build`](Self::build) stamps its times
/// from now, through the public entry builder any store uses.
#[derive(Debug, Clone)]
struct EntrySpec {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    born: u64,
    key: String,
    path: String,
    tags: Vec<String>,
    ttl: Duration,
    grace: Duration,
}

impl EntrySpec {
    /// A 200 with an empty body, fresh for a minute.
    fn new(key: impl Into<String>, path: impl Into<String>, born: u64) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            born,
            key: key.into(),
            path: path.into(),
            tags: Vec::new(),
            ttl: Duration::from_secs(60),
            grace: Duration::ZERO,
        }
    }

    /// The entry, born now (wall clock), weighed for its store key as the
    /// Redis store weighs what it reads back.
    fn build(self) -> Arc<Entry> {
        let born_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let fresh_until_ms = born_ms + self.ttl.as_millis() as u64;
        let entry = Entry::builder()
            .status(http::StatusCode::from_u16(self.status).unwrap())
            .headers(self.headers)
            .body(self.body)
            .key(&self.key)
            .path(self.path)
            .born(self.born)
            .born_ms(born_ms)
            .fresh_until_ms(fresh_until_ms)
            .grace_until_ms(fresh_until_ms + self.grace.as_millis() as u64)
            .tags(self.tags)
            .build();
        Arc::new(entry)
    }
}

/// A store for the tests that are not about timeouts: its command timeout
/// is generous, so that a busy machine makes a call slow, never failed (the
/// default 100 ms is a production setting, and a debug build on two busy
/// cores sometimes takes longer). The fault tests set their own timeouts.
fn builder(server: &RedisServer) -> RedisStoreBuilder {
    RedisStore::builder(server.url()).command_timeout(Duration::from_secs(10))
}

fn store(server: &RedisServer) -> RedisStore {
    builder(server).build().unwrap()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn found(store: &RedisStore, key: &str) -> Arc<Entry> {
    match store.get(key).await.unwrap() {
        Lookup::Found(e) => e,
        other => panic!("{key}: expected an entry, got {other:?}"),
    }
}

async fn lookup(store: &RedisStore, key: &str) -> &'static str {
    match store.get(key).await.unwrap() {
        Lookup::Found(_) => "found",
        Lookup::Miss => "miss",
        Lookup::Invalidated => "invalidated",
    }
}

/// Puts an entry for `path` under `key`, born at `born`.
async fn put(store: &RedisStore, key: &str, path: &str, born: u64, tags: &[&str]) {
    let mut spec = EntrySpec::new(key, path, born);
    spec.tags = tags.iter().map(|t| t.to_string()).collect();
    spec.body = Bytes::from(format!("body of {key}"));
    store.put(key, spec.build()).await.unwrap();
}

#[test]
fn store_is_send_sync_static_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<RedisStore>();
    check::<tower_response_cache::store::RedisStoreBuilder>();
}

#[test]
fn bad_urls_and_namespaces_are_refused_at_build() {
    let e = RedisStore::builder("not a url").build().unwrap_err();
    assert!(e.to_string().contains("invalid redis url"), "{e}");
    assert!(RedisStore::builder("redis://127.0.0.1/")
        .namespace("a{b}")
        .build()
        .is_err());
    // A good URL builds without any server behind it.
    let s = RedisStore::builder("redis://127.0.0.1:1/")
        .namespace("x")
        .build()
        .unwrap();
    assert_eq!(s.redis_key("GET /a"), "{x}:e:GET /a");
}

#[tokio::test]
async fn builds_while_redis_is_down_and_fails_fast() {
    let port = redis_server::free_port();
    let store = RedisStore::builder(format!("redis://127.0.0.1:{port}/"))
        .failure_threshold(3)
        .cooldown(Duration::from_secs(30))
        .build()
        .unwrap();
    for i in 0..3 {
        let started = Instant::now();
        let e = store.get("k").await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(400), "call {i} took {took:?}");
        assert!(
            e.message().contains("refused") || e.message().contains("timed out"),
            "{e}"
        );
        assert!(
            matches!(
                e.kind(),
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout
            ),
            "{e}"
        );
    }
    assert!(store.is_cooling_down());
    let started = Instant::now();
    let e = store.generation().await.unwrap_err();
    assert!(e.message().contains("cool-down"), "{e}");
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
    assert!(started.elapsed() < Duration::from_millis(5));
}

#[tokio::test]
async fn entries_round_trip_with_repeated_headers_and_a_mebibyte_body() {
    let server = RedisServer::start();
    // How long a mebibyte takes is printed next to the default command
    // timeout, not asserted: speed is measured in benches/.
    let default_timeout = RedisStore::builder(server.url())
        .build()
        .unwrap()
        .command_timeout();
    let store = store(&server);
    let born = store.generation().await.unwrap();

    let mut spec = EntrySpec::new("GET /files/big", "/files/big", born);
    spec.status = 203;
    spec.headers = vec![
        (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/octet-stream"),
        ),
        (
            HeaderName::from_static("link"),
            HeaderValue::from_static("</1>; rel=prev"),
        ),
        (
            HeaderName::from_static("etag"),
            HeaderValue::from_static("\"v1\""),
        ),
        (
            HeaderName::from_static("link"),
            HeaderValue::from_static("</3>; rel=next"),
        ),
    ];
    spec.tags = vec!["files".into(), "big".into()];
    spec.body = Bytes::from((0..1u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let entry = spec.build();

    let started = Instant::now();
    store.put("GET /files/big", entry.clone()).await.unwrap();
    let put_took = started.elapsed();
    let started = Instant::now();
    let back = found(&store, "GET /files/big").await;
    let get_took = started.elapsed();
    println!(
        "1 MiB entry, first: put {put_took:?}, get {get_took:?} \
         (default command timeout {default_timeout:?})"
    );
    // Again, a few times.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        store.put("GET /files/big", entry.clone()).await.unwrap();
        found(&store, "GET /files/big").await;
        slowest = slowest.max(started.elapsed());
    }
    println!(
        "1 MiB entry: slowest put + get {slowest:?} (default command timeout {default_timeout:?})"
    );

    assert_eq!(back.status(), 203);
    let headers: Vec<_> = back
        .headers()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<_> = entry
        .headers()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(headers, expected, "every header, repeated ones in order");
    assert_eq!(back.body(), entry.body());
    assert_eq!(back.path(), "/files/big");
    assert_eq!(back.tags().collect::<Vec<_>>(), ["files", "big"]);
    assert_eq!(back.born(), born);
    assert_eq!(back.weight(), entry.weight());

    // An empty body, and a miss.
    let mut spec = EntrySpec::new("GET /empty", "/empty", born);
    spec.status = 204;
    store.put("GET /empty", spec.build()).await.unwrap();
    let back = found(&store, "GET /empty").await;
    assert!(back.body().is_empty());
    assert_eq!(back.status(), 204);
    assert_eq!(lookup(&store, "GET /nothing").await, "miss");

    // remove
    store.remove("GET /empty").await.unwrap();
    assert_eq!(lookup(&store, "GET /empty").await, "miss");
}

#[tokio::test]
async fn redis_ttl_is_freshness_plus_grace() {
    let server = RedisServer::start();
    let store = store(&server);
    let mut con = raw(&server).await;
    let born = store.generation().await.unwrap();

    let mut spec = EntrySpec::new("GET /t", "/t", born);
    spec.ttl = Duration::from_secs(60);
    spec.grace = Duration::from_secs(30);
    store.put("GET /t", spec.build()).await.unwrap();
    let pttl: i64 = con.pttl(store.redis_key("GET /t")).await.unwrap();
    assert!((88_000..=90_000).contains(&pttl), "PTTL {pttl}");

    // Already past its grace: not stored at all.
    let mut spec = EntrySpec::new("GET /dead", "/dead", born);
    spec.ttl = Duration::ZERO;
    store.put("GET /dead", spec.build()).await.unwrap();
    let exists: bool = con.exists(store.redis_key("GET /dead")).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn an_invalidation_on_one_instance_holds_on_another() {
    let server = RedisServer::start();
    let a = store(&server);
    let b = store(&server);
    let born = a.generation().await.unwrap();
    for (key, path) in [
        ("k-list", "/products"),
        ("k-list-page", "/products"),
        ("k-one", "/products/42"),
        ("k-archive", "/products-archive"),
        ("k-orders", "/orders"),
    ] {
        let tags: &[&str] = if path == "/orders" {
            &["catalogue"]
        } else {
            &[]
        };
        put(&a, key, path, born, tags).await;
    }
    put(&a, "k-deep", "/x/y/z", born, &[]).await;

    // A prefix flushes whole segments only.
    let g = b.invalidate(&[Target::prefix("/products/")]).await.unwrap();
    assert!(g > born);
    assert_eq!(lookup(&a, "k-list").await, "invalidated");
    assert_eq!(lookup(&a, "k-list-page").await, "invalidated");
    assert_eq!(lookup(&a, "k-one").await, "invalidated");
    assert_eq!(lookup(&a, "k-archive").await, "found");
    assert_eq!(lookup(&a, "k-orders").await, "found");
    // The invalidated entries were deleted.
    assert_eq!(lookup(&a, "k-one").await, "miss");

    // A tag.
    b.invalidate(&[Target::tag("catalogue")]).await.unwrap();
    assert_eq!(lookup(&a, "k-orders").await, "invalidated");
    assert_eq!(lookup(&a, "k-deep").await, "found");

    // "/" flushes everything.
    b.invalidate(&[Target::prefix("/")]).await.unwrap();
    assert_eq!(lookup(&a, "k-deep").await, "invalidated");
    assert_eq!(lookup(&a, "k-archive").await, "invalidated");

    // Read-your-writes across instances: what is read after the flush is
    // served on the other instance.
    let now = b.generation().await.unwrap();
    put(&b, "k-one", "/products/42", now, &[]).await;
    assert_eq!(found(&a, "k-one").await.born(), now);
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let server = RedisServer::start();
    let a = builder(&server).namespace("a").build().unwrap();
    let b = builder(&server).namespace("b").build().unwrap();
    put(&a, "k", "/p", a.generation().await.unwrap(), &[]).await;
    put(&b, "k", "/p", b.generation().await.unwrap(), &[]).await;
    b.invalidate(&[Target::prefix("/")]).await.unwrap();
    assert_eq!(lookup(&a, "k").await, "found");
    assert_eq!(lookup(&b, "k").await, "invalidated");
}

#[tokio::test]
async fn a_read_that_began_before_an_invalidation_is_never_served_after_it() {
    let server = RedisServer::start();
    let a = store(&server);
    let b = store(&server);

    // The origin read begins...
    let born = a.generation().await.unwrap();
    // ...another instance flushes while it runs...
    let g = b.invalidate(&[Target::prefix("/p")]).await.unwrap();
    assert_eq!(g, born + 1);
    assert_eq!(
        a.generation().await.unwrap(),
        g,
        "the clock reads what it returned"
    );
    // ...and the response is stored after the flush: it is not served.
    put(&a, "k", "/p/1", born, &[]).await;
    assert_eq!(lookup(&b, "k").await, "invalidated");

    // A read that began at (or after) the flush is served.
    put(&a, "k", "/p/1", g, &[]).await;
    assert_eq!(lookup(&b, "k").await, "found");
    let later = b.generation().await.unwrap();
    put(&a, "k2", "/p/2", later, &[]).await;
    assert_eq!(lookup(&b, "k2").await, "found");
}

#[tokio::test]
async fn the_index_stays_bounded() {
    let server = RedisServer::start();
    let store = builder(&server).max_records(32).build().unwrap();
    let mut con = raw(&server).await;
    let old = store.generation().await.unwrap();
    put(&store, "k-old", "/keep", old, &[]).await;

    for i in 0..500 {
        store
            .invalidate(&[
                Target::tag(format!("t{i}")),
                Target::prefix(format!("/p{i}")),
            ])
            .await
            .unwrap();
    }
    let records: usize = con.hlen("{trc}:idx").await.unwrap();
    let ordered: usize = con.zcard("{trc}:idx:t").await.unwrap();
    println!("index after 1000 records made with a cap of 32: {records} records");
    assert!(records <= 32 && ordered <= 32, "{records} / {ordered}");

    // Records were dropped early: what they might have covered counts as
    // invalidated (the floor), and is not stored again.
    assert_eq!(lookup(&store, "k-old").await, "invalidated");
    put(&store, "k-old", "/keep", old, &[]).await;
    assert_eq!(lookup(&store, "k-old").await, "miss");
    let now = store.generation().await.unwrap();
    put(&store, "k-new", "/keep", now, &[]).await;
    assert_eq!(lookup(&store, "k-new").await, "found");
}

#[tokio::test]
async fn records_older_than_the_longest_lifetime_are_pruned() {
    let server = RedisServer::start();
    let store = store(&server);
    let mut con = raw(&server).await;
    // The longest lifetime stored: 200 ms.
    let born = store.generation().await.unwrap();
    let mut spec = EntrySpec::new("k", "/short", born);
    spec.ttl = Duration::from_millis(200);
    store.put("k", spec.build()).await.unwrap();
    for i in 0..10 {
        store
            .invalidate(&[Target::tag(format!("t{i}"))])
            .await
            .unwrap();
    }
    assert_eq!(con.hlen::<_, usize>("{trc}:idx").await.unwrap(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.invalidate(&[Target::tag("last")]).await.unwrap();
    assert_eq!(con.hlen::<_, usize>("{trc}:idx").await.unwrap(), 1);
    // An entry whose read began before a pruned record is not stored.
    put(&store, "k2", "/other", born, &[]).await;
    assert_eq!(lookup(&store, "k2").await, "miss");
}

#[tokio::test]
async fn undecodable_values_are_misses_and_are_deleted() {
    let server = RedisServer::start();
    let store = store(&server);
    let mut con = raw(&server).await;
    let garbage = store.redis_key("garbage");
    let _: () = con.set(&garbage, "not an entry").await.unwrap();
    assert_eq!(lookup(&store, "garbage").await, "miss");
    assert!(!con.exists::<_, bool>(&garbage).await.unwrap());

    // A readable prefix (version 1, born 0, no hashes) but a broken rest.
    let broken = store.redis_key("broken");
    let mut value = vec![1u8];
    value.extend_from_slice(&0u64.to_be_bytes());
    value.extend_from_slice(&0u16.to_be_bytes());
    value.extend_from_slice(&[0xff; 3]);
    let _: () = con.set(&broken, value).await.unwrap();
    assert_eq!(lookup(&store, "broken").await, "miss");
    assert!(!con.exists::<_, bool>(&broken).await.unwrap());
}

async fn wait_live(store: &RedisStore) {
    store.start_near_cache();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.near_cache_live() {
        assert!(Instant::now() < deadline, "near cache never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_staleness_window_is_the_pubsub_delay() {
    let server = RedisServer::start();
    let near = |s: &RedisServer| builder(s).near_cache(8 << 20).build().unwrap();
    let a = near(&server);
    let b = near(&server);
    wait_live(&a).await;
    wait_live(&b).await;
    let mut con = raw(&server).await;

    // B's near tier answers without Redis: even with the key gone from
    // Redis, B still serves it (that is the tier, and its risk).
    let born = b.generation().await.unwrap();
    put(&b, "k0", "/n/0", born, &[]).await;
    assert_eq!(b.near_cache_len(), 1);
    let _: () = con.del(b.redis_key("k0")).await.unwrap();
    assert_eq!(lookup(&b, "k0").await, "found");

    // The writer's own tier is coherent at once (read-your-writes).
    put(&a, "own", "/n/own", born, &[]).await;
    assert_eq!(lookup(&a, "own").await, "found");
    a.invalidate(&[Target::prefix("/n/own")]).await.unwrap();
    assert_ne!(lookup(&a, "own").await, "found");

    // Staleness window: from A's invalidate returning until B's tier stops
    // answering with the flushed entry.
    let mut windows = Vec::new();
    for round in 0..20 {
        let key = format!("k{}", round + 1);
        let path = format!("/n/{}", round + 1);
        let born = b.generation().await.unwrap();
        put(&b, &key, &path, born, &[]).await;
        assert_eq!(lookup(&b, &key).await, "found");
        let started = Instant::now();
        a.invalidate(&[Target::prefix(&path)]).await.unwrap();
        let returned = Instant::now();
        loop {
            if lookup(&b, &key).await != "found" {
                break;
            }
            assert!(
                returned.elapsed() < Duration::from_secs(2),
                "B still served a flushed entry 2 s after the invalidation"
            );
            tokio::task::yield_now().await;
        }
        windows.push((returned.elapsed(), started.elapsed()));
    }
    windows.sort();
    let (median, max) = (windows[windows.len() / 2], windows[windows.len() - 1]);
    println!(
        "near cache staleness window over {} rounds: median {:?} (from the call: {:?}), \
         max {:?} (from the call: {:?})",
        windows.len(),
        median.0,
        median.1,
        max.0,
        max.1
    );
    assert!(max.0 < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_is_emptied_when_its_subscription_is_lost() {
    let mut server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .near_cache(8 << 20)
        .cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    wait_live(&store).await;
    let born = store.generation().await.unwrap();
    put(&store, "k", "/k", born, &[]).await;
    assert_eq!(store.near_cache_len(), 1);

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.near_cache_live() {
        assert!(Instant::now() < deadline, "lost subscription not noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.near_cache_len(), 0);
    assert!(
        store.get("k").await.is_err(),
        "no stale answer from the tier"
    );

    server.restart();
    wait_live(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_fails_fast_then_caching_resumes_by_itself() {
    let mut server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .failure_threshold(3)
        .cooldown(Duration::from_millis(300))
        .build()
        .unwrap();
    let budget = store.command_timeout() + store.connect_timeout();
    let before = store.generation().await.unwrap();
    put(&store, "k", "/k", before, &[]).await;
    assert_eq!(lookup(&store, "k").await, "found");
    // A few invalidations, so the clock is not at its start.
    for _ in 0..3 {
        store.invalidate(&[Target::prefix("/other")]).await.unwrap();
    }
    let before = store.generation().await.unwrap();

    server.kill();
    let mut errors = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let result = if i % 2 == 0 {
            store.get("k").await.map(drop)
        } else {
            let e = EntrySpec::new("k", "/k", before).build();
            store.put("k", e).await
        };
        let took = started.elapsed();
        let e = result.expect_err("redis is down");
        assert!(
            took <= budget + Duration::from_millis(100),
            "a call took {took:?} with redis down"
        );
        errors.push(format!("{e} ({took:?})"));
    }
    println!("errors while down: {errors:#?}");
    assert!(store.is_cooling_down());
    let started = Instant::now();
    let e = store.get("k").await.unwrap_err();
    assert!(e.message().contains("cool-down"), "{e}");
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
    assert!(started.elapsed() < Duration::from_millis(5));

    let down_at = Instant::now();
    server.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(5);
    loop {
        match store.get("k").await {
            Ok(lookup) => {
                // Redis came back empty.
                assert!(matches!(lookup, Lookup::Miss), "{lookup:?}");
                break;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "caching did not resume");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    println!(
        "resumed {:?} after the restart ({:?} after the kill)",
        restarted.elapsed(),
        down_at.elapsed()
    );
    assert!(!store.is_cooling_down());

    // The namespace was lost with the restart: the clock restarts above
    // every generation handed out before, and a read that began before the
    // loss is not stored.
    let after = store.generation().await.unwrap();
    assert!(after > before, "{after} > {before}");
    put(&store, "k", "/k", before, &[]).await;
    assert_eq!(lookup(&store, "k").await, "miss");
    put(&store, "k", "/k", after, &[]).await;
    assert_eq!(lookup(&store, "k").await, "found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_within_the_budget_then_resumes() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .command_timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(150))
        .failure_threshold(2)
        .cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let born = store.generation().await.unwrap();
    put(&store, "k", "/k", born, &[]).await;

    server.pause();
    let budget = store.command_timeout() + store.connect_timeout();
    for _ in 0..2 {
        let started = Instant::now();
        let e = store.get("k").await.unwrap_err();
        let took = started.elapsed();
        println!("hung redis: {e} after {took:?}");
        assert!(e.message().contains("timed out"), "{e}");
        assert_eq!(e.kind(), StoreErrorKind::Timeout, "{e}");
        assert!(took < budget + Duration::from_millis(100), "{took:?}");
    }
    assert!(store.is_cooling_down());
    // A flush is never skipped by the cool-down: it is tried, and fails
    // within its budget while Redis hangs.
    let started = Instant::now();
    assert!(store.invalidate(&[Target::prefix("/")]).await.is_err());
    let took = started.elapsed();
    assert!(took >= store.command_timeout(), "tried: {took:?}");
    assert!(took < budget + Duration::from_millis(100), "{took:?}");

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        match store.get("k").await {
            Ok(lookup) => break lookup,
            Err(_) => {
                assert!(Instant::now() < deadline, "did not resume");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The flush sent while Redis hung waited there, and ran as it thawed.
    assert!(matches!(first, Lookup::Invalidated), "{first:?}");
    let born = store.generation().await.unwrap();
    put(&store, "k", "/k", born, &[]).await;
    assert_eq!(lookup(&store, "k").await, "found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fills_and_flushes_keep_the_race_rule() {
    let server = RedisServer::start();
    let store = store(&server);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("k{t}-{i}");
                let born = store.generation().await.unwrap();
                let flushed = if i % 3 == 0 {
                    store.invalidate(&[Target::prefix("/race")]).await.unwrap();
                    true
                } else {
                    false
                };
                put(&store, &key, "/race/x", born, &[]).await;
                let got = lookup(&store, &key).await;
                if flushed {
                    assert_ne!(got, "found", "{key}: born before its own flush");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Values in Redis are never trusted: restored snapshots, stray writes and
/// copies between namespaces must not bring an entry back or wedge a key.
mod untrusted {
    use super::*;

    #[tokio::test]
    async fn a_clock_set_back_never_resurrects_a_flushed_entry() {
        let server = RedisServer::start();
        let store = store(&server);
        let mut con = raw(&server).await;
        let born = store.generation().await.unwrap();
        put(&store, "k", "/p/1", born, &[]).await;
        let first = store.invalidate(&[Target::prefix("/p")]).await.unwrap();
        // A restored snapshot of the clock, or a stray SET.
        let _: () = con.set("{trc}:clock", 0).await.unwrap();
        let second = store.invalidate(&[Target::tag("t")]).await.unwrap();
        assert!(
            second > first,
            "{second} > {first}: generations never go back"
        );
        assert!(store.generation().await.unwrap() >= second);
        let _: () = con.set("{trc}:clock", 0).await.unwrap();
        // The record for /p is never lowered: the entry stays flushed.
        store.invalidate(&[Target::prefix("/p")]).await.unwrap();
        assert_ne!(lookup(&store, "k").await, "found");
    }

    #[tokio::test]
    async fn an_entry_born_after_the_clock_is_never_stored_nor_served() {
        let server = RedisServer::start();
        let store = store(&server);
        let mut con = raw(&server).await;
        let now = store.generation().await.unwrap();
        // Refused at the door...
        put(&store, "future", "/f", now + 1_000, &[]).await;
        let exists: bool = con.exists(store.redis_key("future")).await.unwrap();
        assert!(!exists, "an entry born after the clock is not stored");
        // ... and dropped if it got in some other way (copied from a store
        // whose clock ran ahead).
        let other = RedisStore::builder(server.url())
            .namespace("ahead")
            .build()
            .unwrap();
        for _ in 0..5 {
            other.invalidate(&[Target::tag("tick")]).await.unwrap();
        }
        let ahead = other.generation().await.unwrap();
        assert!(ahead > now);
        put(&other, "k", "/f", ahead, &[]).await;
        let value: Vec<u8> = con.get(other.redis_key("k")).await.unwrap();
        let _: () = con.set(store.redis_key("k"), value).await.unwrap();
        assert_eq!(lookup(&store, "k").await, "miss");
        let exists: bool = con.exists(store.redis_key("k")).await.unwrap();
        assert!(!exists, "dropped");
        assert!(store.dropped_values() >= 1);
    }

    #[tokio::test]
    async fn a_value_copied_from_another_key_or_namespace_is_dropped() {
        let server = RedisServer::start();
        let store = store(&server);
        let mut con = raw(&server).await;
        let born = store.generation().await.unwrap();
        put(&store, "a", "/a", born, &[]).await;
        let value: Vec<u8> = con.get(store.redis_key("a")).await.unwrap();
        // Another key of the same namespace: its seal does not match.
        let _: () = con.set(store.redis_key("b"), value).await.unwrap();
        assert_eq!(lookup(&store, "b").await, "miss");
        assert_eq!(lookup(&store, "a").await, "found");
        assert_eq!(store.dropped_values(), 1);
        // A flush of /a drops what was copied too: nothing survives it.
        store.invalidate(&[Target::prefix("/a")]).await.unwrap();
        assert_ne!(lookup(&store, "a").await, "found");
    }

    #[tokio::test]
    async fn a_body_cut_or_extended_in_redis_is_never_served() {
        let server = RedisServer::start();
        let store = store(&server);
        let mut con = raw(&server).await;
        let born = store.generation().await.unwrap();
        for (i, change) in ["cut", "extended", "flipped"].into_iter().enumerate() {
            let key = format!("k{i}");
            put(&store, &key, "/k", born, &[]).await;
            let mut value: Vec<u8> = con.get(store.redis_key(&key)).await.unwrap();
            match change {
                "cut" => {
                    value.truncate(value.len() - 3);
                }
                "extended" => value.extend_from_slice(b"tail"),
                _ => *value.last_mut().unwrap() ^= 0x20,
            }
            let _: () = con.set(store.redis_key(&key), value).await.unwrap();
            assert_eq!(lookup(&store, &key).await, "miss", "{change}");
            // Caching resumes by itself: the next store of the key holds.
            put(&store, &key, "/k", born, &[]).await;
            assert_eq!(lookup(&store, &key).await, "found", "{change}");
        }
        assert_eq!(store.dropped_values(), 3);
    }

    #[tokio::test]
    async fn a_value_announcing_thousands_of_hashes_is_dropped_not_an_error() {
        let server = RedisServer::start();
        let store = store(&server);
        let mut con = raw(&server).await;
        store.generation().await.unwrap();
        // Version 2, born 0, 60,000 hashes announced, a few present.
        let mut value = vec![2u8];
        value.extend_from_slice(&0u64.to_be_bytes());
        value.extend_from_slice(&60_000u16.to_be_bytes());
        value.extend(std::iter::repeat_n(0u8, 8 * 60_000));
        let _: () = con.set(store.redis_key("wedge"), value).await.unwrap();
        for _ in 0..2 {
            // Not a store error for ever: judged, dropped, a miss.
            assert_eq!(lookup(&store, "wedge").await, "miss");
        }
        let exists: bool = con.exists(store.redis_key("wedge")).await.unwrap();
        assert!(!exists);
        assert_eq!(store.dropped_values(), 1);
        // The key is not wedged: it caches again.
        let born = store.generation().await.unwrap();
        put(&store, "wedge", "/w", born, &[]).await;
        assert_eq!(lookup(&store, "wedge").await, "found");
    }
}

/// The near tier never takes an entry a flush it may have missed covers.
mod near_resubscribed {
    use super::*;

    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_read_begun_before_a_write_missed_by_a_resubscription_is_not_kept_near() {
        let server = RedisServer::start();
        let a = RedisStore::builder(server.url())
            .near_cache(1 << 20)
            .build()
            .unwrap();
        let b = store(&server);
        a.start_near_cache();
        until("A subscribed", || a.near_cache_live()).await;
        // A's origin read begins.
        let born = a.generation().await.unwrap();
        // B's write flushes /p; A's tier hears of it...
        b.invalidate(&[Target::prefix("/p")]).await.unwrap();
        // ... and then its subscription is made again, which empties the
        // tier with everything it had heard.
        let killed = server.command("CLIENT KILL TYPE pubsub");
        assert!(killed.starts_with(':'), "{killed}");
        until("A's subscription dropped", || !a.near_cache_live()).await;
        until("A subscribed again", || a.near_cache_live()).await;
        // A's pre-write read now lands.
        put(&a, "k", "/p/1", born, &[]).await;
        for _ in 0..3 {
            assert_ne!(
                lookup(&a, "k").await,
                "found",
                "the pre-write read must not be served after the write"
            );
        }
    }
}
