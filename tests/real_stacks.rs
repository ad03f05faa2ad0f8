//! The layers in the stacks users build: nested routers (every placement of
//! `CacheLayer` and `InvalidateOn` around `nest`, `nest_service` and
//! `route_layer`), tower-http's compression and tracing on either side,
//! HEAD beside GET, scopes that hold credentials, and the admin router in
//! an app with state. Each through a real hyper server where the wire
//! matters.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use support::*;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, DEFAULT_STATUSES};

const MIN: Duration = Duration::from_secs(60);

fn post_to(uri: &str) -> Request<Body> {
    method("POST", uri)
}

#[tokio::test]
async fn nested_routers_sharing_a_cache_never_answer_for_each_other() {
    let cache = Cache::builder().build();
    let version = |body: &'static str| {
        Router::new()
            .route("/products", get(move || async move { body }))
            .layer(CacheLayer::new(&cache).route("/products", MIN))
    };
    let app = Router::new()
        .nest("/v1", version("v1 products"))
        .nest("/v2", version("v2 products"));
    let addr = serve(app).await;
    let client = client();
    for round in 0..2 {
        for (path, body) in [
            ("/v1/products", "v1 products"),
            ("/v2/products", "v2 products"),
        ] {
            let seen = fetch(&client, addr, "GET", path, &[]).await;
            assert_eq!(seen.text(), body, "{path}, round {round}");
            assert_eq!(
                seen.is_hit(),
                round == 1,
                "{path}, round {round}: {}",
                seen.cache_status()
            );
        }
    }
    // One entry each, under the path the client sent.
    assert_eq!(cache.stats().entries, 2);
}

/// How the layers stand around a router nested at `/api`.
#[derive(Debug, Clone, Copy)]
enum Placement {
    BothOutside,
    BothInside,
    InvalidateOutsideCacheInside,
    CacheOutsideInvalidateInside,
    NestService,
    RouteLayerInside,
}

fn catalogue<S: Clone + Send + Sync + 'static>(db: &Db) -> Router<S> {
    Router::new()
        .route("/products", get(db_read).post(db_write))
        .route("/products/{id}", get(db_read).put(db_write))
        .with_state(db.clone())
}

/// The rules as a router at `prefix` sees its paths.
fn cache_layer(cache: &Cache, prefix: &str) -> CacheLayer {
    CacheLayer::new(cache)
        .route(&format!("{prefix}/products"), MIN)
        .route(&format!("{prefix}/products/{{id}}"), MIN)
}

fn invalidate_on(cache: &Cache, prefix: &str) -> InvalidateOn {
    InvalidateOn::new(cache).rule(&format!("{prefix}/products/{{id}}"), ["/products"])
}

fn placed(placement: Placement, cache: &Cache, db: &Db) -> Router {
    match placement {
        Placement::BothOutside => Router::new().nest("/api", catalogue(db)).layer(
            ServiceBuilder::new()
                .layer(invalidate_on(cache, "/api").rule("/api/products/{id}", ["/api/products"]))
                .layer(cache_layer(cache, "/api")),
        ),
        Placement::BothInside => Router::new().nest(
            "/api",
            catalogue(db).layer(
                ServiceBuilder::new()
                    .layer(invalidate_on(cache, ""))
                    .layer(cache_layer(cache, "")),
            ),
        ),
        Placement::InvalidateOutsideCacheInside => Router::new()
            .nest("/api", catalogue(db).layer(cache_layer(cache, "")))
            .layer(InvalidateOn::new(cache).rule("/api/products/{id}", ["/api/products"])),
        Placement::CacheOutsideInvalidateInside => Router::new()
            .nest("/api", catalogue(db).layer(invalidate_on(cache, "")))
            .layer(cache_layer(cache, "/api")),
        Placement::NestService => Router::new().nest_service(
            "/api",
            catalogue(db).layer(
                ServiceBuilder::new()
                    .layer(invalidate_on(cache, ""))
                    .layer(cache_layer(cache, "")),
            ),
        ),
        Placement::RouteLayerInside => Router::new().nest(
            "/api",
            Router::new()
                .route(
                    "/products",
                    get(db_read)
                        .post(db_write)
                        .route_layer(CacheLayer::new(cache).ttl(MIN)),
                )
                .route(
                    "/products/{id}",
                    get(db_read)
                        .put(db_write)
                        .route_layer(CacheLayer::new(cache).ttl(MIN)),
                )
                .with_state(db.clone())
                .layer(invalidate_on(cache, "")),
        ),
    }
}

