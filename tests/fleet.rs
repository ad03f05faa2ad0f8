//! A cache on a shared network store, through real axum servers on
//! 127.0.0.1: two instances sharing one store see each other's entries and
//! flushes, and a store that fails or hangs turns the cache into a
//! pass-through. Every scenario runs twice: on a test double implementing
//! the public `Store` trait, and (feature `redis`) on `RedisStore` against
//! a `redis-server` of the test's own, killed and restarted for the fault
//! scenarios. (The Redis store's own tests are in `redis_store.rs`.)

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use support::*;
use tower::ServiceBuilder;
use tower_response_cache::store::{Entry, Lookup, Store, StoreError, StoreErrorKind};
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, Target};

const MIN: Duration = Duration::from_secs(60);

/// A store shared by every cache holding a clone: entries, a logical clock
/// and invalidation records, with switches for failing and hanging.
#[derive(Clone, Default)]
struct SharedStore(Arc<Inner>);

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    records: Mutex<Vec<(Target, u64)>>,
    clock: AtomicU64,
    down: AtomicBool,
    hang: AtomicBool,
    calls: AtomicUsize,
}

impl SharedStore {
    async fn gate(&self) -> Result<(), StoreError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if self.0.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.0.down.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ));
        }
        Ok(())
    }

    fn covers(target: &Target, entry: &Entry, key: &str) -> bool {
        match target {
            Target::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || entry.path() == p
                    || entry
                        .path()
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            Target::Tag(t) => entry.tags().any(|mine| mine == t),
            Target::Key(k) => k == key,
        }
    }
}

impl Store for SharedStore {
    async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
        self.gate().await?;
        let Some(entry) = self.0.entries.lock().unwrap().get(key).cloned() else {
            return Ok(Lookup::Miss);
        };
        let covered = self
            .0
            .records
            .lock()
            .unwrap()
            .iter()
            .any(|(t, g)| *g > entry.born() && Self::covers(t, &entry, key));
        if covered {
            self.0.entries.lock().unwrap().remove(key);
            return Ok(Lookup::Invalidated);
        }
        Ok(Lookup::Found(entry))
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        self.gate().await?;
        self.0.entries.lock().unwrap().insert(key.to_owned(), entry);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.gate().await?;
        self.0.entries.lock().unwrap().remove(key);
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        self.gate().await?;
        Ok(self.0.clock.load(Ordering::SeqCst))
    }

    async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        self.gate().await?;
        let mut records = self.0.records.lock().unwrap();
        let generation = self.0.clock.fetch_add(1, Ordering::SeqCst) + 1;
        records.extend(targets.iter().map(|t| (t.clone(), generation)));
        Ok(generation)
    }
}

/// One instance of the service: its own `Cache`, on the shared store.
fn instance(cache: &Cache, db: &Db) -> Router {
    behind_one_name(
        Router::new()
            .route("/products", get(db_read).post(db_write))
            .route("/products/{id}", get(db_read).put(db_write))
            .route("/dashboard", get(db_read))
            .route("/greeting", get(greeting))
            .with_state(db.clone())
            .layer(
                ServiceBuilder::new().layer(InvalidateOn::new(cache)).layer(
                    CacheLayer::new(cache)
                        .ttl(MIN)
                        .route("/dashboard", RoutePolicy::ttl(MIN).tags(["dashboard"])),
                ),
            ),
    )
}

/// The public name every instance answers under: a load balancer in front
/// of the fleet forwards the client's `Host`, the same whichever instance
/// it picks (the tests reach each instance on its own port).
const PUBLIC_NAME: &str = "api.test";

fn behind_one_name(app: Router) -> Router {
    app.layer(axum::middleware::map_request(
        |mut req: http::Request<axum::body::Body>| async move {
            req.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static(PUBLIC_NAME),
            );
            req
        },
    ))
}

