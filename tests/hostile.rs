//! Requests and responses a cache meets from unusual or hostile peers:
//! requests it must never answer, origins that lie about their length,
//! clients that go away, through real axum routers and hyper servers.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer, ManualClock, RoutePolicy};

const MIN: Duration = Duration::from_secs(60);

/// A generous bound on one exchange over loopback: a safety net against a
/// hung test, never a margin the test depends on.
const WIRE: Duration = Duration::from_secs(10);

/// A router whose one route counts its calls and answers `call <n>`.
fn counted_route(cache: &Cache, path: &'static str, policy: RoutePolicy) -> (Router, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            path,
            get(move || {
                let n = h.bump();
                async move { format!("call {n}") }
            }),
        )
        .layer(CacheLayer::new(cache).route(path, policy));
    (app, hits)
}

/// Writes `request` on a fresh connection and reads until the peer closes
/// it (the request asks for `Connection: close`).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        // A reset after a truncated response still leaves what was read.
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(WIRE, exchange)
        .await
        .expect("exchange")
}

// ---- 5. requests a cache must never answer ----

/// A page that is also a WebSocket endpoint: a plain GET gets a cacheable
/// 200, a handshake gets `101 Switching Protocols` and then an echo.
async fn page_or_socket(mut req: Request) -> Response<Body> {
    if !req.headers().contains_key(header::UPGRADE) {
        return Response::new(Body::from("page"));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 64];
        if let Ok(n) = io.read(&mut buf).await {
            let _ = io.write_all(&buf[..n]).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_websocket_handshake_reaches_the_origin_when_a_200_is_cached() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/live", get(page_or_socket))
        .layer(CacheLayer::new(&cache).route("/live", MIN));
    let addr = serve(app).await;
    let client = client();
    assert_eq!(
        fetch(&client, addr, "GET", "/live", &[]).await.text(),
        "page"
    );
    assert!(fetch(&client, addr, "GET", "/live", &[]).await.is_hit());

    let handshake = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /live HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                  Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
            head.push(byte[0]);
        }
        // The connection is now the origin's: it echoes.
        stream.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).await.unwrap();
        (String::from_utf8(head).unwrap(), echo)
    };
    let (head, echo) = tokio::time::timeout(WIRE, handshake)
        .await
        .expect("handshake");
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "the handshake got a cached answer:\n{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-status: tower-response-cache; fwd=bypass; detail=upgrade"),
        "{head}"
    );
    assert_eq!(&echo, b"ping");
    assert_eq!(cache.stats().totals.bypasses.get("upgrade"), Some(&1));
}

#[tokio::test]
async fn upgrade_and_connection_upgrade_bypass_in_process() {
    let cache = Cache::builder().build();
    let (app, hits) = counted_route(&cache, "/page", RoutePolicy::ttl(MIN));
    assert_eq!(send(&app, read("/page")).await.text(), "call 1");
    let upgrade = send(&app, get_with("/page", "upgrade", "h2c")).await;
    assert_eq!(upgrade.text(), "call 2");
    assert_eq!(
        upgrade.cache_status(),
        "tower-response-cache; fwd=bypass; detail=upgrade"
    );
    let connection = send(&app, get_with("/page", "connection", "keep-alive, Upgrade")).await;
    assert_eq!(connection.text(), "call 3");
    // Keep-alive alone is an ordinary request.
    assert!(send(&app, get_with("/page", "connection", "keep-alive"))
        .await
        .is_hit());
    assert_eq!(hits.get(), 3);
    let stats = cache.stats();
    assert_eq!(stats.totals.bypasses.get("upgrade"), Some(&2));
    assert_eq!(stats.routes["/page"].bypasses.get("upgrade"), Some(&2));
}

/// Answers with the `Proxy-Authorization` it was sent, or `anon`.
async fn proxy_user(headers: HeaderMap) -> String {
    headers
        .get(header::PROXY_AUTHORIZATION)
        .map_or("anon", |v| v.to_str().unwrap())
        .to_owned()
}

