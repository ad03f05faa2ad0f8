//! Range requests on a stored full response (RFC 9110, section 14): one
//! byte range is answered `206` with its slice of the entry, an
//! unsatisfiable one `416`; anything else (several ranges, another unit,
//! a malformed header) goes to the origin untouched.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::respond::{hit_status, respond};
use super::CacheBody;
use crate::store::Entry;

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// Bytes `first..=last`.
    One { first: u64, last: u64 },
    /// A range that starts past the end (or a suffix of zero bytes).
    Unsatisfiable,
    /// Not one byte range this cache answers.
    Other,
}

/// Reads a `Range` value (only `bytes=first-last`, `bytes=first-` and
/// `bytes=-suffix`, one range, digits only).
pub(crate) fn parse(value: &HeaderValue, len: u64) -> Ranged {
    let Ok(value) = value.to_str() else {
        return Ranged::Other;
    };
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return Ranged::Other;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Other;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Other;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // A suffix: the last `n` bytes.
        (true, None, Some(0)) => Ranged::Unsatisfiable,
        (true, None, Some(_)) if len == 0 => Ranged::Unsatisfiable,
        (true, None, Some(n)) => Ranged::One {
            first: len.saturating_sub(n),
            last: len - 1,
        },
        (false, Some(first), None) if last.trim().is_empty() => match first < len {
            true => Ranged::One {
                first,
                last: len - 1,
            },
            false => Ranged::Unsatisfiable,
        },
        (false, Some(first), Some(last)) if first <= last => match first < len {
            true => Ranged::One {
                first,
                last: last.min(len - 1),
            },
            false => Ranged::Unsatisfiable,
        },
        _ => Ranged::Other,
    }
}

/// Whether a request's `If-Range` (if any) lets its range apply to the
/// entry: only a strong entity tag equal to the entry's own (a date, or a
/// weak tag, never does, and the full entry is sent instead).
pub(crate) fn if_range_holds(request: &HeaderMap, entry: &Entry) -> bool {
    let Some(wanted) = request.get(header::IF_RANGE) else {
        return true;
    };
    let strong = |v: &HeaderValue| v.as_bytes().starts_with(b"\"");
    strong(wanted)
        && entry
            .headers()
            .any(|(n, v)| *n == header::ETAG && strong(v) && v == wanted)
}

/// A `206` of the entry's bytes `first..=last`, or a `416`.
pub(crate) fn answer<B>(entry: &Entry, now_ms: u64, range: Ranged) -> Response<CacheBody<B>> {
    let len = entry.body().len() as u64;
    let status = hit_status(entry, now_ms);
    match range {
        Ranged::One { first, last } => {
            let mut response = respond(entry, now_ms, false, false, status);
            let slice = entry.body().slice(first as usize..=last as usize);
            *response.body_mut() = CacheBody::stored(slice);
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let value = format!("bytes {first}-{last}/{len}");
            let out = response.headers_mut();
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(value).expect("digits are a valid value"),
            );
            // The part's length, not the whole's.
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
            response
        }
        Ranged::Unsatisfiable | Ranged::Other => {
            let mut response = Response::new(CacheBody::empty());
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let value = format!("bytes */{len}");
            let out = response.headers_mut();
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(value).expect("digits are a valid value"),
            );
            if !entry.lean_headers() {
                out.insert(crate::headers::CACHE_STATUS.clone(), status);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str, len: u64) -> Ranged {
        parse(&HeaderValue::from_str(v).unwrap(), len)
    }

    #[test]
    fn single_byte_ranges_and_the_rest() {
        let one = |first, last| Ranged::One { first, last };
        assert_eq!(p("bytes=0-4", 10), one(0, 4));
        assert_eq!(p("bytes=5-", 10), one(5, 9));
        assert_eq!(p("bytes=-3", 10), one(7, 9));
        assert_eq!(p("bytes=-30", 10), one(0, 9));
        assert_eq!(p("bytes=8-100", 10), one(8, 9));
        assert_eq!(p("BYTES = 1-2", 10), one(1, 2));
        assert_eq!(
            p("bytes=99999999999999999999999-", 10),
            Ranged::Unsatisfiable
        );
        assert_eq!(p("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Ranged::Unsatisfiable);
        for other in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes",
            "bytes=1",
            "",
        ] {
            assert_eq!(p(other, 10), Ranged::Other, "{other}");
        }
    }
}
