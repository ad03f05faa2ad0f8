//! A miss on its way to the origin: deciding from the response head whether
//! it may be stored, preparing the entry, handing the body to the store
//! when it has ended, and serving a stale entry when the origin fails.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::declared_length;
use super::classify::client_uri;
use super::respond::respond;
use super::CacheBody;
use crate::cache::backend::Backend;
use crate::cache::flight::{Join, Leader, Outcome};
use crate::cache::lookup::VaryMarker;
use crate::cache::stats::{Counters, Event, Reason};
use crate::cache::Cache;
use crate::freshness::{Exchange, Grace, Mode, Refusal};
use crate::headers;
use crate::key::CacheKey;
use crate::policy::CompiledRoute;
use crate::store::{Entry, EntryParts};

/// When an origin read begins: the time, and the generation of the
/// invalidation clock (the entry's birth, for the race rule).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    pub(crate) now_ms: u64,
    pub(crate) born: u64,
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
    /// Its response body is read from the origin at the origin's pace, not
    /// its client's, so that its waiters never wait for a slow client (see
    /// `relay`): set for a leader whose client gets the body.
    pub(crate) read_ahead: bool,
    /// An expired entry still kept (for stale-if-error, or to revalidate).
    pub(crate) stale: Option<Arc<Entry>>,
    /// The request went upstream with `stale`'s validators: a `304`
    /// freshens it.
    pub(crate) revalidating: bool,
    /// The request's span, for what is decided after the response head.
    pub(crate) span: tracing::Span,
}

/// A response being stored: everything but the body, which the body tee
/// hands over when it ends.
pub(crate) struct PendingStore {
    pub(crate) cache: Cache,
    pub(crate) counters: Arc<Counters>,
    pub(crate) key: CacheKey,
    pub(crate) primary: Option<VaryMarker>,
    /// The entry to store, all but its body.
    pub(crate) entry: EntryParts,
    pub(crate) flight: Option<Leader>,
    pub(crate) span: tracing::Span,
    /// The body's length as the response declared it (`Content-Length`,
    /// else the body's exact size hint): a body of any other length is
    /// truncated or overlong, and never stored.
    pub(crate) length: Option<u64>,
}

impl PendingStore {
    pub(crate) fn not_stored(mut self: Box<Self>, reason: Reason) {
        let cache = &self.cache;
        cache.record(Some(&self.counters), Event::Reason(reason));
        self.span.record("reason", reason.as_str());
        tracing::debug!(parent: &self.span, key = %self.key.full, reason = reason.as_str(), "response not stored");
        if let Some(flight) = self.flight.take() {
            cache.end_flight(flight, reason);
        }
    }

    /// Stores the response with its body; the entry made (`None` when the
    /// body is not the length the response declared).
    pub(crate) fn store(mut self: Box<Self>, body: Bytes) -> Option<Arc<Entry>> {
        if self.length.is_some_and(|n| n != body.len() as u64) {
            self.not_stored(Reason::LengthMismatch);
            return None;
        }
        let mut parts = std::mem::take(&mut self.entry);
        parts.body = body;
        let marker = self.primary.take().map(|(primary, names)| {
            let marker = EntryParts {
                status: StatusCode::OK.as_u16(),
                born: parts.born,
                key_hash: parts.key_hash,
                born_ms: parts.born_ms,
                fresh_until_ms: parts.fresh_until_ms,
                grace_until_ms: parts.grace_until_ms,
                stale_if_error_until_ms: parts.stale_if_error_until_ms,
                stale_while_revalidate_until_ms: parts.stale_while_revalidate_until_ms,
                path: parts.path.clone(),
                vary: Some(names.into_vec()),
                ..EntryParts::default()
            };
            let marker = Entry::keyed(marker, &primary.full).expect("200 is a valid status");
            (primary, marker)
        });
        let entry =
            Arc::new(Entry::keyed(parts, &self.key.full).expect("the origin's status is valid"));
        let Backend::Memory(memory) = &self.cache.shared.backend else {
            self.store_remote(entry.clone(), marker);
            return Some(entry);
        };
        let weight = entry.weight();
        if !memory.put_now(self.key.lookup(), entry.clone()) {
            self.cache.record(Some(&self.counters), Event::Rejected);
            self.not_stored(Reason::Rejected);
            return Some(entry);
        }
        if let Some((primary, marker)) = marker {
            // The marker saying where the variants are.
            memory.put_now(primary.lookup(), Arc::new(marker));
        }
        self.stored(weight);
        Some(entry)
    }

