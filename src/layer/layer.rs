use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::request::Parts;
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

    /// The route and key of a GET or HEAD request, or why it bypasses.
    pub(crate) fn classify(
        &self,
        parts: &Parts,
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
            None if parts.headers.contains_key(header::AUTHORIZATION) => {
                return Err((Reason::Authorization, Some(route)));
            }
            None if parts.headers.contains_key(header::COOKIE) => {
                return Err((Reason::Cookie, Some(route)));
            }
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
    cache: Cache,
    config: Arc<Config>,
}

impl CacheLayer {
    /// A layer on `cache`, with no rules yet.
    pub fn new(cache: &Cache) -> Self {
        Self {
            cache: cache.clone(),
            config: Arc::new(Config {
                rules: Rules::new(),
                fallback: None,
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
            stats: self.cache.route_counters(&pattern),
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
            stats: self.cache.route_counters(&pattern),
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
        let shared = &self.cache.shared;
        match self.config.classify(request, shared.max_key_bytes) {
            Ok((_, key)) => {
                self.cache.invalidate_by(
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
        CacheService::new(inner, self.cache.clone(), self.config.clone())
    }
}
