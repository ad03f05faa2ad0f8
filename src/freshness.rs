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

mod directives;

use directives::delta;
pub(crate) use directives::{
    request_directives, response_directives, RequestDirectives, ResponseDirectives,
};

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
mod tests;
