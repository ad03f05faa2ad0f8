use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::request::Parts;
use http::{HeaderMap, Uri};

/// What a request's headers ask that a hit must know, read in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asks {
    /// `Authorization` or `Cookie`.
    pub(crate) credentials: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    pub(crate) conditional: bool,
}

impl Asks {
    /// One pass over the headers: cheaper than a hashed lookup per name.
    #[inline]
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut asks = Self::default();
        for name in headers.keys() {
            if name == header::AUTHORIZATION || name == header::COOKIE {
                asks.credentials = true;
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                asks.conditional = true;
            }
        }
        asks
    }
}
use tower_layer::Layer;

use super::CacheService;
use crate::cache::stats::Reason;
use crate::cache::Cache;
use crate::key::{self, CacheKey, KeyError};
use crate::policy::{CompiledRoute, RoutePolicy, Rules};

/// The pattern under which a layer's fallback policy is counted in the
/// per-route statistics.
pub(crate) const FALLBACK_PATTERN: &str = "*";

/// The rules of one layer, shared by every service it makes.
///
/// Aligned to a cache line, so that the reference count every service
/// clone bumps shares no line with the rules every request reads.
#[derive(Clone)]
#[repr(align(64))]
pub(crate) struct Config {
    pub(crate) rules: Rules,
    pub(crate) fallback: Option<CompiledRoute>,
    /// The cache, held here so that a service clone bumps one count.
    pub(crate) cache: Cache,
}

impl Config {
    /// The policy for a path: the most specific rule, else the fallback.
    #[inline]
    pub(crate) fn find(&self, path: &str) -> Option<&CompiledRoute> {
        if self.rules.is_empty() {
            return self.fallback.as_ref();
        }
        self.rules.find(path).or(self.fallback.as_ref())
    }

    /// The route and key of a request whose key is its path and query as
    /// they stand: no scope or key headers on its route, no credentials, a
    /// query already in order with nothing to drop, nothing to hash.
    /// `None` sends the request down the general path
    /// ([`classify`](Self::classify)), which builds the same key.
    #[inline]
    pub(crate) fn plain_key<'a>(
        &'a self,
        uri: &'a Uri,
        asks: Asks,
        max_key_bytes: usize,
    ) -> Option<(&'a CompiledRoute, &'a str)> {
        let route = self.find(uri.path())?;
        let policy = &route.policy;
        if policy.scope.is_some() || !policy.key_headers.is_empty() || asks.credentials {
            return None;
        }
        let key = uri.path_and_query()?.as_str();
        if key.len() > key::HASH_ABOVE.min(max_key_bytes) || !key.starts_with('/') {
            return None;
        }
        if let Some(query) = uri.query() {
            if query.is_empty() || !key::in_order(query, policy) {
                return None;
            }
        }
        key::well_formed(key).then_some((route, key))
    }

    /// The route and key of a GET or HEAD request, or why it bypasses.
    pub(crate) fn classify(
        &self,
        parts: &Parts,
        asks: Asks,
        max_key_bytes: usize,
    ) -> Result<(&CompiledRoute, CacheKey), (Reason, Option<&CompiledRoute>)> {
        let Some(route) = self.find(parts.uri.path()) else {
            return Err((Reason::NoRule, None));
        };
        let policy = &route.policy;
        let scope = match &policy.scope {
            Some(scope) => match scope(parts) {
                Some(s) => Some(s),
                None => return Err((Reason::NoScope, Some(route))),
            },
            None if asks.credentials && parts.headers.contains_key(header::AUTHORIZATION) => {
                return Err((Reason::Authorization, Some(route)));
            }
            None if asks.credentials => return Err((Reason::Cookie, Some(route))),
            None => None,
        };
        key::build(
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            policy,
            scope.as_deref(),
            max_key_bytes,
        )
        .map(|key| (route, key))
        .map_err(|e| {
            let reason = match e {
                KeyError::TooLong => Reason::UriTooLong,
                KeyError::Malformed => Reason::UriMalformed,
            };
            (reason, Some(route))
        })
    }
}

/// A tower [`Layer`] that caches GET and HEAD responses in a [`Cache`].
///
/// Per-route TTLs come two ways:
///
/// - one layer with rules, axum-style patterns (`/products/{id}`,
///   `/files/{*path}`), the most specific pattern winning; paths no rule
///   matches pass through (unless [`ttl`](Self::ttl) gives a fallback);
/// - one layer per route with [`ttl`](Self::ttl), on axum's
///   `route_layer`, which runs only for matched routes (404s and the
///   fallback are never cached).
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_response_cache::{Cache, CacheLayer, RoutePolicy};
///
/// let cache = Cache::builder().build();
/// let app: Router = Router::new()
///     .route("/products", get(|| async { "all products" }))
///     .route("/products/{id}", get(|| async { "one product" }))
///     .route(
///         "/config",
///         get(|| async { "config" })
///             .route_layer(CacheLayer::new(&cache).ttl(Duration::from_secs(600))),
///     )
///     .layer(
///         CacheLayer::new(&cache)
///             .route("/products", Duration::from_secs(60))
///             .route("/products/{id}", RoutePolicy::ttl(Duration::from_secs(300)).tags(["products"])),
///     );
/// # let _ = app;
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    config: Arc<Config>,
}

impl CacheLayer {
    /// A layer on `cache`, with no rules yet.
    pub fn new(cache: &Cache) -> Self {
        Self {
            config: Arc::new(Config {
                rules: Rules::new(),
                fallback: None,
                cache: cache.clone(),
            }),
        }
    }

