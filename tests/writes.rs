//! What a successful write flushes, probed as an unlucky client would: a
//! write whose body is still streaming when a read comes in, a write a rule
//! covers (its own path and `Location` still go), and the spellings of one
//! path. Through real axum routers and a hyper server.

mod support;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, Target};

const MIN: Duration = Duration::from_secs(60);

/// A write that reports its progress: it answers 200 at once, streams a
/// first line, then waits for `go` before it commits (bumps the version)
/// and ends its body.
#[derive(Clone)]
struct Import {
    db: Db,
    go: Arc<Semaphore>,
}

/// The import's body: "started", then, once let go, the commit and "done".
async fn run_import(State(import): State<Import>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"started\n")).await;
        let permit = import.go.acquire().await.expect("the semaphore stays open");
        permit.forget();
        import.db.version.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(Bytes::from_static(b"done\n")).await;
    });
    Body::new(Lines(rx))
}

/// A body of the lines an mpsc channel carries, ending when it closes.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(http_body::Frame::data(l))))
    }
}

fn importing(cache: &Cache) -> (Router, Import) {
    let import = Import {
        db: Db::default(),
        go: Arc::new(Semaphore::new(0)),
    };
    let reads = import.db.clone();
    let app = Router::new()
        .route(
            "/products",
            get(move || {
                let db = reads.clone();
                async move { db_read(State(db)).await }
            })
            .post(run_import),
        )
        .with_state(import.clone())
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(cache))
                .layer(CacheLayer::new(cache).route("/products", MIN)),
        );
    (app, import)
}

#[tokio::test]
async fn a_write_whose_body_streams_flushes_again_before_it_ends() {
    let cache = Cache::builder().build();
    let (app, import) = importing(&cache);
    let addr = serve(app).await;
    let client = client();
    assert_eq!(
        fetch(&client, addr, "GET", "/products", &[]).await.text(),
        "v0"
    );

    // The write's head arrives (the first flush), and its first line.
    let req = http::Request::post(format!("http://{addr}/products"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "started\n");

    // A read in between stores what it read: the data before the commit.
    let between = fetch(&client, addr, "GET", "/products", &[]).await;
    assert_eq!(between.text(), "v0");
    assert!(!between.is_hit());

    // The handler commits and ends its body; the writer reads it all.
    import.go.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "done\n");
    assert_eq!(import.db.version.load(Ordering::SeqCst), 1);

    // The writer holds its whole 2xx: its next read sees its write.
    let after = fetch(&client, addr, "GET", "/products", &[]).await;
    assert_eq!(after.text(), "v1", "{}", after.cache_status());
    // One write, one invalidation in the statistics.
    assert_eq!(cache.stats().invalidations, 1);
}

#[tokio::test]
async fn a_write_body_dropped_before_its_end_still_flushes() {
    let cache = Cache::builder().build();
    let (app, import) = importing(&cache);
    assert_eq!(send(&app, read("/products")).await.text(), "v0");
    let response = app
        .clone()
        .oneshot(method("POST", "/products"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "started\n");
    assert_eq!(send(&app, read("/products")).await.text(), "v0");
    import.go.add_permits(1);
    // Wait (bounded) for the commit, then go away without reading the end.
    for _ in 0..1000 {
        if import.db.version.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(import.db.version.load(Ordering::SeqCst), 1);
    drop(body);
    let after = send(&app, read("/products")).await;
    assert_eq!(after.text(), "v1", "{}", after.cache_status());
}

/// A catalogue of orders with a dashboard, whose write answers
/// `201 Location: /orders/1`.
fn orders(cache: &Cache, layer: impl FnOnce(InvalidateOn) -> InvalidateOn) -> (Router, Db) {
    let db = Db::default();
    let app = Router::new()
        .route("/orders", get(db_read).post(create_order))
        .route(
            "/orders/{id}",
            get(|State(db): State<Db>| async move {
                match db.version.load(Ordering::SeqCst) {
                    0 => (StatusCode::NOT_FOUND, "no such order".to_owned()),
                    v => (StatusCode::OK, format!("order, v{v}")),
                }
            }),
        )
        .route("/dashboard", get(db_read))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(layer(InvalidateOn::new(cache)))
                .layer(
                    CacheLayer::new(cache)
                        .route("/orders", MIN)
                        .route("/orders/{id}", MIN)
                        .route("/dashboard", RoutePolicy::ttl(MIN).tags(["dashboard"])),
                ),
        );
    (app, db)
}

async fn create_order(State(db): State<Db>) -> (StatusCode, [(&'static str, &'static str); 1]) {
    db.version.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, [("location", "/orders/1")])
}

