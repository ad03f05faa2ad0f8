use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use tower_service::Service;

use super::classify::{client_uri, LayerConfig, RequestFlags};
use super::dispatch::{answer, bypass, call_remote, hit, HitRequest, KeyedRequest, Origin};
use super::future::{OnResponse, ResponseFuture};
use super::miss::ReadStart;
use super::trace::{debug_wanted, request_span};
use super::CacheBody;
use crate::cache::backend::Backend;
use crate::cache::lookup::Probe;
use crate::cache::stats::Reason;
use crate::store::Lookup;

/// The service made by [`CacheLayer`](super::CacheLayer).
///
/// Its error is the inner service's error, unchanged; its response body is
/// [`CacheBody`]. Clones share the cache and the rules.
pub struct CacheService<S> {
    inner: S,
    /// The rules and the cache: one count to bump per clone.
    config: Arc<LayerConfig>,
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
    pub(crate) fn new(inner: S, config: Arc<LayerConfig>) -> Self {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
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
            return self.call_other_method(req);
        };
        let config = &*self.config;
        let cache = &config.cache;
        let shared = &cache.shared;
        // The common case first: a fresh entry in memory, stored under the
        // request's path and query as they stand.
        let mut first = None;
        let flags = RequestFlags::of(req.headers());
        // Requests whose directives the layer reads, and ranges, take the
        // general path.
        let general = (flags.directives && config.request_directives) || (flags.range && !head);
        if let (Backend::Memory(memory), None, false) = (&shared.backend, flags.refuse, general) {
            let uri = client_uri(req.uri(), req.extensions());
            if let Some((route, plain)) =
                config.plain_key(req.uri(), uri, req.headers(), flags, shared.max_key_bytes)
            {
                let key = plain.as_str();
                let now_ms = shared.clock.now_ms();
                match memory.lookup_now(key) {
                    Lookup::Found(entry)
                        if now_ms < entry.fresh_until_ms() && entry.vary().is_none() =>
                    {
                        let request = HitRequest {
                            key,
                            conditional: flags.conditional.then(|| req.headers()),
                            head,
                        };
                        let serve = |span| hit(cache, route, request, entry, now_ms, span);
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
        self.call_general(req, head, flags, first)
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
        flags: RequestFlags,
        first: Option<(Lookup, u64)>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Origin<ReqBody, ResBody>,
        ReqBody: Send + 'static,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Send + 'static,
    {
        let config = &*self.config;
        let cache = &config.cache;
        let shared = &cache.shared;
        let (parts, body) = req.into_parts();
        let (route, key) = match config.classify(&parts, flags, shared.max_key_bytes) {
            Ok(found) => found,
            Err((Reason::NoRule, _)) => {
                // Not this layer's path: untouched, uncounted (another
                // layer, such as a `route_layer`, may cache it).
                tracing::trace!(path = parts.uri.path(), "no cache rule: passed through");
                let future = self.inner.call(Request::from_parts(parts, body));
                return ResponseFuture::forward(future, OnResponse::Untouched);
            }
            Err((reason, route)) => {
                let req = Request::from_parts(parts, body);
                return bypass(&mut self.inner, cache, req, reason, route);
            }
        };
        if let Some(reason) = flags.refuse {
            // A request no stored response may answer (an upgrade, proxy
            // credentials, a body, origin-only preconditions), on a route
            // of this layer.
            let req = Request::from_parts(parts, body);
            return bypass(&mut self.inner, cache, req, reason, Some(route));
        }
        let span = request_span(&key.full, route);
        let directives = (flags.directives && config.request_directives)
            .then(|| Box::new(crate::freshness::request_directives(&parts.headers)));
        let request = KeyedRequest {
            key,
            parts,
            body,
            head,
            directives,
        };
        let memory = match &shared.backend {
            Backend::Memory(memory) => memory,
            Backend::Remote(_) => {
                // A network store: the lookup is awaited, on the service
                // that was polled ready.
                let clone = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, clone);
                let remote = call_remote(svc, cache.clone(), route.clone(), request);
                return ResponseFuture::boxed(tracing::Instrument::instrument(remote, span));
            }
        };
        let _entered = span.enter();
        let (lookup, now_ms) = first.unwrap_or_else(|| {
            let now_ms = shared.clock.now_ms();
            (memory.lookup_now(request.key.lookup()), now_ms)
        });
        let probe = Probe {
            key: &request.key,
            headers: &request.parts.headers,
            now_ms,
            counters: &route.stats,
        };
        let found = cache.find_from(memory, lookup, probe);
        let read = ReadStart {
            now_ms,
            born: memory.index.generation(),
        };
        answer(&mut self.inner, cache, route, request, found, read, &span)
    }
}

impl<S> CacheService<S> {
    /// A method the cache does not answer: on a path a rule covers, a
    /// bypass counted for that route (`detail=method`); on any other, the
    /// request is untouched, as a GET there would be.
    #[inline(never)]
    fn call_other_method<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        let config = &*self.config;
        match config.find(req.uri().path()) {
            Some(route) => bypass(
                &mut self.inner,
                &config.cache,
                req,
                Reason::Method,
                Some(route),
            ),
            None => ResponseFuture::forward(self.inner.call(req), OnResponse::Untouched),
        }
    }
}
