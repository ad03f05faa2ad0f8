//! Answers made from an entry without calling the inner service: a fresh
//! hit, its HEAD form, a 304 when the request's validators match, and a
//! stale entry served while it is refreshed or instead of an origin error.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::future::FromEntry;
use super::CacheBody;
use crate::headers;
use crate::store::{Entry, ResponseHead};

/// The headers a 304 carries from the stored response (RFC 9110,
/// section 15.4.5).
fn kept_in_304(name: &HeaderName) -> bool {
    name == header::ETAG
        || name == header::CACHE_CONTROL
        || name == header::CONTENT_LOCATION
        || name == header::DATE
        || name == header::EXPIRES
        || name == header::VARY
        || name == header::LAST_MODIFIED
}

/// Whether a request's validators (`If-None-Match`, `If-Modified-Since`)
/// match an entry, so that it is answered 304.
pub(crate) fn validators_match(entry: &Entry, request: &HeaderMap) -> bool {
    let find = |n: HeaderName| entry.headers().find(|(h, _)| **h == n).map(|(_, v)| v);
    (request.contains_key(header::IF_NONE_MATCH) || request.contains_key(header::IF_MODIFIED_SINCE))
        && headers::not_modified(request, find(header::ETAG), find(header::LAST_MODIFIED))
}

/// Builds a response from an entry: the full response, its HEAD form, or
/// a 304 (`not_modified`: the request's validators matched).
pub(crate) fn respond<B>(
    entry: &Entry,
    now_ms: u64,
    head: bool,
    not_modified: bool,
    cache_status: HeaderValue,
) -> Response<CacheBody<B>> {
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        entry.status()
    };
    let body = if not_modified {
        CacheBody::empty()
    } else if head {
        CacheBody::head()
    } else {
        CacheBody::stored(entry.body().clone())
    };
    let age = headers::age(now_ms.saturating_sub(entry.born_ms()) / 1000);
    if let (false, false, Some((ready, etag))) = (head, not_modified, entry.ready_head()) {
        let etag = etag.clone();
        return from_ready_head(ready, etag, age, cache_status, status, body);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.reserve(entry.header_count() + 3);
    // Appended without looking for earlier values: an entry never holds
    // `Content-Length`, `Age` or `Cache-Status`.
    for (name, value) in entry.headers() {
        if !not_modified || kept_in_304(name) {
            out.append(name.clone(), value.clone());
        }
    }
    // A full body states its own length (its size hint is exact, and
    // hyper writes it). HEAD and 304 say the full representation's (RFC
    // 9110, sections 8.6 and 9.3.2).
    if (head || not_modified) && entry.status() != StatusCode::NO_CONTENT {
        out.append(header::CONTENT_LENGTH, entry.content_length());
    }
    out.append(header::AGE, age);
    if !entry.lean_headers() {
        out.append(headers::CACHE_STATUS.clone(), cache_status);
    }
    response
}

/// A hit's response, made when its future is polled from an entry the
/// caller lets go of: the usual fresh GET from the entry's ready head, any
/// other ([`FromEntry`]: HEAD, 304, stale) by [`respond_other`].
///
/// Everything that touches a reference count (the body's, the `ETag`'s,
/// the entry's own) is done before the head is copied: a locked
/// instruction waits for every store before it to reach the cache, and
/// the copy is a burst of them. Measured in `benches/hit_path.rs`, the
/// other order costs a hit about 20 ns.
#[inline]
pub(crate) fn respond_hit<B>(
    entry: Arc<Entry>,
    now_ms: u64,
    head: bool,
    made: FromEntry,
) -> Response<CacheBody<B>> {
    let ready = match (made, head) {
        (FromEntry::Fresh, false) => entry.ready_head(),
        _ => None,
    };
    let Some((ready, etag)) = ready else {
        return respond_other(&entry, now_ms, head, made);
    };
    let cache_status = hit_status(&entry, now_ms);
    let body = CacheBody::stored(entry.body().clone());
    let etag = etag.clone();
    let status = entry.status();
    let age = headers::age(now_ms.saturating_sub(entry.born_ms()) / 1000);
    drop(entry);
    from_ready_head(ready, etag, age, cache_status, status, body)
}

