//! Request coalescing, stale-while-revalidate, stale-if-error and 304s.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use support::*;
use tokio::sync::Notify;
use tower_response_cache::{Cache, CacheLayer, RoutePolicy};

const MIN: Duration = Duration::from_secs(60);

/// Sends `n` concurrent GETs of `path`, each in a task of its own.
fn spawn_burst(app: &Router, n: usize, path: &'static str) -> tokio::task::JoinHandle<Vec<Seen>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, read(path)).await })
        })
        .collect();
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// Sends `n` concurrent GETs of `path` and returns the responses in order.
async fn burst(app: &Router, n: usize, path: &'static str) -> Vec<Seen> {
    within("a burst", spawn_burst(app, n, path)).await.unwrap()
}

/// How the origin of [`slow`] takes its time.
#[derive(Clone)]
enum Pace {
    /// A fixed time on tokio's clock: only for tests on the paused clock,
    /// where nothing else moves it.
    For(Duration),
    /// Until the test opens the gate.
    Until(Gate),
}

impl Pace {
    async fn wait(&self) {
        match self {
            Pace::For(delay) => tokio::time::sleep(*delay).await,
            Pace::Until(gate) => gate.pass().await,
        }
    }
}

/// A route whose handler takes its time (`pace`) and answers with its call
/// number.
fn slow(
    cache: &Cache,
    pace: Pace,
    policy: RoutePolicy,
    headers: &'static [(&'static str, &'static str)],
) -> (Router, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let n = h.bump();
                let pace = pace.clone();
                async move {
                    pace.wait().await;
                    let mut res = Response::new(Body::from(format!("call {n}")));
                    for (k, v) in headers {
                        res.headers_mut().append(*k, v.parse().unwrap());
                    }
                    res
                }
            }),
        )
        .layer(CacheLayer::new(cache).route("/slow", policy));
    (app, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_makes_one_origin_call() {
    let cache = Cache::builder().build();
    let gate = Gate::default();
    let (app, hits) = slow(
        &cache,
        Pace::Until(gate.clone()),
        RoutePolicy::ttl(MIN),
        &[],
    );
    let burst = spawn_burst(&app, 200, "/slow");
    // The origin answers once every request has joined the flight.
    until("199 requests waiting on the first", || {
        cache.stats().totals.coalesced == 199
    })
    .await;
    gate.open();
    let responses = within("the stampede", burst).await.unwrap();
    for r in responses {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "call 1");
    }
    assert_eq!(
        hits.get(),
        1,
        "200 concurrent cold requests must make one origin call"
    );
    let stats = cache.stats();
    assert_eq!(stats.totals.coalesced + stats.totals.hits, 199, "{stats:?}");
    assert!(stats.totals.coalesced > 0);
    assert_eq!(
        stats.totals.collapsed, stats.totals.coalesced,
        "every waiter got the shared entry"
    );
}