#[tokio::test]
async fn every_placement_keys_and_flushes_on_the_clients_path() {
    use Placement::*;
    for placement in [
        BothOutside,
        BothInside,
        InvalidateOutsideCacheInside,
        CacheOutsideInvalidateInside,
        NestService,
        RouteLayerInside,
    ] {
        let cache = Cache::builder().build();
        let db = Db::default();
        let app = placed(placement, &cache, &db);
        let addr = serve(app).await;
        let client = client();
        let get = |path: &'static str| {
            let client = client.clone();
            async move { fetch(&client, addr, "GET", path, &[]).await }
        };
        assert_eq!(get("/api/products").await.text(), "v0", "{placement:?}");
        assert!(get("/api/products").await.is_hit(), "{placement:?}");
        assert!(!get("/api/products/1").await.is_hit(), "{placement:?}");
        assert!(get("/api/products/1").await.is_hit(), "{placement:?}");

        // A write on the list flushes the list (its own path).
        let w = fetch(&client, addr, "POST", "/api/products", &[]).await;
        assert_eq!(w.status, StatusCode::NO_CONTENT, "{placement:?}");
        let after = get("/api/products").await;
        assert_eq!(
            after.text(),
            "v1",
            "{placement:?}: {}",
            after.cache_status()
        );
        assert!(!after.is_hit(), "{placement:?}");

        // A write on one item flushes the list too (the rule), and the item.
        assert!(get("/api/products").await.is_hit(), "{placement:?}");
        let w = fetch(&client, addr, "PUT", "/api/products/1", &[]).await;
        assert_eq!(w.status, StatusCode::NO_CONTENT, "{placement:?}");
        assert_eq!(get("/api/products").await.text(), "v2", "{placement:?}");
        assert_eq!(get("/api/products/1").await.text(), "v2", "{placement:?}");

        // A programmatic flush names the path the client sees.
        assert!(get("/api/products/1").await.is_hit(), "{placement:?}");
        cache.invalidate_prefix("/api/products");
        assert!(!get("/api/products/1").await.is_hit(), "{placement:?}");
        // ... and a flush of the path the nested router sees flushes nothing
        // of this cache's (no entry is keyed without its prefix).
        assert!(get("/api/products/1").await.is_hit(), "{placement:?}");
        cache.invalidate_prefix("/products");
        assert!(get("/api/products/1").await.is_hit(), "{placement:?}");
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_admin_router_flushes_and_lists_what_the_client_sees() {
    #[derive(Clone)]
    struct AppState {
        #[allow(dead_code)]
        name: &'static str,
    }
    let cache = Cache::builder().build();
    let db = Db::default();
    // An app with state of its own: the admin router nests into it.
    let app: Router = Router::<AppState>::new()
        .route("/whoami", get(|| async { "app" }))
        .nest("/api", catalogue(&db).layer(cache_layer(&cache, "")))
        .nest("/admin/cache", cache.admin_router())
        .with_state(AppState { name: "app" });
    let addr = serve(app).await;
    let client = client();
    fetch(&client, addr, "GET", "/api/products", &[]).await;
    let listing = fetch(&client, addr, "GET", "/admin/cache/entries", &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
    assert_eq!(json["total"], 1, "{json}");
    let key = json["entries"][0]["key"].as_str().unwrap_or_default();
    assert!(key.starts_with("/api/products\nhost:"), "{json}");
    assert_eq!(json["entries"][0]["path"], "/api/products", "{json}");

    let flush = Request::post(format!("http://{addr}/admin/cache/invalidate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"prefixes": ["/api/products"]}"#,
        )))
        .unwrap();
    let full_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
    let answer = full_client.request(flush).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let again = fetch(&client, addr, "GET", "/api/products", &[]).await;
    assert!(!again.is_hit(), "{}", again.cache_status());
}

/// A handler with no validator of its own, long enough to be compressed.
async fn document() -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain")],
        "all work and no play ".repeat(200),
    )
}

