//! Validation (RFC 9111, section 4.3): a stale entry that has a validator
//! the origin made is sent upstream as a conditional request; a `304`
//! freshens it (its headers updated from the `304`, section 3.2) and the
//! client is answered from it. And the request directives a layer may
//! honour (section 5.2.1), which decide whether a stored entry may answer.

use std::sync::atomic::Ordering::Relaxed;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::miss::Miss;
use super::respond::{respond, validators_match};
use super::CacheBody;
use crate::cache::lookup::Found;
use crate::cache::stats::Event;
use crate::freshness::RequestDirectives;
use crate::headers;
use crate::store::Entry;

/// Replaces a request's own validators with the entry's origin validators
/// (its `ETag` unless the cache computed it, its `Last-Modified`); `false`,
/// leaving the request as it is, when the entry has none.
pub(crate) fn make_conditional(request: &mut HeaderMap, entry: &Entry) -> bool {
    let etag = entry
        .headers()
        .find(|(n, v)| **n == header::ETAG && !headers::is_computed_etag(v))
        .map(|(_, v)| v.clone());
    let modified = entry
        .headers()
        .find(|(n, _)| **n == header::LAST_MODIFIED)
        .map(|(_, v)| v.clone());
    if etag.is_none() && modified.is_none() {
        return false;
    }
    // The client's own conditionals are answered from the freshened entry.
    request.remove(header::IF_NONE_MATCH);
    request.remove(header::IF_MODIFIED_SINCE);
    if let Some(etag) = etag {
        request.insert(header::IF_NONE_MATCH, etag);
    }
    if let Some(modified) = modified {
        request.insert(header::IF_MODIFIED_SINCE, modified);
    }
    true
}

/// Removes from a request going to the origin the entity tags the cache
/// computed: the origin never made them.
pub(crate) fn drop_computed_tags(request: &mut HeaderMap) {
    if !request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("W/\"trc-")))
    {
        return;
    }
    // Read tag by tag (a tag may hold a comma); what is not a list of tags
    // is not sent on.
    let mut kept: Vec<u8> = Vec::new();
    for line in request.get_all(header::IF_NONE_MATCH) {
        for tag in headers::tag_list(line.as_bytes()) {
            if !tag.starts_with(b"W/\"trc-") {
                if !kept.is_empty() {
                    kept.extend_from_slice(b", ");
                }
                kept.extend_from_slice(tag);
            }
        }
    }
    request.remove(header::IF_NONE_MATCH);
    if let (false, Ok(value)) = (kept.is_empty(), HeaderValue::from_bytes(&kept)) {
        request.insert(header::IF_NONE_MATCH, value);
    }
}

/// A `304` to a revalidation: the stale entry, its headers updated from
/// the `304` (all but the ones that describe a connection or a body's
/// length), stored again as a response read when the revalidation began,
/// and the client answered from it (a `304` of its own when its
/// validators match). The `304`'s body, if any, is dropped.
pub(crate) fn freshen<B>(mut miss: Box<Miss>, not_modified: Response<B>) -> Response<CacheBody<B>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    let stale = miss
        .stale
        .take()
        .expect("a revalidation keeps its stale entry");
    let shared = &miss.cache.shared;
    shared.extra.not_modified_upstream.fetch_add(1, Relaxed);
    let (update, _) = not_modified.into_parts();
    let mut merged = HeaderMap::with_capacity(stale.header_count() + update.headers.len());
    for (name, value) in stale.headers() {
        merged.append(name.clone(), value.clone());
    }
    let updates = |name: &header::HeaderName| {
        !headers::is_unstorable_header(name) && name != header::CONTENT_LENGTH
    };
    for name in update.headers.keys().filter(|n| updates(n)) {
        merged.remove(name);
    }
    for (name, value) in update.headers.iter().filter(|(n, _)| updates(n)) {
        merged.append(name.clone(), value.clone());
    }
    let mut refreshed = Response::new(CacheBody::<B>::stored(stale.body().clone()));
    *refreshed.status_mut() = stale.status();
    *refreshed.headers_mut() = merged;
    let client = std::mem::take(&mut miss.request_headers);
    let head = miss.head;
    let cache = miss.cache.clone();
    let route = miss.route.clone();
    miss.request_headers = client.clone();
    let now_ms = cache.shared.clock.now_ms();
    let status = headers::revalidated();
    let entry = match miss.decide(&mut refreshed) {
        Ok(pending) => pending.store(stale.body().clone()),
        Err((mut miss, reason)) => {
            cache.record(Some(&route.stats), Event::Reason(reason));
            if let Some(flight) = miss.flight.take() {
                cache.end_flight(flight, reason);
            }
            None
        }
    };
    cache.record(Some(&route.stats), Event::Hit);
    tracing::debug!(route = %route.pattern, outcome = "revalidated", stored = entry.is_some(), "cache decision");
    match entry {
        Some(entry) => {
            let matched = validators_match(&entry, &client);
            respond(&entry, now_ms, head, matched, status)
        }
        None => {
            // Not stored again (the 304 said no-store, say): the response
            // as it stands, from the old body and the new headers.
            if !cache.shared.lean {
                refreshed
                    .headers_mut()
                    .append(headers::CACHE_STATUS.clone(), status);
            }
            refreshed
        }
    }
}

/// What a request's directives make of a lookup's result: a fresh entry
/// too old for its `max-age`, too close to expiry for its `min-fresh`, or
/// any entry under `no-cache`, is revalidated (or fetched) instead. A
/// stale entry is served only within the windows the route allows: a
/// client's `max-stale` never stretches them (a response past its TTL and
/// grace is never served). `only-if-cached` is read by the caller.
pub(crate) fn apply_directives(found: Found, directives: &RequestDirectives, now_ms: u64) -> Found {
    let too_old = |entry: &Entry| {
        let age_s = now_ms.saturating_sub(entry.born_ms()) / 1000;
        let left_s = entry.fresh_until_ms().saturating_sub(now_ms) / 1000;
        directives.no_cache
            || directives
                .max_age
                .is_some_and(|max| max.map_or(true, |m| age_s > m))
            || directives
                .min_fresh
                .is_some_and(|min| min.map_or(true, |m| left_s < m))
    };
    match found {
        Found::Fresh(entry) if too_old(&entry) => Found::Miss {
            marker: None,
            stale: Some(entry),
        },
        Found::Stale { entry, marker } if directives.no_cache || directives.max_age.is_some() => {
            Found::Miss {
                marker,
                stale: Some(entry),
            }
        }
        found => found,
    }
}

/// The answer to `only-if-cached` when nothing stored may answer: a `504`
/// (RFC 9111, section 5.2.1.7), without calling the origin.
pub(crate) fn only_if_cached<B>() -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    response.headers_mut().insert(
        headers::CACHE_STATUS.clone(),
        HeaderValue::from_static("tower-response-cache; fwd=miss; detail=only-if-cached"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_computed_tags_are_dropped_each_tag_whole() {
        let mut request = HeaderMap::new();
        for line in ["\"a,b\", W/\"trc-0123\"", "W/\"v\"", "W/\"trc-x,y\""] {
            request.append(header::IF_NONE_MATCH, line.parse().unwrap());
        }
        drop_computed_tags(&mut request);
        let sent: Vec<_> = request.get_all(header::IF_NONE_MATCH).iter().collect();
        assert_eq!(sent, ["\"a,b\", W/\"v\""]);
        // Nothing of the origin's left: no field at all.
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, "W/\"trc-1\"".parse().unwrap());
        drop_computed_tags(&mut request);
        assert!(request.get(header::IF_NONE_MATCH).is_none());
    }
}