/// On the paused clock: the origin takes exactly 200 ms, so that the time
/// the burst takes tells whether the waiters queued one behind another.
#[tokio::test(start_paused = true)]
async fn uncacheable_responses_do_not_make_a_convoy() {
    let cache = Cache::builder().build();
    let (app, hits) = slow(
        &cache,
        Pace::For(Duration::from_millis(200)),
        RoutePolicy::ttl(MIN),
        &[("cache-control", "private")],
    );
    let start = tokio::time::Instant::now();
    let responses = burst(&app, 10, "/slow").await;
    let mut bodies: Vec<String> = responses.iter().map(Seen::text).collect();
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "10 requests took {elapsed:?}: waiters queued"
    );
    assert_eq!(hits.get(), 10);
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        10,
        "a private response was handed to a waiter"
    );
    // The pass marker lets the next requests skip waiting altogether.
    let stats = cache.stats();
    assert_eq!(stats.pass_markers, 1, "{stats:?}");
    let start = tokio::time::Instant::now();
    burst(&app, 5, "/slow").await;
    assert!(start.elapsed() < Duration::from_millis(1000));
    assert_eq!(
        cache.stats().totals.coalesced,
        stats.totals.coalesced,
        "no one waited behind a pass marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_never_shared_with_waiters() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let gate = Gate::default();
    let (h, g) = (hits.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/login",
            get(move || {
                let n = h.bump();
                let gate = g.clone();
                async move {
                    gate.pass().await;
                    (
                        [(header::SET_COOKIE, format!("session={n}"))],
                        format!("you are {n}"),
                    )
                }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    let burst = spawn_burst(&app, 8, "/login");
    // The first origin call answers once the other seven wait on it.
    until("7 requests waiting on the first", || {
        cache.stats().totals.coalesced == 7
    })
    .await;
    gate.open();
    let responses = within("the burst", burst).await.unwrap();
    for r in responses {
        let cookie = r
            .header("set-cookie")
            .unwrap()
            .trim_start_matches("session=")
            .to_owned();
        assert_eq!(r.text(), format!("you are {cookie}"));
    }
    assert_eq!(hits.get(), 8);
}

/// On the paused clock: the origin takes exactly 600 ms and the waiter's
/// timeout is 100 ms.
#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_after_its_timeout() {
    let cache = Cache::builder()
        .coalesce_timeout(Duration::from_millis(100))
        .build();
    let (app, hits) = slow(
        &cache,
        Pace::For(Duration::from_millis(600)),
        RoutePolicy::ttl(MIN),
        &[],
    );
    let leader = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, read("/slow")).await })
    };
    // The leader is at the origin before the waiter asks.
    until("the leader at the origin", || hits.get() == 1).await;
    let start = tokio::time::Instant::now();
    let waiter = send(&app, read("/slow")).await;
    // It waited ~100 ms, then made its own 600 ms call: well before the leader's.
    assert_eq!(waiter.text(), "call 2");
    assert!(start.elapsed() < Duration::from_millis(1200));
    leader.await.unwrap();
    assert_eq!(hits.get(), 2);
    assert_eq!(cache.stats().coalesce_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_strand_its_waiters() {
    let cache = Cache::builder()
        .coalesce_timeout(Duration::from_secs(30))
        .build();
    let hits = Hits::default();
    let entered = Arc::new(Notify::new());
    let (h, e) = (hits.clone(), entered.clone());
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let n = h.bump();
                let e = e.clone();
                async move {
                    e.notify_one();
                    if n == 1 {
                        // The leader's origin call never ends by itself.
                        std::future::pending::<()>().await;
                    }
                    format!("call {n}")
                }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    let leader = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, read("/slow")).await })
    };
    within("the leader at the origin", entered.notified()).await;
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let app = app.clone();
        waiters.push(tokio::spawn(async move { send(&app, read("/slow")).await }));
    }
    until("5 requests waiting on the leader", || {
        cache.stats().totals.coalesced == 5
    })
    .await;
    leader.abort(); // the leader's client disconnects
    for w in waiters {
        let r = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("a waiter was stranded by its cancelled leader")
            .unwrap();
        assert!(r.text().starts_with("call "));
        assert_ne!(r.text(), "call 1");
    }
}

