//! InvalidateOn and programmatic invalidation, through real axum routers.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use support::*;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, Target};

/// The records the default cache's index keeps within its eighth of
/// `max_bytes` (see `src/invalidate/index.rs`).
const MAX_RECORDS: usize = 114_688;

const MIN: Duration = Duration::from_secs(60);

fn catalogue(cache: &Cache, inv: impl FnOnce(InvalidateOn) -> InvalidateOn) -> (Router, Db) {
    let db = Db::default();
    let app = Router::new()
        .route("/products", get(db_read).post(db_write))
        .route(
            "/products/{id}",
            get(db_read).put(db_write).delete(db_write),
        )
        .route("/products-archive", get(db_read))
        .route("/dashboard", get(db_read))
        .route("/orders", post(db_write))
        .route("/fail", post(|| async { StatusCode::UNPROCESSABLE_ENTITY }))
        .route(
            "/boom",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(inv(InvalidateOn::new(cache)))
                .layer(CacheLayer::new(cache).ttl(MIN).route(
                    "/dashboard",
                    RoutePolicy::ttl(MIN).tags(["dashboard", "order.created"]),
                )),
        );
    (app, db)
}

async fn warm(app: &Router, paths: &[&str]) {
    for p in paths {
        send(app, read(p)).await;
        assert!(send(app, read(p)).await.is_hit(), "{p} should be cached");
    }
}

async fn hit(app: &Router, path: &str) -> bool {
    send(app, read(path)).await.is_hit()
}

#[tokio::test]
async fn prefixes_match_whole_segments() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| i);
    let all = [
        "/products",
        "/products/42",
        "/products?page=2",
        "/products-archive",
        "/dashboard",
    ];
    warm(&app, &all).await;
    // No rule: POST /products flushes its own path as a prefix.
    let r = send(&app, method("POST", "/products")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!hit(&app, "/products").await);
    assert!(!hit(&app, "/products/42").await);
    assert!(!hit(&app, "/products?page=2").await);
    assert!(
        hit(&app, "/products-archive").await,
        "a prefix never covers a sibling with a longer name"
    );
    assert!(hit(&app, "/dashboard").await);
    cache.invalidate_prefix("/");
    assert!(!hit(&app, "/products-archive").await);
    assert!(!hit(&app, "/dashboard").await);
    let stats = cache.stats();
    assert_eq!(stats.invalidations, 2);
    assert!(stats.totals.stale_dropped >= 5, "{stats:?}");
}

#[tokio::test]
async fn a_prefix_covers_every_scope() {
    let cache = Cache::builder().build();
    let version = Arc::new(AtomicU64::new(0));
    let v = version.clone();
    let app = Router::new()
        .route(
            "/me/orders",
            get(move |headers: http::HeaderMap| {
                let v = v.clone();
                async move { format!("{:?} v{}", headers["x-user"], v.load(Ordering::SeqCst)) }
            }),
        )
        .layer(CacheLayer::new(&cache).route(
            "/me/orders",
            RoutePolicy::ttl(MIN).scope(|p| {
                p.headers
                    .get("x-user")
                    .map(|v| v.to_str().unwrap().to_owned())
            }),
        ));
    for user in ["a", "b"] {
        send(&app, get_with("/me/orders", "x-user", user)).await;
        assert!(send(&app, get_with("/me/orders", "x-user", user))
            .await
            .is_hit());
    }
    version.store(1, Ordering::SeqCst);
    cache.invalidate_prefix("/me");
    for user in ["a", "b"] {
        let r = send(&app, get_with("/me/orders", "x-user", user)).await;
        assert!(
            !r.is_hit() && r.text().ends_with("v1"),
            "{user}: {}",
            r.text()
        );
    }
}

#[tokio::test]
async fn rules_fill_params_and_flush_tags() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| {
        i.rule("/products/{id}", ["/products/{id}"])
            .rule("/orders", [Target::tag("order.created")])
    });
    warm(
        &app,
        &["/products", "/products/1", "/products/2", "/dashboard"],
    )
    .await;
    send(&app, method("PUT", "/products/1")).await;
    assert!(!hit(&app, "/products/1").await);
    assert!(hit(&app, "/products").await, "the rule names only the item");
    assert!(
        hit(&app, "/products/2").await,
        "only the written item is flushed"
    );
    assert!(hit(&app, "/dashboard").await);
    // Tags as events: a write on /orders flushes every read tagged order.created.
    send(&app, method("POST", "/orders")).await;
    assert!(!hit(&app, "/dashboard").await);
    // ... and so does a background job.
    assert!(hit(&app, "/dashboard").await);
    cache.invalidate_tag("order.created");
    assert!(!hit(&app, "/dashboard").await);
}

