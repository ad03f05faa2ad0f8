use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::future::{Made, Plan, ResponseFuture};
use super::layer::{Asks, Config};
use super::CacheBody;
use crate::cache::flight::{Join, Leader, Outcome};
use crate::cache::stats::{Counters, Event, Reason};
use crate::cache::Cache;
use crate::headers;
use crate::key::CacheKey;
use crate::policy::CompiledRoute;
use crate::store::{Entry, EntryParts, Lookup, ResponseHead, StoreError};

/// The service made by [`CacheLayer`](super::CacheLayer).
///
/// Its error is the inner service's error, unchanged; its response body is
/// [`CacheBody`]. Clones share the cache and the rules.
pub struct CacheService<S> {
    inner: S,
    /// The rules and the cache: one count to bump per clone.
    config: Arc<Config>,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("rules", &self.config.rules)
            .finish()
    }
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A miss on its way to the origin: what storing its response needs.
pub(crate) struct Miss {
    pub(crate) cache: Cache,
    pub(crate) route: CompiledRoute,
    pub(crate) key: CacheKey,
    pub(crate) path: Box<str>,
    pub(crate) request_headers: HeaderMap,
    pub(crate) born: u64,
    pub(crate) born_ms: u64,
    pub(crate) head: bool,
    /// This miss leads a coalesced flight.
    pub(crate) flight: Option<Leader>,
    /// An expired entry still inside its stale-if-error window.
    pub(crate) stale: Option<Arc<Entry>>,
    /// The request's span, for what is decided after the response head.
    pub(crate) span: tracing::Span,
}

/// A response being stored: everything but the body, which the body tee
/// hands over when it ends.
pub(crate) struct Pending {
    pub(crate) cache: Cache,
    pub(crate) counters: Arc<Counters>,
    pub(crate) key: CacheKey,
    pub(crate) primary: Option<(CacheKey, Box<[HeaderName]>)>,
    /// The entry to store, all but its body.
    pub(crate) entry: EntryParts,
    pub(crate) flight: Option<Leader>,
    pub(crate) span: tracing::Span,
}

impl Pending {
    pub(crate) fn not_stored(mut self: Box<Self>, reason: Reason) {
        let cache = &self.cache;
        cache.record(Some(&self.counters), Event::Reason(reason));
        self.span.record("reason", reason.as_str());
        tracing::debug!(parent: &self.span, key = %self.key.full, reason = reason.as_str(), "response not stored");
        if let Some(flight) = self.flight.take() {
            cache.end_flight(flight, reason);
        }
    }

    pub(crate) fn store(mut self: Box<Self>, body: Bytes) {
        let mut parts = std::mem::take(&mut self.entry);
        if !parts.headers.iter().any(|(n, _)| n == header::ETAG) {
            parts
                .headers
                .push((header::ETAG, headers::computed_etag(&body)));
        }
        parts.body = body;
        let marker = self.primary.take().map(|(primary, names)| {
            let marker = EntryParts {
                status: StatusCode::OK.as_u16(),
                born: parts.born,
                key_hash: parts.key_hash,
                born_ms: parts.born_ms,
                fresh_until_ms: parts.fresh_until_ms,
                grace_until_ms: parts.grace_until_ms,
                stale_while_revalidate_until_ms: parts.stale_while_revalidate_until_ms,
                path: parts.path.clone(),
                vary: Some(names.into_vec()),
                ..EntryParts::default()
            };
            let marker = Entry::keyed(marker, &primary.full).expect("200 is a valid status");
            (primary, marker)
        });
        let entry = Entry::keyed(parts, &self.key.full).expect("the origin's status is valid");
        if self.cache.shared.remote.is_some() {
            self.store_remote(Arc::new(entry), marker);
            return;
        }
        let weight = entry.weight();
        let memory = &self.cache.shared.memory;
        if !memory.put_now(self.key.lookup(), Arc::new(entry)) {
            self.cache.record(Some(&self.counters), Event::Rejected);
            self.not_stored(Reason::Rejected);
            return;
        }
        if let Some((primary, marker)) = marker {
            // The marker saying where the variants are.
            memory.put_now(primary.lookup(), Arc::new(marker));
        }
        self.stored(weight);
    }