/// A response that varies on `Accept-Language`.
async fn greeting(headers: http::HeaderMap) -> ([(http::HeaderName, &'static str); 1], String) {
    let lang = headers
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("en")
        .to_owned();
    let text = if lang.starts_with("fr") {
        "bonjour"
    } else {
        "hello"
    };
    ([(http::header::VARY, "accept-language")], text.to_owned())
}

/// A store the scenarios can share between instances, break and mend.
trait Backend {
    /// A new instance's cache on the shared store.
    fn cache(&self) -> Cache;
    /// Makes every call fail (connection refused).
    fn fail(&mut self);
    /// Makes every call hang.
    fn hang(&mut self);
    /// Undoes `fail` or `hang`.
    fn mend(&mut self);
}

impl Backend for SharedStore {
    fn cache(&self) -> Cache {
        Cache::builder()
            .store(self.clone())
            .store_timeout(Duration::from_millis(200))
            .build()
    }
    fn fail(&mut self) {
        self.0.down.store(true, Ordering::SeqCst);
    }
    fn hang(&mut self) {
        self.0.hang.store(true, Ordering::SeqCst);
    }
    fn mend(&mut self) {
        self.0.down.store(false, Ordering::SeqCst);
        self.0.hang.store(false, Ordering::SeqCst);
    }
}

/// Waits (bounded) until a cache has stored `n` responses: entries land
/// in a network store in the background, after the body has ended.
async fn until_stored(cache: &Cache, n: u64) {
    let start = Instant::now();
    while cache.stats().totals.stores < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the store never received entry {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until a GET is a hit again, as caching resumes after a
/// store comes back.
async fn until_hit(client: &Client, addr: std::net::SocketAddr, path: &str) -> Seen {
    let start = Instant::now();
    loop {
        let seen = fetch(client, addr, "GET", path, &[]).await;
        if seen.is_hit() {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "caching never resumed: {}",
            seen.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_instances_share_entries_and_flushes(backend: &impl Backend) {
    let db = Db::default();
    let (cache_a, cache_b) = (backend.cache(), backend.cache());
    let a = serve(instance(&cache_a, &db)).await;
    let b = serve(instance(&cache_b, &db)).await;
    let client = client();

    let first = fetch(&client, a, "GET", "/products/7", &[]).await;
    assert!(first.cache_status().contains("fwd=miss; stored"));
    until_stored(&cache_a, 1).await;
    // Instance B answers from what A stored: no second origin read.
    let from_b = fetch(&client, b, "GET", "/products/7", &[]).await;
    assert!(from_b.is_hit(), "{}", from_b.cache_status());
    assert_eq!(from_b.text(), "v0");
    assert_eq!(db.reads.get(), 1);
    // HEAD on B from the same entry.
    let head = fetch(&client, b, "HEAD", "/products/7", &[]).await;
    assert!(head.is_hit());
    assert_eq!(head.header("content-length"), Some("2"));

    // A write on A flushes B, and the writer's next read, on B, is fresh.
    let write = fetch(&client, a, "PUT", "/products/7", &[]).await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);
    let after = fetch(&client, b, "GET", "/products/7", &[]).await;
    assert!(!after.is_hit(), "{}", after.cache_status());
    assert_eq!(after.text(), "v1");

    // A tag flushed through the API of a third cache holds on A.
    fetch(&client, a, "GET", "/dashboard", &[]).await;
    until_stored(&cache_a, 2).await;
    assert!(fetch(&client, a, "GET", "/dashboard", &[]).await.is_hit());
    let other = backend.cache();
    other.flush(&[Target::tag("dashboard")]).await.unwrap();
    let flushed = fetch(&client, a, "GET", "/dashboard", &[]).await;
    assert!(!flushed.is_hit(), "{}", flushed.cache_status());
    assert_eq!(other.stats().invalidations, 1);
}

async fn concurrent_misses_make_one_origin_call(backend: &impl Backend) {
    let db = Db::default();
    let addr = serve(instance(&backend.cache(), &db)).await;
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            fetch(&client, addr, "GET", "/products", &[]).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().text(), "v0");
    }
    // Requests that arrived after the entry landed are hits; those during
    // the origin call waited for it. Either way, one origin read.
    assert_eq!(db.reads.get(), 1);
}

async fn a_store_that_fails_is_a_pass_through_until_it_comes_back(backend: &mut impl Backend) {
    let db = Db::default();
    let cache = backend.cache();
    let addr = serve(instance(&cache, &db)).await;
    let client = client();

    backend.fail();
    for _ in 0..3 {
        let seen = fetch(&client, addr, "GET", "/products", &[]).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.text(), "v0");
        assert!(
            seen.cache_status()
                .contains("fwd=bypass; detail=store-error"),
            "{}",
            seen.cache_status()
        );
    }
    assert_eq!(db.reads.get(), 3);
    let stats = cache.stats();
    assert_eq!(stats.totals.bypasses.get("store-error"), Some(&3));
    assert!(stats.store_errors >= 3);
    // A write while the store is down still succeeds for the client.
    let write = fetch(&client, addr, "POST", "/products", &[]).await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);

    // Back: caching resumes by itself.
    backend.mend();
    let hit = until_hit(&client, addr, "/products").await;
    assert_eq!(hit.text(), "v1");
}

async fn a_store_that_hangs_costs_no_more_than_the_timeout(backend: &mut impl Backend) {
    let db = Db::default();
    let cache = backend.cache();
    let addr = serve(instance(&cache, &db)).await;
    let client = client();
    backend.hang();
    let start = Instant::now();
    let seen = fetch(&client, addr, "GET", "/products", &[]).await;
    let took = start.elapsed();
    assert_eq!(seen.text(), "v0");
    assert!(seen.cache_status().contains("detail=store-error"));
    // The store timeouts are at most 200 ms; allow for a loaded machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A flush on a hung store fails within the timeout too.
    let flush = tokio::time::timeout(
        Duration::from_secs(3),
        cache.flush(&[Target::prefix("/products")]),
    )
    .await
    .expect("flush bounded by the store timeout");
    assert!(flush.is_err());
    assert!(cache.stats().store_errors >= 2);
    backend.mend();
}

async fn variants_stay_apart_across_instances(backend: &impl Backend) {
    let db = Db::default();
    let (cache_a, cache_b) = (backend.cache(), backend.cache());
    let a = serve(instance(&cache_a, &db)).await;
    let b = serve(instance(&cache_b, &db)).await;
    let client = client();
    let fr = [("accept-language", "fr")];
    let en = [("accept-language", "en")];
    assert_eq!(
        fetch(&client, a, "GET", "/greeting", &fr).await.text(),
        "bonjour"
    );
    until_stored(&cache_a, 1).await;
    // B has the French variant, not an English one.
    let english = fetch(&client, b, "GET", "/greeting", &en).await;
    assert!(!english.is_hit(), "{}", english.cache_status());
    assert_eq!(english.text(), "hello");
    until_stored(&cache_b, 1).await;
    for (addr, lang, text) in [(a, &en, "hello"), (b, &fr, "bonjour"), (a, &fr, "bonjour")] {
        let seen = fetch(&client, addr, "GET", "/greeting", lang).await;
        assert!(seen.is_hit(), "{lang:?}: {}", seen.cache_status());
        assert_eq!(seen.text(), text);
    }
}

async fn invalidate_request_reaches_the_shared_store(backend: &impl Backend) {
    let db = Db::default();
    let cache = backend.cache();
    let layer = CacheLayer::new(&cache).ttl(MIN);
    let app = Router::new()
        .route("/products/{id}", get(db_read))
        .with_state(db.clone())
        .layer(layer.clone());
    let addr = serve(behind_one_name(app)).await;
    let client = client();
    fetch(&client, addr, "GET", "/products/1", &[]).await;
    fetch(&client, addr, "GET", "/products/2", &[]).await;
    until_stored(&cache, 2).await;
    let (parts, ()) = http::Request::get("/products/1")
        .header(http::header::HOST, PUBLIC_NAME)
        .body(())
        .unwrap()
        .into_parts();
    assert!(layer.invalidate_request(&parts));
    // Sent in the background: wait until it is recorded.
    let start = Instant::now();
    while cache.stats().invalidations == 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fetch(&client, addr, "GET", "/products/1", &[])
        .await
        .is_hit());
    assert!(fetch(&client, addr, "GET", "/products/2", &[])
        .await
        .is_hit());
}

/// Each scenario on the in-process test double.
mod on_a_test_store {
    use super::*;

    #[tokio::test]
    async fn two_instances_share_entries_and_flushes() {
        super::two_instances_share_entries_and_flushes(&SharedStore::default()).await;
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_origin_call() {
        super::concurrent_misses_make_one_origin_call(&SharedStore::default()).await;
    }

    #[tokio::test]
    async fn a_store_that_fails_is_a_pass_through_until_it_comes_back() {
        let mut store = SharedStore::default();
        super::a_store_that_fails_is_a_pass_through_until_it_comes_back(&mut store).await;
        assert!(store.0.calls.load(Ordering::SeqCst) > 0);
    }

    #[tokio::test]
    async fn a_store_that_hangs_costs_no_more_than_the_timeout() {
        super::a_store_that_hangs_costs_no_more_than_the_timeout(&mut SharedStore::default()).await;
    }

    #[tokio::test]
    async fn variants_stay_apart_across_instances() {
        super::variants_stay_apart_across_instances(&SharedStore::default()).await;
    }

    #[tokio::test]
    async fn invalidate_request_reaches_the_shared_store() {
        let store = SharedStore::default();
        super::invalidate_request_reaches_the_shared_store(&store).await;
        assert!(!store.0.records.lock().unwrap().is_empty());
    }
}

/// Each scenario on `RedisStore`, against a `redis-server` of the test's
/// own; plus the fleet-only ones: a kill mid-run, and the near cache.
#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use redis_server::RedisServer;
    use tower_response_cache::store::RedisStore;

    struct Redis {
        server: RedisServer,
        near: bool,
    }

    impl Redis {
        fn start() -> Self {
            Redis {
                server: RedisServer::start(),
                near: false,
            }
        }
    }

    impl Backend for Redis {
        fn cache(&self) -> Cache {
            let mut store = RedisStore::builder(self.server.url())
                .command_timeout(Duration::from_millis(200))
                .cooldown(Duration::from_millis(200));
            if self.near {
                store = store.near_cache(8 << 20);
            }
            Cache::builder().store(store.build().unwrap()).build()
        }
        fn fail(&mut self) {
            self.server.kill();
        }
        fn hang(&mut self) {
            self.server.pause();
        }
        fn mend(&mut self) {
            if self.server.is_running() {
                self.server.resume();
            } else {
                self.server.restart();
            }
        }
    }

    #[tokio::test]
    async fn two_instances_share_entries_and_flushes() {
        super::two_instances_share_entries_and_flushes(&Redis::start()).await;
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_origin_call() {
        super::concurrent_misses_make_one_origin_call(&Redis::start()).await;
    }

    #[tokio::test]
    async fn a_store_that_fails_is_a_pass_through_until_it_comes_back() {
        super::a_store_that_fails_is_a_pass_through_until_it_comes_back(&mut Redis::start()).await;
    }

    #[tokio::test]
    async fn a_store_that_hangs_costs_no_more_than_the_timeout() {
        super::a_store_that_hangs_costs_no_more_than_the_timeout(&mut Redis::start()).await;
    }

    #[tokio::test]
    async fn variants_stay_apart_across_instances() {
        super::variants_stay_apart_across_instances(&Redis::start()).await;
    }

    #[tokio::test]
    async fn invalidate_request_reaches_the_shared_store() {
        super::invalidate_request_reaches_the_shared_store(&Redis::start()).await;
    }

    /// Two instances under steady reads and writes while `redis-server` is
    /// killed and restarted: every request is answered correctly, and
    /// caching resumes afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_and_restarted_mid_run_fails_no_request() {
        let mut redis = Redis::start();
        let db = Db::default();
        let a = serve(instance(&redis.cache(), &db)).await;
        let b = serve(instance(&redis.cache(), &db)).await;
        let client = client();
        let mut answered = 0;
        for round in 0..60u32 {
            if round == 20 {
                redis.fail();
            }
            if round == 40 {
                redis.mend();
            }
            let addr = [a, b][round as usize % 2];
            if round % 10 == 5 {
                let write = fetch(&client, addr, "PUT", "/products/3", &[]).await;
                assert_eq!(write.status, StatusCode::NO_CONTENT, "round {round}");
            }
            let read = fetch(&client, addr, "GET", "/products/3", &[]).await;
            assert_eq!(read.status, StatusCode::OK, "round {round}");
            // Never older than the last write.
            let version = db.version.load(Ordering::SeqCst);
            assert_eq!(read.text(), format!("v{version}"), "round {round}");
            answered += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(answered, 60);
        until_hit(&client, a, "/products/3").await;
    }

    /// With near caches, a write on A reaches B's in-process tier by pub/sub:
    /// B may answer from its tier for that long (the staleness window),
    /// never longer. Measured here; the window is printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn near_caches_converge_within_the_pubsub_window() {
        let mut redis = Redis::start();
        redis.near = true;
        let db = Db::default();
        let (cache_a, cache_b) = (redis.cache(), redis.cache());
        let a = serve(instance(&cache_a, &db)).await;
        let b = serve(instance(&cache_b, &db)).await;
        let client = client();
        let mut windows = Vec::new();
        for id in 0..5 {
            let path = format!("/products/{id}");
            fetch(&client, a, "GET", &path, &[]).await;
            until_hit(&client, b, &path).await;
            until_hit(&client, a, &path).await;
            let write = fetch(&client, a, "PUT", &path, &[]).await;
            assert_eq!(write.status, StatusCode::NO_CONTENT);
            // The writer's own instance is fresh at once.
            let own = fetch(&client, a, "GET", &path, &[]).await;
            assert!(!own.is_hit(), "{}", own.cache_status());
            let start = Instant::now();
            loop {
                let seen = fetch(&client, b, "GET", &path, &[]).await;
                let version = db.version.load(Ordering::SeqCst);
                if seen.text() == format!("v{version}") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "B's near cache still stale after 2 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            windows.push(start.elapsed());
        }
        windows.sort();
        println!(
            "near cache staleness window: median {:?}, max {:?}",
            windows[windows.len() / 2],
            windows[windows.len() - 1]
        );
    }
}

/// One instance of a per-user route on the shared store, with its secret.
fn per_user(store: &SharedStore, secret: Option<&str>, reads: &Hits) -> (Cache, Router) {
    let mut builder = Cache::builder().store(store.clone());
    if let Some(secret) = secret {
        builder = builder.scope_secret(secret);
    }
    let cache = builder.build();
    let reads = reads.clone();
    let app = Router::new()
        .route(
            "/me",
            get(move |headers: http::HeaderMap| {
                reads.bump();
                async move { format!("for {:?}", headers.get("authorization")) }
            }),
        )
        .layer(CacheLayer::new(&cache).route(
            "/me",
            RoutePolicy::ttl(MIN).scope(|parts| {
                let auth = parts.headers.get("authorization")?;
                auth.to_str().ok().map(str::to_owned)
            }),
        ));
    (cache, app)
}

#[tokio::test]
async fn per_user_entries_are_shared_by_instances_with_one_scope_secret() {
    let store = SharedStore::default();
    let reads = Hits::default();
    let (a_cache, a) = per_user(&store, Some("fleet secret"), &reads);
    let (_, b) = per_user(&store, Some("fleet secret"), &reads);
    let (_, c) = per_user(&store, Some("another secret"), &reads);
    let (_, d) = per_user(&store, None, &reads);
    let alice = || get_with("/me", "authorization", "Bearer alice");
    assert!(!send(&a, alice()).await.is_hit());
    until_stored(&a_cache, 1).await;
    let on_b = send(&b, alice()).await;
    assert!(on_b.is_hit(), "the same secret: {}", on_b.cache_status());
    assert!(on_b.text().contains("alice"));
    // Another secret, or none (a random one), keys the user elsewhere.
    assert!(!send(&c, alice()).await.is_hit());
    assert!(!send(&d, alice()).await.is_hit());
    // Nobody is ever answered for someone else.
    let bob = send(&b, get_with("/me", "authorization", "Bearer bob")).await;
    assert!(!bob.is_hit() && bob.text().contains("bob"));
    // The store's keys hold a hash of the scope, never the credential.
    let keys: Vec<String> = store.0.entries.lock().unwrap().keys().cloned().collect();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(!key.contains("alice") && !key.contains("bob"), "{key}");
    }
    assert_eq!(reads.get(), 4);
}
