//! CacheLayer behaviour through real axum routers and hyper servers.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use support::*;
use tower_response_cache::{Cache, CacheLayer, CacheTags, CacheTtl, NoStore, RoutePolicy};

const MIN: Duration = Duration::from_secs(60);

/// A router whose handlers count their calls and echo the call number.
fn counted(cache: &Cache, layer: impl FnOnce(CacheLayer) -> CacheLayer) -> (Router, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let handler = move |RawQuery(q): RawQuery| {
        let h = h.clone();
        async move { format!("call {} q={}", h.bump(), q.unwrap_or_default()) }
    };
    let app = Router::new()
        .route("/items", get(handler.clone()).post(handler.clone()))
        .route("/items/{id}", get(handler.clone()))
        .route("/other", get(handler))
        .layer(layer(CacheLayer::new(cache)));
    (app, hits)
}

#[tokio::test]
async fn get_is_cached_and_post_is_not() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| l.ttl(MIN));
    let a = send(&app, read("/items")).await;
    assert_eq!(a.cache_status(), "tower-response-cache; fwd=miss; stored");
    let b = send(&app, read("/items")).await;
    assert!(b.is_hit(), "{}", b.cache_status());
    assert_eq!(a.body, b.body);
    assert_eq!(hits.get(), 1);

    let p1 = send(&app, method("POST", "/items")).await;
    let p2 = send(&app, method("POST", "/items")).await;
    assert_ne!(p1.body, p2.body);
    assert_eq!(
        p2.cache_status(),
        "tower-response-cache; fwd=bypass; detail=method"
    );
    assert_eq!(hits.get(), 3);
    let stats = cache.stats();
    assert_eq!(stats.totals.hits, 1);
    assert_eq!(stats.totals.misses, 1);
    assert_eq!(stats.totals.stores, 1);
    assert_eq!(stats.totals.bypasses.get("method"), Some(&2));
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes > 0);
}

#[tokio::test]
async fn head_is_answered_from_get_and_never_fills() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| l.ttl(MIN));
    // HEAD first: forwarded, not stored.
    let h = send(&app, method("HEAD", "/items")).await;
    assert_eq!(
        h.cache_status(),
        "tower-response-cache; fwd=miss; detail=head"
    );
    let g = send(&app, read("/items")).await;
    assert!(!g.is_hit(), "a HEAD must not fill the entry");
    assert_eq!(hits.get(), 2);
    // Now HEAD is a hit with the GET entry's headers and no body.
    let h = send(&app, method("HEAD", "/items")).await;
    assert!(h.is_hit());
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-length"),
        Some(g.body.len().to_string().as_str())
    );
    assert_eq!(h.header("content-type"), g.header("content-type"));
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn query_is_normalised() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| {
        l.route(
            "/items",
            RoutePolicy::ttl(MIN).ignore_query_params(["utm_*", "fbclid"]),
        )
    });
    send(&app, read("/items?b=2&a=1")).await;
    assert!(send(&app, read("/items?a=1&b=2")).await.is_hit());
    assert!(send(&app, read("/items?utm_source=x&a=1&fbclid=y&b=2"))
        .await
        .is_hit());
    // Repeated names keep their order: a different list is a different key.
    send(&app, read("/items?a=1&a=2")).await;
    assert!(!send(&app, read("/items?a=2&a=1")).await.is_hit());
    assert!(send(&app, read("/items?a=1&a=2")).await.is_hit());
    // `?` alone is no query.
    send(&app, read("/items")).await;
    assert!(send(&app, read("/items?")).await.is_hit());
    assert_eq!(hits.get(), 4);
}