    /// Counts and traces a stored response, and hands it to the waiters.
    fn stored(mut self: Box<Self>, weight: u64) {
        self.span.record("stored_bytes", weight);
        self.cache.record(Some(&self.counters), Event::Store);
        tracing::debug!(parent: &self.span, key = %self.key.full, bytes = weight, "response stored");
        if let Some(flight) = self.flight.take() {
            flight.finish(&self.cache.shared.flights, Outcome::Stored, 0);
        }
    }
}

impl Pending {
    /// Writes an entry (and its Vary marker) to a network store in the
    /// background; the flight, if any, ends when the write has landed, so
    /// that its waiters find the entry.
    fn store_remote(self: Box<Self>, entry: Arc<Entry>, marker: Option<(CacheKey, Entry)>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.not_stored(Reason::StoreFailed);
            return;
        };
        runtime.spawn(async move {
            let Some(remote) = self.cache.shared.remote.clone() else {
                return;
            };
            let weight = entry.weight();
            let mut written = remote.put(self.key.lookup(), entry).await;
            if let (Ok(()), Some((primary, marker))) = (&written, marker) {
                written = remote.put(primary.lookup(), Arc::new(marker)).await;
            }
            match written {
                Ok(()) => self.stored(weight),
                Err(e) => {
                    self.cache.store_error("put", &e);
                    self.not_stored(Reason::StoreFailed);
                }
            }
        });
    }
}

impl Cache {
    /// Ends a leader's flight for a response that was not stored: waiters
    /// go to the origin; a pass marker is set unless the failure was
    /// transient (a body error, a client gone).
    pub(crate) fn end_flight(&self, flight: Leader, reason: Reason) {
        let shared = &self.shared;
        match reason {
            Reason::BodyError | Reason::Incomplete => {
                flight.finish(&shared.flights, Outcome::Abandoned, 0);
            }
            _ => {
                let pass = shared.pass_ms;
                if pass > 0 {
                    Counters::add(&shared.extra.pass_markers);
                }
                let until = if pass > 0 {
                    shared.clock.now_ms() + pass
                } else {
                    0
                };
                flight.finish(&shared.flights, Outcome::Pass, until);
            }
        }
    }

