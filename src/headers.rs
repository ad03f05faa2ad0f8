//! Header helpers: `Cache-Control` parsing, `Cache-Status` (RFC 9211) and `Age`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The name this cache uses in `Cache-Status` (RFC 9211, section 2).
pub(crate) const CACHE_NAME: &str = "tower-response-cache";

/// `Cache-Status`, not yet in the `http` crate's list of standard names.
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What a response's `Cache-Control` says about shared caching.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// `no-store`, `private` or `no-cache` was present.
    pub(crate) forbids_store: bool,
}

/// Parses every `Cache-Control` value of a response (directives are
/// case-insensitive and may be spread over several header lines).
pub(crate) fn response_directives(headers: &HeaderMap) -> ResponseDirectives {
    let mut out = ResponseDirectives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            // An unreadable Cache-Control is treated as the strictest one.
            out.forbids_store = true;
            continue;
        };
        for directive in value.split(',') {
            let name = directive.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-store")
                || name.eq_ignore_ascii_case("private")
                || name.eq_ignore_ascii_case("no-cache")
            {
                out.forbids_store = true;
            }
        }
    }
    out
}

/// The header names a response's `Vary` lists, lower-cased, sorted and
/// deduplicated; `Err(())` for `Vary: *` (never storable).
pub(crate) fn vary_names(headers: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().map_err(|_| ())?;
        for name in value.split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return Err(());
            }
            names.push(HeaderName::from_bytes(name.as_bytes()).map_err(|_| ())?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// Whether the response is a server-sent-events stream.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Headers that describe one connection, not the stored response (RFC 9110,
/// section 7.6.1), plus the ones the cache writes itself.
pub(crate) fn is_unstorable_header(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::SET_COOKIE
        || name == header::AGE
        || name == header::CONTENT_LENGTH
        || name == CACHE_STATUS
        || name.as_str() == "keep-alive"
}

/// A `Cache-Status` value for a response forwarded to the origin.
pub(crate) fn forwarded(
    fwd: &'static str,
    detail: Option<&'static str>,
    stored: bool,
) -> HeaderValue {
    let mut s = String::with_capacity(64);
    s.push_str(CACHE_NAME);
    s.push_str("; fwd=");
    s.push_str(fwd);
    if stored {
        s.push_str("; stored");
    }
    if let Some(detail) = detail {
        s.push_str("; detail=");
        s.push_str(detail);
    }
    HeaderValue::try_from(s).expect("Cache-Status is built from tokens")
}

/// A `Cache-Status` value for a response served from the store.
pub(crate) fn hit(ttl_secs: u64) -> HeaderValue {
    let mut buf = itoa::Buffer::new();
    let ttl = buf.format(ttl_secs);
    let mut s = String::with_capacity(CACHE_NAME.len() + 12 + ttl.len());
    s.push_str(CACHE_NAME);
    s.push_str("; hit; ttl=");
    s.push_str(ttl);
    HeaderValue::try_from(s).expect("Cache-Status is built from tokens")
}

/// An `Age` value.
pub(crate) fn age(secs: u64) -> HeaderValue {
    HeaderValue::from(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_case_insensitive_and_split() {
        let mut h = HeaderMap::new();
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!response_directives(&h).forbids_store);
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, Private"),
        );
        assert!(response_directives(&h).forbids_store);
    }

    #[test]
    fn vary_star_and_lists() {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, accept"),
        );
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        let names = vary_names(&h).unwrap();
        assert_eq!(names, vec![header::ACCEPT, header::ACCEPT_ENCODING]);
        h.append(header::VARY, HeaderValue::from_static("*"));
        assert!(vary_names(&h).is_err());
    }

    #[test]
    fn cache_status_values() {
        assert_eq!(hit(42), "tower-response-cache; hit; ttl=42");
        assert_eq!(
            forwarded("miss", None, true),
            "tower-response-cache; fwd=miss; stored"
        );
        assert_eq!(
            forwarded("bypass", Some("authorization"), false),
            "tower-response-cache; fwd=bypass; detail=authorization"
        );
    }
}