#[tokio::test]
async fn a_computed_validator_is_weak_so_compression_outside_cannot_make_it_lie() {
    let cache = Cache::builder().build();
    // Compression outside the cache: every hit is compressed again.
    let app = Router::new()
        .route("/doc", get(document))
        .layer(CacheLayer::new(&cache).ttl(MIN))
        .layer(CompressionLayer::new());
    let addr = serve(app).await;
    let client = client();
    let gzip = [("accept-encoding", "gzip")];
    fetch(&client, addr, "GET", "/doc", &gzip).await;
    let hit = fetch(&client, addr, "GET", "/doc", &gzip).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    let etag = hit.header("etag").expect("a computed validator").to_owned();
    assert!(
        etag.starts_with("W/\""),
        "a validator on other bytes is weak: {etag}"
    );
    // Weak validators still answer If-None-Match, compressed or not.
    for encoding in ["gzip", "identity"] {
        let nm = fetch(
            &client,
            addr,
            "GET",
            "/doc",
            &[("accept-encoding", encoding), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(nm.status, StatusCode::NOT_MODIFIED, "{encoding}");
    }
}

#[tokio::test]
async fn compression_inside_the_cache_stores_each_encoding_once() {
    let cache = Cache::builder().build();
    let calls = Hits::default();
    let counted = calls.clone();
    // Compression next to the handlers: the cache keeps the compressed
    // bytes, one entry per Accept-Encoding (the layer adds Vary).
    let app = Router::new()
        .route(
            "/doc",
            get(move || {
                counted.bump();
                document()
            }),
        )
        .layer(CompressionLayer::new())
        .layer(CacheLayer::new(&cache).ttl(MIN));
    let addr = serve(app).await;
    let client = client();
    for encoding in ["gzip", "identity", "gzip", "identity"] {
        fetch(
            &client,
            addr,
            "GET",
            "/doc",
            &[("accept-encoding", encoding)],
        )
        .await;
    }
    assert_eq!(calls.get(), 2, "one origin call per encoding");
    let gz = fetch(&client, addr, "GET", "/doc", &[("accept-encoding", "gzip")]).await;
    assert!(gz.is_hit());
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < 1000, "the stored bytes are compressed");
    assert_eq!(
        cache.stats().entries,
        2,
        "two variants; the marker is not counted"
    );
}

#[tokio::test]
async fn a_head_hit_carries_what_a_get_hit_carries() {
    for compressed in [false, true] {
        head_like_get(compressed).await;
    }
}

async fn head_like_get(compressed: bool) {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [
                        ("content-type", "text/html"),
                        ("vary", "accept-language"),
                        ("x-build", "42"),
                    ],
                    "<p>hello</p>",
                )
            }),
        )
        .route("/plain", get(|| async { "plain text ".repeat(100) }))
        .layer(CacheLayer::new(&cache).ttl(MIN));
    // Compression outside the cache compresses hits as they leave.
    let app = if compressed {
        app.layer(CompressionLayer::new())
    } else {
        app
    };
    let addr = serve(app).await;
    let client = client();
    let gzip: &[(&str, &str)] = if compressed {
        &[("accept-encoding", "gzip")]
    } else {
        &[]
    };
    for path in ["/page", "/plain"] {
        fetch(&client, addr, "GET", path, gzip).await;
        let get = fetch(&client, addr, "GET", path, gzip).await;
        let head = fetch(&client, addr, "HEAD", path, gzip).await;
        let path = format!("{path} (compressed: {compressed})");
        assert!(get.is_hit() && head.is_hit(), "{path}");
        assert!(head.body.is_empty());
        let names = |seen: &Seen| {
            let mut names: Vec<String> = seen
                .headers
                .keys()
                .map(|n| n.as_str().to_owned())
                // The date, and how a body is framed on this connection
                // (a HEAD has none), are not the response's.
                .filter(|n| n != "date" && n != "transfer-encoding")
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&head), names(&get), "{path}");
        for name in ["content-length", "content-type", "vary", "etag", "age"] {
            assert_eq!(head.header(name), get.header(name), "{path}: {name}");
        }
        if let Some(length) = get.header("content-length") {
            assert_eq!(length, get.body.len().to_string(), "{path}");
        }
    }
}

#[tokio::test]
async fn entries_count_responses_not_vary_markers() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/greeting",
            get(|| async { ([("vary", "accept-language")], "hello") }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    for language in ["en", "fr"] {
        send(&app, get_with("/greeting", "accept-language", language)).await;
    }
    let stats = cache.stats();
    assert_eq!(stats.entries, 2, "two variants stored");
    assert!(stats.bytes > 0);
}