    /// Judges what one lookup found: an answer, or the key of the variant
    /// to look up next (when the primary key holds a Vary marker).
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        lookup: Lookup,
        k: &CacheKey,
        key: &CacheKey,
        headers: &HeaderMap,
        now_ms: u64,
        counters: &Counters,
        marker: &mut Option<(CacheKey, Box<[HeaderName]>)>,
    ) -> Step {
        let miss = |marker: &mut Option<_>| {
            Step::Answer(Found::Miss {
                marker: marker.take(),
                stale: None,
            })
        };
        let entry = match lookup {
            Lookup::Found(entry) => entry,
            Lookup::Invalidated => {
                self.record(Some(counters), Event::StaleDropped);
                return miss(marker);
            }
            Lookup::Miss => return miss(marker),
        };
        if !entry.key_is(&k.full) {
            return miss(marker);
        }
        if now_ms >= entry.fresh_until_ms() {
            if now_ms >= entry.grace_until_ms() {
                if self.shared.remote.is_none() {
                    // A network store drops entries past their grace itself.
                    self.shared.memory.remove_if_same(k.lookup(), &entry);
                }
                return miss(marker);
            }
            if entry.vary().is_none() {
                if now_ms < entry.stale_while_revalidate_until_ms() {
                    return Step::Answer(Found::Stale {
                        entry,
                        marker: marker.take(),
                    });
                }
                return Step::Answer(Found::Miss {
                    marker: marker.take(),
                    stale: Some(entry),
                });
            }
        }
        match entry.vary() {
            None => Step::Answer(Found::Fresh(entry)),
            Some(names) if marker.is_none() => {
                *marker = Some((key.clone(), names.into()));
                Step::Variant(key.variant(names, headers))
            }
            Some(_) => miss(marker),
        }
    }

    /// Looks a key up in memory (following a Vary marker), judging
    /// freshness, grace and the full key of hashed entries.
    pub(crate) fn find(
        &self,
        key: &CacheKey,
        headers: &HeaderMap,
        now_ms: u64,
        counters: &Counters,
    ) -> Found {
        let first = self.shared.memory.lookup_now(key.lookup());
        self.find_from(first, key, headers, now_ms, counters)
    }

    /// [`find`](Self::find), given what the lookup of `key` itself gave.
    pub(crate) fn find_from(
        &self,
        first: Lookup,
        key: &CacheKey,
        headers: &HeaderMap,
        now_ms: u64,
        counters: &Counters,
    ) -> Found {
        let memory = &self.shared.memory;
        let mut variant: Option<CacheKey> = None;
        let mut marker = None;
        let mut lookup = first;
        loop {
            let k = variant.as_ref().unwrap_or(key);
            match self.judge(lookup, k, key, headers, now_ms, counters, &mut marker) {
                Step::Answer(found) => return found,
                Step::Variant(v) => {
                    lookup = memory.lookup_now(v.lookup());
                    variant = Some(v);
                }
            }
        }
    }

    /// [`find`](Self::find) in a network store.
    pub(crate) async fn find_remote(
        &self,
        key: &CacheKey,
        headers: &HeaderMap,
        now_ms: u64,
        counters: &Counters,
    ) -> Result<Found, StoreError> {
        let Some(remote) = &self.shared.remote else {
            return Ok(self.find(key, headers, now_ms, counters));
        };
        let mut variant: Option<CacheKey> = None;
        let mut marker = None;
        loop {
            let k = variant.as_ref().unwrap_or(key);
            let lookup = remote.get(k.lookup()).await?;
            match self.judge(lookup, k, key, headers, now_ms, counters, &mut marker) {
                Step::Answer(found) => return Ok(found),
                Step::Variant(v) => variant = Some(v),
            }
        }
    }
}

/// What one lookup told [`Cache::judge`].
enum Step {
    Answer(Found),
    Variant(CacheKey),
}

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
    let body = if head || not_modified {
        CacheBody::empty()
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
    out.append(headers::CACHE_STATUS.clone(), cache_status);
    response
}