#[tokio::test]
async fn proxy_authorization_is_never_shared() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/shared", get(proxy_user))
        .route("/scoped", get(proxy_user))
        .layer(CacheLayer::new(&cache).route("/shared", MIN).route(
            "/scoped",
            // A scope that tells users apart by something else.
            RoutePolicy::ttl(MIN).scope(|_| Some("everyone".into())),
        ));
    for path in ["/shared", "/scoped"] {
        let user = send(
            &app,
            get_with(path, "proxy-authorization", "Basic dTE6cA=="),
        )
        .await;
        assert_eq!(user.text(), "Basic dTE6cA==");
        assert_eq!(
            user.cache_status(),
            "tower-response-cache; fwd=bypass; detail=proxy-authorization"
        );
        // Nothing of that user's answer was kept for the next client.
        assert_eq!(send(&app, read(path)).await.text(), "anon", "{path}");
        assert!(send(&app, read(path)).await.is_hit());
        let other = send(
            &app,
            get_with(path, "proxy-authorization", "Basic dTI6cA=="),
        )
        .await;
        assert_eq!(other.text(), "Basic dTI6cA==", "{path}");
    }
    assert_eq!(
        cache.stats().totals.bypasses.get("proxy-authorization"),
        Some(&4)
    );
}

#[tokio::test]
async fn a_get_with_a_body_is_not_answered_from_the_key_alone() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/search",
            get(|body: String| async move { format!("results for {body}") }),
        )
        .layer(CacheLayer::new(&cache).route("/search", MIN));
    let with_body = |text: &'static str| {
        Request::get("/search")
            .header(header::CONTENT_LENGTH, text.len())
            .body(Body::from(text))
            .unwrap()
    };
    assert_eq!(
        send(&app, with_body("shoes")).await.text(),
        "results for shoes"
    );
    let second = send(&app, with_body("socks")).await;
    assert_eq!(second.text(), "results for socks");
    assert_eq!(
        second.cache_status(),
        "tower-response-cache; fwd=bypass; detail=request-body"
    );
    // `Content-Length: 0` is no body: cached as usual.
    let empty = || {
        Request::get("/search")
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, empty()).await.cache_status(),
        "tower-response-cache; fwd=miss; stored"
    );
    assert!(send(&app, empty()).await.is_hit());

    // A chunked body over the wire, after the bodiless GET was cached.
    let addr = serve(app).await;
    let response = raw_exchange(
        addr,
        b"GET /search HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n4\r\nhats\r\n0\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("results for hats"), "{response}");
    assert_eq!(cache.stats().totals.bypasses.get("request-body"), Some(&3));
}

/// A resource at version 2 whose entity tag is `"v2"`: preconditions on any
/// other version, or on a time before now, fail with 412.
async fn versioned(headers: HeaderMap) -> Response<Body> {
    let fails = headers.get(header::IF_MATCH).is_some_and(|v| v != "\"v2\"")
        || headers.contains_key(header::IF_UNMODIFIED_SINCE);
    let status = if fails {
        StatusCode::PRECONDITION_FAILED
    } else {
        StatusCode::OK
    };
    Response::builder()
        .status(status)
        .header(header::ETAG, "\"v2\"")
        .body(Body::from("version 2"))
        .unwrap()
}

#[tokio::test]
async fn preconditions_the_cache_cannot_evaluate_go_to_the_origin() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/doc", get(versioned))
        .layer(CacheLayer::new(&cache).route("/doc", MIN));
    assert_eq!(send(&app, read("/doc")).await.text(), "version 2");
    assert!(send(&app, read("/doc")).await.is_hit());
    for (name, value) in [
        ("if-match", "\"v1\""),
        ("if-unmodified-since", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ] {
        let r = send(&app, get_with("/doc", name, value)).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{name}");
        assert_eq!(
            r.cache_status(),
            "tower-response-cache; fwd=bypass; detail=precondition"
        );
    }
    let r = send(&app, get_with("/doc", "if-match", "\"v2\"")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(cache.stats().totals.bypasses.get("precondition"), Some(&3));
    // The validators the cache does evaluate still get their 304.
    let r = send(&app, get_with("/doc", "if-none-match", "\"v2\"")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.is_hit());
}

/// Ten bytes, or the range `bytes=0-1` of them as a 206.
async fn ranged(headers: HeaderMap) -> Response<Body> {
    if headers.contains_key(header::RANGE) {
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, "bytes 0-1/10")
            .body(Body::from("01"))
            .unwrap();
    }
    Response::new(Body::from("0123456789"))
}

