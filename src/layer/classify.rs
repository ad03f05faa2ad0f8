//! What a request flags of the cache: which rule covers it, whether its
//! headers carry credentials or validators, and the key it is stored under
//! (or why it bypasses).

use http::header;
use http::request::Parts;
use http::{Extensions, HeaderMap, Uri};

/// What a request's headers ask that a hit must know, read in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestFlags {
    /// `Authorization` or `Cookie`.
    pub(crate) credentials: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    pub(crate) conditional: bool,
    /// `Cache-Control` or `Pragma`.
    pub(crate) directives: bool,
    /// `Range`.
    pub(crate) range: bool,
    /// Why no stored response may answer the request, whatever its route
    /// (an upgrade, proxy credentials, a body, origin-only preconditions):
    /// it bypasses once its route is known.
    pub(crate) refuse: Option<Reason>,
}

impl RequestFlags {
    /// One pass over the headers: cheaper than a hashed lookup per name.
    /// The values of the two names whose values matter (`Connection`,
    /// `Content-Length`) are read only when those names are present.
    #[inline]
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut flags = Self::default();
        let (mut connection, mut length) = (false, false);
        for name in headers.keys() {
            if name == header::AUTHORIZATION || name == header::COOKIE {
                flags.credentials = true;
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                flags.conditional = true;
            } else if name == header::CACHE_CONTROL || name == header::PRAGMA {
                flags.directives = true;
            } else if name == header::RANGE {
                flags.range = true;
            } else if let Some(reason) = refused(name) {
                flags.refuse.get_or_insert(reason);
            } else if name == header::CONNECTION {
                connection = true;
            } else if name == header::CONTENT_LENGTH {
                length = true;
            }
        }
        if connection && names_upgrade(headers) {
            flags.refuse.get_or_insert(Reason::Upgrade);
        }
        if length && declares_body(headers) {
            flags.refuse.get_or_insert(Reason::RequestBody);
        }
        flags
    }
}

/// The request headers whose presence alone means no stored response may
/// answer: `Upgrade` (RFC 9110, section 7.8), `Proxy-Authorization` (as
/// `Authorization`, RFC 9111, section 3.5, but for a scope that does not
/// see it), `Transfer-Encoding` (a body), and the preconditions a cache
/// does not evaluate (RFC 9111, section 4.3.2).
#[inline]
fn refused(name: &http::HeaderName) -> Option<Reason> {
    if name == header::UPGRADE {
        Some(Reason::Upgrade)
    } else if name == header::PROXY_AUTHORIZATION {
        Some(Reason::ProxyAuthorization)
    } else if name == header::TRANSFER_ENCODING {
        Some(Reason::RequestBody)
    } else if name == header::IF_MATCH || name == header::IF_UNMODIFIED_SINCE {
        Some(Reason::Precondition)
    } else {
        None
    }
}

/// Whether `Connection` lists the `upgrade` option.
#[cold]
fn names_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Whether `Content-Length` announces a body: any value but `0` (an
/// unreadable one included).
#[cold]
fn declares_body(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() != b"0")
}

use crate::cache::stats::Reason;
use crate::cache::Cache;
use crate::key::{self, CacheKey, KeyError, KeyRequest};
use crate::policy::{CompiledRoute, RouteTable};

/// The pattern under which a layer's fallback policy is counted in the
/// per-route statistics.
pub(crate) const FALLBACK_PATTERN: &str = "*";

/// The URI the client sent: axum's `OriginalUri` when a `Router` saw the
/// request before this layer (a nested router's layers see the path
/// without the nest's prefix), else the request's own. Keys, entries'
/// paths and flushes are all made of it, so that one `Cache` shared by
/// routers nested at different prefixes keeps their entries apart, and a
/// flush names the path the client sees wherever the layers stand.
#[inline]
pub(crate) fn client_uri<'a>(uri: &'a Uri, extensions: &'a Extensions) -> &'a Uri {
    match extensions.get::<axum::extract::OriginalUri>() {
        Some(original) => &original.0,
        None => uri,
    }
}

/// The key of a request the fast path takes: its path and query as they
/// stand, or those and its host in a reused buffer.
pub(crate) enum PlainKey<'a> {
    AsSent(&'a str),
    WithHost(CacheKey),
}

impl PlainKey<'_> {
    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            PlainKey::AsSent(key) => key,
            PlainKey::WithHost(key) => &key.full,
        }
    }
}

