//! Freshness (RFC 9111, section 4.2): how long a response may be served,
//! read from its `Cache-Control` (or a targeted field, RFC 9213),
//! `Expires`, `Date`, `Age` and `Last-Modified`, or set by the route. It is
//! decided once, when the response is stored: the entry keeps the times it
//! gives, and a hit compares numbers.
//!
//! Every reading is the strictest safe one: a value that cannot be read, a
//! directive given twice with different values, a negative or fractional
//! number make the response stale (RFC 9111, sections 4.2.1 and 1.2.2); a
//! number beyond 2^31 seconds is read as 2^31; an unreadable `Cache-Control`
//! refuses storing; an invalid `Expires` is already expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

/// The largest delta-seconds value kept (RFC 9111, section 1.2.2).
const MAX_DELTA: u64 = 1 << 31;

/// A delta-seconds argument: its value, or `Err` when it is invalid or
/// given twice with different values (then the response is stale).
pub(crate) type Delta = Result<u64, ()>;

/// Where a route's freshness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The route's TTL (or the handler's `CacheTtl`).
    Fixed,
    /// The response's headers (RFC 9111).
    Response,
}

/// A route's freshness settings (see `RoutePolicy::from_headers`).
#[derive(Debug, Clone)]
pub(crate) struct Freshness {
    pub(crate) mode: Mode,
    /// Response mode: the lifetime of a response that states none (else,
    /// heuristic freshness when on, else not stored).
    pub(crate) default_ttl: Option<Duration>,
    /// Response mode: the longest lifetime, whatever the response says.
    pub(crate) max_ttl: Option<Duration>,
    /// Response mode: a tenth of the time since `Last-Modified` for a
    /// heuristically cacheable status, at most this (RFC 9111, 4.2.2).
    pub(crate) heuristic_max: Option<Duration>,
    /// How long a stale entry with an origin validator is kept to be
    /// revalidated with a conditional request.
    pub(crate) keep_for_revalidation: Duration,
    /// A field that, when present and readable, replaces `Cache-Control`
    /// for this cache (RFC 9213), and whether it is removed from responses.
    pub(crate) targeted: Option<(HeaderName, bool)>,
}

impl Freshness {
    pub(crate) fn fixed() -> Self {
        Freshness {
            mode: Mode::Fixed,
            default_ttl: None,
            max_ttl: None,
            heuristic_max: None,
            keep_for_revalidation: Duration::ZERO,
            targeted: None,
        }
    }

    pub(crate) fn response() -> Self {
        Freshness {
            mode: Mode::Response,
            keep_for_revalidation: Duration::from_secs(600),
            ..Self::fixed()
        }
    }
}

/// What a response's caching directives say (RFC 9111, section 5.2.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    pub(crate) private: bool,
    pub(crate) no_cache: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    pub(crate) stale_while_revalidate: Option<Delta>,
    pub(crate) stale_if_error: Option<Delta>,
    /// The field could not be read at all (not visible ASCII).
    pub(crate) unreadable: bool,
}

impl ResponseDirectives {
    /// Whether no stale use is allowed (RFC 9111, section 4.2.4).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// What a request's caching directives ask (RFC 9111, section 5.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<Delta>,
    pub(crate) min_fresh: Option<Delta>,
    /// `max-stale`, with its limit (`None`: any staleness).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
}

/// One directive of a list: its name, lower-cased, and its argument
/// (a token or a quoted string, unquoted).
fn directives(value: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    split_list(value).filter_map(|member| {
        let (name, arg) = match member.split_once('=') {
            // No space may stand around `=` (RFC 9111, section 5.2): such
            // an argument is unreadable, and a lifetime it gives stale.
            Some((n, a)) if n.ends_with([' ', '\t']) || a.starts_with([' ', '\t']) => {
                (n.trim(), Some(""))
            }
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (member.trim(), None),
        };
        if name.is_empty() {
            return None;
        }
        let arg = arg.map(|a| match a.strip_prefix('"') {
            Some(rest) => unquote(rest),
            None => a.to_owned(),
        });
        Some((name.to_ascii_lowercase(), arg))
    })
}

