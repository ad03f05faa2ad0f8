//! Route rules: what is cached, for how long, and under which key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, StatusCode};

use crate::freshness::Freshness;

/// The statuses RFC 9110 (section 15.1) calls heuristically cacheable, less
/// `206 Partial Content`, which this cache never stores.
pub const DEFAULT_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

type ScopeFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// How one route is cached: its TTL, the tags its entries carry, and what
/// goes into its key.
///
/// A [`Duration`] converts into a policy with only a TTL, so
/// `CacheLayer::route("/config", Duration::from_secs(600))` and
/// `CacheLayer::route("/config", RoutePolicy::ttl(Duration::from_secs(600)))`
/// mean the same.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::RoutePolicy;
///
/// let policy = RoutePolicy::ttl(Duration::from_secs(30))
///     .tags(["dashboard"])
///     .ignore_query_params(["utm_*", "fbclid"])
///     .key_headers(["accept-language"])
///     .scope(|parts| {
///         parts
///             .headers
///             .get("x-user-id")
///             .and_then(|v| v.to_str().ok())
///             .map(str::to_owned)
///     });
/// # let _ = policy;
/// ```
#[derive(Clone)]
#[must_use]
pub struct RoutePolicy {
    pub(crate) ttl: Duration,
    pub(crate) tags: Arc<[Box<str>]>,
    pub(crate) ignore_exact: Arc<[Box<str>]>,
    pub(crate) ignore_prefix: Arc<[Box<str>]>,
    pub(crate) key_headers: Arc<[HeaderName]>,
    pub(crate) scope: Option<Arc<ScopeFn>>,
    pub(crate) statuses: Arc<[u16]>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) freshness: Freshness,
}