#[tokio::test]
async fn a_range_request_neither_stores_its_206_nor_sets_a_pass_marker() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/file", get(ranged))
        .layer(CacheLayer::new(&cache).route("/file", MIN));
    let part = send(&app, get_with("/file", "range", "bytes=0-1")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.text(), "01");
    assert_eq!(
        part.cache_status(),
        "tower-response-cache; fwd=miss; detail=status"
    );
    // One client's range is not a reason for the next ones not to
    // coalesce on the full response.
    assert_eq!(cache.stats().pass_markers, 0);
    let full = send(&app, read("/file")).await;
    assert_eq!(full.text(), "0123456789");
    assert_eq!(
        full.cache_status(),
        "tower-response-cache; fwd=miss; stored"
    );
    // A range of a stored full response is answered from it.
    let again = send(&app, get_with("/file", "range", "bytes=0-1")).await;
    assert!(again.is_hit());
    assert_eq!(
        (again.status, again.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "01")
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_started_by_a_range_request_asks_for_the_whole_response() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/file", get(ranged))
        .layer(CacheLayer::new(&cache).route(
            "/file",
            RoutePolicy::ttl(MIN).stale_while_revalidate(Duration::from_secs(600)),
        ));
    assert_eq!(send(&app, read("/file")).await.text(), "0123456789");
    tokio::time::advance(MIN + Duration::from_secs(1)).await;
    let stale = send(&app, get_with("/file", "range", "bytes=0-1")).await;
    assert!(
        stale
            .cache_status()
            .contains("detail=stale-while-revalidate"),
        "{}",
        stale.cache_status()
    );
    for _ in 0..1000 {
        if cache.stats().totals.stores + cache.stats().totals.not_stored.values().sum::<u64>() > 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let stats = cache.stats();
    assert_eq!(stats.totals.stores, 2, "{:?}", stats.totals.not_stored);
    assert_eq!(stats.pass_markers, 0);
    let fresh = send(&app, read("/file")).await;
    assert!(fresh.is_hit(), "{}", fresh.cache_status());
    assert_eq!(fresh.text(), "0123456789");
}

#[tokio::test]
async fn a_request_saying_no_store_leaves_nothing_stored() {
    let cache = Cache::builder().build();
    let (app, hits) = counted_route(&cache, "/report", RoutePolicy::ttl(MIN));
    let private = send(&app, get_with("/report", "cache-control", "no-store")).await;
    assert_eq!(private.text(), "call 1");
    assert_eq!(
        private.cache_status(),
        "tower-response-cache; fwd=miss; detail=request-no-store"
    );
    let next = send(&app, read("/report")).await;
    assert_eq!(next.text(), "call 2", "the no-store response was kept");
    // Once stored by another request, the entry may answer it (RFC 9111,
    // section 5.2.1.5).
    assert!(send(
        &app,
        get_with("/report", "cache-control", "max-age=0, No-Store")
    )
    .await
    .is_hit());
    assert_eq!(hits.get(), 2);
    let stats = cache.stats();
    assert_eq!(stats.totals.not_stored.get("request-no-store"), Some(&1));
    assert_eq!(stats.pass_markers, 0);
}

// ---- 6. a body whose length is not the declared one ----

/// A body that yields its data at once, stating an exact size (`claims`),
/// true or not, or none.
struct Lying {
    data: Option<Bytes>,
    claims: Option<u64>,
}

impl http_body::Body for Lying {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.claims.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_never_stored_over_the_wire() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/cut",
            get(move || {
                h.bump();
                async move {
                    Response::builder()
                        .header(header::CONTENT_LENGTH, "100")
                        .body(Body::new(Lying {
                            data: Some(Bytes::from(vec![b'x'; 50])),
                            claims: None,
                        }))
                        .unwrap()
                }
            }),
        )
        .layer(CacheLayer::new(&cache).route("/cut", MIN));
    let addr = serve(app).await;
    let request = b"GET /cut HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let first = raw_exchange(addr, request).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("content-length: 100"), "{first}");
    // The head said the response would be stored: the body had not yet
    // come short.
    assert!(first.contains("fwd=miss; stored"), "{first}");
    let second = raw_exchange(addr, request).await;
    assert!(
        second.contains("cache-status: tower-response-cache; fwd=miss"),
        "a later client got the truncated body as complete:\n{second}"
    );
    assert_eq!(hits.get(), 2);
    assert_eq!(
        cache.stats().totals.not_stored.get("length-mismatch"),
        Some(&2)
    );
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test]
async fn a_body_that_yields_other_than_its_declared_size_is_never_stored() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/short-hint",
            get(|| async {
                Response::new(Lying {
                    data: Some(Bytes::from(vec![b'x'; 50])),
                    claims: Some(100),
                })
            }),
        )
        .route(
            "/long-header",
            get(|| async {
                Response::builder()
                    .header(header::CONTENT_LENGTH, "100")
                    .body(Body::from(vec![b'x'; 150]))
                    .unwrap()
            }),
        )
        .route(
            "/empty",
            get(|| async {
                Response::builder()
                    .header(header::CONTENT_LENGTH, "100")
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .route(
            "/honest",
            get(|| async {
                Response::new(Lying {
                    data: Some(Bytes::from(vec![b'x'; 50])),
                    claims: Some(50),
                })
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    // A body that comes short of its exact size hint is found out when it
    // ends (its head said `stored`); a head whose `Content-Length` and
    // size hint disagree, at once.
    for (path, status) in [
        ("/short-hint", "tower-response-cache; fwd=miss; stored"),
        (
            "/long-header",
            "tower-response-cache; fwd=miss; detail=length-mismatch",
        ),
        (
            "/empty",
            "tower-response-cache; fwd=miss; detail=length-mismatch",
        ),
    ] {
        for _ in 0..2 {
            assert_eq!(
                send(&app, read(path)).await.cache_status(),
                status,
                "{path}"
            );
        }
    }
    assert_eq!(send(&app, read("/honest")).await.body.len(), 50);
    assert!(send(&app, read("/honest")).await.is_hit());
    let stats = cache.stats();
    assert_eq!(stats.totals.not_stored.get("length-mismatch"), Some(&6));
    assert_eq!(stats.entries, 1);
}

// ---- 7. the coalescing table stays bounded ----

/// How many slots the coalescing table holds at most.
const FLIGHT_SLOTS: u64 = 4096;

/// A router whose `/hang/{id}` counts its calls and never answers.
fn hanging(cache: &Cache) -> (Router, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/hang/{id}",
            get(move || {
                let h = h.clone();
                async move {
                    h.bump();
                    std::future::pending::<String>().await
                }
            }),
        )
        .layer(CacheLayer::new(cache).route("/hang/{id}", MIN));
    (app, hits)
}

/// Starts a request: polls its response future once (the layer has then
/// taken its decision and the handler has started).
fn start(
    app: &Router,
    uri: &str,
) -> Pin<Box<impl Future<Output = Result<Response<Body>, Infallible>>>> {
    let mut future = Box::pin(app.clone().oneshot(read(uri)));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending(), "{uri} answered");
    future
}

#[tokio::test]
async fn abandoned_leaders_leave_no_slot_behind() {
    const N: u64 = 20_000;
    let cache = Cache::builder().build();
    let (app, hits) = hanging(&cache);
    for i in 0..N {
        // The client goes away while its request leads the miss.
        drop(start(&app, &format!("/hang/{i}")));
    }
    let stats = cache.stats();
    assert_eq!((stats.totals.misses, hits.get() as u64), (N, N));
    assert_eq!(stats.flights, 0, "abandoned leaders kept their slots");
    assert_eq!(stats.flights_full, 0);

    // One key abandoned again and again, with a waiter each time: the
    // waiter is released to the origin and the slot goes with the leader.
    for _ in 0..100 {
        let leader = start(&app, "/hang/same");
        let waiter = start(&app, "/hang/same");
        drop(leader);
        drop(waiter);
    }
    let stats = cache.stats();
    assert_eq!(stats.flights, 0);
    assert_eq!(stats.totals.coalesced, 100);
}

#[tokio::test]
async fn the_coalescing_table_is_bounded_while_leaders_wait() {
    const N: u64 = FLIGHT_SLOTS + 904;
    let cache = Cache::builder().build();
    let (app, hits) = hanging(&cache);
    let waiting: Vec<_> = (0..N).map(|i| start(&app, &format!("/hang/{i}"))).collect();
    let stats = cache.stats();
    assert_eq!(stats.flights, FLIGHT_SLOTS);
    // Past the bound, misses go to the origin without coalescing.
    assert_eq!(stats.flights_full, N - FLIGHT_SLOTS);
    assert_eq!(hits.get() as u64, N);
    // A key already in flight is still joined.
    let waiter = start(&app, "/hang/1");
    assert_eq!(cache.stats().totals.coalesced, 1);
    assert_eq!(hits.get() as u64, N);
    drop(waiter);
    drop(waiting);
    assert_eq!(cache.stats().flights, 0);
}

#[tokio::test]
async fn pass_markers_are_bounded_and_expire() {
    const N: u64 = FLIGHT_SLOTS + 904;
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .clock(clock.clone())
        .pass_marker(Duration::from_secs(2))
        .build();
    let app = Router::new()
        .route(
            "/private/{id}",
            get(|| async { ([(header::SET_COOKIE, "s=1")], "yours") }),
        )
        .layer(CacheLayer::new(&cache).route("/private/{id}", MIN));
    for i in 0..N {
        let r = send(&app, read(&format!("/private/{i}"))).await;
        assert_eq!(
            r.cache_status(),
            "tower-response-cache; fwd=miss; detail=set-cookie"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.pass_markers, N);
    assert_eq!(stats.flights, FLIGHT_SLOTS);
    // Each marker past the bound made room by dropping the oldest.
    assert_eq!(stats.flights_full, N - FLIGHT_SLOTS);
    // The newest markers are the ones kept: a miss on one of them does
    // not lead a flight (it would set another marker).
    send(&app, read(&format!("/private/{}", N - 1))).await;
    assert_eq!(cache.stats().pass_markers, N);
    send(&app, read("/private/0")).await;
    assert_eq!(cache.stats().pass_markers, N + 1);
    // Expired markers go with the next miss.
    clock.advance(Duration::from_secs(3));
    send(&app, read("/private/again")).await;
    let stats = cache.stats();
    assert_eq!(stats.flights, 1);
    assert_eq!(stats.pass_markers, N + 2);
}

// ---- 9. a slow client paces no one ----

const BIG: usize = 16 << 20;

/// A body whose chunks (64 KiB each) are all ready at once: an origin
/// that has the whole export in memory.
struct Ready {
    at: usize,
}

impl http_body::Body for Ready {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let at = self.at;
        if at == BIG {
            return Poll::Ready(None);
        }
        let end = (at + (64 << 10)).min(BIG);
        self.at = end;
        let chunk: Vec<u8> = (at..end).map(|i| (i % 251) as u8).collect();
        Poll::Ready(Some(Ok(Frame::data(chunk.into()))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((BIG - self.at) as u64)
    }
}

/// A 16 MiB page, produced at once when its gate opens; its bytes name
/// their offsets, so that a byte out of place shows.
fn big_page(cache: &Cache, gate: &Gate) -> (Router, Hits) {
    let hits = Hits::default();
    let (h, gate) = (hits.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/export",
            get(move || {
                let (h, gate) = (h.clone(), gate.clone());
                async move {
                    h.bump();
                    gate.pass().await;
                    Body::new(Ready { at: 0 })
                }
            }),
        )
        .layer(CacheLayer::new(cache).route("/export", MIN));
    (app, hits)
}

#[tokio::test]
async fn a_client_that_reads_nothing_keeps_no_waiter_waiting() {
    let cache = Cache::builder()
        .max_bytes(256 << 20)
        .max_body_bytes(32 << 20)
        // Longer than the test's bound: a waiter paced by the leader's
        // client would fail the test rather than time out into a miss.
        .coalesce_timeout(Duration::from_secs(120))
        .build();
    let gate = Gate::default();
    let (app, hits) = big_page(&cache, &gate);
    let addr = serve(app).await;

    // The leader's client sends its request and reads only the head.
    let mut leader = tokio::net::TcpStream::connect(addr).await.unwrap();
    leader
        .write_all(b"GET /export HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    until("the leader reached the origin", || hits.get() == 1).await;
    let client = client();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { fetch(&client, addr, "GET", "/export", &[("host", "x")]).await }
    });
    until("the second request waits", || {
        cache.stats().totals.coalesced == 1
    })
    .await;
    gate.open();

    let seen = within("the waiter's answer", waiter).await.unwrap();
    assert_eq!(
        seen.cache_status(),
        "tower-response-cache; fwd=miss; collapsed"
    );
    assert_eq!(seen.body.len(), BIG);
    assert_eq!(hits.get(), 1);

    // The slow client still gets every byte, in order.
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = leader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed early");
            received.extend_from_slice(&buf[..n]);
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                if received.len() >= end + 4 + BIG {
                    return end + 4;
                }
            }
        }
    };
    let start = within("the leader's whole body", read_all).await;
    let head = String::from_utf8_lossy(&received[..start]).to_lowercase();
    assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
    let body = &received[start..];
    assert_eq!(body.len(), BIG);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}
