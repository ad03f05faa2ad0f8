//! What the fuzzers (`fuzz/`, docs/fuzzing.md) found, kept as tests that
//! run on stable: each holds the input that failed, cut down to what made
//! it fail, and goes through a real axum router where the failure can be
//! seen from outside. The `replay` module (feature `fuzzing`) checks the
//! same inputs against the property the fuzz target checked.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{HeaderValue, Request};
use support::*;
use tower_response_cache::{Cache, CacheLayer, RoutePolicy};

const MIN: Duration = Duration::from_secs(60);

fn get_with_bytes(uri: &str, headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut req = Request::get(uri).body(Body::empty()).unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .append(name, HeaderValue::from_bytes(value).unwrap());
    }
    req
}

/// A router whose handler counts its calls and answers with the count,
/// so that a hit shows whose response it is.
fn counted(layer: CacheLayer, vary: Option<&'static str>) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handler = move || {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut res = http::Response::new(Body::from(format!("call {n}")));
            if let Some(vary) = vary {
                res.headers_mut()
                    .insert("vary", HeaderValue::from_static(vary));
            }
            res
        }
    };
    let app = Router::new().route("/p", get(handler)).layer(layer);
    (app, calls)
}

/// fuzz target `host`: the normal form of `acme.example:80.` was
/// `acme.example:80`, which is not normal (its own normal form is
/// `acme.example`). A port must be digits: such a host is refused.
#[tokio::test]
async fn a_host_whose_port_is_not_digits_is_refused() {
    let cache = Cache::builder().build();
    let (app, calls) = counted(CacheLayer::new(&cache).ttl(MIN), None);
    for host in [&b"acme.example:80."[..], b"a:80:80", b"[::1]:x"] {
        let seen = send(&app, get_with_bytes("/p", &[("host", host)])).await;
        assert_eq!(
            seen.cache_status(),
            "tower-response-cache; fwd=bypass; detail=uri-malformed",
            "{}",
            String::from_utf8_lossy(host)
        );
    }
    // The normal spellings still share one entry.
    send(&app, get_with_bytes("/p", &[("host", b"acme.example.:80")])).await;
    let seen = send(&app, get_with_bytes("/p", &[("host", b"ACME.example")])).await;
    assert!(seen.is_hit(), "{}", seen.cache_status());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// fuzz target `key`: a `Host` that is not text (`exam\xff...p`) was keyed
/// as no host at all, so its response was stored under the key of the
/// same path asked with no `Host`, and served to such a request.
#[tokio::test]
async fn a_host_that_is_not_text_never_shares_the_entries_of_no_host() {
    let cache = Cache::builder().build();
    let (app, calls) = counted(CacheLayer::new(&cache).ttl(MIN), None);
    let odd = send(
        &app,
        get_with_bytes("/p?a=1", &[("host", b"exam\xff\xff\xff\xff\xff\xffp")]),
    )
    .await;
    assert_eq!(
        odd.cache_status(),
        "tower-response-cache; fwd=bypass; detail=uri-malformed"
    );
    let plain = send(&app, get_with_bytes("/p?a=1", &[])).await;
    assert!(!plain.is_hit(), "served the odd host's response");
    assert_eq!(plain.text(), "call 2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// fuzz target `vary`: a request without the header a response varies on
/// and one with it empty (`X-A: `) selected the same variant. RFC 9111,
/// section 4.1: an absent header matches only an absent one.
#[tokio::test]
async fn an_absent_vary_header_never_matches_an_empty_one() {
    let cache = Cache::builder().build();
    let (app, calls) = counted(CacheLayer::new(&cache).ttl(MIN), Some("x-a"));
    let absent = send(&app, get_with_bytes("/p", &[])).await;
    assert_eq!(absent.text(), "call 1");
    assert!(send(&app, get_with_bytes("/p", &[])).await.is_hit());
    let empty = send(&app, get_with_bytes("/p", &[("x-a", b"")])).await;
    assert!(
        !empty.is_hit(),
        "the empty value got the absent one's variant"
    );
    assert_eq!(empty.text(), "call 2");
    assert!(send(&app, get_with_bytes("/p", &[("x-a", b"")]))
        .await
        .is_hit());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// fuzz target `vary`: credentials a response varies on are keyed by a
/// keyed hash, and the hash was taken of the value as lossy UTF-8, so two
/// cookies that differ only in bytes that are not UTF-8 (`\x86` and `\x87`
/// here, from the fuzzer's input) shared a variant: one user's response
/// served to another.
#[tokio::test]
async fn cookies_differing_in_bytes_that_are_not_utf8_are_other_users() {
    let cache = Cache::builder().build();
    // Both requests in one scope, so that only the cookie tells them apart.
    let policy = RoutePolicy::ttl(MIN).scope(|_| Some("tenant".into()));
    let (app, calls) = counted(CacheLayer::new(&cache).route("/p", policy), Some("cookie"));
    let first: &[u8] = b"\x86a=ie:a=\xff\xff\xff2";
    let second: &[u8] = b"\x87a=ie:a=\xff\xff\xff2";
    let a = send(&app, get_with_bytes("/p", &[("cookie", first)])).await;
    assert_eq!(a.text(), "call 1");
    assert!(send(&app, get_with_bytes("/p", &[("cookie", first)]))
        .await
        .is_hit());
    let b = send(&app, get_with_bytes("/p", &[("cookie", second)])).await;
    assert!(!b.is_hit(), "served another cookie's response");
    assert_eq!(b.text(), "call 2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The same inputs, against the properties the fuzz targets check.
#[cfg(feature = "fuzzing")]
mod replay {
    use http::{HeaderMap, HeaderName, HeaderValue};
    use tower_response_cache::fuzzing::{is_normal_host, normal_host, variant_key};

    #[test]
    fn host_normal_forms_are_normal_and_idempotent() {
        for host in [
            "acme.example:80.",
            "a:80:80",
            "acme.example.:443",
            "[::1]:80",
            "A.:8080",
        ] {
            if let Some(normal) = normal_host(host) {
                assert!(is_normal_host(&normal), "{host} -> {normal}");
                assert_eq!(normal_host(&normal).as_deref(), Some(normal.as_str()));
            }
        }
        assert_eq!(
            normal_host("acme.example.:443").as_deref(),
            Some("acme.example")
        );
        assert_eq!(normal_host("A.:8080").as_deref(), Some("a:8080"));
    }

    fn one(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).unwrap(),
        );
        h
    }

    #[test]
    fn variants_tell_absent_from_empty() {
        let x_a = [HeaderName::from_static("x-a")];
        assert_ne!(
            variant_key(&x_a, &HeaderMap::new()),
            variant_key(&x_a, &one("x-a", b""))
        );
    }

    #[test]
    fn credential_variants_tell_bytes_from_bytes() {
        let cookie = [http::header::COOKIE];
        assert_ne!(
            variant_key(&cookie, &one("cookie", b"\x86a=1")),
            variant_key(&cookie, &one("cookie", b"\x87a=1"))
        );
        assert_eq!(
            variant_key(&cookie, &one("cookie", b"\x86a=1")),
            variant_key(&cookie, &one("cookie", b"\x86a=1"))
        );
    }
}