/// Any answer from an entry in its general form: a HEAD, a 304, a stale
/// answer, or a fresh one without a ready head. Kept out of line so that
/// the usual hit's path stays small.
#[inline(never)]
fn respond_other<B>(
    entry: &Entry,
    now_ms: u64,
    head: bool,
    made: FromEntry,
) -> Response<CacheBody<B>> {
    match made {
        FromEntry::Fresh => respond(entry, now_ms, head, false, hit_status(entry, now_ms)),
        FromEntry::NotModified => respond(entry, now_ms, head, true, hit_status(entry, now_ms)),
        FromEntry::Stale => {
            let status = headers::stale(stale_ttl(entry, now_ms), "stale-while-revalidate");
            respond(entry, now_ms, head, false, status)
        }
    }
}

/// The usual full response: a copy of the ready head with its status and
/// its last three values (`ETag`, `Age`, `Cache-Status`) set in place.
#[inline(always)]
fn from_ready_head<B>(
    ready: &'static ResponseHead,
    etag: HeaderValue,
    age: HeaderValue,
    cache_status: HeaderValue,
    status: StatusCode,
    body: CacheBody<B>,
) -> Response<CacheBody<B>> {
    let mut parts = ready.clone();
    parts.status = status;
    let mut values = parts.headers.values_mut();
    values.next();
    if let (Some(e), Some(a), Some(c)) = (values.next(), values.next(), values.next()) {
        (*e, *a, *c) = (etag, age, cache_status);
    }
    debug_assert!(values.next().is_none(), "a ready head holds four headers");
    Response::from_parts(parts, body)
}

/// The `Cache-Status` of a fresh hit.
#[inline]
pub(crate) fn hit_status(entry: &Entry, now_ms: u64) -> HeaderValue {
    headers::hit(entry.fresh_until_ms().saturating_sub(now_ms) / 1000)
}

/// The `Cache-Status` of a stale entry served.
pub(crate) fn stale_ttl(entry: &Entry, now_ms: u64) -> i64 {
    -(now_ms.saturating_sub(entry.fresh_until_ms()).div_ceil(1000) as i64)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderName;

    use super::*;
    use crate::store::EntryParts;

    fn entry(headers: Vec<(HeaderName, HeaderValue)>) -> Entry {
        let parts = EntryParts {
            status: 200,
            headers,
            body: Bytes::from_static(b"12345"),
            born_ms: 10_000,
            fresh_until_ms: 70_000,
            stale_while_revalidate_until_ms: 70_000,
            grace_until_ms: 70_000,
            path: "/p".into(),
            ..EntryParts::default()
        };
        Entry::keyed(parts, "/p").unwrap()
    }

    fn head(entry: &Entry, head: bool) -> Vec<String> {
        let now_ms = 12_500;
        let response = respond::<()>(entry, now_ms, head, false, hit_status(entry, now_ms));
        response
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn a_hit_writes_the_stored_headers_then_its_own() {
        let etag = HeaderValue::from_static("\"e\"");
        let usual = entry(vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag.clone()),
        ]);
        // A GET's body states its length; a HEAD says it in the header.
        assert_eq!(
            head(&usual, false),
            [
                "content-type: application/json",
                "etag: \"e\"",
                "age: 2",
                "cache-status: tower-response-cache; hit; ttl=57",
            ]
        );
        assert_eq!(
            head(&usual, true),
            [
                "content-type: application/json",
                "etag: \"e\"",
                "content-length: 5",
                "age: 2",
                "cache-status: tower-response-cache; hit; ttl=57",
            ]
        );
        let more = entry(vec![
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            ),
            (header::ETAG, etag),
        ]);
        assert_eq!(
            head(&more, false)[..3],
            [
                "content-type: image/png",
                "cache-control: max-age=60",
                "etag: \"e\""
            ]
        );
    }
}
