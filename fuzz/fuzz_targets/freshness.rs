//! Freshness (RFC 9111, section 4.2): `Cache-Control`, `Expires`, `Date`,
//! `Age` and `Last-Modified` turned into an entry's times.
//!
//! Input: a route's settings and the exchange's times (the first bytes,
//! read with `arbitrary`), then the response's header lines.
//!
//! Checks: the times are ordered (born, fresh, the stale windows, the
//! time kept) and never born after the read began; a fixed TTL counts
//! from the read's start; `max-age` gives its lifetime and a ceiling caps
//! it; an `Age` added never makes a response fresher; no stale use where
//! the directives forbid it; refusals exactly where the directives say;
//! every HTTP date read is whole seconds and reads back from its own
//! formatting.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{freshness_timing, http_date_ms, response_directives, Timing};
use tower_response_cache::RoutePolicy;
use tower_response_cache_fuzz::header_map;

static TARGETED: HeaderName = HeaderName::from_static("cdn-cache-control");

#[derive(Arbitrary, Debug)]
struct Settings {
    response_mode: bool,
    ttl_ms: u32,
    default_ttl_ms: Option<u32>,
    max_ttl_ms: Option<u32>,
    heuristic_max_ms: Option<u32>,
    keep_ms: u32,
    swr_ms: u32,
    sie_ms: u32,
    targeted: bool,
    status: u16,
    request_ms: u64,
    delay_ms: u32,
    extra_age: u32,
}

fn ms(n: u32) -> Duration {
    Duration::from_millis(u64::from(n))
}

fn policy(s: &Settings) -> RoutePolicy {
    let mut p = if s.response_mode {
        let mut p = RoutePolicy::from_headers().keep_for_revalidation(ms(s.keep_ms));
        if let Some(d) = s.default_ttl_ms {
            p = p.default_ttl(ms(d));
        }
        if let Some(m) = s.max_ttl_ms {
            p = p.max_ttl(ms(m));
        }
        if let Some(h) = s.heuristic_max_ms {
            p = p.heuristic_freshness(ms(h));
        }
        p
    } else {
        RoutePolicy::ttl(ms(s.ttl_ms))
    };
    p = p
        .stale_while_revalidate(ms(s.swr_ms))
        .stale_if_error(ms(s.sie_ms));
    if s.targeted {
        p = p.targeted_field(TARGETED.as_str());
    }
    p
}

fn check_dates(headers: &HeaderMap) {
    for name in [header::DATE, header::EXPIRES, header::LAST_MODIFIED] {
        for value in headers.get_all(&name) {
            let Some(at) = http_date_ms(value) else {
                continue;
            };
            assert_eq!(at % 1000, 0, "{value:?}");
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(at));
            let again = HeaderValue::from_str(&text).expect("a date is a value");
            assert_eq!(http_date_ms(&again), Some(at), "{value:?} -> {text}");
        }
    }
}

fn check_order(t: &Timing, request_ms: u64) {
    assert!(t.born_ms <= request_ms, "{t:?}");
    assert!(t.born_ms <= t.fresh_until_ms, "{t:?}");
    assert!(
        t.fresh_until_ms <= t.stale_while_revalidate_until_ms,
        "{t:?}"
    );
    assert!(t.fresh_until_ms <= t.stale_if_error_until_ms, "{t:?}");
    assert!(
        t.stale_while_revalidate_until_ms <= t.keep_until_ms,
        "{t:?}"
    );
    assert!(t.stale_if_error_until_ms <= t.keep_until_ms, "{t:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(s) = Settings::arbitrary(&mut u) else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(s.status) else {
        return;
    };
    let headers = header_map(u.take_rest());
    check_dates(&headers);
    let policy = policy(&s);
    let request_ms = s.request_ms;
    let response_ms = request_ms.saturating_add(u64::from(s.delay_ms));
    let timing = freshness_timing(&policy, status, &headers, request_ms, response_ms);

    let targeted = s.targeted.then_some(&TARGETED);
    let cc = response_directives(&headers, targeted);
    let validator = headers
        .get_all(header::ETAG)
        .iter()
        .any(|v| !v.as_bytes().starts_with(b"W/\"trc-"))
        || headers.contains_key(header::LAST_MODIFIED);
    let refuse = cc.unreadable || cc.no_store || cc.private || (cc.no_cache && !validator);
    let t = match timing {
        Err("cache-control") => {
            assert!(refuse, "{cc:?}");
            return;
        }
        Err(other) => {
            assert_eq!(other, "no-freshness");
            assert!(s.response_mode && !refuse, "{cc:?}");
            return;
        }
        Ok(t) => t,
    };
    assert!(!refuse, "{cc:?} stored: {t:?}");
    check_order(&t, request_ms);

    let lifetime = t.fresh_until_ms - t.born_ms;
    if cc.no_cache {
        assert_eq!(lifetime, 0, "no-cache: {t:?}");
    } else if !s.response_mode {
        let ttl = u64::from(s.ttl_ms);
        assert_eq!(
            t.fresh_until_ms,
            request_ms.saturating_add(ttl),
            "fixed: {t:?}"
        );
    } else {
        let ceiling = s.max_ttl_ms.map_or(u64::MAX, u64::from);
        assert!(lifetime <= ceiling, "{t:?} over the ceiling {ceiling}");
        if let (None, Some(Ok(secs))) = (cc.s_maxage, cc.max_age) {
            if t.fresh_until_ms < u64::MAX {
                assert_eq!(
                    lifetime,
                    (secs * 1000).min(ceiling),
                    "max-age {secs}: {t:?}"
                );
            }
        }
    }
    let forbids_stale =
        cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache;
    if forbids_stale {
        assert_eq!(
            t.stale_while_revalidate_until_ms, t.fresh_until_ms,
            "{cc:?}: {t:?}"
        );
        assert_eq!(t.stale_if_error_until_ms, t.fresh_until_ms, "{cc:?}: {t:?}");
    }

    // An older response is never fresher.
    let mut older = headers.clone();
    if !older.contains_key(header::AGE) {
        older.insert(header::AGE, HeaderValue::from(s.extra_age));
    }
    if let Ok(o) = freshness_timing(&policy, status, &older, request_ms, response_ms) {
        check_order(&o, request_ms);
        assert!(
            o.born_ms <= t.born_ms,
            "Age {}: {o:?} vs {t:?}",
            s.extra_age
        );
        assert!(
            o.fresh_until_ms <= t.fresh_until_ms,
            "Age {}: {o:?} vs {t:?}",
            s.extra_age
        );
    }
});
