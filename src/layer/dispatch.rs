//! What a keyed request does once its lookup is done: a hit answered at
//! once, a stale entry served while one background refresh runs, a miss
//! that leads an origin call or waits for another request's, and the
//! network-store path, where the lookup itself is awaited.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response};
use tower_service::Service;

use super::future::{FromEntry, OnResponse, ResponseFuture};
use super::miss::{asks_no_store, Miss, ReadStart};
use super::range;
use super::respond::{respond, validators_match};
use super::revalidate::{self, apply_directives, make_conditional, only_if_cached};
use super::trace::debug_wanted;
use super::CacheBody;
use crate::cache::flight::{Join, Outcome};
use crate::cache::lookup::{Found, Probe, VaryMarker};
use crate::cache::stats::{Counters, Event, Reason};
use crate::cache::Cache;
use crate::freshness::RequestDirectives;
use crate::headers;
use crate::key::CacheKey;
use crate::policy::CompiledRoute;
use crate::store::Entry;

/// What the layer asks of the service it wraps (the bounds of
/// [`CacheService`](super::CacheService)'s `Service` impl on `S`), named
/// once for the private functions that answer a request.
pub(crate) trait Origin<ReqBody, ResBody>:
    Service<
        Request<ReqBody>,
        Response = Response<ResBody>,
        Future: Send + 'static,
        Error: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, ReqBody, ResBody> Origin<ReqBody, ResBody> for S where
    S: Service<
            Request<ReqBody>,
            Response = Response<ResBody>,
            Future: Send + 'static,
            Error: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A keyed GET or HEAD request, about to be answered.
pub(crate) struct KeyedRequest<B> {
    pub(crate) key: CacheKey,
    pub(crate) parts: http::request::Parts,
    pub(crate) body: B,
    pub(crate) head: bool,
    /// The request's caching directives, when the layer honours them and
    /// the request has any.
    pub(crate) directives: Option<Box<RequestDirectives>>,
}

/// A fresh hit's request: its key, whether it is a HEAD, and its headers
/// when it may carry validators (`If-None-Match`, `If-Modified-Since`).
#[derive(Clone, Copy)]
pub(crate) struct HitRequest<'a> {
    pub(crate) key: &'a str,
    pub(crate) conditional: Option<&'a HeaderMap>,
    pub(crate) head: bool,
}

/// A fresh hit, counted and traced, made when polled. A request that may
/// carry validators has them compared now, for a 304.
#[inline(always)]
pub(crate) fn hit<F, B, E>(
    cache: &Cache,
    route: &CompiledRoute,
    request: HitRequest<'_>,
    entry: Arc<Entry>,
    now_ms: u64,
    span: Option<&tracing::Span>,
) -> ResponseFuture<F, B, E> {
    let HitRequest {
        key,
        conditional,
        head,
    } = request;
    cache.record(Some(&route.stats), Event::Hit);
    if let Some(span) = span {
        span.record("outcome", "hit");
    }
    let Some(request) = conditional else {
        tracing::debug!(key, route = %route.pattern, outcome = "hit", not_modified = false, "cache decision");
        return ResponseFuture::hit(entry, now_ms, head, FromEntry::Fresh);
    };
    let not_modified = validators_match(&entry, request);
    if not_modified {
        cache.record(Some(&route.stats), Event::NotModified);
    }
    tracing::debug!(key, route = %route.pattern, outcome = "hit", not_modified, "cache decision");
    let made = if not_modified {
        FromEntry::NotModified
    } else {
        FromEntry::Fresh
    };
    ResponseFuture::hit(entry, now_ms, head, made)
}