impl RoutePolicy {
    /// A policy that keeps responses for `ttl`, with the default key (path
    /// plus normalised query) and the default statuses.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            tags: Arc::new([]),
            ignore_exact: Arc::new([]),
            ignore_prefix: Arc::new([]),
            key_headers: Arc::new([]),
            scope: None,
            statuses: Arc::new(DEFAULT_STATUSES),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            freshness: Freshness::fixed(),
        }
    }

    /// A policy whose freshness comes from each response, as HTTP says
    /// (RFC 9111, section 4.2): `s-maxage`, else `max-age`, else `Expires`
    /// less `Date`, counted from the response's age on arrival (its `Age`
    /// and the time the origin took). A response that states none is not
    /// stored, unless [`default_ttl`](Self::default_ttl) or
    /// [`heuristic_freshness`](Self::heuristic_freshness) gives it one.
    ///
    /// In both modes `no-store` and `private` refuse storing, and
    /// `no-cache` stores a response only when it has a validator (`ETag`
    /// or `Last-Modified`), to be revalidated with the origin on every use;
    /// `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving
    /// it stale. With [`ttl`](Self::ttl) (fixed mode) the route's TTL is
    /// the lifetime whatever `max-age` or `Expires` say.
    ///
    /// A stale entry with an origin validator is kept for
    /// [`keep_for_revalidation`](Self::keep_for_revalidation) (10 minutes
    /// here, none in fixed mode) and revalidated with a conditional request:
    /// a `304` freshens it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::RoutePolicy;
    ///
    /// let policy = RoutePolicy::from_headers()
    ///     .default_ttl(Duration::from_secs(30))
    ///     .max_ttl(Duration::from_secs(3600))
    ///     .targeted_field("app-cache-control")
    ///     .strip_targeted_field();
    /// # let _ = policy;
    /// ```
    pub fn from_headers() -> Self {
        Self {
            freshness: Freshness::response(),
            ..Self::ttl(Duration::ZERO)
        }
    }

    /// The policy of [`CacheLayer::shared_cache`](crate::CacheLayer::shared_cache),
    /// to start from when a shared cache needs more (a targeted field, a
    /// ceiling): [`from_headers`](Self::from_headers) with heuristic
    /// freshness of at most a day, and a stale entry served for up to a
    /// minute in place of an upstream that fails or cannot be reached
    /// (RFC 9111, section 4.2.4), unless the response forbade it
    /// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`).
    pub fn shared_cache() -> Self {
        Self::from_headers()
            .heuristic_freshness(Duration::from_secs(24 * 3600))
            .stale_if_error(Duration::from_secs(60))
    }

    /// With [`from_headers`](Self::from_headers): the lifetime of a
    /// response that states none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.freshness.default_ttl = Some(ttl);
        self
    }

    /// With [`from_headers`](Self::from_headers): the longest lifetime
    /// given to a response, whatever it says.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.freshness.max_ttl = Some(ttl);
        self
    }

    /// With [`from_headers`](Self::from_headers): a response that states
    /// no freshness but has a `Last-Modified` and a heuristically
    /// cacheable status is fresh for a tenth of the time since it was
    /// modified, at most `max` (RFC 9111, section 4.2.2).
    pub fn heuristic_freshness(mut self, max: Duration) -> Self {
        self.freshness.heuristic_max = Some(max);
        self
    }

    /// How long a stale entry that has an origin validator is kept, to be
    /// revalidated with a conditional request rather than fetched again.
    pub fn keep_for_revalidation(mut self, keep: Duration) -> Self {
        self.freshness.keep_for_revalidation = keep;
        self
    }

    /// A field that, when a response carries it (and it can be read),
    /// replaces `Cache-Control` for this cache's decisions (a targeted
    /// cache-control field, RFC 9213; for example `CDN-Cache-Control`, or
    /// one of the app's own), so that a handler can say "the server cache
    /// keeps this 60 s" while `Cache-Control` tells browsers 0 s.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn targeted_field(mut self, name: impl AsRef<str>) -> Self {
        let name = HeaderName::from_bytes(name.as_ref().as_bytes())
            .unwrap_or_else(|_| panic!("invalid targeted field name {:?}", name.as_ref()));
        let strip = self.freshness.targeted.as_ref().is_some_and(|(_, s)| *s);
        self.freshness.targeted = Some((name, strip));
        self
    }

    /// Removes the [`targeted_field`](Self::targeted_field) from the
    /// responses clients see (stored or not).
    pub fn strip_targeted_field(mut self) -> Self {
        if let Some((_, strip)) = &mut self.freshness.targeted {
            *strip = true;
        }
        self
    }

    /// Tags every entry of this route carries; flushing a tag (with
    /// `InvalidateOn` or [`Cache::invalidate_tag`](crate::Cache::invalidate_tag))
    /// drops them all.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags = tags
            .into_iter()
            .map(|t| t.into().into_boxed_str())
            .collect();
        self
    }

    /// Query parameters left out of the key: exact names (`fbclid`), or
    /// prefixes written with a trailing `*` (`utm_*`).
    pub fn ignore_query_params<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let (mut exact, mut prefix) = (Vec::new(), Vec::new());
        for name in names {
            let name = name.into();
            match name.strip_suffix('*') {
                Some(p) => prefix.push(p.to_owned().into_boxed_str()),
                None => exact.push(name.into_boxed_str()),
            }
        }
        self.ignore_exact = exact.into();
        self.ignore_prefix = prefix.into();
        self
    }

    /// Request headers whose values become part of the key (for example
    /// `accept-language`): each value gets its own entry.
    ///
    /// # Panics
    ///
    /// When a name is not a valid header name.
    pub fn key_headers<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut names: Vec<HeaderName> = names
            .into_iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_ref().as_bytes())
                    .unwrap_or_else(|_| panic!("invalid key header name {:?}", n.as_ref()))
            })
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        self.key_headers = names.into();
        self
    }

    /// A key part computed from the request (a user id, a tenant): each
    /// value gets its own entries, and a request for which the closure
    /// returns `None` is not cached.
    ///
    /// A route with a scope caches requests that carry `Authorization` or
    /// `Cookie`; without one they bypass the cache, so one user's response
    /// never reaches another. The closure must tell users apart by what
    /// authenticates them, not by anything a client may claim freely.
    ///
    /// The value may be the credential itself (a bearer token, a session
    /// id): keys, the admin listing, the store's key names and traces hold
    /// an HMAC-SHA-256 of it under the cache's secret, never the value (see
    /// [`CacheBuilder::scope_secret`](crate::CacheBuilder::scope_secret)).
    pub fn scope<F>(mut self, scope: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.scope = Some(Arc::new(scope));
        self
    }

    /// The response statuses that may be stored (default:
    /// [`DEFAULT_STATUSES`]), as [`StatusCode`]s or numbers:
    /// `.statuses([StatusCode::OK])`, `.statuses([200, 404])` and
    /// `.statuses(DEFAULT_STATUSES)` all work. `206` is never stored.
    ///
    /// # Panics
    ///
    /// When a number is not a status code (100 to 999).
    pub fn statuses<I>(mut self, statuses: I) -> Self
    where
        I: IntoIterator,
        I::Item: TryInto<StatusCode>,
    {
        let mut s: Vec<u16> = statuses
            .into_iter()
            .map(|s| match s.try_into() {
                Ok(status) => status.as_u16(),
                Err(_) => panic!("RoutePolicy::statuses: not a status code (100 to 999)"),
            })
            .filter(|&s| s != 206)
            .collect();
        s.sort_unstable();
        s.dedup();
        self.statuses = s.into();
        self
    }

    /// For this long after an entry expires, a request is answered at once
    /// with the stale entry while exactly one background request refreshes
    /// it (RFC 5861's `stale-while-revalidate`). An origin's own
    /// `Cache-Control: stale-while-revalidate=N` takes precedence. An
    /// invalidated entry is never served stale.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// For this long after an entry expires, an origin answer of 5xx, or an
    /// inner service error, is replaced by the stale entry (RFC 5861's
    /// `stale-if-error`). An origin's own `Cache-Control: stale-if-error=N`
    /// takes precedence. An invalidated entry is never served stale.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// The TTL of this policy.
    pub fn get_ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn status_allowed(&self, status: StatusCode) -> bool {
        self.statuses.contains(&status.as_u16())
    }

    /// Whether any query parameter is ignored.
    #[inline]
    pub(crate) fn has_ignored(&self) -> bool {
        !self.ignore_exact.is_empty() || !self.ignore_prefix.is_empty()
    }

    pub(crate) fn ignores(&self, name: &str) -> bool {
        self.ignore_exact.iter().any(|n| &**n == name)
            || self.ignore_prefix.iter().any(|p| name.starts_with(&**p))
    }
}

