use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::future::{Plan, ResponseFuture};
use super::layer::Config;
use super::CacheBody;
use crate::cache::stats::{Counters, Reason};
use crate::cache::Cache;
use crate::headers;
use crate::key::CacheKey;
use crate::policy::CompiledRoute;
use crate::store::{Entry, Lookup};

/// The service made by [`CacheLayer`](super::CacheLayer).
///
/// Its error is the inner service's error, unchanged; its response body is
/// [`CacheBody`]. Clones share the cache and the rules.
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
    config: Arc<Config>,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
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
    pub(crate) fn new(inner: S, cache: Cache, config: Arc<Config>) -> Self {
        Self {
            inner,
            cache,
            config,
        }
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
}

/// A response being stored: everything but the body, which the body tee
/// hands over when it ends.
pub(crate) struct Pending {
    pub(crate) cache: Cache,
    pub(crate) counters: Arc<Counters>,
    pub(crate) key: CacheKey,
    pub(crate) primary: Option<(CacheKey, Box<[HeaderName]>)>,
    pub(crate) entry: Entry,
}

impl Pending {
    pub(crate) fn not_stored(self: Box<Self>, reason: Reason) {
        self.cache.shared.totals.reason(reason);
        self.counters.reason(reason);
        tracing::debug!(key = %self.key.full, reason = reason.as_str(), "response not stored");
    }

    pub(crate) fn store(self: Box<Self>, body: Bytes) {
        let Pending {
            cache,
            counters,
            key,
            primary,
            mut entry,
        } = *self;
        let memory = &cache.shared.memory;
        entry.body = body;
        if key.hashed.is_some() {
            entry.full_key = Some(key.full.clone().into_boxed_str());
        }
        entry.compute_weight(key.lookup().len());
        let (born, key_hash, born_ms, fresh_until_ms) = (
            entry.born,
            entry.key_hash,
            entry.born_ms,
            entry.fresh_until_ms,
        );
        let path = entry.path.clone();
        let stored = memory.put_now(key.lookup(), Arc::new(entry));
        if stored {
            if let Some((primary, names)) = primary {
                // The marker saying where the variants are.
                let mut marker = Entry {
                    status: StatusCode::OK,
                    headers: Box::new([]),
                    body: Bytes::new(),
                    born,
                    key_hash,
                    born_ms,
                    fresh_until_ms,
                    path,
                    tags: Box::new([]),
                    full_key: primary
                        .hashed
                        .is_some()
                        .then(|| primary.full.clone().into_boxed_str()),
                    vary: Some(names),
                    weight: 0,
                };
                marker.compute_weight(primary.lookup().len());
                memory.put_now(primary.lookup(), Arc::new(marker));
            }
            Counters::add(&cache.shared.totals.stores);
            Counters::add(&counters.stores);
            tracing::debug!(key = %key.full, "response stored");
        } else {
            Counters::add(&cache.shared.totals.rejected_inserts);
            Counters::add(&counters.rejected_inserts);
            let pending = Box::new(Pending {
                cache,
                counters,
                key,
                primary: None,
                entry: placeholder_entry(),
            });
            pending.not_stored(Reason::Rejected);
        }
    }
}

fn placeholder_entry() -> Entry {
    Entry {
        status: StatusCode::OK,
        headers: Box::new([]),
        body: Bytes::new(),
        born: 0,
        key_hash: 0,
        born_ms: 0,
        fresh_until_ms: 0,
        path: Box::from(""),
        tags: Box::new([]),
        full_key: None,
        vary: None,
        weight: 0,
    }
}

/// Builds the response of a hit.
fn respond<B>(entry: &Entry, now_ms: u64, head: bool) -> Response<CacheBody<B>> {
    let mut headers = HeaderMap::with_capacity(entry.headers.len() + 3);
    for (name, value) in entry.headers.iter() {
        headers.append(name.clone(), value.clone());
    }
    if entry.status != StatusCode::NO_CONTENT && entry.status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    }
    headers.insert(
        header::AGE,
        headers::age(now_ms.saturating_sub(entry.born_ms) / 1000),
    );
    headers.append(
        headers::CACHE_STATUS.clone(),
        headers::hit(entry.fresh_until_ms.saturating_sub(now_ms) / 1000),
    );
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::stored(entry.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    *response.headers_mut() = headers;
    response
}

enum Found {
    Fresh(Arc<Entry>),
    /// No usable entry; the variant names if the primary key held a marker.
    Miss(Option<(CacheKey, Box<[HeaderName]>)>),
}

impl<S> CacheService<S> {
    /// Looks a key up (following a Vary marker), judging freshness and
    /// the full key of hashed entries.
    fn find(&self, key: &CacheKey, headers: &HeaderMap, now_ms: u64, counters: &Counters) -> Found {
        let memory = &self.cache.shared.memory;
        let mut variant: Option<CacheKey> = None;
        let mut marker: Option<(CacheKey, Box<[HeaderName]>)> = None;
        loop {
            let k = variant.as_ref().unwrap_or(key);
            let entry = match memory.lookup_now(k.lookup()) {
                Lookup::Found(entry) => entry,
                Lookup::Invalidated => {
                    Counters::add(&self.cache.shared.totals.stale_dropped);
                    Counters::add(&counters.stale_dropped);
                    return Found::Miss(marker);
                }
                Lookup::Miss => return Found::Miss(marker),
            };
            if k.hashed.is_some() && entry.full_key.as_deref() != Some(&*k.full) {
                return Found::Miss(marker);
            }
            if now_ms >= entry.fresh_until_ms {
                memory.remove_if_same(k.lookup(), &entry);
                return Found::Miss(marker);
            }
            match &entry.vary {
                None => return Found::Fresh(entry),
                Some(names) if marker.is_none() => {
                    variant = Some(key.variant(names, headers));
                    marker = Some((key.clone(), names.clone()));
                }
                Some(_) => return Found::Miss(marker),
            }
        }
    }
}

