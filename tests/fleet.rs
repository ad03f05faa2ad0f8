//! A cache on a shared network store, through real axum servers on
//! 127.0.0.1: two instances sharing one store see each other's entries and
//! flushes, and a store that fails or hangs turns the cache into a
//! pass-through. The store here is a test double implementing the public
//! `Store` trait (the Redis store's own tests are in `redis.rs`).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use support::*;
use tower::ServiceBuilder;
use tower_response_cache::store::{Entry, Lookup, Store, StoreError};
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
            return Err(StoreError("connection refused".into()));
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

    fn len(&self) -> usize {
        self.0.entries.lock().unwrap().len()
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

/// The data behind every instance: a version bumped by each write.
#[derive(Clone, Default)]
struct Db {
    version: Arc<AtomicU64>,
    reads: Hits,
}

async fn db_read(State(db): State<Db>) -> String {
    db.reads.bump();
    format!("v{}", db.version.load(Ordering::SeqCst))
}

async fn db_write(State(db): State<Db>) -> StatusCode {
    db.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// One instance of the service: its own `Cache`, on the shared store.
fn instance(cache: &Cache, db: &Db) -> Router {
    Router::new()
        .route("/products", get(db_read).post(db_write))
        .route("/products/{id}", get(db_read).put(db_write))
        .route("/dashboard", get(db_read))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new().layer(InvalidateOn::new(cache)).layer(
                CacheLayer::new(cache)
                    .ttl(MIN)
                    .route("/dashboard", RoutePolicy::ttl(MIN).tags(["dashboard"])),
            ),
        )
}

fn cache_on(store: &SharedStore) -> Cache {
    Cache::builder()
        .store(store.clone())
        .store_timeout(Duration::from_millis(200))
        .build()
}

/// A stored entry lands in the background: wait (bounded) until the store
/// holds `n` entries.
async fn until_stored(store: &SharedStore, n: usize) {
    let start = Instant::now();
    while store.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the store never received entry {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn two_instances_share_entries_and_flushes() {
    let store = SharedStore::default();
    let db = Db::default();
    let a = serve(instance(&cache_on(&store), &db)).await;
    let b = serve(instance(&cache_on(&store), &db)).await;
    let client = client();

    let first = fetch(&client, a, "GET", "/products/7", &[]).await;
    assert!(first.cache_status().contains("fwd=miss; stored"));
    until_stored(&store, 1).await;
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

    // A tag flushed through the API on B holds on A.
    fetch(&client, a, "GET", "/dashboard", &[]).await;
    until_stored(&store, 2).await;
    assert!(fetch(&client, a, "GET", "/dashboard", &[]).await.is_hit());
    let other = cache_on(&store);
    other.flush(&[Target::tag("dashboard")]).await.unwrap();
    let flushed = fetch(&client, a, "GET", "/dashboard", &[]).await;
    assert!(!flushed.is_hit(), "{}", flushed.cache_status());
    assert_eq!(other.stats().invalidations, 1);
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_call() {
    let store = SharedStore::default();
    let db = Db::default();
    let app = instance(&cache_on(&store), &db);
    let addr = serve(app).await;
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

#[tokio::test]
async fn a_store_that_fails_is_a_pass_through_until_it_comes_back() {
    let store = SharedStore::default();
    let db = Db::default();
    let cache = cache_on(&store);
    let app = instance(&cache, &db);
    let addr = serve(app).await;
    let client = client();

    store.0.down.store(true, Ordering::SeqCst);
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
    store.0.down.store(false, Ordering::SeqCst);
    let miss = fetch(&client, addr, "GET", "/products", &[]).await;
    assert!(miss.cache_status().contains("fwd=miss; stored"));
    until_stored(&store, 1).await;
    let hit = fetch(&client, addr, "GET", "/products", &[]).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.text(), "v1");
}

#[tokio::test]
async fn a_store_that_hangs_costs_no_more_than_the_timeout() {
    let store = SharedStore::default();
    let db = Db::default();
    let cache = cache_on(&store);
    let addr = serve(instance(&cache, &db)).await;
    let client = client();
    store.0.hang.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let seen = fetch(&client, addr, "GET", "/products", &[]).await;
    let took = start.elapsed();
    assert_eq!(seen.text(), "v0");
    assert!(seen.cache_status().contains("detail=store-error"));
    // The store timeout is 200 ms; allow for a loaded machine.
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
}

#[tokio::test]
async fn invalidate_request_reaches_the_shared_store() {
    let store = SharedStore::default();
    let db = Db::default();
    let cache = cache_on(&store);
    let layer = CacheLayer::new(&cache).ttl(MIN);
    let app = Router::new()
        .route("/products/{id}", get(db_read))
        .with_state(db.clone())
        .layer(layer.clone());
    let addr = serve(app).await;
    let client = client();
    fetch(&client, addr, "GET", "/products/1", &[]).await;
    fetch(&client, addr, "GET", "/products/2", &[]).await;
    until_stored(&store, 2).await;
    let (parts, ()) = http::Request::get("/products/1")
        .body(())
        .unwrap()
        .into_parts();
    assert!(layer.invalidate_request(&parts));
    // Sent in the background: wait until it is recorded.
    let start = Instant::now();
    while store.0.records.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fetch(&client, addr, "GET", "/products/1", &[])
        .await
        .is_hit());
    assert!(fetch(&client, addr, "GET", "/products/2", &[])
        .await
        .is_hit());
    assert!(store.0.calls.load(Ordering::SeqCst) > 0);
}