#[tokio::test]
async fn the_default_statuses_can_be_named() {
    let cache = Cache::builder().build();
    let calls = Hits::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/gone",
            get(move || {
                counted.bump();
                async { StatusCode::GONE }
            }),
        )
        .layer(
            CacheLayer::new(&cache)
                .route("/gone", RoutePolicy::ttl(MIN).statuses(DEFAULT_STATUSES)),
        );
    send(&app, read("/gone")).await;
    let again = send(&app, read("/gone")).await;
    assert!(again.is_hit(), "{}", again.cache_status());
    assert_eq!(calls.get(), 1);
    // Codes and numbers alike.
    let _ = RoutePolicy::ttl(MIN).statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
    let _ = RoutePolicy::ttl(MIN).statuses([200u16, 404]);
}

#[tokio::test]
async fn a_request_no_rule_covers_is_untouched_whatever_its_method() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/products",
            get(|| async { "list" }).post(|| async { "made" }),
        )
        .route(
            "/other",
            get(|| async { "other" }).post(|| async { "done" }),
        )
        .layer(CacheLayer::new(&cache).route("/products", MIN));
    for m in ["GET", "POST", "DELETE"] {
        let seen = send(&app, method(m, "/other")).await;
        assert_eq!(seen.header("cache-status"), None, "{m} /other");
    }
    assert_eq!(cache.stats().totals.bypassed(), 0, "nothing counted");
    // A write on a covered path still says why it was not cached.
    let seen = send(&app, post_to("/products")).await;
    assert_eq!(
        seen.cache_status(),
        "tower-response-cache; fwd=bypass; detail=method"
    );
    assert_eq!(cache.stats().routes["/products"].bypassed(), 1);
}

#[tokio::test]
async fn a_trace_layer_outside_the_cache_sees_its_hits() {
    let cache = Cache::builder().build();
    let outside = Arc::new(AtomicUsize::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let (o, i) = (outside.clone(), inside.clone());
    let app = Router::new()
        .route("/p", get(|| async { "p" }))
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(
            move |_: &http::Response<_>, _: Duration, _: &tracing::Span| {
                i.fetch_add(1, Ordering::SeqCst);
            },
        ))
        .layer(CacheLayer::new(&cache).ttl(MIN))
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(
            move |_: &http::Response<_>, _: Duration, _: &tracing::Span| {
                o.fetch_add(1, Ordering::SeqCst);
            },
        ));
    for _ in 0..3 {
        send(&app, read("/p")).await;
    }
    assert_eq!(outside.load(Ordering::SeqCst), 3, "outside: every request");
    assert_eq!(
        inside.load(Ordering::SeqCst),
        1,
        "inside: the origin calls only"
    );
}

/// What a subscriber printed on the threads that asked for it.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    static SINK: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the calling thread's sink, if it has one.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(sink) = &*sink.borrow() {
                sink.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures everything traced on this thread from now on, through a global
/// subscriber installed once: a scoped default (`set_default`) loses events
/// at callsites another test's thread reached first (tokio-rs/tracing#3611).
fn capture_this_thread() -> Captured {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    tracing::callsite::rebuild_interest_cache();
    let captured = Captured::default();
    SINK.with(|sink| *sink.borrow_mut() = Some(captured.clone()));
    captured
}