/// Splits a comma-separated list, keeping commas inside quoted strings.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let (mut quoted, mut escaped) = (false, false);
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let member = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        Some(member)
    })
}

/// The text of a quoted string whose opening quote is gone.
fn unquote(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// A delta-seconds argument (RFC 9111, section 1.2.2): digits only.
fn delta(arg: Option<&str>) -> Delta {
    let arg = arg.ok_or(())?;
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(arg.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

/// Sets a directive's value; a second, different value makes it invalid.
fn set(slot: &mut Option<Delta>, value: Delta) {
    *slot = match slot.take() {
        None => Some(value),
        Some(old) if old == value => Some(old),
        Some(_) => Some(Err(())),
    };
}

/// Reads a response's directives from `Cache-Control`, or from `targeted`
/// when that field is present and readable (RFC 9213: an unreadable
/// targeted field is ignored).
pub(crate) fn response_directives(
    headers: &HeaderMap,
    targeted: Option<&HeaderName>,
) -> ResponseDirectives {
    if let Some(name) = targeted {
        let mut values = headers.get_all(name).iter().peekable();
        let present = values.peek().is_some();
        if present && values.all(|v| v.to_str().is_ok_and(is_targeted_dictionary)) {
            return parse_response(headers, name);
        }
    }
    parse_response(headers, &header::CACHE_CONTROL)
}

/// Whether a targeted field's value is a Structured Fields dictionary
/// (RFC 8941) whose numeric directives are integers, as RFC 9213 asks: one
/// that is not is ignored, whole.
fn is_targeted_dictionary(value: &str) -> bool {
    let key_ok = |k: &str| {
        let mut bytes = k.bytes();
        bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
    };
    let integer = |v: &str| {
        let digits = v.strip_prefix('-').unwrap_or(v);
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let item = |v: &str| {
        let bare = v.split(';').next().unwrap_or("").trim();
        integer(bare)
            || bare == "?0"
            || bare == "?1"
            || (bare.len() >= 2 && bare.starts_with('"') && bare.ends_with('"'))
            || bare
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
    };
    split_list(value).all(|member| {
        let member = member.trim();
        let (key, arg) = match member.split_once('=') {
            Some((k, a)) => (k.split(';').next().unwrap_or(""), Some(a.trim())),
            None => (member.split(';').next().unwrap_or(""), None),
        };
        if !key_ok(key) {
            return false;
        }
        match (key, arg) {
            ("max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error", Some(a)) => {
                integer(a.split(';').next().unwrap_or("").trim())
            }
            (_, Some(a)) => item(a),
            (_, None) => true,
        }
    })
}

fn parse_response(headers: &HeaderMap, name: &HeaderName) -> ResponseDirectives {
    let mut out = ResponseDirectives::default();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            out.unreadable = true;
            continue;
        };
        for (name, arg) in directives(value) {
            let arg = arg.as_deref();
            match name.as_str() {
                "no-store" => out.no_store = true,
                // A qualified `private` or `no-cache` (naming fields) is
                // read as the unqualified one: the strictest reading.
                "private" => out.private = true,
                "no-cache" => out.no_cache = true,
                "must-revalidate" => out.must_revalidate = true,
                "proxy-revalidate" => out.proxy_revalidate = true,
                "public" => out.public = true,
                "max-age" => set(&mut out.max_age, delta(arg)),
                "s-maxage" => set(&mut out.s_maxage, delta(arg)),
                "stale-while-revalidate" => set(&mut out.stale_while_revalidate, delta(arg)),
                "stale-if-error" => set(&mut out.stale_if_error, delta(arg)),
                _ => {}
            }
        }
    }
    out
}

/// Reads a request's directives (`Pragma: no-cache` counts as `no-cache`
/// when the request has no `Cache-Control`).
pub(crate) fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let mut out = RequestDirectives::default();
    let mut any = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        any = true;
        let Ok(value) = value.to_str() else {
            // Unreadable: the strictest reading, go to the origin.
            out.no_cache = true;
            continue;
        };
        for (name, arg) in directives(value) {
            let arg = arg.as_deref();
            match name.as_str() {
                "max-age" => set(&mut out.max_age, delta(arg)),
                "min-fresh" => set(&mut out.min_fresh, delta(arg)),
                "max-stale" => {
                    // An unreadable limit allows no staleness.
                    out.max_stale = Some(arg.map(|a| delta(Some(a)).unwrap_or(0)))
                }
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                _ => {}
            }
        }
    }
    if !any {
        out.no_cache = headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| directives(v).any(|(name, _)| name == "no-cache"))
        });
    }
    out
}