#[tokio::test]
async fn location_of_a_created_resource_is_flushed() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<u32>| async move { format!("item {id}") }),
        )
        .route(
            "/other/{id}",
            get(|Path(id): Path<u32>| async move { format!("other {id}") }),
        )
        .route(
            "/create",
            post(|| async {
                (
                    StatusCode::CREATED,
                    [
                        ("location", "/items/7"),
                        ("content-location", "http://elsewhere.test/other/1"),
                    ],
                )
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(&cache))
                .layer(CacheLayer::new(&cache).ttl(MIN)),
        );
    warm(&app, &["/items/7", "/items/8", "/other/1"]).await;
    send(&app, method("POST", "/create")).await;
    assert!(!hit(&app, "/items/7").await);
    assert!(hit(&app, "/items/8").await);
    assert!(
        hit(&app, "/other/1").await,
        "another origin's Content-Location is ignored"
    );
}

#[tokio::test]
async fn failed_mutations_flush_nothing() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| {
        i.rule("/fail", ["/products"]).rule("/boom", ["/products"])
    });
    warm(&app, &["/products"]).await;
    assert_eq!(
        send(&app, method("POST", "/fail")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(&app, method("POST", "/boom")).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(hit(&app, "/products").await);
    assert_eq!(cache.stats().invalidations, 0);

    // An inner service that fails outright flushes nothing either.
    let failing = tower::service_fn(|_req: http::Request<axum::body::Body>| async {
        Err::<http::Response<axum::body::Body>, _>(std::io::Error::other("db down"))
    });
    let mut svc = tower::Layer::layer(&InvalidateOn::new(&cache), failing);
    let err = tower::ServiceExt::oneshot(&mut svc, method("DELETE", "/products")).await;
    assert!(err.is_err());
    assert!(hit(&app, "/products").await);
    // A custom success predicate.
    let (app2, _) = catalogue(&cache, |i| {
        i.rule("/fail", ["/products"])
            .when(|s| s.is_success() || s.as_u16() == 422)
    });
    send(&app2, method("POST", "/fail")).await;
    assert!(!hit(&app, "/products").await);
}

#[tokio::test]
async fn methods_can_be_chosen() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| i.methods([http::Method::DELETE]));
    warm(&app, &["/products/1"]).await;
    send(&app, method("PUT", "/products/1")).await;
    assert!(hit(&app, "/products/1").await);
    send(&app, method("DELETE", "/products/1")).await;
    assert!(!hit(&app, "/products/1").await);
}

#[tokio::test]
async fn exact_request_flush() {
    let cache = Cache::builder().build();
    let layer = CacheLayer::new(&cache).route(
        "/products",
        RoutePolicy::ttl(MIN).ignore_query_params(["utm_*"]),
    );
    let db = Db::default();
    let app = Router::new()
        .route("/products", get(db_read))
        .with_state(db)
        .layer(layer.clone());
    warm(&app, &["/products?page=1", "/products?page=2"]).await;
    let (parts, ()) = http::Request::get("/products?utm_x=1&page=1")
        .body(())
        .unwrap()
        .into_parts();
    assert!(layer.invalidate_request(&parts));
    assert!(!hit(&app, "/products?page=1").await);
    assert!(hit(&app, "/products?page=2").await);
    let (post, ()) = http::Request::post("/products")
        .body(())
        .unwrap()
        .into_parts();
    assert!(!layer.invalidate_request(&post));
    let (unmatched, ()) = http::Request::get("/nothing")
        .body(())
        .unwrap()
        .into_parts();
    assert!(!layer.invalidate_request(&unmatched));
}

/// The race rule: a GET whose read began before a write is not stored in a
/// way that survives that write's invalidation, even though it is inserted
/// after it.
#[tokio::test]
async fn a_read_begun_before_an_invalidation_is_never_served_after_it() {
    let cache = Cache::builder().build();
    let version = Arc::new(AtomicU64::new(1));
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (v, g, e) = (version.clone(), gate.clone(), entered.clone());
    let v2 = version.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let (v, g, e) = (v.clone(), g.clone(), e.clone());
                async move {
                    let data = format!("v{}", v.load(Ordering::SeqCst)); // read the data...
                    e.notify_one();
                    g.notified().await; // ... then stall before answering
                    data
                }
            })
            .put(move || {
                let v = v2.clone();
                async move {
                    v.fetch_add(1, Ordering::SeqCst);
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(&cache))
                .layer(CacheLayer::new(&cache).ttl(MIN)),
        );
    let app2 = app.clone();
    let stale_read = tokio::spawn(async move { send(&app2, read("/slow")).await });
    entered.notified().await;
    let w = send(&app, method("PUT", "/slow")).await;
    assert_eq!(w.status, StatusCode::NO_CONTENT);
    gate.notify_one();
    let stale = stale_read.await.unwrap();
    assert_eq!(stale.text(), "v1", "the slow read saw the old data");
    // The old response was inserted after the invalidation; it must not be served.
    let app3 = app.clone();
    let next = tokio::spawn(async move { send(&app3, read("/slow")).await });
    entered.notified().await;
    gate.notify_one();
    let next = next.await.unwrap();
    assert_eq!(next.text(), "v2");
    assert!(!next.is_hit());
}