/// The rules of one layer, shared by every service it makes.
///
/// Aligned to a cache line, so that the reference count every service
/// clone bumps shares no line with the rules every request reads.
#[derive(Clone)]
#[repr(align(64))]
pub(crate) struct LayerConfig {
    pub(crate) rules: RouteTable,
    pub(crate) fallback: Option<CompiledRoute>,
    /// Whether keys hold the request's host (default: yes).
    pub(crate) hosts: bool,
    /// Whether requests' `Cache-Control` directives are honoured.
    pub(crate) request_directives: bool,
    /// The cache, held here so that a service clone bumps one count.
    pub(crate) cache: Cache,
}

impl LayerConfig {
    /// The policy for a path: the most specific rule, else the fallback.
    #[inline]
    pub(crate) fn find(&self, path: &str) -> Option<&CompiledRoute> {
        if self.rules.is_empty() {
            return self.fallback.as_ref();
        }
        self.rules.find(path).or(self.fallback.as_ref())
    }

    /// The route and key of a request whose key is its path and query as
    /// the client sent them: no scope or key headers on its route, no
    /// credentials, a query already in order with nothing to drop, nothing
    /// to hash. `None` sends the request down the general path
    /// ([`classify`](Self::classify)), which builds the same key.
    ///
    /// The rule is found on the path this layer sees (`local`: a nested
    /// router's, without its prefix), the key made of the client's.
    #[inline]
    pub(crate) fn plain_key<'a>(
        &'a self,
        local: &Uri,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        flags: RequestFlags,
        max_key_bytes: usize,
    ) -> Option<(&'a CompiledRoute, PlainKey<'a>)> {
        let route = self.find(local.path())?;
        let policy = &route.policy;
        if policy.scope.is_some() || !policy.key_headers.is_empty() || flags.credentials {
            return None;
        }
        let key = uri.path_and_query()?.as_str();
        if key.len() > key::HASH_ABOVE.min(max_key_bytes) || !key.starts_with('/') {
            return None;
        }
        if let Some(query) = uri.query() {
            if query.is_empty() || !key::in_order(query, policy) || !key::well_formed(query) {
                return None;
            }
        }
        // Canonical implies well formed (no bad or NUL percent-encoding).
        if !crate::path::is_canonical(uri.path()) {
            return None;
        }
        match self.host(uri, headers) {
            None => Some((route, PlainKey::AsSent(key))),
            Some(host) if crate::host::is_normal_host(host) => {
                let joined = key::with_host(key, host);
                // A long key is hashed: the general path's job.
                joined
                    .hashed
                    .is_none()
                    .then_some((route, PlainKey::WithHost(joined)))
            }
            Some(_) => None,
        }
    }

    /// The authority a request names, when this layer keys on it: the
    /// URI's (HTTP/2, absolute form), else the `Host` header. A `Host`
    /// that is not text is given as `""`, which no key takes (keyed on no
    /// host, it would share the entries of requests that name none).
    #[inline]
    fn host<'a>(&self, uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
        if !self.hosts {
            return None;
        }
        match uri.authority() {
            Some(authority) => Some(authority.as_str()),
            None => headers.get(header::HOST).map(|h| h.to_str().unwrap_or("")),
        }
    }

    /// The route and key of a GET or HEAD request, or why it bypasses.
    pub(crate) fn classify(
        &self,
        parts: &Parts,
        flags: RequestFlags,
        max_key_bytes: usize,
    ) -> Result<(&CompiledRoute, CacheKey), (Reason, Option<&CompiledRoute>)> {
        let Some(route) = self.find(parts.uri.path()) else {
            return Err((Reason::NoRule, None));
        };
        let uri = client_uri(&parts.uri, &parts.extensions);
        let policy = &route.policy;
        let scope = match &policy.scope {
            // Keys hold a keyed hash of the value, never the value.
            Some(scope) => match scope(parts) {
                Some(s) => Some(self.cache.shared.scope_hasher.hash(&s)),
                None => return Err((Reason::NoScope, Some(route))),
            },
            None if flags.credentials && parts.headers.contains_key(header::AUTHORIZATION) => {
                return Err((Reason::Authorization, Some(route)));
            }
            None if flags.credentials => return Err((Reason::Cookie, Some(route))),
            None => None,
        };
        let request = KeyRequest {
            path: uri.path(),
            query: uri.query(),
            host: self.host(uri, &parts.headers),
            headers: &parts.headers,
            scope: scope.as_deref(),
        };
        key::build(
            request,
            policy,
            max_key_bytes,
            &self.cache.shared.scope_hasher,
        )
        .map(|key| (route, key))
        .map_err(|e| {
            let reason = match e {
                KeyError::TooLong => Reason::UriTooLong,
                KeyError::Malformed => Reason::UriMalformed,
                KeyError::NotCanonical => Reason::UriNotCanonical,
            };
            (reason, Some(route))
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::CacheLayer;
    use crate::policy::RoutePolicy;
    use std::time::Duration;

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
            for flags in [
                RequestFlags::default(),
                RequestFlags {
                    credentials: true,
                    ..RequestFlags::default()
                },
            ] {
                let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
                let Some((route, key)) =
                    layer
                        .config
                        .plain_key(&parts.uri, &parts.uri, &parts.headers, flags, 8192)
                else {
                    continue;
                };
                assert!(
                    !flags.credentials,
                    "{uri}: credentials take the general path"
                );
                let (general_route, general) = layer
                    .config
                    .classify(&parts, flags, 8192)
                    .unwrap_or_else(|e| {
                        panic!("{uri}: fast path keyed what classify refuses: {:?}", e.0)
                    });
                assert_eq!(route.pattern, general_route.pattern, "{uri}");
                assert_eq!(key.as_str(), general.full, "{uri}");
                assert_eq!(key.as_str(), general.lookup(), "{uri}");
                fast += 1;
            }
        }
        // "/p", "/p?a=1", "/p?a=1&b=2", "/p?a", "/p?=1", "/p?a=%41",
        // "/tracked?a=1" and the absolute form.
        assert_eq!(fast, 8);

        // With a host: the fast path takes it in its normal form only, and
        // makes the key classify makes.
        let mut fast = 0;
        for host in ["acme.example", "ACME.example", "acme.example:80", "a b"] {
            for uri in ["/p", "/p?a=1", "/p?b=2&a=1"] {
                let (parts, ()) = http::Request::get(uri)
                    .header(header::HOST, host)
                    .body(())
                    .unwrap()
                    .into_parts();
                let flags = RequestFlags::default();
                let general = layer.config.classify(&parts, flags, 8192);
                if host == "a b" {
                    assert_eq!(general.err().map(|e| e.0), Some(Reason::UriMalformed));
                    continue;
                }
                let (_, general) = general.unwrap_or_else(|e| panic!("{host} {uri}: {:?}", e.0));
                assert!(
                    general.full.ends_with("\nhost:acme.example"),
                    "{}",
                    general.full
                );
                let plain =
                    layer
                        .config
                        .plain_key(&parts.uri, &parts.uri, &parts.headers, flags, 8192);
                if let Some((_, key)) = plain {
                    assert_eq!(key.as_str(), general.full, "{host} {uri}");
                    fast += 1;
                }
            }
        }
        assert_eq!(fast, 2, "the normal host, on the two keys in order");
    }

    #[test]
    fn request_flags_read_credentials_and_validators() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        let flags = RequestFlags::of(&headers);
        assert!(!flags.credentials && !flags.conditional);
        headers.insert(header::IF_NONE_MATCH, "\"e\"".parse().unwrap());
        assert!(RequestFlags::of(&headers).conditional);
        headers.insert(header::COOKIE, "a=1".parse().unwrap());
        assert!(RequestFlags::of(&headers).credentials);
        let mut auth = HeaderMap::new();
        auth.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        auth.insert(header::IF_MODIFIED_SINCE, "x".parse().unwrap());
        let flags = RequestFlags::of(&auth);
        assert!(flags.credentials && flags.conditional);
        assert_eq!(flags.refuse, None);
    }

    #[test]
    fn request_flags_read_what_no_stored_response_may_answer() {
        let refuse = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, value.parse().unwrap());
            }
            RequestFlags::of(&headers).refuse.map(Reason::as_str)
        };
        assert_eq!(refuse(&[("accept", "*/*")]), None);
        assert_eq!(refuse(&[("upgrade", "websocket")]), Some("upgrade"));
        assert_eq!(refuse(&[("connection", "keep-alive")]), None);
        assert_eq!(
            refuse(&[("connection", "keep-alive"), ("connection", " UPGRADE ")]),
            Some("upgrade")
        );
        assert_eq!(
            refuse(&[("proxy-authorization", "Basic x")]),
            Some("proxy-authorization")
        );
        assert_eq!(refuse(&[("content-length", "0")]), None);
        assert_eq!(refuse(&[("content-length", "12")]), Some("request-body"));
        assert_eq!(refuse(&[("content-length", "x")]), Some("request-body"));
        assert_eq!(
            refuse(&[("transfer-encoding", "chunked")]),
            Some("request-body")
        );
        assert_eq!(refuse(&[("if-match", "\"a\"")]), Some("precondition"));
        assert_eq!(
            refuse(&[("if-unmodified-since", "x")]),
            Some("precondition")
        );
        // Validators the cache evaluates, and `Range` (answered in full),
        // are no reason to refuse.
        assert_eq!(
            refuse(&[
                ("if-none-match", "*"),
                ("range", "bytes=0-1"),
                ("if-range", "x")
            ]),
            None
        );
    }
}