/// An HTTP date (RFC 9110, section 5.6.7) in Unix ms; `None` if invalid.
pub(crate) fn http_date_ms(value: &http::HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// The one value of a date field: `Err` when it is invalid or given twice
/// differently, `Ok(None)` when absent.
fn one_date(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ()> {
    let mut found = None;
    for value in headers.get_all(name) {
        let ms = http_date_ms(value).ok_or(())?;
        if found.replace(ms).is_some_and(|old| old != ms) {
            return Err(());
        }
    }
    Ok(found)
}

/// The response's `Age`, in seconds (RFC 9111, section 5.1): the first
/// member of its first line; a value that is not a non-negative integer is
/// ignored. Past 2^31 seconds it reads as 2^31 (stale on arrival).
fn age_secs(headers: &HeaderMap) -> u64 {
    let Some(value) = headers.get(header::AGE) else {
        return 0;
    };
    let first = value
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    delta(first).unwrap_or(0)
}

/// The times an entry gets when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// When the response's age was zero: its arrival less its age on
    /// arrival (RFC 9111, section 4.2.3), so that its age now is its age on
    /// arrival plus the time it has been held.
    pub(crate) born_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) stale_while_revalidate_until_ms: u64,
    pub(crate) stale_if_error_until_ms: u64,
    /// When the entry may be dropped.
    pub(crate) keep_until_ms: u64,
}

/// When an origin read began and when its response head arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) request_ms: u64,
    pub(crate) response_ms: u64,
}

/// A route's grace windows, for responses that name none.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Grace {
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// Why a response gets no entry, from its freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `no-store`, `private`, an unreadable field, or `no-cache` with no
    /// validator to revalidate with.
    CacheControl,
    /// Response mode: nothing says how long it is fresh.
    NoFreshness,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a response carries a validator the origin made (an `ETag` or a
/// `Last-Modified`), to revalidate a stale entry with.
pub(crate) fn has_origin_validator(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ETAG)
        .iter()
        .any(|v| !crate::headers::is_computed_etag(v))
        || headers.contains_key(header::LAST_MODIFIED)
}