#[tokio::test]
async fn hostile_uris_are_served_by_the_inner_service() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| l.ttl(MIN));
    let huge = format!("/items?q={}", "x".repeat(60_000));
    for uri in [
        huge.as_str(),
        "/items?a=%zz",
        "/items?a=%00",
        "/items/%00",
        "/items?a=%4",
    ] {
        let r = send(&app, read(uri)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri:.40}");
        assert!(
            r.cache_status().contains("fwd=bypass; detail=uri-"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(hits.get(), 5);
    let stats = cache.stats();
    assert_eq!(stats.totals.bypasses.get("uri-too-long"), Some(&1));
    assert_eq!(stats.totals.bypasses.get("uri-malformed"), Some(&4));
}

#[tokio::test]
async fn long_keys_are_hashed_and_kept_apart() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| l.ttl(MIN));
    let a = format!("/items?q={}a", "x".repeat(600));
    let b = format!("/items?q={}b", "x".repeat(600));
    let ra = send(&app, read(&a)).await;
    let rb = send(&app, read(&b)).await;
    assert_ne!(ra.body, rb.body);
    assert_eq!(send(&app, read(&a)).await.body, ra.body);
    assert_eq!(send(&app, read(&b)).await.body, rb.body);
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn credentials_bypass_unless_scoped() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| l.ttl(MIN));
    send(&app, read("/items")).await;
    let r = send(&app, get_with("/items", "authorization", "Bearer alice")).await;
    assert_eq!(
        r.cache_status(),
        "tower-response-cache; fwd=bypass; detail=authorization"
    );
    let r = send(&app, get_with("/items", "cookie", "sid=1")).await;
    assert_eq!(
        r.cache_status(),
        "tower-response-cache; fwd=bypass; detail=cookie"
    );
    assert_eq!(
        hits.get(),
        3,
        "an authenticated request must not get the shared entry"
    );
}

fn user_of(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

#[tokio::test]
async fn a_scoped_route_keeps_users_apart() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/me",
            get(|headers: HeaderMap| async move {
                format!("profile of {:?}", headers.get("authorization").unwrap())
            }),
        )
        .layer(CacheLayer::new(&cache).route("/me", RoutePolicy::ttl(MIN).scope(user_of)));
    let alice = send(&app, get_with("/me", "authorization", "Bearer alice")).await;
    let bob = send(&app, get_with("/me", "authorization", "Bearer bob")).await;
    assert!(!bob.is_hit());
    assert!(bob.text().contains("bob"));
    let alice2 = send(&app, get_with("/me", "authorization", "Bearer alice")).await;
    assert!(alice2.is_hit());
    assert_eq!(alice2.body, alice.body);
    let bob2 = send(&app, get_with("/me", "authorization", "Bearer bob")).await;
    assert!(bob2.is_hit() && bob2.text().contains("bob"));
    // No scope value: bypass.
    let anon = send(&app, get_with("/me", "authorization", "Basic x")).await;
    assert_eq!(
        anon.cache_status(),
        "tower-response-cache; fwd=bypass; detail=no-scope"
    );
}

#[tokio::test]
async fn key_headers_split_entries() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| {
        l.route(
            "/items",
            RoutePolicy::ttl(MIN).key_headers(["accept-language"]),
        )
    });
    send(&app, get_with("/items", "accept-language", "fr")).await;
    assert!(!send(&app, get_with("/items", "accept-language", "de"))
        .await
        .is_hit());
    assert!(send(&app, get_with("/items", "accept-language", "fr"))
        .await
        .is_hit());
    assert_eq!(hits.get(), 2);
}

/// A route that answers with whatever the test asks for.
fn responding(
    cache: &Cache,
    policy: RoutePolicy,
    make: fn(usize) -> Response<Body>,
) -> (Router, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/r",
            get(move || {
                let n = h.bump();
                async move { make(n) }
            }),
        )
        .layer(CacheLayer::new(cache).route("/r", policy));
    (app, hits)
}

fn with_status(status: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(body))
        .unwrap()
}

async fn stored_after_two(
    make: fn(usize) -> Response<Body>,
    policy: RoutePolicy,
) -> (bool, String) {
    let cache = Cache::builder().build();
    let (app, hits) = responding(&cache, policy, make);
    let first = send(&app, read("/r")).await;
    send(&app, read("/r")).await;
    (hits.get() == 1, first.cache_status().to_owned())
}