    /// Counts and traces a stored response, and hands it to the waiters.
    fn stored(mut self: Box<Self>, weight: u64) {
        self.span.record("stored_bytes", weight);
        self.cache.record(Some(&self.counters), Event::Store);
        tracing::debug!(parent: &self.span, key = %self.key.full, bytes = weight, "response stored");
        if let Some(flight) = self.flight.take() {
            flight.finish(Outcome::Stored, 0);
        }
    }
}

impl PendingStore {
    /// Writes an entry (and its Vary marker) to a network store in the
    /// background; the flight, if any, ends when the write has landed, so
    /// that its waiters find the entry.
    fn store_remote(self: Box<Self>, entry: Arc<Entry>, marker: Option<(CacheKey, Entry)>) {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.not_stored(Reason::StoreFailed);
            return;
        };
        // Bounded in count: past this many writes under way (a store that
        // has slowed down), a response is not stored rather than queued.
        let writes = &self.cache.shared.remote_writes;
        if writes.fetch_add(1, Relaxed) >= MAX_REMOTE_WRITES {
            writes.fetch_sub(1, Relaxed);
            self.not_stored(Reason::StoreFailed);
            return;
        }
        runtime.spawn(async move {
            let _done = WriteDone(self.cache.clone());
            let Backend::Remote(remote) = &self.cache.shared.backend else {
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

/// At most this many writes of responses to a network store under way.
pub(crate) const MAX_REMOTE_WRITES: usize = 1024;

/// Counts a network-store write as ended when dropped.
struct WriteDone(Cache);

impl Drop for WriteDone {
    fn drop(&mut self) {
        let writes = &self.0.shared.remote_writes;
        writes.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Miss {
    /// A miss on `key` (the primary key when a Vary marker was found: the
    /// marker is rewritten when the response is stored), read from the
    /// origin from `read` on.
    pub(crate) fn new(
        cache: &Cache,
        route: &CompiledRoute,
        key: CacheKey,
        parts: &http::request::Parts,
        head: bool,
        read: ReadStart,
    ) -> Miss {
        Miss {
            cache: cache.clone(),
            route: route.clone(),
            path: client_uri(&parts.uri, &parts.extensions).path().into(),
            request_headers: if head {
                HeaderMap::new()
            } else {
                parts.headers.clone()
            },
            key,
            born: read.born,
            born_ms: read.now_ms,
            head,
            flight: None,
            read_ahead: false,
            stale: None,
            revalidating: false,
            span: tracing::Span::current(),
        }
    }
}

impl Miss {
    /// Decides from the response head whether it may be stored, and if so
    /// prepares the entry; `Err` says why not.
    pub(crate) fn decide<B>(
        mut self: Box<Self>,
        response: &mut Response<B>,
    ) -> Result<Box<PendingStore>, (Box<Self>, Reason)>
    where
        B: http_body::Body,
    {
        use crate::policy::{CacheTags, CacheTtl, NoStore};
        let ext = response.extensions_mut();
        let no_store = ext.remove::<NoStore>().is_some();
        let handler_ttl = ext.remove::<CacheTtl>().map(|t| t.0);
        let extra_tags = ext.remove::<CacheTags>();
        let policy = &self.route.policy;
        // A TTL the handler set is the lifetime, whatever the route's mode.
        let mut freshness = std::borrow::Cow::Borrowed(&policy.freshness);
        if handler_ttl.is_some() && freshness.mode == Mode::Response {
            freshness.to_mut().mode = Mode::Fixed;
        }
        let ttl = handler_ttl.unwrap_or(policy.ttl);
        let fixed = freshness.mode == Mode::Fixed;
        let status = response.status();
        let status_allowed = policy.status_allowed(status)
            || (!fixed
                && freshness.explicit(response.headers())
                && status.as_u16() >= 200
                && status != StatusCode::PARTIAL_CONTENT
                && status != StatusCode::NOT_MODIFIED);
        let reason = if self.head {
            Some(Reason::Head)
        } else if asks_no_store(&self.request_headers) {
            Some(Reason::RequestNoStore)
        } else if no_store || (fixed && ttl.is_zero()) {
            Some(Reason::Handler)
        } else if !status_allowed {
            Some(Reason::Status)
        } else if response.headers().contains_key(header::SET_COOKIE) {
            Some(Reason::SetCookie)
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
        let exchange = Exchange {
            request_ms: self.born_ms,
            response_ms: self.cache.shared.clock.now_ms().max(self.born_ms),
        };
        let grace = Grace {
            stale_while_revalidate: policy.stale_while_revalidate,
            stale_if_error: policy.stale_if_error,
        };
        let timing = match freshness.timing(status, response.headers(), exchange, ttl, grace) {
            Ok(timing) => timing,
            Err(Refusal::CacheControl) => return Err((self, Reason::CacheControl)),
            Err(Refusal::NoFreshness) => return Err((self, Reason::NoFreshness)),
        };
        let strip = freshness
            .targeted
            .as_ref()
            .and_then(|(name, strip)| strip.then(|| name.clone()));
        let Ok(length) = declared_length(response) else {
            return Err((self, Reason::LengthMismatch));
        };
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
            ..
        } = *self;
        let key_hash = crate::invalidate::index::key_hash(&key.full);
        let (key, primary) = if vary.is_empty() {
            (key, None)
        } else {
            let names: Box<[HeaderName]> = vary.into();
            (
                key.variant(&names, &request_headers, &cache.shared.scope_hasher),
                Some((key, names)),
            )
        };
        let flight = match (flight, &primary) {
            // The URL was not known to vary, so the flight is the URL's:
            // its waiters may want other variants. This response's moves to
            // its variant's flight, and the waiters each join their own.
            (Some(leader), Some((url, names))) if leader.key() == url.lookup() => {
                let now_ms = cache.shared.clock.now_ms();
                let moved = match cache.shared.flights.join(key.lookup(), now_ms) {
                    Join::Leader(moved) => Some(moved),
                    Join::Follower(_) | Join::Pass => None,
                };
                leader.finish(Outcome::Varies(Arc::from(&names[..])), 0);
                moved
            }
            (flight, _) => flight,
        };
        if !cache.shared.lean && !response.headers().contains_key(header::ETAG) {
            // A validator of the cache's own, on this response as on every
            // hit of the entry it becomes (the last header: where entries
            // keep it apart).
            let tag = cache.shared.tags.next(key_hash);
            response.headers_mut().insert(header::ETAG, tag);
        }
        // Cloned for now; the entry copies their bytes into its own buffer.
        let stored_headers: Vec<(HeaderName, HeaderValue)> = response
            .headers()
            .iter()
            .filter(|(n, _)| !headers::is_unstorable_header(n) && strip.as_ref() != Some(*n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut tags: Vec<String> = route.policy.tags.iter().map(|t| t.to_string()).collect();
        if let Some(CacheTags(extra)) = extra_tags {
            tags.extend(extra);
        }
        let lean = cache.shared.lean;
        Ok(Box::new(PendingStore {
            counters: route.stats.clone(),
            cache,
            key,
            primary,
            flight,
            span,
            length,
            entry: EntryParts {
                status: response.status().as_u16(),
                headers: stored_headers,
                born,
                key_hash,
                born_ms: timing.born_ms,
                fresh_until_ms: timing.fresh_until_ms,
                stale_while_revalidate_until_ms: timing.stale_while_revalidate_until_ms,
                stale_if_error_until_ms: timing.stale_if_error_until_ms,
                grace_until_ms: timing.keep_until_ms,
                lean,
                path: path.into(),
                tags,
                ..EntryParts::default()
            },
        }))
    }
}

/// Whether a request's `Cache-Control` says `no-store`: no response to it
/// may be stored (RFC 9111, section 5.2.1.5). Read on a miss only: a
/// stored response may still answer such a request.
pub(crate) fn asks_no_store(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|directive| {
            let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"no-store")
        })
    })
}

/// The stale entry of a miss, if its stale-if-error window is still open.
pub(crate) fn usable_stale(miss: &Miss) -> Option<Arc<Entry>> {
    let stale = miss.stale.as_ref()?;
    (miss.cache.shared.clock.now_ms() < stale.stale_if_error_until_ms()).then(|| stale.clone())
}

/// Answers an origin failure with a stale entry (stale-if-error). The
/// leader's waiters, if any, go to the origin themselves.
pub(crate) fn serve_stale<B>(
    miss: &Miss,
    stale: &Entry,
    fwd_status: Option<u16>,
) -> Response<CacheBody<B>> {
    let shared = &miss.cache.shared;
    miss.cache.record(Some(&miss.route.stats), Event::Stale);
    tracing::debug!(key = %miss.key.full, outcome = "stale-if-error", fwd_status, "cache decision");
    let now_ms = shared.clock.now_ms();
    respond(
        stale,
        now_ms,
        miss.head,
        false,
        headers::stale_if_error(fwd_status),
    )
}

/// The inner service's response to a miss: stored as its body streams
/// when it may be, passed through (saying why) when not.
pub(crate) fn finish_miss<B>(miss: Box<Miss>, mut response: Response<B>) -> Response<CacheBody<B>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    let limit = miss.cache.shared.max_body_bytes;
    let read_ahead = miss.read_ahead;
    let linger = miss.cache.shared.coalesce_timeout;
    let strip = match &miss.route.policy.freshness.targeted {
        Some((name, true)) => Some(name.clone()),
        _ => None,
    };
    let lean = miss.cache.shared.lean;
    let decided = miss.decide(&mut response);
    if let Some(name) = strip {
        // The targeted field is this cache's alone.
        response.headers_mut().remove(name);
    }
    match decided {
        Ok(pending) => {
            if !lean {
                add_status(&mut response, "miss", None, true);
            }
            let (parts, body) = response.into_parts();
            if body.is_end_stream() {
                // Nothing will be polled: store the empty body now.
                let _ = pending.store(bytes::Bytes::new());
                return Response::from_parts(parts, CacheBody::passthrough(body));
            }
            if read_ahead && pending.flight.is_some() {
                let body = CacheBody::read_ahead(body, pending, limit, linger);
                return Response::from_parts(parts, body);
            }
            Response::from_parts(parts, CacheBody::tee(body, pending, limit))
        }
        Err((mut miss, reason)) => {
            let cache = miss.cache.clone();
            cache.record(Some(&miss.route.stats), Event::Reason(reason));
            miss.span.record("reason", reason.as_str());
            tracing::debug!(parent: &miss.span, key = %miss.key.full, reason = reason.as_str(), "response not stored");
            if let Some(flight) = miss.flight.take() {
                cache.end_flight(flight, reason);
            }
            if !lean {
                add_status(&mut response, "miss", Some(reason), false);
            }
            response.map(CacheBody::passthrough)
        }
    }
}

/// Appends the `Cache-Status` of a forwarded request.
pub(crate) fn add_status<B>(
    response: &mut Response<B>,
    fwd: &'static str,
    reason: Option<Reason>,
    stored: bool,
) {
    response.headers_mut().append(
        headers::CACHE_STATUS.clone(),
        headers::forwarded(fwd, reason.map(Reason::as_str), stored),
    );
}