#[tokio::test]
async fn a_scope_never_shows_its_raw_value() {
    use http::header::{AUTHORIZATION, COOKIE};
    // A current-thread runtime: every event of this test is on this thread.
    let logs = capture_this_thread();
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let snapshotter = recorder.snapshotter();
    #[cfg(feature = "metrics")]
    let _metered = metrics::set_default_local_recorder(&recorder);

    let cache = Cache::builder().build();
    let by = |name: http::HeaderName| {
        move |parts: &http::request::Parts| {
            parts.headers.get(&name)?.to_str().ok().map(str::to_owned)
        }
    };
    let app = Router::new()
        .route(
            "/me",
            get(|headers: http::HeaderMap| async move {
                format!("hello {:?}", headers.get(AUTHORIZATION))
            }),
        )
        .route(
            "/prefs",
            get(|| async { ([("vary", "cookie, authorization")], "prefs") }),
        )
        .layer(
            CacheLayer::new(&cache)
                .route("/me", RoutePolicy::ttl(MIN).scope(by(AUTHORIZATION)))
                .route("/prefs", RoutePolicy::ttl(MIN).scope(by(COOKIE))),
        );
    let ask = |path: &str, token: &str| {
        Request::get(path)
            .header(AUTHORIZATION, format!("Bearer {token}-token"))
            .header(COOKIE, format!("session={token}-cookie"))
            .body(Body::empty())
            .unwrap()
    };
    let first = send(&app, ask("/me", "alice")).await;
    let again = send(&app, ask("/me", "alice")).await;
    let other = send(&app, ask("/me", "bob")).await;
    assert!(!first.is_hit() && again.is_hit() && !other.is_hit());
    assert!(other.text().contains("bob"), "each user their own answer");
    send(&app, ask("/prefs", "alice")).await;
    assert!(send(&app, ask("/prefs", "alice")).await.is_hit());

    let mut outputs = vec![
        String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned(),
        format!("{:?}", cache.stats()),
    ];
    #[cfg(feature = "serde")]
    outputs.push(serde_json::to_string(&cache.stats()).unwrap());
    #[cfg(feature = "metrics")]
    {
        let metrics = format!("{:?}", snapshotter.snapshot().into_vec());
        assert!(metrics.contains("http_cache_requests_total"), "{metrics}");
        outputs.push(metrics);
    }
    #[cfg(feature = "axum")]
    {
        let admin: Router = cache.admin_router();
        let listing = send(&admin, read("/entries")).await;
        let listing = listing.text();
        assert!(listing.contains("\"key\":\"/me\\n@"), "{listing}");
        outputs.push(listing);
    }
    assert!(
        outputs[0].contains("cache decision"),
        "the traces were captured"
    );
    for output in &outputs {
        for secret in ["alice-token", "bob-token", "alice-cookie", "bob-cookie"] {
            assert!(!output.contains(secret), "{secret} shows in:\n{output}");
        }
    }
}

/// A listener whose connections count the writes the server makes to them.
struct CountingListener {
    inner: tokio::net::TcpListener,
    writes: Arc<AtomicUsize>,
}

struct CountingIo {
    io: tokio::net::TcpStream,
    writes: Arc<AtomicUsize>,
}

impl CountingIo {
    fn count(&self, written: &std::task::Poll<std::io::Result<usize>>) {
        if matches!(written, std::task::Poll::Ready(Ok(n)) if *n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl tokio::io::AsyncRead for CountingIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.count(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountingIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (CountingIo, std::net::SocketAddr) {
        loop {
            if let Ok((io, addr)) = self.inner.accept().await {
                let writes = self.writes.clone();
                return (CountingIo { io, writes }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

// A miss's head used to go out alone, its body from the task that reads
// ahead for waiters a moment later: with Nagle's algorithm on (axum::serve's
// default), the body then waited for the client's delayed ACK, about 40 ms
// per miss on a keep-alive connection. Counted at the server's socket, on a
// current-thread runtime where the write pattern is deterministic.
#[tokio::test]
async fn a_miss_goes_out_in_as_many_writes_as_the_same_response_uncached() {
    let cache = Cache::builder().build();
    let body = || async { "x".repeat(1024) };
    let app = Router::new()
        .route("/plain", get(body))
        .route("/cached/{n}", get(body))
        .layer(CacheLayer::new(&cache).route("/cached/{n}", MIN));
    let writes = Arc::new(AtomicUsize::new(0));
    let listener = CountingListener {
        inner: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        writes: writes.clone(),
    };
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = client();
    let writes_for = async |path: &str| {
        let before = writes.load(Ordering::SeqCst);
        let seen = fetch(&client, addr, "GET", path, &[]).await;
        assert_eq!(seen.body.len(), 1024, "{path}");
        (seen, writes.load(Ordering::SeqCst) - before)
    };
    let (_, plain) = writes_for("/plain").await;
    assert!(plain >= 1);
    for n in 0..3 {
        let path = format!("/cached/{n}");
        let (miss, miss_writes) = writes_for(&path).await;
        assert!(
            miss.cache_status().contains("fwd=miss"),
            "{}",
            miss.cache_status()
        );
        assert_eq!(miss_writes, plain, "a miss of {path}");
        let (hit, hit_writes) = writes_for(&path).await;
        assert!(hit.is_hit(), "{}", hit.cache_status());
        assert_eq!(hit_writes, plain, "a hit of {path}");
    }
}
