//! Entry points for the fuzz targets in `fuzz/` and the regression tests
//! they leave behind (`tests/fuzz_regressions.rs`), behind the feature
//! `fuzzing`, which exists for the crate's own fuzzing only.
//!
//! Each function hands its input to one of the crate's parsers of outside
//! input and returns what it made, in plain types. None of this is part of
//! the crate's API: it changes whenever the parsers do.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::key::{self, KeyError, KeyRequest};
use crate::policy::RoutePolicy;
use crate::scope::ScopeHasher;

/// The hasher the key wrappers hash credentials with.
static HASHER: LazyLock<ScopeHasher> = LazyLock::new(|| ScopeHasher::new(b"fuzzing"));

/// The name of a [`KeyError`], as a `Cache-Status` detail spells it.
fn refusal(e: KeyError) -> &'static str {
    match e {
        KeyError::TooLong => "uri-too-long",
        KeyError::Malformed => "uri-malformed",
        KeyError::NotCanonical => "uri-not-canonical",
    }
}

/// The full key the key builder makes for a GET of `path`, `query` and
/// `host` under `policy` (no key headers, no scope), or why it refuses.
pub fn build_key(
    path: &str,
    query: Option<&str>,
    host: Option<&str>,
    policy: &RoutePolicy,
    max_key_bytes: usize,
) -> Result<String, &'static str> {
    static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);
    let request = KeyRequest {
        path,
        query,
        host,
        headers: &NO_HEADERS,
        scope: None,
    };
    key::build(request, policy, max_key_bytes, &HASHER)
        .map(|k| k.full.clone())
        .map_err(refusal)
}

/// The query as the key holds it (`?` and the sorted pairs, or nothing
/// when no pair is left), through the key builder on the path `/`.
pub fn normalise_query(query: &str, policy: &RoutePolicy) -> Result<String, &'static str> {
    build_key("/", Some(query), None, policy, usize::MAX)
        .map(|full| full.strip_prefix('/').unwrap_or(&full).to_owned())
}

/// Whether the fast path would take a query as it stands.
pub fn query_in_order(query: &str, policy: &RoutePolicy) -> bool {
    key::in_order(query, policy)
}

/// Whether every `%` is followed by two hex digits, and none encodes NUL.
pub fn well_formed(s: &str) -> bool {
    key::well_formed(s)
}

/// A host in the one form keys hold it, or `None` when it is refused.
pub fn normal_host(host: &str) -> Option<String> {
    crate::host::normal_host(host).ok()
}

/// Whether a host is in that form already (the fast path's test).
pub fn is_normal_host(host: &str) -> bool {
    crate::host::is_normal_host(host)
}

/// The canonical form of a path a flush names.
pub fn canonical_path(path: &str) -> String {
    crate::path::canonical(path).into_owned()
}

/// Whether a path is in canonical form (only such paths are keyed).
pub fn is_canonical_path(path: &str) -> bool {
    crate::path::is_canonical(path)
}

/// A flush prefix as the index records it.
pub fn normalise_prefix(prefix: &str) -> &str {
    crate::invalidate::target::normalise_prefix(prefix)
}

/// The names a response's `Vary` lists, or `None` for `Vary: *` or a name
/// that is not one.
pub fn vary_names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    crate::headers::vary_names(response).ok()
}

/// The key of the variant of `/` that a request with these headers
/// selects, for a response that varies on `names`.
pub fn variant_key(names: &[HeaderName], request: &HeaderMap) -> String {
    let base = key::with_host("/", "fuzz.example");
    base.variant(names, request, &HASHER).full.clone()
}

/// Whether a request's `If-None-Match` or `If-Modified-Since` is satisfied
/// by an entry with this `ETag` and `Last-Modified` (then it gets a 304).
pub fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    crate::headers::not_modified(request, etag, last_modified)
}

/// A delta-seconds argument as read: its value, or `Err` when it is
/// invalid or given twice differently.
pub type Delta = Result<u64, ()>;