#[tokio::test]
async fn only_storable_responses_are_stored() {
    let ttl = || RoutePolicy::ttl(MIN);
    assert!(
        stored_after_two(|_| Response::new(Body::from("ok")), ttl())
            .await
            .0
    );
    assert!(stored_after_two(|_| with_status(404, "nf"), ttl()).await.0);
    let (s, status) = stored_after_two(|_| with_status(500, "e"), ttl()).await;
    assert!(!s);
    assert_eq!(status, "tower-response-cache; fwd=miss; detail=status");
    assert!(!stored_after_two(|_| with_status(206, "p"), ttl()).await.0);
    // A custom status set.
    assert!(
        stored_after_two(
            |_| with_status(500, "e"),
            ttl().statuses([StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR])
        )
        .await
        .0
    );
    assert!(
        !stored_after_two(
            |_| Response::new(Body::from("ok")),
            ttl().statuses([StatusCode::NOT_FOUND])
        )
        .await
        .0
    );
    let (s, status) = stored_after_two(
        |n| {
            Response::builder()
                .header("set-cookie", format!("n={n}"))
                .body(Body::from("c"))
                .unwrap()
        },
        ttl(),
    )
    .await;
    assert!(!s);
    assert!(status.ends_with("detail=set-cookie"));
    for cc in ["no-store", "private", "public, no-cache", "Private"] {
        let cache = Cache::builder().build();
        let hits = Hits::default();
        let h = hits.clone();
        let app = Router::new()
            .route(
                "/r",
                get(move || {
                    h.bump();
                    async move { ([(header::CACHE_CONTROL, cc)], "x") }
                }),
            )
            .layer(CacheLayer::new(&cache).ttl(MIN));
        send(&app, read("/r")).await;
        send(&app, read("/r")).await;
        assert_eq!(hits.get(), 2, "cache-control {cc} must not be stored");
    }
    let (s, status) = stored_after_two(
        |_| {
            Response::builder()
                .header("vary", "*")
                .body(Body::from("v"))
                .unwrap()
        },
        ttl(),
    )
    .await;
    assert!(!s);
    assert!(status.ends_with("detail=vary-star"));
}

#[tokio::test]
async fn vary_is_honoured_with_compression_inside_the_cache() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let h = hits.clone();
    let body = "compress me ".repeat(200);
    let inner = Router::new()
        .route(
            "/big",
            get(move || {
                h.bump();
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain")], body) }
            }),
        )
        .layer(tower_http::compression::CompressionLayer::new());
    let app = Router::new()
        .fallback_service(inner)
        .layer(CacheLayer::new(&cache).ttl(MIN));

    let gz = send(&app, get_with("/big", "accept-encoding", "gzip")).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let plain = send(&app, read("/big")).await;
    assert_eq!(
        plain.header("content-encoding"),
        None,
        "gzip served to a client that did not ask"
    );
    assert!(!plain.is_hit());
    assert_eq!(plain.text(), "compress me ".repeat(200));
    let gz2 = send(&app, get_with("/big", "accept-encoding", "gzip")).await;
    assert!(gz2.is_hit());
    assert_eq!(gz2.header("content-encoding"), Some("gzip"));
    assert_eq!(gz2.body, gz.body);
    let plain2 = send(&app, read("/big")).await;
    assert!(plain2.is_hit());
    assert_eq!(plain2.header("content-encoding"), None);
    assert_eq!(hits.get(), 2);
}

/// A body that yields scripted chunks, then ends, fails, or stays open.
struct Scripted {
    chunks: std::collections::VecDeque<Bytes>,
    then: Then,
}

#[derive(Clone, Copy)]
enum Then {
    End,
    Fail,
    StayOpen,
}

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(c))));
        }
        match self.then {
            Then::End => Poll::Ready(None),
            Then::Fail => Poll::Ready(Some(Err(std::io::Error::other("origin broke")))),
            Then::StayOpen => Poll::Pending,
        }
    }
}