impl From<Duration> for RoutePolicy {
    fn from(ttl: Duration) -> Self {
        RoutePolicy::ttl(ttl)
    }
}

impl fmt::Debug for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePolicy")
            .field("ttl", &self.ttl)
            .field("tags", &self.tags)
            .field("ignore_exact", &self.ignore_exact)
            .field("ignore_prefix", &self.ignore_prefix)
            .field("key_headers", &self.key_headers)
            .field("scope", &self.scope.as_ref().map(|_| "Fn(&Parts)"))
            .field("statuses", &self.statuses)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .field("stale_if_error", &self.stale_if_error)
            .field("freshness", &self.freshness)
            .finish()
    }
}

/// Response extension: a handler sets the TTL of its own response,
/// overriding the route's.
///
/// ```
/// use std::time::Duration;
/// use axum::{response::IntoResponse, Extension};
/// use tower_response_cache::CacheTtl;
///
/// async fn handler() -> impl IntoResponse {
///     (Extension(CacheTtl(Duration::from_secs(5))), "short-lived")
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTtl(pub Duration);

/// Response extension: tags added to the route's for this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTags(pub Vec<String>);

/// Response extension: this response is never stored, whatever the route
/// says. It still reaches the client untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoStore;

/// The route table of one `CacheLayer`: axum-style patterns to policies.
#[derive(Clone)]
pub(crate) struct RouteTable {
    router: matchit::Router<usize>,
    pub(crate) routes: Vec<CompiledRoute>,
}

/// One pattern with its policy and its statistics.
#[derive(Clone)]
pub(crate) struct CompiledRoute {
    pub(crate) pattern: Arc<str>,
    pub(crate) policy: RoutePolicy,
    pub(crate) stats: Arc<crate::cache::stats::Counters>,
}

impl RouteTable {
    pub(crate) fn new() -> Self {
        Self {
            router: matchit::Router::new(),
            routes: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Adds a pattern; a pattern given twice replaces the first policy.
    pub(crate) fn insert(&mut self, route: CompiledRoute) -> Result<(), matchit::InsertError> {
        if let Some(existing) = self.routes.iter_mut().find(|r| r.pattern == route.pattern) {
            *existing = route;
            return Ok(());
        }
        self.router.insert(&*route.pattern, self.routes.len())?;
        self.routes.push(route);
        Ok(())
    }

    /// The most specific rule matching `path` (static segments beat
    /// parameters, which beat catch-alls).
    pub(crate) fn find(&self, path: &str) -> Option<&CompiledRoute> {
        self.router.at(path).ok().map(|m| &self.routes[*m.value])
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.routes.iter().map(|r| (&*r.pattern, &r.policy)))
            .finish()
    }
}