impl Freshness {
    /// The times of an entry for this response; `fixed_ttl` is the route's
    /// (or the handler's) TTL, used in fixed mode.
    pub(crate) fn timing(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        exchange: Exchange,
        fixed_ttl: Duration,
        grace: Grace,
    ) -> Result<Timing, Refusal> {
        let cc = response_directives(headers, self.targeted.as_ref().map(|(n, _)| n));
        let validator = has_origin_validator(headers);
        if cc.unreadable || cc.no_store || cc.private || (cc.no_cache && !validator) {
            return Err(Refusal::CacheControl);
        }
        let Exchange {
            request_ms,
            response_ms,
        } = exchange;
        // RFC 9111, section 4.2.3.
        let date_ms = one_date(headers, &header::DATE).ok().flatten();
        let apparent = date_ms.map_or(0, |d| response_ms.saturating_sub(d));
        let corrected =
            (age_secs(headers) * 1000).saturating_add(response_ms.saturating_sub(request_ms));
        // `corrected` holds the origin's delay: counted from the arrival, so
        // that the delay counts once (no later than the read's start).
        let born_ms = response_ms.saturating_sub(apparent.max(corrected));
        let lifetime_ms = match self.mode {
            Mode::Fixed => {
                // The route's TTL counts from the read's start.
                ms(fixed_ttl).saturating_add(request_ms - born_ms)
            }
            Mode::Response => {
                let explicit = self.explicit_ms(&cc, headers, date_ms.unwrap_or(response_ms));
                let lifetime = match explicit {
                    Some(l) => l,
                    // Revalidated on every use: its lifetime is nil.
                    None if cc.no_cache => 0,
                    None => match (self.heuristic(status, headers, date_ms), self.default_ttl) {
                        (Some(h), _) => h,
                        (None, Some(d)) => ms(d),
                        (None, None) => return Err(Refusal::NoFreshness),
                    },
                };
                self.max_ttl.map_or(lifetime, |max| lifetime.min(ms(max)))
            }
        };
        let lifetime_ms = if cc.no_cache { 0 } else { lifetime_ms };
        let fresh_until_ms = born_ms.saturating_add(lifetime_ms);
        let window = |named: Option<Delta>, route: Duration| match named {
            _ if cc.forbids_stale() => 0,
            Some(Ok(secs)) => secs.saturating_mul(1000),
            Some(Err(())) => 0,
            None => ms(route),
        };
        let swr = window(cc.stale_while_revalidate, grace.stale_while_revalidate);
        let sie = window(cc.stale_if_error, grace.stale_if_error);
        let keep = if validator {
            ms(self.keep_for_revalidation)
        } else {
            0
        };
        Ok(Timing {
            born_ms,
            fresh_until_ms,
            stale_while_revalidate_until_ms: fresh_until_ms.saturating_add(swr),
            stale_if_error_until_ms: fresh_until_ms.saturating_add(sie),
            keep_until_ms: fresh_until_ms.saturating_add(swr.max(sie).max(keep)),
        })
    }

    /// Whether a response states its freshness (`s-maxage`, `max-age` or
    /// `Expires`): then any final status may be stored in response mode.
    pub(crate) fn explicit(&self, headers: &HeaderMap) -> bool {
        let cc = response_directives(headers, self.targeted.as_ref().map(|(n, _)| n));
        cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES)
    }

    /// An explicit freshness lifetime (RFC 9111, section 4.2.1): `s-maxage`,
    /// else `max-age`, else `Expires` less `Date`.
    fn explicit_ms(
        &self,
        cc: &ResponseDirectives,
        headers: &HeaderMap,
        date_ms: u64,
    ) -> Option<u64> {
        if let Some(d) = cc.s_maxage.or(cc.max_age) {
            return Some(d.map_or(0, |secs| secs * 1000));
        }
        if !headers.contains_key(header::EXPIRES) {
            return None;
        }
        Some(match one_date(headers, &header::EXPIRES) {
            Ok(Some(expires)) => expires.saturating_sub(date_ms),
            // Invalid: already expired.
            _ => 0,
        })
    }

    /// Heuristic freshness: a tenth of the time since `Last-Modified`, for
    /// a heuristically cacheable status, when enabled.
    fn heuristic(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        date_ms: Option<u64>,
    ) -> Option<u64> {
        let max = self.heuristic_max?;
        if !crate::policy::DEFAULT_STATUSES.contains(&status.as_u16()) {
            return None;
        }
        let modified = one_date(headers, &header::LAST_MODIFIED).ok()??;
        let now =
            date_ms.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms));
        Some((now.saturating_sub(modified) / 10).min(ms(max)))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

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
}

#[cfg(test)]
mod targeted_tests {
    use super::*;

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
}