/// Answers a request from what the lookup found: a hit or a stale entry at
/// once, a miss through `svc` (the service that was polled ready), or a
/// wait for another request's origin call. `read` is when the origin read
/// would begin.
pub(crate) fn answer<S, ReqBody, ResBody>(
    svc: &mut S,
    cache: &Cache,
    route: &CompiledRoute,
    request: KeyedRequest<ReqBody>,
    found: Found,
    read: ReadStart,
    span: &tracing::Span,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let KeyedRequest {
        key,
        mut parts,
        body,
        head,
        directives,
    } = request;
    let shared = &cache.shared;
    let now_ms = read.now_ms;
    let found = match &directives {
        Some(directives) => {
            let found = apply_directives(found, directives, now_ms);
            if directives.only_if_cached && matches!(found, Found::Miss { .. }) {
                cache.record(Some(&route.stats), Event::Miss);
                span.record("outcome", "miss");
                tracing::debug!(key = %key.full, route = %route.pattern, outcome = "miss", only_if_cached = true, "cache decision");
                return ResponseFuture::boxed(std::future::ready(Ok(only_if_cached())));
            }
            found
        }
        None => found,
    };
    let found = match found {
        Found::Fresh(entry) if !head && parts.headers.contains_key(header::RANGE) => {
            match ranged(&entry, &parts.headers) {
                Ok(range) => {
                    cache.record(Some(&route.stats), Event::Hit);
                    span.record("outcome", "hit");
                    tracing::debug!(key = %key.full, route = %route.pattern, outcome = "hit", range = ?range, "cache decision");
                    let response = range::answer(&entry, now_ms, range);
                    return ResponseFuture::boxed(std::future::ready(Ok(response)));
                }
                // The full entry answers (If-Range did not hold, or the
                // entry is not a full 200).
                Err(true) => Found::Fresh(entry),
                // Not one range: the origin answers.
                Err(false) => Found::Miss {
                    marker: None,
                    stale: None,
                },
            }
        }
        found => found,
    };
    match found {
        Found::Fresh(entry) => {
            let request = HitRequest {
                key: &key.full,
                conditional: Some(&parts.headers),
                head,
            };
            hit(cache, route, request, entry, now_ms, Some(span))
        }
        Found::Stale { entry, marker } => {
            cache.record(Some(&route.stats), Event::Stale);
            let refreshing = !head && tokio::runtime::Handle::try_current().is_ok();
            span.record("outcome", "stale");
            tracing::debug!(key = %key.full, route = %route.pattern, outcome = "stale", refreshing, "cache decision");
            if refreshing {
                let variant = variant_key(cache, marker.as_ref(), &parts.headers);
                let primary = marker.map_or(key, |(primary, _)| primary);
                let flight_key = variant.as_ref().unwrap_or(&primary).lookup();
                if let Join::Leader(flight) = shared.flights.join(flight_key, now_ms) {
                    // Exactly one background refresh, on the service that
                    // was polled ready.
                    Counters::add(&shared.extra.refreshes);
                    let mut miss = Miss::new(cache, route, primary, &parts, head, read);
                    miss.flight = Some(flight);
                    // The refresh wants a full response, not a 304 for this
                    // client's validators: a 304 for the entry's own, if any.
                    parts.headers.remove(header::IF_NONE_MATCH);
                    parts.headers.remove(header::IF_MODIFIED_SINCE);
                    // Nor a 206 for this client's range.
                    parts.headers.remove(header::RANGE);
                    parts.headers.remove(header::IF_RANGE);
                    if make_conditional(&mut parts.headers, &entry) {
                        Counters::add(&shared.extra.revalidations);
                        miss.revalidating = true;
                        miss.stale = Some(entry.clone());
                    }
                    let future = svc.call(Request::from_parts(parts, body));
                    tokio::spawn(refresh(future, miss));
                }
            }
            ResponseFuture::hit(entry, now_ms, head, FromEntry::Stale)
        }
        Found::Miss { marker, stale } => {
            cache.record(Some(&route.stats), Event::Miss);
            span.record("outcome", "miss");
            tracing::debug!(key = %key.full, route = %route.pattern, outcome = "miss", "cache decision");
            // A range request (most likely answered 206) or one that says
            // `no-store` cannot fill the entry: it neither leads nor
            // waits, and sets no pass marker for the requests that can.
            let coalesce = !(head
                || shared.coalesce_timeout.is_zero()
                || parts.headers.contains_key(header::RANGE)
                || asks_no_store(&parts.headers));
            let variant = match coalesce {
                true => variant_key(cache, marker.as_ref(), &parts.headers),
                false => None,
            };
            let primary = marker.map_or(key, |(primary, _)| primary);
            let mut miss = Miss::new(cache, route, primary, &parts, head, read);
            miss.stale = stale;
            let ranged = parts.headers.contains_key(header::RANGE);
            if let (false, false, Some(stale)) = (head, ranged, &miss.stale) {
                // A stale entry with origin validators: ask the origin
                // whether it still holds.
                if make_conditional(&mut parts.headers, stale) {
                    Counters::add(&shared.extra.revalidations);
                    miss.revalidating = true;
                }
            }
            if !miss.revalidating {
                revalidate::drop_computed_tags(&mut parts.headers);
            }
            let join = if coalesce {
                let flight_key = variant.as_ref().unwrap_or(&miss.key).lookup();
                shared.flights.join(flight_key, now_ms)
            } else {
                Join::Pass
            };
            match join {
                Join::Leader(flight) => {
                    miss.flight = Some(flight);
                    miss.read_ahead = true;
                }
                Join::Pass => {}
                Join::Follower(rx) => {
                    cache.record(Some(&route.stats), Event::Coalesced);
                    // The service polled ready goes with the waiter; the
                    // caller keeps a clone.
                    let clone = svc.clone();
                    let svc = std::mem::replace(svc, clone);
                    let req = Request::from_parts(parts, body);
                    return ResponseFuture::boxed(wait_then_call(svc, req, miss, rx));
                }
            }
            let future = svc.call(Request::from_parts(parts, body));
            ResponseFuture::forward(future, OnResponse::Miss(Box::new(miss)))
        }
    }
}