/// A hit's response, made when its future is polled from an entry the
/// caller lets go of: the usual fresh GET from the entry's ready head, any
/// other ([`Made`]: HEAD, 304, stale) by [`respond_other`].
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
    made: Made,
) -> Response<CacheBody<B>> {
    let ready = match (made, head) {
        (Made::Fresh, false) => entry.ready_head(),
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
fn respond_other<B>(entry: &Entry, now_ms: u64, head: bool, made: Made) -> Response<CacheBody<B>> {
    match made {
        Made::Fresh => respond(entry, now_ms, head, false, hit_status(entry, now_ms)),
        Made::NotModified => respond(entry, now_ms, head, true, hit_status(entry, now_ms)),
        Made::Stale => {
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

pub(crate) enum Found {
    Fresh(Arc<Entry>),
    /// Expired, inside its stale-while-revalidate window.
    Stale {
        entry: Arc<Entry>,
        marker: Option<(CacheKey, Box<[HeaderName]>)>,
    },
    /// No usable entry; the variant names if the primary key held a marker,
    /// and an expired entry that may still answer an origin failure.
    Miss {
        marker: Option<(CacheKey, Box<[HeaderName]>)>,
        stale: Option<Arc<Entry>>,
    },
}

#[inline]
fn is_head(method: &Method) -> Option<bool> {
    if method == Method::GET {
        Some(false)
    } else if method == Method::HEAD {
        Some(true)
    } else {
        None
    }
}

/// What the layer asks of the service it wraps (the bounds of
/// [`CacheService`]'s `Service` impl on `S`), named once for the private
/// functions that answer a request.
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(head) = is_head(req.method()) else {
            return self.bypass(req, Reason::Method, None);
        };
        let config = &*self.config;
        let cache = &config.cache;
        let shared = &cache.shared;
        // The common case first: a fresh entry in memory, stored under the
        // request's path and query as they stand.
        let mut first = None;
        let asks = Asks::of(req.headers());
        if shared.remote.is_none() {
            if let Some((route, key)) = config.plain_key(req.uri(), asks, shared.max_key_bytes) {
                let now_ms = shared.clock.now_ms();
                match shared.memory.lookup_now(key) {
                    Lookup::Found(entry)
                        if now_ms < entry.fresh_until_ms() && entry.vary().is_none() =>
                    {
                        let conditional = asks.conditional.then(|| req.headers());
                        let serve =
                            |span| hit(cache, route, key, conditional, head, entry, now_ms, span);
                        if !debug_wanted() {
                            return serve(None);
                        }
                        let span = request_span(key, route);
                        let _entered = span.enter();
                        return serve(Some(&span));
                    }
                    // Judged again below, with the key in its general form.
                    lookup => first = Some((lookup, now_ms)),
                }
            }
        }
        self.call_general(req, head, asks, first)
    }
}

impl<S> CacheService<S> {
    /// Everything but a fresh hit on the fast path: the request keyed in
    /// its general form, then looked up (unless `first` is the lookup
    /// already made), answered, forwarded or passed through. Kept out of
    /// `call` so that the fast path stays small.
    #[inline(never)]
    fn call_general<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        head: bool,
        asks: Asks,
        first: Option<(Lookup, u64)>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Origin<ReqBody, ResBody>,
        ReqBody: Send + 'static,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    {
        let config = &*self.config;
        let cache = &config.cache;
        let shared = &cache.shared;
        let (parts, body) = req.into_parts();
        let (route, key) = match config.classify(&parts, asks, shared.max_key_bytes) {
            Ok(found) => found,
            Err((Reason::NoRule, _)) => {
                // Not this layer's path: untouched, uncounted (another
                // layer, such as a `route_layer`, may cache it).
                tracing::trace!(path = parts.uri.path(), "no cache rule: passed through");
                let future = self.inner.call(Request::from_parts(parts, body));
                return ResponseFuture::forward(future, Plan::Untouched);
            }
            Err((reason, route)) => {
                let req = Request::from_parts(parts, body);
                return bypass(&mut self.inner, cache, req, reason, route);
            }
        };
        let span = request_span(&key.full, route);
        if shared.remote.is_some() {
            // A network store: the lookup is awaited, on the service that
            // was polled ready.
            let clone = self.inner.clone();
            let svc = std::mem::replace(&mut self.inner, clone);
            let lookup = Keyed {
                cache: cache.clone(),
                route: route.clone(),
                asked: Asked { key, parts, head },
            };
            return ResponseFuture::boxed(tracing::Instrument::instrument(
                call_remote(svc, lookup, body),
                span,
            ));
        }
        let _entered = span.enter();
        let (lookup, now_ms) = first.unwrap_or_else(|| {
            let now_ms = shared.clock.now_ms();
            (shared.memory.lookup_now(key.lookup()), now_ms)
        });
        let found = cache.find_from(lookup, &key, &parts.headers, now_ms, &route.stats);
        let born = shared.memory.index.generation();
        let asked = Asked { key, parts, head };
        answer(
            &mut self.inner,
            cache,
            route,
            asked,
            body,
            found,
            now_ms,
            born,
            &span,
        )
    }
}

/// A keyed GET or HEAD request, about to be answered.
struct Asked {
    key: CacheKey,
    parts: http::request::Parts,
    head: bool,
}

/// A keyed request on a network store, with what its future must own.
struct Keyed {
    cache: Cache,
    route: CompiledRoute,
    asked: Asked,
}

/// A fresh hit, counted and traced, made when polled. A request that may
/// carry validators (`conditional`: its headers) has them compared now,
/// for a 304.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn hit<F, B, E>(
    cache: &Cache,
    route: &CompiledRoute,
    key: &str,
    conditional: Option<&HeaderMap>,
    head: bool,
    entry: Arc<Entry>,
    now_ms: u64,
    span: Option<&tracing::Span>,
) -> ResponseFuture<F, B, E> {
    cache.record(Some(&route.stats), Event::Hit);
    if let Some(span) = span {
        span.record("outcome", "hit");
    }
    let Some(request) = conditional else {
        tracing::debug!(key, route = %route.pattern, outcome = "hit", not_modified = false, "cache decision");
        return ResponseFuture::hit(entry, now_ms, head, Made::Fresh);
    };
    let not_modified = validators_match(&entry, request);
    if not_modified {
        cache.record(Some(&route.stats), Event::NotModified);
    }
    tracing::debug!(key, route = %route.pattern, outcome = "hit", not_modified, "cache decision");
    let made = if not_modified {
        Made::NotModified
    } else {
        Made::Fresh
    };
    ResponseFuture::hit(entry, now_ms, head, made)
}

/// Answers a request from what the lookup found: a hit or a stale entry at
/// once, a miss through `svc` (the service that was polled ready), or a
/// wait for another request's origin call. `born` is the generation read
/// before the origin read begins.
#[allow(clippy::too_many_arguments)]
fn answer<S, ReqBody, ResBody>(
    svc: &mut S,
    cache: &Cache,
    route: &CompiledRoute,
    asked: Asked,
    body: ReqBody,
    found: Found,
    now_ms: u64,
    born: u64,
    span: &tracing::Span,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    let Asked { key, parts, head } = asked;
    let shared = &cache.shared;
    match found {
        Found::Fresh(entry) => hit(
            cache,
            route,
            &key.full,
            Some(&parts.headers),
            head,
            entry,
            now_ms,
            Some(span),
        ),
        Found::Stale { entry, marker } => {
            cache.record(Some(&route.stats), Event::Stale);
            let refreshing = !head && tokio::runtime::Handle::try_current().is_ok();
            span.record("outcome", "stale");
            tracing::debug!(key = %key.full, route = %route.pattern, outcome = "stale", refreshing, "cache decision");
            if refreshing {
                let lookup_key = marker.as_ref().map_or(&key, |(p, _)| p).lookup().to_owned();
                if let Join::Leader(flight) = shared.flights.join(&lookup_key, now_ms) {
                    // Exactly one background refresh, on the service that
                    // was polled ready.
                    Counters::add(&shared.extra.refreshes);
                    let mut miss = Miss::new(cache, route, key, &parts, head, marker, now_ms, born);
                    miss.flight = Some(flight);
                    // The refresh wants a full response, not a 304 for this
                    // client's validators.
                    let mut parts = parts;
                    parts.headers.remove(header::IF_NONE_MATCH);
                    parts.headers.remove(header::IF_MODIFIED_SINCE);
                    let future = svc.call(Request::from_parts(parts, body));
                    tokio::spawn(refresh(future, miss));
                }
            }
            ResponseFuture::hit(entry, now_ms, head, Made::Stale)
        }
        Found::Miss { marker, stale } => {
            cache.record(Some(&route.stats), Event::Miss);
            span.record("outcome", "miss");
            tracing::debug!(key = %key.full, route = %route.pattern, outcome = "miss", "cache decision");
            let mut miss = Miss::new(cache, route, key, &parts, head, marker, now_ms, born);
            miss.stale = stale;
            let join = if head || shared.coalesce_timeout.is_zero() {
                Join::Pass
            } else {
                shared.flights.join(miss.key.lookup(), now_ms)
            };
            match join {
                Join::Leader(flight) => miss.flight = Some(flight),
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
            ResponseFuture::forward(future, Plan::Miss(Box::new(miss)))
        }
    }
}

/// A request on a network store: the lookup and (on a miss) the clock are
/// awaited; a store that fails or times out sends the request to the
/// origin as a `store-error` bypass.
async fn call_remote<S, ReqBody, ResBody>(
    mut svc: S,
    lookup: Keyed,
    body: ReqBody,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    let Keyed {
        cache,
        route,
        asked,
    } = lookup;
    let now_ms = cache.shared.clock.now_ms();
    let mut found = cache
        .find_remote(&asked.key, &asked.parts.headers, now_ms, &route.stats)
        .await;
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
            answer(
                &mut svc, &cache, &route, asked, body, found, now_ms, born, &span,
            )
            .await
        }
        Err(e) => {
            cache.store_error("get", &e);
            let req = Request::from_parts(asked.parts, body);
            bypass(&mut svc, &cache, req, Reason::StoreError, Some(&route)).await
        }
    }
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
    ResBody: http_body::Body<Data = Bytes>,
{
    let shared = &miss.cache.shared;
    let waited = tokio::time::timeout(
        shared.coalesce_timeout,
        rx.wait_for(|o| *o != Outcome::Pending),
    )
    .await
    .map(|r| r.map(|outcome| *outcome));
    let outcome = match waited {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::Abandoned,
        Err(_) => {
            Counters::add(&shared.extra.coalesce_timeouts);
            Outcome::Pending
        }
    };
    let now_ms = shared.clock.now_ms();
    if outcome == Outcome::Stored {
        let found = miss
            .cache
            .find_remote(&miss.key, req.headers(), now_ms, &miss.route.stats)
            .await;
        if let Ok(Found::Fresh(entry)) = found {
            let not_modified = validators_match(&entry, req.headers());
            let response = respond(
                &entry,
                now_ms,
                miss.head,
                not_modified,
                headers::collapsed(),
            );
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
    ResponseFuture::forward(future, Plan::Miss(Box::new(miss))).await
}

/// A background refresh: the response is stored (or not) as a miss's is,
/// its body read to the end.
async fn refresh<F, B, E>(future: F, miss: Miss)
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes>,
{
    let Ok(response) = ResponseFuture::<F, B, E>::forward(future, Plan::Miss(Box::new(miss))).await
    else {
        return;
    };
    let body = std::pin::pin!(response.into_body());
    let mut body = body;
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
    {
        if frame.is_err() {
            break;
        }
    }
}

impl Miss {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cache: &Cache,
        route: &CompiledRoute,
        key: CacheKey,
        parts: &http::request::Parts,
        head: bool,
        marker: Option<(CacheKey, Box<[HeaderName]>)>,
        now_ms: u64,
        born: u64,
    ) -> Miss {
        Miss {
            cache: cache.clone(),
            route: route.clone(),
            path: parts.uri.path().into(),
            request_headers: if head {
                HeaderMap::new()
            } else {
                parts.headers.clone()
            },
            key: match marker {
                // The marker is rewritten when the response is stored.
                Some((primary, _)) => primary,
                None => key,
            },
            born,
            born_ms: now_ms,
            head,
            flight: None,
            stale: None,
            span: tracing::Span::current(),
        }
    }
}

impl<S> CacheService<S> {
    fn bypass<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        reason: Reason,
        route: Option<&CompiledRoute>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        bypass(&mut self.inner, &self.config.cache, req, reason, route)
    }
}

/// A request the cache does not consult: counted, traced, and passed to
/// the inner service. (A function of the fields, so that `call` can pass a
/// route borrowed from the layer's rules without cloning them.)
fn bypass<S, ReqBody, ResBody>(
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
    ResponseFuture::forward(inner.call(req), Plan::Bypass(reason))
}

/// Whether any subscriber may want debug spans: the global level check that
/// `tracing`'s own macros make first, without the fallback to `log` records
/// that a disabled span otherwise costs on every request.
#[inline]
fn debug_wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    STATIC_MAX_LEVEL >= LevelFilter::DEBUG && LevelFilter::current() >= LevelFilter::DEBUG
}