fn user_of(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("authorization")?
        .to_str()
        .ok()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_a_per_user_route_never_mixes_users() {
    let cache = Cache::builder().build();
    let hits = Hits::default();
    let gate = Gate::default();
    let (h, g) = (hits.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/me",
            get(move |headers: HeaderMap| {
                h.bump();
                let gate = g.clone();
                async move {
                    gate.pass().await;
                    format!("data of {}", headers["authorization"].to_str().unwrap())
                }
            }),
        )
        .layer(CacheLayer::new(&cache).route("/me", RoutePolicy::ttl(MIN).scope(user_of)));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let app = app.clone();
        let user = format!("user-{}", i % 3);
        tasks.push(tokio::spawn(async move {
            let r = send(&app, get_with("/me", "authorization", &user)).await;
            assert_eq!(r.text(), format!("data of {user}"));
        }));
    }
    // The origin answers once every request waits on its user's flight.
    until("57 requests waiting on their user's first", || {
        cache.stats().totals.coalesced == 57
    })
    .await;
    gate.open();
    for t in tasks {
        within("a user's request", t).await.unwrap();
    }
    assert_eq!(hits.get(), 3, "one origin call per user");
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let cache = Cache::builder().build();
    let (app, hits) = slow(
        &cache,
        Pace::For(Duration::from_millis(500)),
        RoutePolicy::ttl(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(30)),
        &[],
    );
    assert_eq!(send(&app, read("/slow")).await.text(), "call 1");
    tokio::time::advance(Duration::from_secs(15)).await;
    for _ in 0..5 {
        let start = tokio::time::Instant::now();
        let r = send(&app, read("/slow")).await;
        assert_eq!(r.text(), "call 1");
        assert!(
            r.cache_status().contains("detail=stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
        assert!(r.cache_status().contains("; ttl=-"), "{}", r.cache_status());
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a stale answer does not wait for the origin"
        );
    }
    // Let the single background refresh finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hits.get(), 2, "exactly one background refresh");
    let r = send(&app, read("/slow")).await;
    assert!(r.is_hit());
    assert!(!r.cache_status().contains("stale"));
    assert_eq!(r.text(), "call 2");
    let stats = cache.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.totals.stale, 5);
    // Past the window, an expired entry is a plain miss.
    tokio::time::advance(Duration::from_secs(45)).await;
    let r = tokio::spawn({
        let app = app.clone();
        async move { send(&app, read("/slow")).await }
    });
    assert_eq!(r.await.unwrap().text(), "call 3");
}

