use std::fmt;
use std::sync::Arc;

use http::{Method, StatusCode};
use tower_layer::Layer;

use super::{InvalidateService, Target};
use crate::cache::Cache;

type When = dyn Fn(StatusCode) -> bool + Send + Sync;

/// The rules of one `InvalidateOn`, shared by every service it makes.
pub(crate) struct FlushRules {
    pub(crate) router: matchit::Router<usize>,
    pub(crate) targets: Vec<Vec<Target>>,
    pub(crate) patterns: Vec<Arc<str>>,
    /// The methods that count as mutations; `None`: every method not
    /// known to be safe.
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) when: Arc<When>,
    /// Whether a write a rule matches also flushes its own path and its
    /// same-origin `Location` and `Content-Location` (default: yes).
    pub(crate) own_paths: bool,
    /// Whether a write whose flush a network store did not record is
    /// answered 503 rather than with its own 2xx.
    pub(crate) strict: bool,
}

impl FlushRules {
    /// Whether a request with this method is a mutation.
    #[inline]
    pub(crate) fn is_mutation(&self, method: &Method) -> bool {
        match &self.methods {
            Some(methods) => methods.contains(method),
            None => !matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            ),
        }
    }
}

impl Clone for FlushRules {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            targets: self.targets.clone(),
            patterns: self.patterns.clone(),
            methods: self.methods.clone(),
            when: self.when.clone(),
            own_paths: self.own_paths,
            strict: self.strict,
        }
    }
}

/// A tower [`Layer`] that flushes cached entries when a mutating request
/// succeeds: by default any method not known to be safe (all but GET,
/// HEAD, OPTIONS and TRACE: POST, PUT, PATCH, DELETE, and methods whose
/// safety is unknown, such as WebDAV's or custom ones), answered with a
/// non-error status (2xx or 3xx), as RFC 9111 section 4.4 asks.
///
/// The flush happens when the mutation's response head arrives, before the
/// response is returned: once a client holds the 2xx of its write, its next
/// read cannot see the pre-write response.
///
/// - [`rule`](Self::rule) names what a route's writes flush: path prefixes,
///   in which `{param}` is taken from the matched request path, and
///   [`Target::tag`]s.
/// - Every successful mutation flushes its own path as a prefix, plus the
///   paths of a same-origin `Location` or `Content-Location` in its
///   response (RFC 9111, section 4.4); a rule adds its targets to these
///   ([`no_own_paths`](Self::no_own_paths) makes a rule's targets the only
///   ones).
/// - The flush is made again before the response's body ends (and when it
///   is dropped unfinished), so a handler that commits while its body
///   streams cannot leave the pre-write response in the cache.
/// - Inside a nested router, rules and their target paths are written as
///   that router sees its paths (without the nest's prefix); what is
///   flushed is named as the client sees it.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower::ServiceBuilder;
/// use tower_response_cache::{Cache, CacheLayer, InvalidateOn, Target};
///
/// let cache = Cache::builder().build();
/// let app: Router = Router::new()
///     .route("/products", get(|| async { "list" }).post(|| async { "created" }))
///     .route("/products/{id}", get(|| async { "one" }).put(|| async { "updated" }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(
///                 InvalidateOn::new(&cache)
///                     .rule("/products/{id}", ["/products/{id}", "/products"])
///                     .rule("/orders", [Target::tag("dashboard")]),
///             )
///             .layer(CacheLayer::new(&cache).ttl(Duration::from_secs(60))),
///     );
/// # let _ = app;
/// ```
#[derive(Clone)]
#[must_use]
pub struct InvalidateOn {
    cache: Cache,
    rules: FlushRules,
}

impl InvalidateOn {
    /// A layer flushing entries of `cache`.
    pub fn new(cache: &Cache) -> Self {
        Self {
            cache: cache.clone(),
            rules: FlushRules {
                router: matchit::Router::new(),
                targets: Vec::new(),
                patterns: Vec::new(),
                methods: None,
                when: Arc::new(|s: StatusCode| s.is_success() || s.is_redirection()),
                own_paths: true,
                strict: false,
            },
        }
    }

    /// What a successful mutation on `pattern` (axum syntax) flushes:
    /// prefixes (strings, with `{param}` and `{*rest}` filled in from the
    /// request path) and [`Target::tag`]s (tags may hold `{param}` too).
    ///
    /// # Panics
    ///
    /// When the pattern is invalid or conflicts with another rule.
    pub fn rule<I, T>(mut self, pattern: &str, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
    {
        let targets: Vec<Target> = targets.into_iter().map(Into::into).collect();
        if let Some(i) = self.rules.patterns.iter().position(|p| &**p == pattern) {
            self.rules.targets[i] = targets;
            return self;
        }
        if let Err(e) = self.rules.router.insert(pattern, self.rules.targets.len()) {
            panic!("invalid invalidation rule pattern {pattern:?}: {e}");
        }
        self.rules.targets.push(targets);
        self.rules.patterns.push(pattern.into());
        self
    }

    /// The methods that count as mutations (default: every method but
    /// GET, HEAD, OPTIONS and TRACE).
    pub fn methods<I>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = Method>,
    {
        self.rules.methods = Some(methods.into_iter().collect());
        self
    }

    /// A write a rule matches flushes only the rule's targets, not its own
    /// path nor its `Location` (writes no rule matches still flush those).
    /// RFC 9111 asks a cache to flush them; opt out only when a rule's
    /// targets cover them, or when stale reads of them are acceptable.
    pub fn no_own_paths(mut self) -> Self {
        self.rules.own_paths = false;
        self
    }

    /// A write whose flush a network store could not record within the
    /// store timeout is answered `503 Service Unavailable` (with
    /// `Retry-After: 1`) instead of its own 2xx, which other instances would
    /// not honour. The write itself has happened: the client learns that
    /// its result may not be visible everywhere yet, and may retry.
    ///
    /// Without it (the default), the write is answered with its own
    /// response; the failure is counted and traced at error level, the
    /// flush is retried in the background, and this instance serves none
    /// of the entries it covers until a retry lands.
    pub fn strict(mut self) -> Self {
        self.rules.strict = true;
        self
    }

    /// Which response statuses count as success (default: 2xx and 3xx, the
    /// non-error statuses of RFC 9111 section 4.4). A mutation
    /// whose inner service fails flushes nothing, whatever this says.
    pub fn when<F>(mut self, when: F) -> Self
    where
        F: Fn(StatusCode) -> bool + Send + Sync + 'static,
    {
        self.rules.when = Arc::new(when);
        self
    }
}

impl fmt::Debug for InvalidateOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidateOn")
            .field(
                "rules",
                &self
                    .rules
                    .patterns
                    .iter()
                    .zip(&self.rules.targets)
                    .collect::<Vec<_>>(),
            )
            .field("methods", &self.rules.methods)
            .finish()
    }
}

impl<S> Layer<S> for InvalidateOn {
    type Service = InvalidateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvalidateService::new(inner, self.cache.clone(), Arc::new(self.rules.clone()))
    }
}