#[tokio::test]
async fn a_rule_adds_to_what_a_write_flushes_and_never_removes_its_own_path() {
    let cache = Cache::builder().build();
    let (app, _db) = orders(&cache, |l| l.rule("/orders", [Target::tag("dashboard")]));
    let addr = serve(app).await;
    let client = client();
    let get = |path: &'static str| {
        let client = client.clone();
        async move { fetch(&client, addr, "GET", path, &[]).await }
    };
    for path in ["/orders", "/orders/1", "/dashboard"] {
        get(path).await;
        assert!(get(path).await.is_hit(), "{path} is cached");
    }
    assert_eq!(get("/orders/1").await.status, StatusCode::NOT_FOUND);

    let created = fetch(&client, addr, "POST", "/orders", &[]).await;
    assert_eq!(created.status, StatusCode::CREATED);
    // The rule's tag, the write's own path, and its Location.
    assert_eq!(get("/dashboard").await.text(), "v1");
    assert_eq!(get("/orders").await.text(), "v1");
    let one = get("/orders/1").await;
    assert_eq!(
        (one.status, one.text().as_str()),
        (StatusCode::OK, "order, v1")
    );
}

#[tokio::test]
async fn no_own_paths_leaves_a_rule_only_its_targets() {
    let cache = Cache::builder().build();
    let (app, _db) = orders(&cache, |l| {
        l.rule("/orders", [Target::tag("dashboard")]).no_own_paths()
    });
    send(&app, read("/orders")).await;
    send(&app, read("/dashboard")).await;
    send(&app, method("POST", "/orders")).await;
    assert!(!send(&app, read("/dashboard")).await.is_hit());
    assert!(send(&app, read("/orders")).await.is_hit(), "opted out");
}

/// A catalogue whose writes go through `InvalidateOn` with no rule: each
/// flushes its own path, in whatever spelling the client used.
fn spelled(cache: &Cache) -> (Router, Db) {
    let db = Db::default();
    let app = Router::new()
        .route("/products/{name}", get(db_read).put(db_write))
        .route("/files/{*path}", get(db_read).put(db_write))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(cache))
                .layer(CacheLayer::new(cache).ttl(MIN)),
        );
    (app, db)
}

#[tokio::test]
async fn every_spelling_of_a_path_is_flushed_by_a_write_on_any_other() {
    let cache = Cache::builder().build();
    let (app, _db) = spelled(&cache);
    let addr = serve(app).await;
    let client = client();
    // (stored under, written as)
    let cases = [
        ("/products/caf%C3%A9", "/products/caf%c3%a9"),
        ("/products/apple", "/products/%61pple"),
        ("/files/d1/readme", "/files/d1/./readme"),
        ("/files/d1/readme", "/files/d1/x/../readme"),
        ("/files/d2/readme", "/files/d2//readme"),
        ("/files/a/b", "/files/a%2Fb"),
    ];
    for (stored, written) in cases {
        let first = fetch(&client, addr, "GET", stored, &[]).await;
        let version = first.text();
        let hit = fetch(&client, addr, "GET", stored, &[]).await;
        assert!(hit.is_hit(), "{stored}: {}", hit.cache_status());
        let w = fetch(&client, addr, "PUT", written, &[]).await;
        assert_eq!(w.status, StatusCode::NO_CONTENT, "{written}");
        let after = fetch(&client, addr, "GET", stored, &[]).await;
        assert!(!after.is_hit(), "{written} left {stored} cached");
        assert_ne!(after.text(), version, "{written} then {stored}");
    }
}

#[tokio::test]
async fn a_path_in_another_spelling_is_served_by_the_origin_uncached() {
    let cache = Cache::builder().build();
    let (app, db) = spelled(&cache);
    for spelling in [
        "/products/caf%c3%a9",
        "/products/%61pple",
        "/files/d1/./readme",
        "/files/d2//readme",
        "/files/a%2Fb",
    ] {
        for _ in 0..2 {
            let seen = send(&app, read(spelling)).await;
            assert_eq!(seen.status, StatusCode::OK, "{spelling}");
            assert_eq!(
                seen.cache_status(),
                "tower-response-cache; fwd=bypass; detail=uri-not-canonical",
                "{spelling}"
            );
        }
    }
    assert_eq!(db.reads.get(), 10, "every one reached the origin");
    assert_eq!(cache.stats().entries, 0);
    // A flush from code names any spelling too.
    send(&app, read("/products/caf%C3%A9")).await;
    assert!(send(&app, read("/products/caf%C3%A9")).await.is_hit());
    cache.invalidate_prefix("/products/caf%c3%a9");
    assert!(!send(&app, read("/products/caf%C3%A9")).await.is_hit());
}