fn scripted(chunks: &[&'static [u8]], then: Then) -> Body {
    Body::new(Scripted {
        chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(),
        then,
    })
}

#[tokio::test]
async fn bodies_over_the_limit_stream_whole_and_are_not_stored() {
    let cache = Cache::builder().max_body_bytes(1000).build();
    let hits = Hits::default();
    let h = hits.clone();
    static CHUNK: [u8; 400] = [b'a'; 400];
    let app = Router::new()
        .route(
            "/big",
            get(move || {
                h.bump();
                async move { Response::new(scripted(&[&CHUNK, &CHUNK, &CHUNK, &CHUNK], Then::End)) }
            }),
        )
        .route(
            "/small",
            get(|| async { Response::new(scripted(&[b"ab", b"cd"], Then::End)) }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    let r = send(&app, read("/big")).await;
    assert_eq!(r.body.len(), 1600, "the client must receive every byte");
    send(&app, read("/big")).await;
    assert_eq!(hits.get(), 2);
    assert_eq!(cache.stats().totals.not_stored.get("too-large"), Some(&2));
    // Chunked bodies within the limit are stored whole.
    assert_eq!(send(&app, read("/small")).await.text(), "abcd");
    let again = send(&app, read("/small")).await;
    assert!(again.is_hit());
    assert_eq!(again.text(), "abcd");
}

#[tokio::test]
async fn a_body_that_errors_is_not_stored() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/broken",
            get(move || {
                h.bump();
                async move { Response::new(scripted(&[b"partial"], Then::Fail)) }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    for _ in 0..2 {
        let res = tower::ServiceExt::oneshot(app.clone(), read("/broken"))
            .await
            .unwrap();
        let mut body = res.into_body();
        let first = http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "partial");
        assert!(http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .is_err());
    }
    assert_eq!(hits.get(), 2);
    assert_eq!(cache.stats().totals.not_stored.get("body-error"), Some(&2));
}

#[tokio::test]
async fn event_streams_are_never_held_back() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(scripted(&[b"data: one\n\n"], Then::StayOpen))
                    .unwrap()
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    let addr = serve(app).await;
    let client = client();
    let req = http::Request::get(format!("http://{addr}/events"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert!(res.headers()["cache-status"]
        .to_str()
        .unwrap()
        .ends_with("detail=event-stream"));
    let mut body = res.into_body();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::frame(&mut body),
    )
    .await
    .expect("the first event must arrive while the stream stays open")
    .unwrap()
    .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
}

#[tokio::test(start_paused = true)]
async fn ttl_age_and_cache_status() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| {
        l.route("/items", Duration::from_secs(10))
            .route("/items/{id}", Duration::from_secs(100))
    });
    send(&app, read("/items")).await;
    send(&app, read("/items/1")).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    let r = send(&app, read("/items")).await;
    assert_eq!(r.cache_status(), "tower-response-cache; hit; ttl=6");
    assert_eq!(r.header("age"), Some("4"));
    tokio::time::advance(Duration::from_secs(7)).await;
    let r = send(&app, read("/items")).await;
    assert!(!r.is_hit(), "past its TTL");
    assert!(r.header("age").is_none());
    assert!(
        send(&app, read("/items/1")).await.is_hit(),
        "the longer route keeps its entry"
    );
    assert_eq!(hits.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn handlers_steer_their_own_caching() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let saw_extension = Arc::new(AtomicBool::new(false));
    let (h1, h2, h3) = (hits.clone(), hits.clone(), hits.clone());
    let saw = saw_extension.clone();
    let app = Router::new()
        .route(
            "/short",
            get(move || {
                h1.bump();
                async { (Extension(CacheTtl(Duration::from_secs(1))), "short") }
            }),
        )
        .route(
            "/never",
            get(move || {
                h2.bump();
                async { (Extension(NoStore), "never") }
            }),
        )
        .route(
            "/tagged",
            get(move || {
                h3.bump();
                async { (Extension(CacheTags(vec!["extra".into()])), "tagged") }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN))
        .layer(axum::middleware::map_response(
            move |res: Response<Body>| {
                let saw = saw.clone();
                async move {
                    let e = res.extensions();
                    if e.get::<CacheTtl>().is_some()
                        || e.get::<NoStore>().is_some()
                        || e.get::<CacheTags>().is_some()
                    {
                        saw.store(true, Ordering::SeqCst);
                    }
                    res
                }
            },
        ));
    for path in ["/short", "/never", "/tagged"] {
        send(&app, read(path)).await;
    }
    assert!(send(&app, read("/short")).await.is_hit());
    assert!(!send(&app, read("/never")).await.is_hit());
    assert!(send(&app, read("/tagged")).await.is_hit());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !send(&app, read("/short")).await.is_hit(),
        "the handler's TTL wins"
    );
    cache.invalidate_tag("extra");
    assert!(
        !send(&app, read("/tagged")).await.is_hit(),
        "the handler's tag was kept"
    );
    assert!(
        !saw_extension.load(Ordering::SeqCst),
        "the layer strips its extensions"
    );
    assert_eq!(hits.get(), 6);
}

#[tokio::test]
async fn rules_pick_the_most_specific_pattern_and_pass_others() {
    let cache = Cache::builder().build();
    let (app, hits) = counted(&cache, |l| {
        l.route("/items/{id}", Duration::from_secs(5))
            .route("/items/special", RoutePolicy::ttl(MIN).tags(["special"]))
    });
    send(&app, read("/items/special")).await;
    send(&app, read("/items/7")).await;
    let other = send(&app, read("/other")).await;
    assert!(
        other.header("cache-status").is_none(),
        "unmatched paths pass through untouched"
    );
    send(&app, read("/other")).await;
    assert_eq!(hits.get(), 4);
    let stats = cache.stats();
    assert_eq!(stats.routes["/items/special"].misses, 1);
    assert_eq!(stats.routes["/items/{id}"].misses, 1);
    assert_eq!(
        stats.totals.bypassed(),
        0,
        "unmatched paths are not counted"
    );
    cache.invalidate_tag("special");
    assert!(!send(&app, read("/items/special")).await.is_hit());
    assert!(send(&app, read("/items/7")).await.is_hit());
}

#[tokio::test]
async fn route_layer_sets_a_ttl_for_one_route() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let (h1, h2) = (hits.clone(), hits.clone());
    let app = Router::new()
        .route(
            "/config",
            get(move || {
                h1.bump();
                async { "config" }
            })
            .route_layer(CacheLayer::new(&cache).ttl(MIN)),
        )
        .route(
            "/live",
            get(move || {
                h2.bump();
                async { "live" }
            }),
        );
    send(&app, read("/config")).await;
    assert!(send(&app, read("/config")).await.is_hit());
    let live = send(&app, read("/live")).await;
    assert!(live.header("cache-status").is_none());
    send(&app, read("/live")).await;
    // 404s never reach a route layer.
    let missing = send(&app, read("/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.header("cache-status").is_none());
    assert_eq!(hits.get(), 3);
    assert_eq!(cache.stats().routes["*"].hits, 1);
}

#[tokio::test]
async fn a_full_size_body_fits_a_shard_and_heavier_entries_are_counted() {
    // Two shards of 1.1 MB once the index has taken its eighth: room for a
    // 1 MiB body and its headers, not for `/fat`'s.
    let cache = Cache::builder()
        .max_bytes(2_600_000)
        .max_body_bytes(1 << 20)
        .build();
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/mb",
            get(move || {
                h.bump();
                async { vec![7u8; 1 << 20] }
            }),
        )
        .route(
            "/fat",
            get(|| async {
                // A body within the limit, but headers too heavy for one shard.
                let mut res = Response::new(Body::from(vec![1u8; 1 << 20]));
                for i in 0..200 {
                    res.headers_mut().insert(
                        http::HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
                        http::HeaderValue::from_str(&"p".repeat(500)).unwrap(),
                    );
                }
                res
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    assert_eq!(send(&app, read("/mb")).await.body.len(), 1 << 20);
    assert!(
        send(&app, read("/mb")).await.is_hit(),
        "a max_body_bytes entry must fit"
    );
    assert_eq!(hits.get(), 1);
    send(&app, read("/fat")).await;
    assert!(!send(&app, read("/fat")).await.is_hit());
    let stats = cache.stats();
    assert_eq!(stats.totals.rejected_inserts, 2);
    assert_eq!(stats.totals.not_stored.get("rejected"), Some(&2));
}

#[test]
fn a_cache_too_small_for_one_body_is_refused() {
    let err = Cache::builder()
        .max_bytes(1 << 20)
        .max_body_bytes(1 << 20)
        .try_build()
        .unwrap_err();
    assert!(err.to_string().contains("max_body_bytes"), "{err}");
}

#[tokio::test]
async fn many_entries_stay_within_max_bytes() {
    let cache = Cache::builder()
        .max_bytes(2 << 20)
        .max_body_bytes(64 << 10)
        .build();
    let app = Router::new()
        .route(
            "/e/{n}",
            get(|Path(n): Path<u32>| async move { vec![n as u8; 4096] }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    for n in 0..2000 {
        send(&app, read(&format!("/e/{n}"))).await;
    }
    let stats = cache.stats();
    assert!(stats.bytes <= 2 << 20, "{} bytes held", stats.bytes);
    assert!(stats.evictions > 0);
    assert!(stats.entries < 2000);
}

// ---- tower manners ----

fn assert_service_traits<T: Clone + Send + Sync + 'static>() {}

#[test]
fn services_are_clone_send_sync() {
    assert_service_traits::<tower_response_cache::CacheService<Router>>();
    assert_service_traits::<CacheLayer>();
    assert_service_traits::<Cache>();
    fn send_future<F: Send>(_: &F) {}
    let mut svc = CacheLayer::new(&Cache::builder().build())
        .ttl(MIN)
        .layer_router();
    let fut = tower::Service::call(&mut svc, read("/"));
    send_future(&fut);
}

trait LayerRouter {
    fn layer_router(self) -> tower_response_cache::CacheService<Router>;
}

impl LayerRouter for CacheLayer {
    fn layer_router(self) -> tower_response_cache::CacheService<Router> {
        tower_layer::Layer::layer(&self, Router::new().route("/", get(|| async { "x" })))
    }
}

/// A service that must be polled ready before each call, on that very
/// instance (a clone is not ready).
#[derive(Clone)]
struct Strict {
    ready: bool,
    open: Arc<AtomicBool>,
}

impl tower::Service<http::Request<Body>> for Strict {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            self.ready = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "called without being polled ready"
        );
        std::future::ready(Ok(Response::new(Body::from("strict"))))
    }
}

#[tokio::test]
async fn poll_ready_is_forwarded_to_the_service_that_is_called() {
    use tower::{Service, ServiceExt};
    let cache = Cache::builder().build();
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = tower_layer::Layer::layer(
        &CacheLayer::new(&cache).ttl(MIN),
        Strict {
            ready: false,
            open: open.clone(),
        },
    );
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "readiness must be forwarded"
    );
    open.store(true, Ordering::SeqCst);
    for uri in ["/a", "/a", "/b", "/c"] {
        let res = svc.ready().await.unwrap().call(read(uri)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn works_under_a_plain_hyper_server() {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let h = hits.clone();
    let svc = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(&cache).ttl(MIN))
        .service(tower::service_fn(
            move |_req: http::Request<hyper::body::Incoming>| {
                let n = h.bump();
                async move {
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                        format!("n={n}"),
                    ))))
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = client();
    let a = fetch(&client, addr, "GET", "/x?b=1&a=2", &[]).await;
    let b = fetch(&client, addr, "GET", "/x?a=2&b=1", &[]).await;
    assert_eq!(a.text(), "n=1");
    assert!(b.is_hit());
    assert_eq!(b.text(), "n=1");
    assert_eq!(b.header("content-length"), Some("3"));
    let head = fetch(&client, addr, "HEAD", "/x?a=2&b=1", &[]).await;
    assert!(head.is_hit());
    assert_eq!(head.header("content-length"), Some("3"));
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn users_never_see_each_others_data_over_the_network() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/me",
            get(|headers: HeaderMap| async move {
                headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap())
                    .unwrap_or("anon")
                    .to_owned()
            }),
        )
        .route(
            "/shared",
            get(|headers: HeaderMap| async move {
                headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap())
                    .unwrap_or("anon")
                    .to_owned()
            }),
        )
        .layer(
            CacheLayer::new(&cache)
                .route("/me", RoutePolicy::ttl(MIN).scope(user_of))
                .route("/shared", MIN),
        );
    let addr = serve(app).await;
    let client = client();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("Bearer u{}", i % 4);
            for path in ["/me", "/shared"] {
                let r = fetch(&client, addr, "GET", path, &[("authorization", &user)]).await;
                assert_eq!(r.text(), user, "{path} leaked another user's response");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // An anonymous read of the unscoped route is cached, and never shows a user.
    assert_eq!(
        fetch(&client, addr, "GET", "/shared", &[]).await.text(),
        "anon"
    );
    assert_eq!(
        fetch(&client, addr, "GET", "/shared", &[]).await.text(),
        "anon"
    );
}

// ---- tracing ----

thread_local! {
    /// Where this thread's events go, if anywhere.
    static RECORDING: std::cell::RefCell<Option<Arc<Mutex<Vec<String>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Records the events of the threads that asked for it.
struct Recorder;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        RECORDING.with(|sink| {
            let Some(sink) = &*sink.borrow() else {
                return;
            };
            let mut v = V(String::new());
            event.record(&mut v);
            sink.lock().unwrap().push(v.0);
        });
    }
}

/// Records the calling thread's events from now on.
///
/// The recorder is the global default, installed once, not a scoped default
/// (`set_default`): while a scoped default is the only dispatcher in the
/// process, a callsite that another test's thread reaches first caches "never
/// interested" (the other thread has no subscriber), and this thread's events
/// there are dropped (tokio-rs/tracing#3611; one full run in twenty under
/// load recorded one decision of three).
fn record_this_thread() -> Arc<Mutex<Vec<String>>> {
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder))
            .expect("the only global subscriber of this test binary");
    });
    // Callsites another thread was registering while the recorder was
    // installed get its interest too.
    tracing::callsite::rebuild_interest_cache();
    let sink = Arc::default();
    RECORDING.with(|r| *r.borrow_mut() = Some(Arc::clone(&sink)));
    sink
}

#[tokio::test]
async fn each_decision_is_traced_with_key_outcome_and_reason() {
    // A current-thread runtime: every event of this test is on this thread.
    let recorder = record_this_thread();
    let cache = Cache::builder().build();
    let (app, _) = counted(&cache, |l| l.ttl(MIN));
    send(&app, read("/items?z=1&a=2")).await;
    send(&app, read("/items?a=2&z=1")).await;
    send(&app, get_with("/items", "cookie", "a=b")).await;
    let events = recorder.lock().unwrap().clone();
    let decisions: Vec<_> = events
        .iter()
        .filter(|e| e.contains("cache decision"))
        .collect();
    assert_eq!(decisions.len(), 3, "{events:#?}");
    assert!(
        decisions[0].contains("key=/items?a=2&z=1") && decisions[0].contains("outcome=\"miss\"")
    );
    assert!(decisions[1].contains("outcome=\"hit\""));
    assert!(
        decisions[2].contains("outcome=\"bypass\"") && decisions[2].contains("reason=\"cookie\"")
    );
}
