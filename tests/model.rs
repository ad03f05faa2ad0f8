//! The model-based property test of the whole stack (issue #21, point 2),
//! and the programs it found to break a promise, kept as plain tests.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use support::send;
use tower_response_cache::{Cache, CacheLayer, Clock, RoutePolicy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// Regressions: programs that broke a promise, made plain and deterministic.

/// Found by `overlapping_programs_keep_the_promises`: two GETs without
/// validators meet a stale entry that has an `ETag`. The first revalidates
/// it; the second waits for the first. The origin's `304` freshens the
/// entry, and the waiter must be answered with it in full: it was answered
/// `304 Not Modified` with no body, for the validator the cache had put in
/// its request to the origin (a client error caused by the cache). A
/// waiter that sends the validator itself still gets its `304`.
#[tokio::test(start_paused = true)]
async fn a_waiter_is_not_answered_304_for_validators_it_never_sent() {
    let cache = Cache::builder().clock(Clock::tokio()).build();
    let gate = support::Gate::default();
    let calls = support::Hits::default();
    let (g, c) = (gate.clone(), calls.clone());
    let handler = move |headers: HeaderMap| {
        let (gate, calls) = (g.clone(), c.clone());
        async move {
            calls.bump();
            let mut res = Response::new(Body::from("the dashboard"));
            let h = res.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
            h.insert(header::ETAG, HeaderValue::from_static("\"d0\""));
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"d0\"")
            {
                gate.pass().await;
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                *res.body_mut() = Body::empty();
            }
            res
        }
    };
    let app = Router::new()
        .route("/dash", get(handler))
        .layer(CacheLayer::new(&cache).route("/dash", RoutePolicy::from_headers()));
    assert_eq!(
        send(&app, support::read("/dash")).await.cache_status(),
        "tower-response-cache; fwd=miss; stored"
    );
    tokio::time::advance(ms(2_000)).await;

    let spawn_get = |validator: Option<&'static str>| {
        let app = app.clone();
        let req = match validator {
            Some(etag) => support::get_with("/dash", "if-none-match", etag),
            None => support::read("/dash"),
        };
        tokio::spawn(async move { send(&app, req).await })
    };
    let revalidating = spawn_get(None);
    while calls.get() < 2 {
        tokio::task::yield_now().await;
    }
    let waiting = spawn_get(None);
    let asking = spawn_get(Some("\"d0\""));
    while cache.stats().totals.coalesced < 2 {
        tokio::task::yield_now().await;
    }
    gate.open();
    let answers = [
        (
            "revalidating",
            revalidating,
            StatusCode::OK,
            "the dashboard",
        ),
        ("waiting", waiting, StatusCode::OK, "the dashboard"),
        ("asking", asking, StatusCode::NOT_MODIFIED, ""),
    ];
    for (who, seen, status, body) in answers {
        let seen = seen.await.unwrap();
        assert_eq!(
            (seen.status, seen.text().as_str()),
            (status, body),
            "the {who} GET: {:?}",
            seen.headers
        );
        assert_eq!(seen.header("etag"), Some("\"d0\""), "the {who} GET");
    }
    assert_eq!(calls.get(), 2, "one revalidation for all three");
}