/// The range a request asks of a fresh entry: `Err(true)` when the full
/// entry answers instead, `Err(false)` when only the origin can.
fn ranged(entry: &Entry, request: &HeaderMap) -> Result<range::Ranged, bool> {
    if entry.status() != http::StatusCode::OK || !range::if_range_holds(request, entry) {
        return Err(true);
    }
    let value = request.get(header::RANGE).ok_or(true)?;
    match range::parse(value, entry.body().len() as u64) {
        range::Ranged::Other => Err(false),
        range => Ok(range),
    }
}

/// A request on a network store: the lookup and (on a miss) the clock are
/// awaited; a store that fails or times out sends the request to the
/// origin as a `store-error` bypass.
pub(crate) async fn call_remote<S, ReqBody, ResBody>(
    mut svc: S,
    cache: Cache,
    route: CompiledRoute,
    request: KeyedRequest<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let now_ms = cache.shared.clock.now_ms();
    let probe = Probe {
        key: &request.key,
        headers: &request.parts.headers,
        now_ms,
        counters: &route.stats,
    };
    let mut found = cache.find(probe).await;
    let mut born = 0;
    if let Ok(Found::Miss { .. } | Found::Stale { .. }) = &found {
        match cache.born().await {
            Ok(generation) => born = generation,
            Err(e) => found = Err(e),
        }
    }
    match found {
        Ok(found) => {
            let span = tracing::Span::current();
            let read = ReadStart { now_ms, born };
            answer(&mut svc, &cache, &route, request, found, read, &span).await
        }
        Err(e) => {
            cache.store_error("get", &e);
            let req = Request::from_parts(request.parts, request.body);
            bypass(&mut svc, &cache, req, Reason::StoreError, Some(&route)).await
        }
    }
}

/// The variant a request's headers select when its URL is known to vary:
/// what its misses coalesce on, so that different variants never wait for
/// each other (else they coalesce on the request's key).
fn variant_key(
    cache: &Cache,
    marker: Option<&VaryMarker>,
    headers: &HeaderMap,
) -> Option<CacheKey> {
    let (primary, names) = marker?;
    Some(primary.variant(names, headers, &cache.shared.scope_hasher))
}