/// Read-your-writes under load: readers hammer the route on a multi-thread
/// runtime while writes happen; a read that starts after a write was
/// acknowledged never shows data older than that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_under_concurrent_readers() {
    let cache = Cache::builder().build();
    let (app, db) = catalogue(&cache, |i| i.rule("/products/{id}", ["/products"]));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    // One bound for readers and writer alike, so that neither waits for
    // the other once it has passed (a busy machine makes the run slow).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut readers = Vec::new();
    for _ in 0..6 {
        let (app, ack, stop, reads) = (
            app.clone(),
            acknowledged.clone(),
            stop.clone(),
            reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut checked = 0u64;
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                let floor = ack.load(Ordering::SeqCst);
                let r = send(&app, read("/products?page=1")).await;
                let seen: u64 = r.text().trim_start_matches('v').parse().unwrap();
                assert!(
                    seen >= floor,
                    "read started after write {floor} was acknowledged but saw v{seen}"
                );
                checked += 1;
                reads.fetch_add(1, Ordering::SeqCst);
                // A hit is ready at once, with no I/O to spend the task's
                // budget: without a yield, readers would keep every worker
                // busy and the timer the writer sleeps on would not be
                // driven.
                tokio::task::yield_now().await;
            }
            checked
        }));
    }
    let mut writes = 0u64;
    while writes < 200 && tokio::time::Instant::now() < deadline {
        let r = send(&app, method("PUT", "/products/1")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        acknowledged.store(db.version.load(Ordering::SeqCst), Ordering::SeqCst);
        writes += 1;
        // Let the readers run a few reads between writes.
        let target = reads.load(Ordering::SeqCst) + 6;
        while reads.load(Ordering::SeqCst) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(writes >= 20, "only {writes} writes in the time allowed");
    assert!(
        total > writes,
        "readers ran {total} reads for {writes} writes"
    );
    let stats = cache.stats();
    assert!(
        stats.totals.hits > 0,
        "the route must really be cached between writes: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_index_stays_bounded() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| i);
    send(&app, read("/products")).await; // an entry with a 60 s lifetime
    warm(&app, &["/products/1"]).await; // born before the flood
    for i in 0..1_000_000u32 {
        cache.invalidate_prefix(&format!("/p/{i}"));
        // Bounded at every step, however young the records are.
        if i % 50_000 == 0 {
            assert!(cache.stats().index_records as usize <= MAX_RECORDS);
        }
    }
    let records = cache.stats().index_records;
    assert_eq!(records as usize, MAX_RECORDS);
    // Records dropped early flush conservatively: older entries miss.
    assert!(!hit(&app, "/products/1").await);
    // Nothing else is pruned before the longest lifetime has passed.
    tokio::time::advance(Duration::from_secs(30)).await;
    cache.invalidate_prefix("/tick");
    assert!(cache.stats().index_records as usize > MAX_RECORDS - 10);
    tokio::time::advance(Duration::from_secs(31)).await;
    // Each call prunes a bounded batch; a bounded number of calls empties it.
    for _ in 0..300 {
        cache.invalidate_prefix("/tick");
        if cache.stats().index_records <= 1 {
            break;
        }
    }
    assert!(
        cache.stats().index_records <= 1,
        "{}",
        cache.stats().index_records
    );
    // Correctness survives pruning: fresh entries are still flushed.
    warm(&app, &["/products/9"]).await;
    cache.invalidate_prefix("/products");
    assert!(!hit(&app, "/products/9").await);
}

#[tokio::test]
async fn invalidation_is_lazy_and_counted() {
    let cache = Cache::builder().build();
    let (app, _) = catalogue(&cache, |i| i);
    for i in 0..500 {
        send(&app, read(&format!("/products/{i}"))).await;
    }
    let before = cache.stats();
    cache.invalidate_prefix("/products");
    let after = cache.stats();
    assert_eq!(after.entries, before.entries, "invalidation scans nothing");
    assert_eq!(after.invalidations, 1);
    assert!(!hit(&app, "/products/3").await);
    let stats = cache.stats();
    assert_eq!(stats.totals.stale_dropped, 1);
    // The dropped entry was replaced by the fresh one; the others wait.
    assert!(stats.routes["*"].stale_dropped == 1);
    cache.invalidate_all();
    assert!(!hit(&app, "/products/3").await);
}
