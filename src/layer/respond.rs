//! Answers made from an entry without calling the inner service: a fresh
//! hit, its HEAD form, a 304 when the request's validators match, and a
//! stale entry served while it is refreshed or instead of an origin error.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::future::FromEntry;
use super::CacheBody;
use crate::headers;
use crate::store::{Entry, ResponseHead, Shape};

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
    if let (false, false, Some(ready)) = (head, not_modified, entry.ready_head()) {
        let etag = ready.etag.cloned();
        let length = entry.content_length();
        return match (ready.shape, etag) {
            (Shape::Full, Some(etag)) => {
                let values = [etag, age, cache_status, length];
                from_ready_head(ready.head, values, status, body)
            }
            (_, etag) => from_lean_head(ready.head, etag, [age, length], status, body),
        };
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
    // The full representation's length, for a full body as for HEAD and
    // 304 (RFC 9110, sections 8.6 and 9.3.2): said here, nothing outside
    // (axum's router, from the body's size) has to add it to the map.
    if entry.status() != StatusCode::NO_CONTENT {
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
    let Some(ready) = ready else {
        return respond_other(&entry, now_ms, head, made);
    };
    let (head, status) = (ready.head, entry.status());
    if let (Shape::Full, Some(etag)) = (ready.shape, ready.etag) {
        let cache_status = hit_status(&entry, now_ms);
        let body = CacheBody::stored(entry.body().clone());
        let etag = etag.clone();
        let length = entry.content_length();
        let age = headers::age(now_ms.saturating_sub(entry.born_ms()) / 1000);
        drop(entry);
        return from_ready_head(head, [etag, age, cache_status, length], status, body);
    }
    let body = CacheBody::stored(entry.body().clone());
    let etag = ready.etag.cloned();
    let length = entry.content_length();
    let age = headers::age(now_ms.saturating_sub(entry.born_ms()) / 1000);
    drop(entry);
    from_lean_head(head, etag, [age, length], status, body)
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
/// its last four values (`ETag`, `Age`, `Cache-Status`, `Content-Length`)
/// set in place.
#[inline(always)]
fn from_ready_head<B>(
    ready: &'static ResponseHead,
    [etag, age, cache_status, length]: [HeaderValue; 4],
    status: StatusCode,
    body: CacheBody<B>,
) -> Response<CacheBody<B>> {
    let mut parts = ready.clone();
    parts.status = status;
    let mut values = parts.headers.values_mut();
    values.next();
    if let (Some(e), Some(a), Some(c), Some(l)) =
        (values.next(), values.next(), values.next(), values.next())
    {
        (*e, *a, *c, *l) = (etag, age, cache_status, length);
    }
    debug_assert!(values.next().is_none(), "a ready head holds five headers");
    Response::from_parts(parts, body)
}

/// The same in the lean profile: the values after the `Content-Type` are
/// the origin's `ETag` (when it sent one), `Age` and `Content-Length`.
#[inline]
fn from_lean_head<B>(
    ready: &'static ResponseHead,
    etag: Option<HeaderValue>,
    [age, length]: [HeaderValue; 2],
    status: StatusCode,
    body: CacheBody<B>,
) -> Response<CacheBody<B>> {
    let mut parts = ready.clone();
    parts.status = status;
    let mut values = parts.headers.values_mut();
    values.next();
    match etag {
        Some(etag) => {
            if let (Some(e), Some(a), Some(l)) = (values.next(), values.next(), values.next()) {
                (*e, *a, *l) = (etag, age, length);
            }
        }
        None => {
            if let (Some(a), Some(l)) = (values.next(), values.next()) {
                (*a, *l) = (age, length);
            }
        }
    }
    debug_assert!(values.next().is_none(), "a lean head's values are set");
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
        // A GET says its length as a HEAD does (the usual GET last, from
        // its ready head).
        assert_eq!(
            head(&usual, false),
            [
                "content-type: application/json",
                "etag: \"e\"",
                "age: 2",
                "cache-status: tower-response-cache; hit; ttl=57",
                "content-length: 5",
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
