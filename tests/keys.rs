//! What a key holds, probed from outside: the host a request names (a
//! server answering several tenants by subdomain), in one normal form.
//! Through real axum routers and a hyper server.

mod support;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use support::*;
use tower_response_cache::{Cache, CacheLayer};

const MIN: Duration = Duration::from_secs(60);

/// A tenant's home page, naming the host it was asked for.
async fn home(headers: http::HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    format!("home of {host}")
}

fn tenants(layer: CacheLayer) -> Router {
    Router::new().route("/", get(home)).layer(layer)
}

#[tokio::test]
async fn one_hosts_response_is_never_served_for_another() {
    let cache = Cache::builder().build();
    let addr = serve(tenants(CacheLayer::new(&cache).ttl(MIN))).await;
    let client = client();
    let as_host = |host: &'static str| {
        let client = client.clone();
        async move { fetch(&client, addr, "GET", "/", &[("host", host)]).await }
    };
    let acme = as_host("acme.example").await;
    assert_eq!(acme.text(), "home of acme.example");
    assert!(as_host("acme.example").await.is_hit());

    let globex = as_host("globex.example").await;
    assert_eq!(globex.text(), "home of globex.example");
    assert!(!globex.is_hit(), "{}", globex.cache_status());

    // One host, however it is spelled: case, a default port, a final dot.
    for spelling in [
        "ACME.example",
        "acme.example:80",
        "acme.example.",
        "Acme.Example:443",
    ] {
        let seen = as_host(spelling).await;
        assert!(seen.is_hit(), "{spelling}: {}", seen.cache_status());
        assert_eq!(seen.text(), "home of acme.example", "{spelling}");
    }
    // Another port is another origin.
    assert!(!as_host("acme.example:8080").await.is_hit());
    assert_eq!(cache.stats().entries, 3);
}

#[tokio::test]
async fn a_malformed_host_is_served_by_the_origin() {
    let cache = Cache::builder().build();
    let app = tenants(CacheLayer::new(&cache).ttl(MIN));
    for _ in 0..2 {
        let seen = send(&app, get_with("/", "host", "acme example")).await;
        assert_eq!(seen.status, http::StatusCode::OK);
        assert_eq!(
            seen.cache_status(),
            "tower-response-cache; fwd=bypass; detail=uri-malformed"
        );
    }
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test]
async fn any_host_shares_entries_across_the_names_of_one_site() {
    let cache = Cache::builder().build();
    let addr = serve(tenants(CacheLayer::new(&cache).ttl(MIN).any_host())).await;
    let client = client();
    let first = fetch(&client, addr, "GET", "/", &[("host", "example.com")]).await;
    assert!(!first.is_hit());
    let alias = fetch(&client, addr, "GET", "/", &[("host", "www.example.com")]).await;
    assert!(alias.is_hit(), "{}", alias.cache_status());
    assert_eq!(alias.text(), "home of example.com");
}

/// A greeting in the request's language, varying on it, from a slow origin
/// (300 ms on tokio's paused clock) whose calls are counted.
fn greeting() -> (Cache, Hits, Router) {
    let cache = Cache::builder().build();
    let calls = Hits::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/greeting",
            get(move |headers: http::HeaderMap| {
                counted.bump();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    ([("vary", "accept-language")], format!("hello in {lang}"))
                }
            }),
        )
        .layer(CacheLayer::new(&cache).ttl(MIN));
    (cache, calls, app)
}

#[tokio::test(start_paused = true)]
async fn new_variants_of_one_url_never_wait_for_each_other() {
    let (cache, calls, app) = greeting();
    // The URL is known to vary once one response is stored.
    send(&app, get_with("/greeting", "accept-language", "en")).await;
    let started = tokio::time::Instant::now();
    let languages = ["fr", "de", "es", "it"];
    let answers = futures_join(languages.map(|lang| {
        let app = app.clone();
        async move { send(&app, get_with("/greeting", "accept-language", lang)).await }
    }))
    .await;
    let took = started.elapsed();
    for (lang, seen) in languages.iter().zip(&answers) {
        assert_eq!(seen.text(), format!("hello in {lang}"));
    }
    assert!(
        took < Duration::from_millis(450),
        "four new variants took {took:?}"
    );
    assert_eq!(calls.get(), 5);
    assert_eq!(
        cache.stats().totals.coalesced,
        0,
        "no variant waited for another"
    );
    // The same variant still coalesces.
    cache.invalidate_all();
    let same = futures_join([0, 1].map(|_| {
        let app = app.clone();
        async move { send(&app, get_with("/greeting", "accept-language", "fr")).await }
    }))
    .await;
    assert!(same.iter().all(|s| s.text() == "hello in fr"));
    assert_eq!(
        calls.get(),
        6,
        "one origin call for two requests of one variant"
    );
}

#[tokio::test(start_paused = true)]
async fn variants_of_a_url_not_yet_known_to_vary_never_wait_for_each_other() {
    let (_cache, calls, app) = greeting();
    // Nothing is stored yet: the first request leads, the others wait for
    // it until its response says it varies, then each goes for its own
    // variant at once; the two asking for French share one origin call.
    let started = tokio::time::Instant::now();
    let languages = ["en", "fr", "de", "fr", "es"];
    let answers = futures_join(languages.map(|lang| {
        let app = app.clone();
        async move { send(&app, get_with("/greeting", "accept-language", lang)).await }
    }))
    .await;
    let took = started.elapsed();
    for (lang, seen) in languages.iter().zip(&answers) {
        assert_eq!(seen.text(), format!("hello in {lang}"));
    }
    assert!(
        took < Duration::from_millis(750),
        "five requests for four new variants took {took:?}"
    );
    assert_eq!(calls.get(), 4, "one origin call per variant");
    let collapsed = answers
        .iter()
        .filter(|s| s.cache_status().contains("collapsed"))
        .count();
    assert_eq!(
        collapsed, 1,
        "the second French request waited for the first"
    );
    for lang in ["en", "fr", "de", "es"] {
        let seen = send(&app, get_with("/greeting", "accept-language", lang)).await;
        assert!(seen.is_hit(), "{lang}: {}", seen.cache_status());
    }
}

/// Runs futures concurrently on this task and collects their outputs.
async fn futures_join<F: std::future::Future, const N: usize>(futures: [F; N]) -> [F::Output; N] {
    let handles = futures.map(|f| Box::pin(f));
    let mut outputs: [Option<F::Output>; N] = std::array::from_fn(|_| None);
    let mut handles = handles.map(Some);
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.map(|o| o.expect("every future finished"))
}