#[tokio::test(start_paused = true)]
async fn the_origins_own_stale_while_revalidate_is_honoured() {
    let cache = Cache::builder().build();
    let (app, hits) = slow(
        &cache,
        Pace::For(Duration::from_millis(10)),
        RoutePolicy::ttl(Duration::from_secs(10)),
        &[("cache-control", "max-age=10, stale-while-revalidate=20")],
    );
    send(&app, read("/slow")).await;
    tokio::time::advance(Duration::from_secs(25)).await;
    let r = send(&app, read("/slow")).await;
    assert!(
        r.cache_status().contains("stale-while-revalidate"),
        "{}",
        r.cache_status()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidation_beats_grace() {
    let cache = Cache::builder().build();
    let (app, hits) = slow(
        &cache,
        Pace::For(Duration::from_millis(10)),
        RoutePolicy::ttl(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(30))
            .stale_if_error(Duration::from_secs(30)),
        &[],
    );
    send(&app, read("/slow")).await;
    tokio::time::advance(Duration::from_secs(15)).await;
    cache.invalidate_prefix("/slow");
    let r = send(&app, read("/slow")).await;
    assert!(!r.cache_status().contains("stale"), "{}", r.cache_status());
    assert_eq!(r.text(), "call 2");
    assert_eq!(hits.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_replaces_origin_failures() {
    let cache = Cache::builder().build();
    let status = Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let app = Router::new()
        .route(
            "/flaky",
            get(move || {
                let code = s.load(Ordering::SeqCst);
                async move {
                    (
                        StatusCode::from_u16(code).unwrap(),
                        format!("status {code}"),
                    )
                }
            }),
        )
        .layer(CacheLayer::new(&cache).route(
            "/flaky",
            RoutePolicy::ttl(Duration::from_secs(10)).stale_if_error(Duration::from_secs(60)),
        ));
    assert_eq!(send(&app, read("/flaky")).await.text(), "status 200");
    tokio::time::advance(Duration::from_secs(20)).await;
    status.store(503, Ordering::SeqCst);
    let r = send(&app, read("/flaky")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "status 200");
    assert_eq!(
        r.cache_status(),
        "tower-response-cache; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    // A 4xx is not an error of the origin: it passes.
    status.store(404, Ordering::SeqCst);
    assert_eq!(
        send(&app, read("/flaky")).await.status,
        StatusCode::NOT_FOUND
    );
    tokio::time::advance(Duration::from_secs(120)).await;
    status.store(500, Ordering::SeqCst);
    assert_eq!(
        send(&app, read("/flaky")).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_covers_inner_service_errors() {
    use tower::{Service, ServiceExt};
    let cache = Cache::builder().build();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fail.clone();
    let inner = tower::service_fn(move |_req: http::Request<Body>| {
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                Err(std::io::Error::other("database unreachable"))
            } else {
                Ok(Response::new(Body::from("good data")))
            }
        }
    });
    let mut svc = tower_layer::Layer::layer(
        &CacheLayer::new(&cache).policy(
            RoutePolicy::ttl(Duration::from_secs(1)).stale_if_error(Duration::from_secs(30)),
        ),
        inner,
    );
    let res = svc.ready().await.unwrap().call(read("/x")).await.unwrap();
    http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    fail.store(true, Ordering::SeqCst);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(read("/x"))
        .await
        .expect("stale answer instead of the error");
    assert_eq!(
        res.headers()["cache-status"],
        "tower-response-cache; fwd=stale; detail=stale-if-error"
    );
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "good data");
    // Without a stale entry the error goes through unchanged.
    assert!(svc.ready().await.unwrap().call(read("/y")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn conditional_requests_get_304s() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route("/computed", get(|| async { "same bytes" }))
        .route(
            "/origin",
            get(|| async {
                (
                    [
                        (header::ETAG, "W/\"v7\""),
                        (header::LAST_MODIFIED, "Tue, 03 Nov 2026 10:00:00 GMT"),
                    ],
                    "origin validators",
                )
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    send(&app, read("/computed")).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let hit = send(&app, read("/computed")).await;
    let etag = hit.header("etag").expect("a computed validator").to_owned();
    // Weak: whatever stands outside the cache may change the bytes.
    assert!(etag.starts_with("W/\"trc-") && etag.len() == 40, "{etag}");
    let nm = send(&app, get_with("/computed", "if-none-match", &etag)).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));
    assert_eq!(nm.header("age"), Some("3"));
    assert!(nm.is_hit());
    // Content-Length, if any, is the full representation's (RFC 9110, 8.6).
    assert_eq!(nm.header("content-length"), Some("10"));
    let other = send(&app, get_with("/computed", "if-none-match", "\"nope\"")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.text(), "same bytes");

    // The miss that stores a response carries the validator its hits
    // carry; another stored response (another cache's) has its own.
    let cache2 = Cache::builder().build();
    let app2 = Router::new()
        .route("/computed", get(|| async { "same bytes" }))
        .layer(CacheLayer::new(&cache2).ttl(MIN));
    let miss = send(&app2, read("/computed")).await;
    let tag = miss
        .header("etag")
        .expect("the miss's validator")
        .to_owned();
    assert_eq!(
        send(&app2, read("/computed")).await.header("etag"),
        Some(tag.as_str())
    );
    assert_ne!(tag, etag);

    // The origin's own validators are kept and used.
    send(&app, read("/origin")).await;
    let r = send(&app, get_with("/origin", "if-none-match", "\"v7\"")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("etag"), Some("W/\"v7\""));
    let r = send(
        &app,
        get_with(
            "/origin",
            "if-modified-since",
            "Wed, 04 Nov 2026 10:00:00 GMT",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = send(
        &app,
        get_with(
            "/origin",
            "if-modified-since",
            "Mon, 02 Nov 2026 10:00:00 GMT",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(cache.stats().totals.not_modified, 3);
}

#[tokio::test]
async fn coalescing_can_be_turned_off() {
    let cache = Cache::builder().coalesce_timeout(Duration::ZERO).build();
    let gate = Gate::default();
    let (app, hits) = slow(
        &cache,
        Pace::Until(gate.clone()),
        RoutePolicy::ttl(MIN),
        &[],
    );
    let burst = spawn_burst(&app, 4, "/slow");
    // No origin call answers before all four requests have missed.
    until("4 misses", || cache.stats().totals.misses == 4).await;
    gate.open();
    within("the burst", burst).await.unwrap();
    assert_eq!(hits.get(), 4);
}