fn is_head(method: &Method) -> Option<bool> {
    if method == Method::GET {
        Some(false)
    } else if method == Method::HEAD {
        Some(true)
    } else {
        None
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(head) = is_head(req.method()) else {
            return self.bypass(req, Reason::Method, None);
        };
        let config = self.config.clone();
        let (parts, body) = req.into_parts();
        let (route, key) = match config.classify(&parts, self.cache.shared.max_key_bytes) {
            Ok(found) => found,
            Err((reason, route)) => {
                return self.bypass(Request::from_parts(parts, body), reason, route);
            }
        };
        let shared = &self.cache.shared;
        let now_ms = shared.clock.now_ms();
        match self.find(&key, &parts.headers, now_ms, &route.stats) {
            Found::Fresh(entry) => {
                Counters::add(&shared.totals.hits);
                Counters::add(&route.stats.hits);
                tracing::debug!(key = %key.full, route = %route.pattern, outcome = "hit", "cache decision");
                ResponseFuture::ready(respond(&entry, now_ms, head))
            }
            Found::Miss(variant_of) => {
                Counters::add(&shared.totals.misses);
                Counters::add(&route.stats.misses);
                tracing::debug!(key = %key.full, route = %route.pattern, outcome = "miss", "cache decision");
                let miss = Miss {
                    cache: self.cache.clone(),
                    route: route.clone(),
                    path: parts.uri.path().into(),
                    request_headers: if head {
                        HeaderMap::new()
                    } else {
                        parts.headers.clone()
                    },
                    key: match variant_of {
                        // The marker is rewritten when the response is stored.
                        Some((primary, _)) => primary,
                        None => key,
                    },
                    born: shared.memory.index.generation(),
                    born_ms: now_ms,
                    head,
                };
                let future = self.inner.call(Request::from_parts(parts, body));
                ResponseFuture::forward(future, Plan::Miss(Box::new(miss)))
            }
        }
    }
}

impl<S> CacheService<S> {
    fn bypass<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        reason: Reason,
        route: Option<&CompiledRoute>,
    ) -> ResponseFuture<S::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        let shared = &self.cache.shared;
        shared.totals.reason(reason);
        if let Some(route) = route {
            route.stats.reason(reason);
        }
        tracing::debug!(
            method = %req.method(),
            path = req.uri().path(),
            route = route.map(|r| &*r.pattern),
            outcome = "bypass",
            reason = reason.as_str(),
            "cache decision"
        );
        ResponseFuture::forward(self.inner.call(req), Plan::Bypass(reason))
    }
}

impl Miss {
    /// Decides from the response head whether it may be stored, and if so
    /// prepares the entry; `Err` says why not.
    pub(crate) fn decide<B>(
        self: Box<Self>,
        response: &mut Response<B>,
    ) -> Result<Box<Pending>, (Self, Reason)>
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
        let reason = if self.head {
            Some(Reason::Head)
        } else if no_store || ttl.is_zero() {
            Some(Reason::Handler)
        } else if !self.route.policy.status_allowed(response.status()) {
            Some(Reason::Status)
        } else if response.headers().contains_key(header::SET_COOKIE) {
            Some(Reason::SetCookie)
        } else if headers::response_directives(response.headers()).forbids_store {
            Some(Reason::CacheControl)
        } else if headers::is_event_stream(response.headers()) {
            Some(Reason::EventStream)
        } else if response.body().size_hint().lower() > self.cache.shared.max_body_bytes as u64 {
            Some(Reason::TooLarge)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err((*self, reason));
        }
        let vary = match headers::vary_names(response.headers()) {
            Ok(names) => names,
            Err(()) => return Err((*self, Reason::VaryStar)),
        };
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
        let stored_headers: Box<[(HeaderName, HeaderValue)]> = response
            .headers()
            .iter()
            .filter(|(n, _)| !headers::is_unstorable_header(n))
            .map(|(n, v)| {
                // Copied, so the entry owns its bytes.
                let mut copy =
                    HeaderValue::from_bytes(v.as_bytes()).expect("a valid value stays valid");
                copy.set_sensitive(v.is_sensitive());
                (n.clone(), copy)
            })
            .collect();
        let mut tags: Vec<Box<str>> = route.policy.tags.to_vec();
        if let Some(CacheTags(extra)) = extra_tags {
            tags.extend(extra.into_iter().map(String::into_boxed_str));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(Box::new(Pending {
            counters: route.stats.clone(),
            cache,
            key,
            primary,
            entry: Entry {
                status: response.status(),
                headers: stored_headers,
                body: Bytes::new(),
                born,
                key_hash,
                born_ms,
                fresh_until_ms: born_ms.saturating_add(ttl_ms),
                path,
                tags: tags.into(),
                full_key: None,
                vary: None,
                weight: 0,
            },
        }))
    }
}
