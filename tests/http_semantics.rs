//! HTTP caching semantics (RFC 9111) through real axum routers on tokio's
//! paused clock: freshness from the response, targeted fields, `Age`,
//! revalidation with `304`, request directives, and invalidation by any
//! unsafe method.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Response, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use support::*;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy};

const SEC: Duration = Duration::from_secs(1);

/// An origin whose responses a test scripts: each call is counted, its
/// request headers kept, and it answers with the headers and body the
/// script gives for the call's number (a `304` has no body).
#[derive(Clone, Default)]
struct Origin {
    calls: Hits,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

type Script = fn(usize, &HeaderMap) -> (StatusCode, Vec<(&'static str, String)>);

impl Origin {
    fn router(&self, script: Script, layer: CacheLayer) -> Router {
        let origin = self.clone();
        Router::new()
            .route(
                "/r",
                any(move |req: Request| {
                    let origin = origin.clone();
                    async move {
                        let n = origin.calls.bump();
                        let (status, headers) = script(n, req.headers());
                        origin.seen.lock().unwrap().push(req.headers().clone());
                        let mut res = Response::builder().status(status);
                        for (name, value) in headers {
                            res = res.header(name, value);
                        }
                        let body = match status {
                            StatusCode::NOT_MODIFIED => Body::empty(),
                            _ => Body::from(format!("body {n}")),
                        };
                        res.body(body).unwrap()
                    }
                }),
            )
            .layer(layer)
    }

    fn last_request(&self) -> HeaderMap {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

fn cc(value: &str) -> Vec<(&'static str, String)> {
    vec![("cache-control", value.to_owned())]
}

fn headers_layer(cache: &Cache, policy: RoutePolicy) -> CacheLayer {
    CacheLayer::new(cache).route("/r", policy)
}

/// The origin calls `times` reads of `/r`, a second apart, make on a fresh
/// cache with `policy`.
async fn origin_calls(script: Script, policy: RoutePolicy, times: usize) -> usize {
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(script, headers_layer(&cache, policy));
    reads(&app, &origin, times, SEC).await
}

/// Reads `/r` `n` times, `step` apart; the origin calls made.
async fn reads(app: &Router, origin: &Origin, times: usize, step: Duration) -> usize {
    for _ in 0..times {
        send(app, read("/r")).await;
        tokio::time::advance(step).await;
    }
    origin.calls.get()
}

#[tokio::test(start_paused = true)]
async fn a_response_says_how_long_it_is_fresh() {
    let cases: [(&str, Script, usize); 6] = [
        ("max-age", |_, _| (StatusCode::OK, cc("max-age=5")), 2),
        (
            "s-maxage wins",
            |_, _| (StatusCode::OK, cc("max-age=100, s-maxage=5")),
            2,
        ),
        ("quoted", |_, _| (StatusCode::OK, cc("max-age=\"5\"")), 2),
        ("max-age=0", |_, _| (StatusCode::OK, cc("max-age=0")), 10),
        (
            "two values",
            |_, _| (StatusCode::OK, cc("max-age=5, max-age=50")),
            10,
        ),
        ("negative", |_, _| (StatusCode::OK, cc("max-age=-5")), 10),
    ];
    for (what, script, calls) in cases {
        let cache = Cache::builder().build();
        let origin = Origin::default();
        let app = origin.router(script, headers_layer(&cache, RoutePolicy::from_headers()));
        // Ten reads a second apart: a 5 s lifetime makes two origin calls.
        assert_eq!(reads(&app, &origin, 10, SEC).await, calls, "{what}");
    }
    // `Date` is the origin's wall clock: its distance to this cache's
    // clock counts in the age (and the paused clock does not move the
    // wall's), so these read within the first lifetime only.
    let dated: [(&str, Script, usize); 3] = [
        (
            "Expires less Date",
            |_, _| {
                let now = std::time::SystemTime::now();
                let expires = httpdate::fmt_http_date(now + 5 * SEC);
                (
                    StatusCode::OK,
                    vec![("date", httpdate::fmt_http_date(now)), ("expires", expires)],
                )
            },
            1,
        ),
        (
            "an invalid Expires",
            |_, _| (StatusCode::OK, vec![("expires", "0".to_owned())]),
            4,
        ),
        (
            "an Expires in the past",
            |_, _| {
                let now = std::time::SystemTime::now();
                let expires = httpdate::fmt_http_date(now - 5 * SEC);
                (
                    StatusCode::OK,
                    vec![("date", httpdate::fmt_http_date(now)), ("expires", expires)],
                )
            },
            4,
        ),
    ];
    for (what, script, calls) in dated {
        let cache = Cache::builder().build();
        let origin = Origin::default();
        let app = origin.router(script, headers_layer(&cache, RoutePolicy::from_headers()));
        assert_eq!(reads(&app, &origin, 4, SEC).await, calls, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_freshness_nothing_is_stored_unless_a_default_or_heuristic_applies() {
    let none: Script = |_, _| (StatusCode::OK, vec![]);
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(none, headers_layer(&cache, RoutePolicy::from_headers()));
    let seen = send(&app, read("/r")).await;
    assert_eq!(
        seen.cache_status(),
        "tower-response-cache; fwd=miss; detail=no-freshness"
    );
    assert_eq!(reads(&app, &origin, 3, SEC).await, 4);

    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().default_ttl(3 * SEC);
    let app = origin.router(none, headers_layer(&cache, policy));
    assert_eq!(reads(&app, &origin, 6, SEC).await, 2);

    // A ceiling caps what the response says.
    let long: Script = |_, _| (StatusCode::OK, cc("max-age=3600"));
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().max_ttl(3 * SEC);
    let app = origin.router(long, headers_layer(&cache, policy));
    assert_eq!(reads(&app, &origin, 6, SEC).await, 2);

    // Heuristic: a tenth of the time since Last-Modified (here 50 s: 5 s).
    let modified: Script = |_, _| {
        let now = std::time::SystemTime::now();
        (
            StatusCode::OK,
            vec![
                ("date", httpdate::fmt_http_date(now)),
                ("last-modified", httpdate::fmt_http_date(now - 50 * SEC)),
            ],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().heuristic_freshness(Duration::from_secs(3600));
    let app = origin.router(modified, headers_layer(&cache, policy));
    assert_eq!(reads(&app, &origin, 4, SEC).await, 1);
    // Not for a status that is not heuristically cacheable.
    let created: Script = |_, _| {
        let now = std::time::SystemTime::now();
        (
            StatusCode::CREATED,
            vec![("last-modified", httpdate::fmt_http_date(now - 50 * SEC))],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().heuristic_freshness(Duration::from_secs(3600));
    let app = origin.router(created, headers_layer(&cache, policy));
    assert_eq!(reads(&app, &origin, 3, SEC).await, 3);
}

#[tokio::test(start_paused = true)]
async fn no_store_and_private_refuse_in_both_modes_and_any_status_with_freshness_is_stored() {
    for value in [
        "no-store",
        "private",
        "private=\"x\", max-age=60",
        "no-cache",
    ] {
        let script: Script = match value {
            "no-store" => |_, _| (StatusCode::OK, cc("no-store, max-age=60")),
            "private" => |_, _| (StatusCode::OK, cc("private, max-age=60")),
            "no-cache" => |_, _| (StatusCode::OK, cc("no-cache, max-age=60")),
            _ => |_, _| (StatusCode::OK, cc("private=\"x\", max-age=60")),
        };
        for policy in [RoutePolicy::from_headers(), RoutePolicy::ttl(60 * SEC)] {
            let cache = Cache::builder().build();
            let origin = Origin::default();
            let app = origin.router(script, headers_layer(&cache, policy));
            assert_eq!(reads(&app, &origin, 3, SEC).await, 3, "{value}");
            assert_eq!(cache.stats().entries, 0, "{value}");
        }
    }
    // A 302 is not heuristically cacheable, but says how long it is fresh.
    let found: Script = |_, _| {
        (
            StatusCode::FOUND,
            vec![
                ("cache-control", "max-age=60".into()),
                ("location", "/elsewhere".into()),
            ],
        )
    };
    assert_eq!(origin_calls(found, RoutePolicy::from_headers(), 3).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_targeted_field_replaces_cache_control_for_this_cache_and_can_be_stripped() {
    let script: Script = |_, _| {
        (
            StatusCode::OK,
            vec![
                ("cache-control", "max-age=0, no-cache".into()),
                ("app-cache-control", "max-age=60".into()),
            ],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers()
        .targeted_field("app-cache-control")
        .strip_targeted_field();
    let app = origin.router(script, headers_layer(&cache, policy));
    let miss = send(&app, read("/r")).await;
    tokio::time::advance(10 * SEC).await;
    let hit = send(&app, read("/r")).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    for seen in [&miss, &hit] {
        assert_eq!(seen.header("app-cache-control"), None);
        // Browsers still get what the handler told them.
        assert_eq!(seen.header("cache-control"), Some("max-age=0, no-cache"));
    }
    assert_eq!(origin.calls.get(), 1);
    // An unreadable targeted field is ignored: Cache-Control decides.
    let unreadable: Script = |_, _| {
        (
            StatusCode::OK,
            vec![
                ("cache-control", "max-age=2".into()),
                ("app-cache-control", "max-age=60, é".into()),
            ],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().targeted_field("app-cache-control");
    let app = origin.router(unreadable, headers_layer(&cache, policy));
    // max-age=2 over six seconds (the targeted 60 s would make one call).
    assert_eq!(reads(&app, &origin, 6, SEC).await, 3);
}

#[tokio::test(start_paused = true)]
async fn age_counts_what_the_response_had_on_arrival() {
    let aged: Script = |_, _| {
        (
            StatusCode::OK,
            vec![("cache-control", "max-age=60".into()), ("age", "50".into())],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(aged, headers_layer(&cache, RoutePolicy::from_headers()));
    send(&app, read("/r")).await;
    tokio::time::advance(3 * SEC).await;
    let hit = send(&app, read("/r")).await;
    assert!(hit.is_hit());
    assert_eq!(hit.header("age"), Some("53"));
    // Fresh for the 10 s it had left, not 60.
    tokio::time::advance(8 * SEC).await;
    let stale = send(&app, read("/r")).await;
    assert!(!stale.is_hit(), "{}", stale.cache_status());
    assert_eq!(origin.calls.get(), 2);
    // A huge Age: stale on arrival.
    let huge: Script = |_, _| {
        (
            StatusCode::OK,
            vec![
                ("cache-control", "max-age=60".into()),
                ("age", "999999999999999999999".into()),
            ],
        )
    };
    assert_eq!(origin_calls(huge, RoutePolicy::from_headers(), 3).await, 3);
}

/// An origin with an ETag, answering 304 when it is sent back.
fn validated(_: usize, req: &HeaderMap) -> (StatusCode, Vec<(&'static str, String)>) {
    let headers = vec![
        ("cache-control", "max-age=5".into()),
        ("etag", "\"v1\"".into()),
        ("x-fresh", "yes".into()),
    ];
    match req.get("if-none-match").and_then(|v| v.to_str().ok()) {
        Some("\"v1\"") => (StatusCode::NOT_MODIFIED, headers),
        _ => (StatusCode::OK, headers),
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_revalidated_and_a_304_freshens_it() {
    for policy in [
        RoutePolicy::from_headers(),
        RoutePolicy::ttl(5 * SEC).keep_for_revalidation(60 * SEC),
    ] {
        let cache = Cache::builder().build();
        let origin = Origin::default();
        let app = origin.router(validated, headers_layer(&cache, policy));
        assert_eq!(send(&app, read("/r")).await.text(), "body 1");
        tokio::time::advance(6 * SEC).await;
        let revalidated = send(&app, read("/r")).await;
        assert_eq!(origin.calls.get(), 2);
        assert_eq!(
            origin.last_request().get("if-none-match").unwrap(),
            "\"v1\""
        );
        assert_eq!(revalidated.status, StatusCode::OK);
        // The stored body, with no body sent by the origin.
        assert_eq!(revalidated.text(), "body 1");
        assert_eq!(
            revalidated.cache_status(),
            "tower-response-cache; fwd=stale; fwd-status=304; stored"
        );
        assert_eq!(revalidated.header("x-fresh"), Some("yes"));
        // Fresh again for the 304's lifetime.
        let hit = send(&app, read("/r")).await;
        assert!(hit.is_hit(), "{}", hit.cache_status());
        assert_eq!(hit.text(), "body 1");
        assert_eq!(origin.calls.get(), 2);
        let stats = cache.stats();
        assert_eq!((stats.revalidations, stats.revalidated), (1, 1));
        // A client's own validator is answered from the freshened entry.
        tokio::time::advance(6 * SEC).await;
        let nm = send(&app, get_with("/r", "if-none-match", "\"v1\"")).await;
        assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
        assert_eq!(origin.calls.get(), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn a_200_to_a_revalidation_replaces_the_entry() {
    let changed: Script = |n, _| {
        (
            StatusCode::OK,
            vec![
                ("cache-control", "max-age=5".into()),
                ("etag", format!("\"v{n}\"")),
            ],
        )
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(changed, headers_layer(&cache, RoutePolicy::from_headers()));
    send(&app, read("/r")).await;
    tokio::time::advance(6 * SEC).await;
    let second = send(&app, read("/r")).await;
    assert_eq!(
        origin.last_request().get("if-none-match").unwrap(),
        "\"v1\""
    );
    assert_eq!(second.text(), "body 2");
    let hit = send(&app, read("/r")).await;
    assert!(hit.is_hit());
    assert_eq!(hit.text(), "body 2");
}

#[tokio::test(start_paused = true)]
async fn a_validator_the_cache_computed_is_never_sent_upstream() {
    let plain: Script = |_, _| (StatusCode::OK, vec![]);
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(
        plain,
        headers_layer(
            &cache,
            RoutePolicy::ttl(5 * SEC).keep_for_revalidation(60 * SEC),
        ),
    );
    send(&app, read("/r")).await;
    let hit = send(&app, read("/r")).await;
    let computed = hit.header("etag").expect("a computed etag").to_owned();
    tokio::time::advance(6 * SEC).await;
    // Expired: the client's copy of the computed tag goes nowhere upstream,
    // and the entry (with no origin validator) is fetched again.
    send(&app, get_with("/r", "if-none-match", &computed)).await;
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(origin.last_request().get("if-none-match"), None);
    assert_eq!(cache.stats().revalidations, 0);
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_and_no_cache_are_never_served_stale() {
    let failing: Script = |n, _| match n {
        1 => (
            StatusCode::OK,
            cc("max-age=2, must-revalidate, stale-if-error=60"),
        ),
        _ => (StatusCode::SERVICE_UNAVAILABLE, vec![]),
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let policy = RoutePolicy::from_headers().stale_if_error(60 * SEC);
    let app = origin.router(failing, headers_layer(&cache, policy));
    send(&app, read("/r")).await;
    tokio::time::advance(3 * SEC).await;
    let seen = send(&app, read("/r")).await;
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);

    // no-cache with a validator: stored, revalidated on every use.
    let no_cache: Script = |_, req| {
        let headers = vec![
            ("cache-control", "no-cache".into()),
            ("etag", "\"n\"".into()),
        ];
        match req.get("if-none-match") {
            Some(_) => (StatusCode::NOT_MODIFIED, headers),
            None => (StatusCode::OK, headers),
        }
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(no_cache, headers_layer(&cache, RoutePolicy::from_headers()));
    for _ in 0..3 {
        assert_eq!(send(&app, read("/r")).await.text(), "body 1");
    }
    assert_eq!(origin.calls.get(), 3);
    assert_eq!(cache.stats().revalidated, 2);
}

#[tokio::test(start_paused = true)]
async fn request_directives_are_ignored_by_default_and_honoured_when_asked() {
    let fresh: Script = |_, _| (StatusCode::OK, cc("max-age=60"));
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(fresh, headers_layer(&cache, RoutePolicy::from_headers()));
    send(&app, read("/r")).await;
    for (name, value) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        assert!(send(&app, get_with("/r", name, value)).await.is_hit());
    }
    assert_eq!(origin.calls.get(), 1);

    let cache = Cache::builder().build();
    let origin = Origin::default();
    let layer = headers_layer(&cache, RoutePolicy::from_headers()).request_directives();
    let app = origin.router(fresh, layer);
    // only-if-cached with nothing stored: 504, no origin call.
    let none = send(&app, get_with("/r", "cache-control", "only-if-cached")).await;
    assert_eq!(none.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls.get(), 0);
    send(&app, read("/r")).await;
    tokio::time::advance(10 * SEC).await;
    let cached = send(&app, get_with("/r", "cache-control", "only-if-cached")).await;
    assert!(cached.is_hit());
    assert!(send(&app, get_with("/r", "cache-control", "max-age=20"))
        .await
        .is_hit());
    assert!(!send(&app, get_with("/r", "cache-control", "max-age=5"))
        .await
        .is_hit());
    assert!(!send(&app, get_with("/r", "cache-control", "min-fresh=65"))
        .await
        .is_hit());
    assert!(!send(&app, get_with("/r", "pragma", "no-cache"))
        .await
        .is_hit());
    assert!(!send(&app, get_with("/r", "cache-control", "no-cache"))
        .await
        .is_hit());
    assert_eq!(origin.calls.get(), 5);
    // max-stale never serves past the route's windows.
    tokio::time::advance(120 * SEC).await;
    assert!(!send(&app, get_with("/r", "cache-control", "max-stale"))
        .await
        .is_hit());
}

#[tokio::test(start_paused = true)]
async fn any_unsafe_or_unknown_method_invalidates_its_target() {
    let fresh: Script = |_, _| (StatusCode::OK, cc("max-age=600"));
    for m in [
        "POST", "PUT", "DELETE", "PATCH", "M-SEARCH", "PURGE", "REPORT",
    ] {
        let cache = Cache::builder().build();
        let origin = Origin::default();
        let app = origin
            .router(fresh, headers_layer(&cache, RoutePolicy::from_headers()))
            .layer(InvalidateOn::new(&cache));
        send(&app, read("/r")).await;
        assert!(send(&app, read("/r")).await.is_hit());
        let write = send(&app, method(m, "/r")).await;
        assert_eq!(write.status, StatusCode::OK, "{m}");
        assert!(
            !send(&app, read("/r")).await.is_hit(),
            "{m} flushed nothing"
        );
    }
    // Safe methods flush nothing.
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin
        .router(fresh, headers_layer(&cache, RoutePolicy::from_headers()))
        .layer(InvalidateOn::new(&cache));
    send(&app, read("/r")).await;
    send(&app, method("OPTIONS", "/r")).await;
    assert!(send(&app, read("/r")).await.is_hit());
}

#[tokio::test]
async fn a_shared_cache_in_front_of_an_upstream_over_the_wire() {
    let cache = Cache::builder().build();
    let calls = Hits::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/page",
            get(move || {
                counted.bump();
                async { ([("cache-control", "max-age=60"), ("etag", "\"p\"")], "page") }
            }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private, max-age=60")], "mine") }),
        )
        .layer(CacheLayer::new(&cache).shared_cache());
    let addr = serve(app).await;
    let client = client();
    fetch(&client, addr, "GET", "/page", &[]).await;
    let hit = fetch(&client, addr, "GET", "/page", &[]).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    let nm = fetch(&client, addr, "GET", "/page", &[("if-none-match", "\"p\"")]).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    let forced = fetch(
        &client,
        addr,
        "GET",
        "/page",
        &[("cache-control", "no-cache")],
    )
    .await;
    assert!(!forced.is_hit());
    assert_eq!(calls.get(), 2);
    fetch(&client, addr, "GET", "/private", &[]).await;
    assert!(!fetch(&client, addr, "GET", "/private", &[]).await.is_hit());
}

#[tokio::test(start_paused = true)]
async fn one_range_of_a_stored_response_is_answered_from_it() {
    let cache = Cache::builder().build();
    let calls = Hits::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/file",
            get(move |headers: HeaderMap| {
                counted.bump();
                async move {
                    // A range-aware origin would answer 206; this one always
                    // sends the whole file, which tells its answers apart.
                    let _ = headers;
                    (
                        [("etag", "\"f1\""), ("content-type", "text/plain")],
                        "0123456789",
                    )
                }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(60 * SEC));
    send(&app, read("/file")).await;
    let ranged = |value: &'static str| get_with("/file", "range", value);

    let part = send(&app, ranged("bytes=2-4")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.text(), "234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(part.header("content-type"), Some("text/plain"));
    assert_eq!(
        part.header("content-length"),
        Some("3"),
        "the part's length"
    );
    assert!(part.is_hit());
    // Over the wire too, where a length that is not the body's breaks the
    // answer (the host is in the key there: its own entry).
    let addr = serve(app.clone()).await;
    for _ in 0..2 {
        let whole = fetch(&client(), addr, "GET", "/file", &[]).await;
        assert_eq!(whole.header("content-length"), Some("10"));
    }
    let wire = fetch(&client(), addr, "GET", "/file", &[("range", "bytes=2-4")]).await;
    // One origin call for the in-process key, one for the wire's.
    assert!(wire.is_hit(), "{}", wire.cache_status());
    assert_eq!(
        (wire.status, wire.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "234")
    );
    let suffix = send(&app, ranged("bytes=-3")).await;
    assert_eq!(
        (suffix.status, suffix.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "789")
    );
    let open = send(&app, ranged("bytes=8-")).await;
    assert_eq!(open.header("content-range"), Some("bytes 8-9/10"));

    let beyond = send(&app, ranged("bytes=10-20")).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.header("content-range"), Some("bytes */10"));
    assert!(beyond.body.is_empty());
    assert_eq!(calls.get(), 2);

    // If-Range: the entry's own strong tag applies the range; any other
    // validator gets the whole entry.
    let mut req = ranged("bytes=0-0");
    req.headers_mut()
        .insert("if-range", "\"f1\"".parse().unwrap());
    assert_eq!(send(&app, req).await.text(), "0");
    let mut req = ranged("bytes=0-0");
    req.headers_mut()
        .insert("if-range", "\"old\"".parse().unwrap());
    let whole = send(&app, req).await;
    assert_eq!(
        (whole.status, whole.text().as_str()),
        (StatusCode::OK, "0123456789")
    );
    assert!(whole.is_hit());
    assert_eq!(calls.get(), 2);

    // Several ranges, another unit, garbage: the origin answers.
    for other in ["bytes=0-1,4-5", "items=0-1", "bytes=x-y", "bytes=5-1"] {
        let seen = send(&app, ranged(other)).await;
        assert_eq!(seen.status, StatusCode::OK, "{other}");
    }
    assert_eq!(calls.get(), 6);
    // A HEAD ignores Range.
    let mut head = ranged("bytes=0-1");
    *head.method_mut() = http::Method::HEAD;
    let head = send(&app, head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("10"));
}

#[tokio::test]
async fn the_headers_the_cache_adds_are_the_same_on_the_storing_miss_as_on_its_hits() {
    let app = |cache: &Cache| {
        Router::new()
            .route("/plain", get(|| async { "plain" }))
            .route("/tagged", get(|| async { ([("etag", "\"t\"")], "tagged") }))
            .layer(CacheLayer::new(cache).ttl(60 * SEC))
    };
    let added = |seen: &Seen| {
        let mut names: Vec<&str> = ["etag", "cache-status"]
            .into_iter()
            .filter(|n| seen.headers.contains_key(*n))
            .collect();
        names.sort_unstable();
        names
    };
    let client = client();
    let cache = Cache::builder().build();
    let addr = serve(app(&cache)).await;
    let miss = fetch(&client, addr, "GET", "/plain", &[]).await;
    let hit = fetch(&client, addr, "GET", "/plain", &[]).await;
    assert!(hit.is_hit());
    assert_eq!(added(&miss), ["cache-status", "etag"]);
    assert_eq!(added(&hit), added(&miss));
    assert_eq!(miss.header("etag"), hit.header("etag"));
    let etag = hit.header("etag").unwrap().to_owned();
    let nm = fetch(&client, addr, "GET", "/plain", &[("if-none-match", &etag)]).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);

    // Lean: Age alone on a hit; the origin's validators kept and answered.
    let cache = Cache::builder().lean_headers().build();
    let addr = serve(app(&cache)).await;
    let miss = fetch(&client, addr, "GET", "/plain", &[]).await;
    let hit = fetch(&client, addr, "GET", "/plain", &[]).await;
    assert!(added(&miss).is_empty() && added(&hit).is_empty());
    assert_eq!(hit.header("age"), Some("0"));
    assert_eq!(cache.stats().totals.hits, 1);
    fetch(&client, addr, "GET", "/tagged", &[]).await;
    let hit = fetch(&client, addr, "GET", "/tagged", &[]).await;
    assert_eq!(added(&hit), ["etag"]);
    assert_eq!(cache.stats().totals.hits, 2);
    assert_eq!(
        (hit.header("etag"), hit.header("age")),
        (Some("\"t\""), Some("0"))
    );
    assert_eq!(
        hit.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let nm = fetch(
        &client,
        addr,
        "GET",
        "/tagged",
        &[("if-none-match", "\"t\"")],
    )
    .await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert_eq!(nm.header("cache-status"), None);
    // Nor on what bypasses.
    let post = fetch(&client, addr, "POST", "/plain", &[]).await;
    assert_eq!(post.header("cache-status"), None);
}

#[tokio::test(start_paused = true)]
async fn a_shared_cache_answers_stale_for_a_minute_when_the_upstream_fails() {
    let failing: Script = |n, _| match n {
        1 => (StatusCode::OK, cc("max-age=2")),
        _ => (StatusCode::BAD_GATEWAY, vec![]),
    };
    let cache = Cache::builder().build();
    let origin = Origin::default();
    let app = origin.router(failing, CacheLayer::new(&cache).shared_cache());
    send(&app, read("/r")).await;
    tokio::time::advance(3 * SEC).await;
    let stale = send(&app, read("/r")).await;
    assert_eq!(
        (stale.status, stale.text().as_str()),
        (StatusCode::OK, "body 1")
    );
    assert!(
        stale.cache_status().contains("stale-if-error"),
        "{}",
        stale.cache_status()
    );
    // Not past the minute.
    tokio::time::advance(60 * SEC).await;
    assert_eq!(send(&app, read("/r")).await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn if_none_match_is_read_as_a_list_of_tags_over_all_its_lines() {
    let cache = Cache::builder().build();
    let app = Router::new()
        .route(
            "/t",
            get(|| async { ([("etag", "\"a,b\"")], "tagged with a comma") }),
        )
        .layer(CacheLayer::new(&cache).ttl(60 * SEC));
    send(&app, read("/t")).await;
    let asking = |lines: &[&str]| {
        let mut req = read("/t");
        for line in lines {
            req.headers_mut()
                .append("if-none-match", line.parse().unwrap());
        }
        send(&app, req)
    };
    // A tag may hold a comma: it is one tag, matched whole.
    assert_eq!(
        asking(&["\"x\", \"a,b\""]).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        asking(&["W/\"a,b\""]).await.status,
        StatusCode::NOT_MODIFIED
    );
    // Any line of the field may hold it.
    assert_eq!(
        asking(&["\"x\"", "\"a,b\""]).await.status,
        StatusCode::NOT_MODIFIED
    );
    // Neither half of it, nor a list that is not one, earns a 304.
    for lines in [&["\"a\", \"b\""][..], &["\"a,b"], &["junk \"a,b\""]] {
        let seen = asking(lines).await;
        assert_eq!(seen.status, StatusCode::OK, "{lines:?}");
        assert_eq!(seen.text(), "tagged with a comma");
    }
}
