//! The freshness rules' tests: lifetimes, ages, heuristics, request
//! directives and targeted fields, each read strictly.

use http::HeaderValue;

use super::directives::is_targeted_dictionary;
use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn lifetime(pairs: &[(&str, &str)]) -> Result<u64, Refusal> {
    let f = Freshness {
        heuristic_max: Some(Duration::from_secs(86_400)),
        ..Freshness::response()
    };
    let at = Exchange {
        request_ms: 1_000_000_000_000,
        response_ms: 1_000_000_000_000,
    };
    f.timing(
        StatusCode::OK,
        &headers(pairs),
        at,
        Duration::ZERO,
        Grace::default(),
    )
    .map(|t| t.fresh_until_ms - t.born_ms)
}

#[test]
fn lifetimes_follow_rfc_9111_order_and_strict_readings() {
    assert_eq!(lifetime(&[("cache-control", "max-age=60")]), Ok(60_000));
    assert_eq!(lifetime(&[("cache-control", "max-age=\"60\"")]), Ok(60_000));
    assert_eq!(
        lifetime(&[("cache-control", "s-maxage=5, max-age=60")]),
        Ok(5_000)
    );
    assert_eq!(lifetime(&[("cache-control", "MAX-AGE=7")]), Ok(7_000));
    // Two different values, a negative, a fraction, nothing: stale.
    assert_eq!(
        lifetime(&[("cache-control", "max-age=60, max-age=10")]),
        Ok(0)
    );
    assert_eq!(
        lifetime(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "max-age=60")
        ]),
        Ok(60_000)
    );
    assert_eq!(lifetime(&[("cache-control", "max-age=-1")]), Ok(0));
    assert_eq!(lifetime(&[("cache-control", "max-age=1.5")]), Ok(0));
    assert_eq!(lifetime(&[("cache-control", "max-age=")]), Ok(0));
    assert_eq!(lifetime(&[("cache-control", "max-age =5")]), Ok(0));
    assert_eq!(lifetime(&[("cache-control", "max-age= 5")]), Ok(0));
    assert_eq!(lifetime(&[("cache-control", " max-age=5 ")]), Ok(5_000));
    // Beyond any integer: 2^31 seconds.
    assert_eq!(
        lifetime(&[("cache-control", "max-age=99999999999999999999999999")]),
        Ok(MAX_DELTA * 1000)
    );
    // Expires less Date; an invalid Expires is already expired.
    let date = "Sun, 09 Sep 2001 01:46:40 GMT";
    assert_eq!(
        lifetime(&[("date", date), ("expires", "Sun, 09 Sep 2001 01:47:40 GMT")]),
        Ok(60_000)
    );
    assert_eq!(lifetime(&[("date", date), ("expires", "0")]), Ok(0));
    assert_eq!(
        lifetime(&[("cache-control", "max-age=5"), ("expires", "0")]),
        Ok(5_000)
    );
    // Refusals.
    assert_eq!(
        lifetime(&[("cache-control", "no-store, max-age=60")]),
        Err(Refusal::CacheControl)
    );
    assert_eq!(
        lifetime(&[("cache-control", "private=\"x, y\", max-age=60")]),
        Err(Refusal::CacheControl)
    );
    assert_eq!(
        lifetime(&[("cache-control", "no-cache")]),
        Err(Refusal::CacheControl)
    );
    assert_eq!(lifetime(&[]), Err(Refusal::NoFreshness));
    // no-cache with a validator: stored, stale at once.
    assert_eq!(
        lifetime(&[("cache-control", "no-cache"), ("etag", "\"a\"")]),
        Ok(0)
    );
    // A quoted comma does not split the list.
    assert_eq!(
        lifetime(&[("cache-control", "community=\"a,max-age=1\", max-age=9")]),
        Ok(9_000)
    );
}

#[test]
fn age_and_delay_count_in_the_age_on_arrival() {
    let f = Freshness::response();
    let at = Exchange {
        request_ms: 1_000_000,
        response_ms: 1_002_000,
    };
    let h = headers(&[("cache-control", "max-age=60"), ("age", "10")]);
    let t = f
        .timing(StatusCode::OK, &h, at, Duration::ZERO, Grace::default())
        .unwrap();
    // Aged 12 s when it arrived (its Age and the 2 s it took).
    assert_eq!(t.born_ms, 1_002_000 - 12_000);
    assert_eq!(t.fresh_until_ms, t.born_ms + 60_000);
    // A huge Age, or a list whose first member is large: stale on
    // arrival. An invalid one is ignored; of a list, the first member.
    let timing = |ages: &[&str]| {
        let mut pairs = vec![("cache-control", "max-age=60")];
        pairs.extend(ages.iter().map(|a| ("age", *a)));
        f.timing(
            StatusCode::OK,
            &headers(&pairs),
            at,
            Duration::ZERO,
            Grace::default(),
        )
        .unwrap()
    };
    for stale in [&["99999999999999999999"][..], &["7200, 0"], &["7200", "0"]] {
        assert!(timing(stale).fresh_until_ms <= at.request_ms, "{stale:?}");
    }
    for fresh in [
        &["x"][..],
        &["-7200"],
        &["7200.0"],
        &["0, 7200"],
        &["0", "7200"],
        &["0, 0"],
    ] {
        assert_eq!(timing(fresh).born_ms, at.response_ms - 2_000, "{fresh:?}");
    }
}

#[test]
fn heuristic_freshness_is_a_tenth_of_the_time_since_modified() {
    let date = "Sun, 09 Sep 2001 01:46:40 GMT";
    let modified = "Sat, 08 Sep 2001 23:00:00 GMT"; // 10,000 s before
    assert_eq!(
        lifetime(&[("date", date), ("last-modified", modified)]),
        Ok(1_000_000)
    );
}

#[test]
fn request_directives_are_read_strictly() {
    let r = request_directives(&headers(&[(
        "cache-control",
        "max-age=5, min-fresh=2, max-stale",
    )]));
    assert_eq!(
        (r.max_age, r.min_fresh, r.max_stale),
        (Some(Ok(5)), Some(Ok(2)), Some(None))
    );
    let r = request_directives(&headers(&[("pragma", "no-cache")]));
    assert!(r.no_cache);
    let r = request_directives(&headers(&[
        ("pragma", "no-cache"),
        ("cache-control", "max-age=3"),
    ]));
    assert!(!r.no_cache);
    let r = request_directives(&headers(&[(
        "cache-control",
        "only-if-cached, max-stale=x",
    )]));
    assert!(r.only_if_cached);
    assert_eq!(r.max_stale, Some(Some(0)));
}

#[test]
fn a_targeted_field_that_is_not_a_dictionary_is_ignored() {
    for valid in [
        "max-age=60",
        "max-age=60, must-revalidate",
        "no-store",
        "max-age=5;x=1",
        "foo=\"bar\", baz=?1",
    ] {
        assert!(is_targeted_dictionary(valid), "{valid}");
    }
    for invalid in [
        "max-age=10000, &&&&&",
        "max-age=\"10000\"",
        "Max-Age=5",
        "max-age=1.5",
        "max-age=",
        ", ,x=(",
        "max-age=60, é",
    ] {
        assert!(!is_targeted_dictionary(invalid), "{invalid}");
    }
}