/// What a response's caching directives say, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ResponseDirectives {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub public: bool,
    pub max_age: Option<Delta>,
    pub s_maxage: Option<Delta>,
    pub stale_while_revalidate: Option<Delta>,
    pub stale_if_error: Option<Delta>,
    pub unreadable: bool,
}

/// Reads a response's `Cache-Control` (or `targeted`, when present and
/// readable).
pub fn response_directives(
    headers: &HeaderMap,
    targeted: Option<&HeaderName>,
) -> ResponseDirectives {
    let d = crate::freshness::response_directives(headers, targeted);
    ResponseDirectives {
        no_store: d.no_store,
        private: d.private,
        no_cache: d.no_cache,
        must_revalidate: d.must_revalidate,
        proxy_revalidate: d.proxy_revalidate,
        public: d.public,
        max_age: d.max_age,
        s_maxage: d.s_maxage,
        stale_while_revalidate: d.stale_while_revalidate,
        stale_if_error: d.stale_if_error,
        unreadable: d.unreadable,
    }
}

/// What a request's caching directives ask, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RequestDirectives {
    pub max_age: Option<Delta>,
    pub min_fresh: Option<Delta>,
    pub max_stale: Option<Option<u64>>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
}

/// Reads a request's `Cache-Control` (and `Pragma`).
pub fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let d = crate::freshness::request_directives(headers);
    RequestDirectives {
        max_age: d.max_age,
        min_fresh: d.min_fresh,
        max_stale: d.max_stale,
        no_cache: d.no_cache,
        no_store: d.no_store,
        only_if_cached: d.only_if_cached,
    }
}

/// An HTTP date in Unix ms, as `Date`, `Expires` and `Last-Modified` are
/// read.
pub fn http_date_ms(value: &HeaderValue) -> Option<u64> {
    crate::freshness::http_date_ms(value)
}

/// The times an entry gets when it is stored (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Timing {
    pub born_ms: u64,
    pub fresh_until_ms: u64,
    pub stale_while_revalidate_until_ms: u64,
    pub stale_if_error_until_ms: u64,
    pub keep_until_ms: u64,
}

/// The times a response gets under `policy` when its origin read began at
/// `request_ms` and its head arrived at `response_ms`, or why it gets no
/// entry (`"cache-control"`, `"no-freshness"`).
pub fn freshness_timing(
    policy: &RoutePolicy,
    status: StatusCode,
    headers: &HeaderMap,
    request_ms: u64,
    response_ms: u64,
) -> Result<Timing, &'static str> {
    use crate::freshness::{Exchange, Grace, Refusal};
    let exchange = Exchange {
        request_ms,
        response_ms,
    };
    let grace = Grace {
        stale_while_revalidate: policy.stale_while_revalidate,
        stale_if_error: policy.stale_if_error,
    };
    match policy
        .freshness
        .timing(status, headers, exchange, policy.ttl, grace)
    {
        Ok(t) => Ok(Timing {
            born_ms: t.born_ms,
            fresh_until_ms: t.fresh_until_ms,
            stale_while_revalidate_until_ms: t.stale_while_revalidate_until_ms,
            stale_if_error_until_ms: t.stale_if_error_until_ms,
            keep_until_ms: t.keep_until_ms,
        }),
        Err(Refusal::CacheControl) => Err("cache-control"),
        Err(Refusal::NoFreshness) => Err("no-freshness"),
    }
}

/// The Redis entry codec (feature `redis`).
#[cfg(feature = "redis")]
pub mod codec {
    use bytes::Bytes;

    use crate::store::redis::codec;
    use crate::store::Entry;

    /// The encoding's version, its first byte.
    pub const VERSION: u8 = codec::VERSION;

    /// Encodes an entry for the Redis key `store_key` (`None`: too deep to
    /// store).
    pub fn encode(entry: &Entry, store_key: &str) -> Option<Vec<u8>> {
        codec::encode(entry, store_key)
    }

    /// Decodes a value read from the Redis key `store_key`, or says why it
    /// is refused.
    pub fn decode(value: Bytes, store_key: &str) -> Result<Entry, String> {
        codec::decode(value, store_key, store_key.len()).map_err(|e| e.to_string())
    }
}