/// The request's `http_cache` span, made only when a subscriber may want
/// debug spans (so the key is formatted only then); `Span::none()` otherwise.
#[inline]
fn request_span(key: &str, route: &CompiledRoute) -> tracing::Span {
    if !debug_wanted() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "http_cache",
        key,
        route = %route.pattern,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty,
        stored_bytes = tracing::field::Empty,
    )
}

impl Miss {
    /// Decides from the response head whether it may be stored, and if so
    /// prepares the entry; `Err` says why not.
    pub(crate) fn decide<B>(
        mut self: Box<Self>,
        response: &mut Response<B>,
    ) -> Result<Box<Pending>, (Box<Self>, Reason)>
    where
        B: http_body::Body,
    {
        use crate::policy::{CacheTags, CacheTtl, NoStore};
        let ext = response.extensions_mut();
        let no_store = ext.remove::<NoStore>().is_some();
        let ttl = ext
            .remove::<CacheTtl>()
            .map_or(self.route.policy.ttl, |t| t.0);
        let extra_tags = ext.remove::<CacheTags>();
        let directives = headers::response_directives(response.headers());
        let reason = if self.head {
            Some(Reason::Head)
        } else if no_store || ttl.is_zero() {
            Some(Reason::Handler)
        } else if !self.route.policy.status_allowed(response.status()) {
            Some(Reason::Status)
        } else if response.headers().contains_key(header::SET_COOKIE) {
            Some(Reason::SetCookie)
        } else if directives.forbids_store {
            Some(Reason::CacheControl)
        } else if headers::is_event_stream(response.headers()) {
            Some(Reason::EventStream)
        } else if response.body().size_hint().lower() > self.cache.shared.max_body_bytes as u64 {
            Some(Reason::TooLarge)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err((self, reason));
        }
        let vary = match headers::vary_names(response.headers()) {
            Ok(names) => names,
            Err(()) => return Err((self, Reason::VaryStar)),
        };
        let flight = self.flight.take();
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        let Miss {
            cache,
            route,
            key,
            path,
            request_headers,
            born,
            born_ms,
            ..
        } = *self;
        let key_hash = crate::invalidate::index::key_hash(&key.full);
        let (key, primary) = if vary.is_empty() {
            (key, None)
        } else {
            let names: Box<[HeaderName]> = vary.into();
            (key.variant(&names, &request_headers), Some((key, names)))
        };
        // Cloned for now; the entry copies their bytes into its own buffer.
        let stored_headers: Vec<(HeaderName, HeaderValue)> = response
            .headers()
            .iter()
            .filter(|(n, _)| !headers::is_unstorable_header(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut tags: Vec<String> = route.policy.tags.iter().map(|t| t.to_string()).collect();
        if let Some(CacheTags(extra)) = extra_tags {
            tags.extend(extra);
        }
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let fresh_until_ms = born_ms.saturating_add(ms(ttl));
        let swr = directives
            .stale_while_revalidate
            .map_or(ms(route.policy.stale_while_revalidate), |s| {
                s.saturating_mul(1000)
            });
        let sie = directives
            .stale_if_error
            .map_or(ms(route.policy.stale_if_error), |s| s.saturating_mul(1000));
        Ok(Box::new(Pending {
            counters: route.stats.clone(),
            cache,
            key,
            primary,
            flight,
            span,
            entry: EntryParts {
                status: response.status().as_u16(),
                headers: stored_headers,
                born,
                key_hash,
                born_ms,
                fresh_until_ms,
                stale_while_revalidate_until_ms: fresh_until_ms.saturating_add(swr),
                grace_until_ms: fresh_until_ms.saturating_add(swr.max(sie)),
                path: path.into(),
                tags,
                ..EntryParts::default()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_request_span_is_made_when_a_subscriber_wants_debug() {
        let policy = crate::policy::RoutePolicy::ttl(std::time::Duration::from_secs(1));
        let key =
            crate::key::build("/p", Some("a=1"), &HeaderMap::new(), &policy, None, 8192).unwrap();
        let route = CompiledRoute {
            pattern: "/p".into(),
            policy,
            stats: Arc::default(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(&key.full, &route);
            assert!(!span.is_disabled());
            assert_eq!(span.metadata().map(|m| m.name()), Some("http_cache"));
        });
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