    /// The TTL for every GET and HEAD this layer sees that no
    /// [`route`](Self::route) rule matches (meant for `route_layer`).
    pub fn ttl(self, ttl: Duration) -> Self {
        let policy = match &self.config.fallback {
            Some(r) => RoutePolicy {
                ttl,
                ..r.policy.clone()
            },
            None => RoutePolicy::ttl(ttl),
        };
        self.policy(policy)
    }

    /// The whole fallback policy (TTL, tags, key parts) for requests no
    /// rule matches.
    pub fn policy(mut self, policy: impl Into<RoutePolicy>) -> Self {
        let pattern: Arc<str> = FALLBACK_PATTERN.into();
        let fallback = CompiledRoute {
            stats: self.config.cache.route_counters(&pattern),
            pattern,
            policy: policy.into(),
        };
        Arc::make_mut(&mut self.config).fallback = Some(fallback);
        self
    }

    /// Caches paths matching `pattern` (axum syntax: `/products/{id}`,
    /// `/files/{*path}`) with `policy`, a [`RoutePolicy`] or a
    /// [`Duration`].
    ///
    /// # Panics
    ///
    /// When the pattern is invalid or conflicts with another (as axum's
    /// `Router::route` does).
    pub fn route(mut self, pattern: &str, policy: impl Into<RoutePolicy>) -> Self {
        let pattern: Arc<str> = pattern.into();
        let route = CompiledRoute {
            stats: self.config.cache.route_counters(&pattern),
            pattern: pattern.clone(),
            policy: policy.into(),
        };
        if let Err(e) = Arc::make_mut(&mut self.config).rules.insert(route) {
            panic!("invalid cache route pattern {pattern:?}: {e}");
        }
        self
    }
}

impl CacheLayer {
    /// Flushes the entry this layer would serve for a request (every
    /// variant of it, when the response varies on request headers).
    /// Returns `false` when the request is not one this layer caches.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::{Cache, CacheLayer};
    ///
    /// let cache = Cache::builder().build();
    /// let layer = CacheLayer::new(&cache).ttl(Duration::from_secs(60));
    /// let (parts, ()) = http::Request::get("/products?page=2").body(()).unwrap().into_parts();
    /// assert!(layer.invalidate_request(&parts));
    /// ```
    pub fn invalidate_request(&self, request: &Parts) -> bool {
        if request.method != http::Method::GET && request.method != http::Method::HEAD {
            return false;
        }
        let cache = &self.config.cache;
        match self.config.classify(
            request,
            Asks::of(&request.headers),
            cache.shared.max_key_bytes,
        ) {
            Ok((_, key)) => {
                cache.invalidate_by(
                    &[crate::Target::Key(key.full.clone())],
                    "invalidate_request",
                );
                true
            }
            Err(_) => false,
        }
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("rules", &self.config.rules)
            .field(
                "fallback",
                &self.config.fallback.as_ref().map(|r| &r.policy),
            )
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path's key is the general path's key, whenever the fast
    /// path takes a request at all.
    #[test]
    fn plain_keys_are_the_keys_classify_builds() {
        let cache = Cache::builder().build();
        let layer = CacheLayer::new(&cache)
            .ttl(Duration::from_secs(1))
            .route(
                "/tracked",
                RoutePolicy::ttl(Duration::from_secs(1)).ignore_query_params(["utm_*"]),
            )
            .route(
                "/scoped",
                RoutePolicy::ttl(Duration::from_secs(1)).scope(|_| Some("u".into())),
            );
        let long = format!("/p?a={}", "x".repeat(300));
        let uris = [
            "/p",
            "/p?",
            "/p?a=1",
            "/p?a=1&b=2",
            "/p?b=2&a=1",
            "/p?a=1&&b=2",
            "/p?a",
            "/p?=1",
            "/p?a=%41",
            "/p?a=%4",
            "/p%00",
            "/p/%2F?x=%zz",
            "/tracked?a=1",
            "/tracked?utm_source=x",
            "/tracked?a=1&utm_source=x",
            "/scoped?a=1",
            "http://example.com/p?a=1",
            &long,
        ];
        let mut fast = 0;
        for uri in uris {
            for asks in [
                Asks::default(),
                Asks {
                    credentials: true,
                    conditional: false,
                },
            ] {
                let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
                let Some((route, key)) = layer.config.plain_key(&parts.uri, asks, 8192) else {
                    continue;
                };
                assert!(
                    !asks.credentials,
                    "{uri}: credentials take the general path"
                );
                let (general_route, general) = layer
                    .config
                    .classify(&parts, asks, 8192)
                    .unwrap_or_else(|e| {
                        panic!("{uri}: fast path keyed what classify refuses: {:?}", e.0)
                    });
                assert_eq!(route.pattern, general_route.pattern, "{uri}");
                assert_eq!(key, general.full, "{uri}");
                assert_eq!(key, general.lookup(), "{uri}");
                fast += 1;
            }
        }
        // "/p", "/p?a=1", "/p?a=1&b=2", "/p?a", "/p?=1", "/p?a=%41",
        // "/tracked?a=1" and the absolute form.
        assert_eq!(fast, 8);
    }

    #[test]
    fn asks_reads_credentials_and_validators() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        let asks = Asks::of(&headers);
        assert!(!asks.credentials && !asks.conditional);
        headers.insert(header::IF_NONE_MATCH, "\"e\"".parse().unwrap());
        assert!(Asks::of(&headers).conditional);
        headers.insert(header::COOKIE, "a=1".parse().unwrap());
        assert!(Asks::of(&headers).credentials);
        let mut auth = HeaderMap::new();
        auth.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        auth.insert(header::IF_MODIFIED_SINCE, "x".parse().unwrap());
        let asks = Asks::of(&auth);
        assert!(asks.credentials && asks.conditional);
    }
}