/// A coalesced waiter: waits for the leader, answers from the store when
/// the leader's response was stored, and goes to the origin otherwise.
async fn wait_then_call<S, ReqBody, ResBody>(
    mut svc: S,
    req: Request<ReqBody>,
    mut miss: Miss,
    mut rx: tokio::sync::watch::Receiver<Outcome>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let shared = &miss.cache.shared;
    let deadline = tokio::time::Instant::now() + shared.coalesce_timeout;
    let outcome = loop {
        let waited = tokio::time::timeout_at(deadline, rx.wait_for(|o| *o != Outcome::Pending))
            .await
            .map(|r| r.map(|outcome| outcome.clone()));
        let outcome = match waited {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Abandoned,
            Err(_) => {
                Counters::add(&shared.extra.coalesce_timeouts);
                Outcome::Pending
            }
        };
        let Outcome::Varies(names) = outcome else {
            break outcome;
        };
        // The response varies: wait for this request's own variant, or
        // lead its flight.
        let variant = miss
            .key
            .variant(&names, req.headers(), &shared.scope_hasher);
        match shared.flights.join(variant.lookup(), shared.clock.now_ms()) {
            Join::Follower(next) => rx = next,
            Join::Leader(flight) => {
                miss.flight = Some(flight);
                miss.read_ahead = true;
                // The URL's leader may have stored this very variant
                // already: the store is asked first.
                break Outcome::Stored;
            }
            Join::Pass => break Outcome::Pass,
        }
    };
    let now_ms = shared.clock.now_ms();
    if outcome == Outcome::Stored {
        let probe = Probe {
            key: &miss.key,
            headers: req.headers(),
            now_ms,
            counters: &miss.route.stats,
        };
        if let Ok(Found::Fresh(entry)) = miss.cache.find(probe).await {
            // The client's own validators: `req` may carry those of a
            // stale entry, put there to revalidate it with the origin.
            let not_modified = validators_match(&entry, &miss.request_headers);
            let response = respond(
                &entry,
                now_ms,
                miss.head,
                not_modified,
                headers::collapsed(),
            );
            if let Some(flight) = miss.flight.take() {
                // Its own waiters (if any came meanwhile) find it too.
                flight.finish(Outcome::Stored, 0);
            }
            miss.cache.record(Some(&miss.route.stats), Event::Collapsed);
            tracing::debug!(key = %miss.key.full, outcome = "collapsed", "cache decision");
            return Ok(response);
        }
    }
    // The leader's response could not be shared: go to the origin now,
    // with a birth taken now.
    match miss.cache.born().await {
        Ok(born) => miss.born = born,
        Err(e) => {
            let cache = miss.cache.clone();
            cache.store_error("generation", &e);
            return bypass(&mut svc, &cache, req, Reason::StoreError, Some(&miss.route)).await;
        }
    }
    miss.born_ms = now_ms;
    let future = svc.call(req);
    ResponseFuture::forward(future, OnResponse::Miss(Box::new(miss))).await
}

/// A background refresh: the response is stored (or not) as a miss's is,
/// its body read to the end.
async fn refresh<F, B, E>(future: F, miss: Miss)
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    let forwarded = ResponseFuture::<F, B, E>::forward(future, OnResponse::Miss(Box::new(miss)));
    let Ok(response) = forwarded.await else {
        return;
    };
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
    {
        if frame.is_err() {
            break;
        }
    }
}

/// A request the cache does not consult: counted, traced, and passed to
/// the inner service. (A function of the fields, so that `call` can pass a
/// route borrowed from the layer's rules without cloning them.)
pub(crate) fn bypass<S, ReqBody, ResBody>(
    inner: &mut S,
    cache: &Cache,
    req: Request<ReqBody>,
    reason: Reason,
    route: Option<&CompiledRoute>,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    cache.record(route.map(|r| &*r.stats), Event::Reason(reason));
    let span = if debug_wanted() {
        tracing::debug_span!(
            "http_cache",
            route = route.map(|r| &*r.pattern),
            outcome = "bypass",
            reason = reason.as_str(),
        )
    } else {
        tracing::Span::none()
    };
    let _entered = span.enter();
    tracing::debug!(
        method = %req.method(),
        path = req.uri().path(),
        route = route.map(|r| &*r.pattern),
        outcome = "bypass",
        reason = reason.as_str(),
        "cache decision"
    );
    let lean = cache.shared.lean;
    ResponseFuture::forward(inner.call(req), OnResponse::Bypass { reason, lean })
}
