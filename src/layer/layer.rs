use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use super::classify::{LayerConfig, RequestFlags, FALLBACK_PATTERN};
use super::CacheService;
use crate::cache::Cache;
use crate::policy::{CompiledRoute, RoutePolicy, RouteTable};

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
    pub(super) config: Arc<LayerConfig>,
}

impl CacheLayer {
    /// A layer on `cache`, with no rules yet.
    pub fn new(cache: &Cache) -> Self {
        Self {
            config: Arc::new(LayerConfig {
                rules: RouteTable::new(),
                fallback: None,
                hosts: true,
                request_directives: false,
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
    /// A shared cache in front of an upstream (a caching reverse proxy):
    /// every GET and HEAD path is cached as HTTP says, with
    /// [`RoutePolicy::shared_cache`] (freshness from the response, heuristic
    /// freshness of at most a day, a minute of stale answers when the
    /// upstream fails) as the policy of paths no [`route`](Self::route)
    /// names, and the requests' own directives honoured
    /// ([`request_directives`](Self::request_directives)). Follow it with
    /// [`policy`](Self::policy) to change that policy.
    ///
    /// The crate's safe defaults stay: requests with credentials bypass
    /// unless a route keys on the user, and a response that sets a cookie
    /// is never stored.
    ///
    /// ```
    /// use tower_response_cache::{Cache, CacheLayer};
    ///
    /// let cache = Cache::builder().build();
    /// let layer = CacheLayer::new(&cache).shared_cache();
    /// # let _ = layer;
    /// ```
    pub fn shared_cache(self) -> Self {
        self.policy(RoutePolicy::shared_cache())
            .request_directives()
    }

    /// Honours the requests' `Cache-Control` directives (RFC 9111, section
    /// 5.2.1): `max-age`, `min-fresh` and `no-cache` (or `Pragma:
    /// no-cache`) send the request to the origin, as a conditional request
    /// when the stored entry has validators; `only-if-cached` is answered
    /// `504` when nothing stored may answer. `no-store` is always honoured.
    /// `max-stale` never stretches the route's own windows: no response is
    /// served past its TTL and grace.
    ///
    /// Off by default: any client could then push load onto the origin at
    /// will (every request saying `no-cache` goes there). Turn it on in
    /// front of an upstream whose clients are trusted to ask for what they
    /// need, or when the origin can take it.
    pub fn request_directives(mut self) -> Self {
        Arc::make_mut(&mut self.config).request_directives = true;
        self
    }

    /// Shares entries across every host the server answers: keys no longer
    /// hold the request's authority.
    ///
    /// By default a key holds the host the request named (its URI's
    /// authority, else its `Host` header), lower-cased, without a default
    /// port or a trailing dot, so that a server answering several hosts
    /// (tenants by subdomain) never answers one with another's response.
    /// Use this when every name the server answers to serves the same
    /// content (`example.com` and `www.example.com`), or set the `Host` to
    /// one canonical name in a layer outside the cache. Flushes are by path
    /// and tag, and reach every host's entries either way.
    pub fn any_host(mut self) -> Self {
        Arc::make_mut(&mut self.config).hosts = false;
        self
    }

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
            RequestFlags::of(&request.headers),
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
