use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::CacheService;
use crate::cache::Cache;
use crate::policy::{CompiledRoute, RoutePolicy, Rules};

/// The pattern under which a layer's fallback policy is counted in the
/// per-route statistics.
pub(crate) const FALLBACK_PATTERN: &str = "*";

/// The rules of one layer, shared by every service it makes.
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
    rules: Rules,
    fallback: Option<CompiledRoute>,
}

impl CacheLayer {
    /// A layer on `cache`, with no rules yet.
    pub fn new(cache: &Cache) -> Self {
        Self {
            cache: cache.clone(),
            rules: Rules::new(),
            fallback: None,
        }
    }

    /// The TTL for every GET and HEAD this layer sees that no
    /// [`route`](Self::route) rule matches (meant for `route_layer`).
    pub fn ttl(self, ttl: Duration) -> Self {
        let policy = match &self.fallback {
            Some(r) => RoutePolicy { ttl, ..r.policy.clone() },
            None => RoutePolicy::ttl(ttl),
        };
        self.policy(policy)
    }

    /// The whole fallback policy (TTL, tags, key parts) for requests no
    /// rule matches.
    pub fn policy(mut self, policy: impl Into<RoutePolicy>) -> Self {
        let pattern: Arc<str> = FALLBACK_PATTERN.into();
        self.fallback = Some(CompiledRoute {
            stats: self.cache.route_counters(&pattern),
            pattern,
            policy: policy.into(),
        });
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
        if let Err(e) = self.rules.insert(route) {
            panic!("invalid cache route pattern {pattern:?}: {e}");
        }
        self
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("rules", &self.rules)
            .field("fallback", &self.fallback.as_ref().map(|r| &r.policy))
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(
            inner,
            self.cache.clone(),
            Arc::new(Config {
                rules: self.rules.clone(),
                fallback: self.fallback.clone(),
            }),
        )
    }
}
