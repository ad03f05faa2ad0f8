//! `Cache-Control` (and `Pragma`, and a targeted field, RFC 9213), read as
//! a response's and as a request's directives.
//!
//! Input: header lines (`Cache-Control: ...`, `Pragma: ...`,
//! `CDN-Cache-Control: ...`, any other).
//!
//! Checks: names are case-insensitive (the input in upper case reads the
//! same); a response's reading does not depend on the order of its
//! directives, nor on how they are spread over field lines; a targeted
//! field that is a dictionary (RFC 9213) replaces `Cache-Control`, one
//! that cannot be read never does; a field that is not text is
//! unreadable; no number exceeds 2^31; and a response that says
//! `no-store` or `private`, or cannot be read, gets no entry.
#![no_main]

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{
    freshness_timing, request_directives, response_directives, Delta, ResponseDirectives,
};
use tower_response_cache::RoutePolicy;
use tower_response_cache_fuzz::header_map;

static TARGETED: HeaderName = HeaderName::from_static("cdn-cache-control");

fn upper(map: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in map {
        let v = HeaderValue::from_bytes(&value.as_bytes().to_ascii_uppercase())
            .expect("upper case keeps a value valid");
        out.append(name.clone(), v);
    }
    out
}

/// A map holding only `lines` as `Cache-Control`.
fn cache_control(lines: impl IntoIterator<Item = HeaderValue>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for v in lines {
        out.append(header::CACHE_CONTROL, v);
    }
    out
}

/// A Structured Fields dictionary (RFC 8941) of the plainest kind, which a
/// targeted field (RFC 9213) must be: members `key` or `key=integer`, keys
/// a lower-case letter then lower-case letters, digits or `-`.
fn plain_dictionary(value: &str) -> bool {
    value.split(',').all(|member| {
        let member = member.trim_matches(' ');
        let (key, arg) = member
            .split_once('=')
            .map_or((member, None), |(k, a)| (k, Some(a)));
        let mut key_bytes = key.bytes();
        let key_ok = key_bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && key_bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let arg_ok = arg.is_none_or(|a| {
            !a.is_empty() && a.len() <= 15 && a.bytes().all(|b| b.is_ascii_digit())
        });
        key_ok && arg_ok
    })
}

fn within_bound(d: Option<Delta>) -> bool {
    !matches!(d, Some(Ok(n)) if n > 1 << 31)
}

fn check_bounds(d: &ResponseDirectives) {
    for delta in [
        d.max_age,
        d.s_maxage,
        d.stale_while_revalidate,
        d.stale_if_error,
    ] {
        assert!(within_bound(delta), "{d:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let headers = header_map(data);
    let response = response_directives(&headers, None);
    let request = request_directives(&headers);
    check_bounds(&response);
    assert!(within_bound(request.max_age) && within_bound(request.min_fresh));

    let up = upper(&headers);
    assert_eq!(response_directives(&up, None), response, "upper case");
    assert_eq!(request_directives(&up), request, "upper case");

    let lines: Vec<&HeaderValue> = headers.get_all(header::CACHE_CONTROL).iter().collect();
    let texts: Option<Vec<&str>> = lines.iter().map(|v| v.to_str().ok()).collect();
    assert_eq!(response.unreadable, texts.is_none(), "{lines:?}");
    if let Some(texts) = texts.filter(|t| !t.is_empty() && !t.iter().any(|t| t.contains('"'))) {
        // Unquoted: the members, one line or many, in any order.
        let members: Vec<&str> = texts.iter().flat_map(|t| t.split(',')).collect();
        let one_line = HeaderValue::from_str(&members.join(",")).expect("text stays text");
        assert_eq!(
            response_directives(&cache_control([one_line]), None),
            response,
            "on one line"
        );
        let reversed: Vec<HeaderValue> = members
            .iter()
            .rev()
            .map(|m| HeaderValue::from_str(m).expect("text stays text"))
            .collect();
        assert_eq!(
            response_directives(&cache_control(reversed), None),
            response,
            "in reverse order"
        );
    }

    let targeted = response_directives(&headers, Some(&TARGETED));
    let own: Vec<HeaderValue> = headers.get_all(&TARGETED).iter().cloned().collect();
    if own.is_empty() {
        assert_eq!(targeted, response, "no targeted field");
    } else {
        let plain = own.iter().all(|v| v.to_str().is_ok_and(plain_dictionary));
        let as_cc = response_directives(&cache_control(own), None);
        if as_cc.unreadable {
            assert_eq!(
                targeted, response,
                "an unreadable targeted field is ignored"
            );
        } else if plain {
            assert_eq!(
                targeted, as_cc,
                "a dictionary in the targeted field replaces Cache-Control"
            );
        } else {
            assert!(targeted == as_cc || targeted == response, "{targeted:?}");
        }
    }

    // Only what these headers say decides: no validator, a default TTL.
    let mut plain = HeaderMap::new();
    for v in &lines {
        plain.append(header::CACHE_CONTROL, (*v).clone());
    }
    let policy = RoutePolicy::from_headers().default_ttl(Duration::from_secs(60));
    let timing = freshness_timing(&policy, StatusCode::OK, &plain, 1 << 40, 1 << 40);
    let refuse = response.no_store || response.private || response.unreadable || response.no_cache;
    assert_eq!(timing.is_err(), refuse, "{response:?}: {timing:?}");
    if let Err(reason) = timing {
        assert_eq!(reason, "cache-control");
    }
});
