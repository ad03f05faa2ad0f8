//! Key building and normalisation.
//!
//! A key is the path, then `?` and the query with its pairs sorted by name
//! (a stable sort, so repeated names keep their order) and ignored
//! parameters dropped ([`query`]); then the host the request named, in
//! one normal form ([`crate::host`]); then the values of the policy's key
//! headers (credentials hashed); then a keyed hash of the scope. Keys longer than [`HASH_ABOVE`] bytes are looked up by a
//! 128-bit hash and the full key is compared against the one kept in the
//! entry, so a collision can never serve the wrong response.

mod query;

use std::cell::Cell;
use std::fmt::Write as _;

use http::{HeaderMap, HeaderName};

use crate::policy::RoutePolicy;
use crate::scope::ScopeHasher;
pub(crate) use query::in_order;
use query::push_query;

/// Keys longer than this are stored under a hash of themselves.
pub(crate) const HASH_ABOVE: usize = 200;

/// Why a request could not be keyed (it is then served by the inner
/// service, untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// Path plus query longer than the cache's `max_key_bytes`.
    TooLong,
    /// Invalid percent-encoding, or an encoded NUL.
    Malformed,
    /// A path not in canonical form (see [`crate::path`]).
    NotCanonical,
}

/// A request's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    /// The full key.
    pub(crate) full: String,
    /// The hashed form, when the full key is long.
    pub(crate) hashed: Option<Box<str>>,
}

thread_local! {
    /// A key's buffer, handed back when the key is dropped, so that the
    /// next request on this thread builds its key without allocating.
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// Buffers larger than this are not kept for reuse.
const SPARE_MAX: usize = 1024;

/// An empty string with room for `capacity` bytes, reusing this thread's
/// spare buffer when there is one.
fn buffer(capacity: usize) -> String {
    let mut s = SPARE.try_with(Cell::take).unwrap_or_default();
    s.clear();
    s.reserve(capacity);
    s
}

impl Drop for CacheKey {
    fn drop(&mut self) {
        let cap = self.full.capacity();
        if cap > 0 && cap <= SPARE_MAX {
            let s = std::mem::take(&mut self.full);
            let _ = SPARE.try_with(|spare| spare.set(s));
        }
    }
}

/// Whether `store_key` is the hashed form of the long key `full`.
pub(crate) fn is_hashed_form_of(store_key: &str, full: &str) -> bool {
    store_key.len() == 33
        && store_key.starts_with('#')
        && u128::from_str_radix(&store_key[1..], 16).ok()
            == Some(xxhash_rust::xxh3::xxh3_128(full.as_bytes()))
}

impl CacheKey {
    fn finish(full: String) -> Self {
        let hashed = (full.len() > HASH_ABOVE).then(|| {
            let h = xxhash_rust::xxh3::xxh3_128(full.as_bytes());
            format!("#{h:032x}").into_boxed_str()
        });
        Self { full, hashed }
    }

    /// The string the store indexes by.
    pub(crate) fn lookup(&self) -> &str {
        self.hashed.as_deref().unwrap_or(&self.full)
    }

    /// The key of one variant of a response that varies on `names`.
    pub(crate) fn variant(
        &self,
        names: &[HeaderName],
        headers: &HeaderMap,
        hasher: &ScopeHasher,
    ) -> CacheKey {
        let mut full = buffer(self.full.len() + 32);
        full.push_str(&self.full);
        full.push_str("\nvary");
        push_headers(&mut full, names, headers, hasher);
        Self::finish(full)
    }
}

/// Whether `b` holds the byte `N`, eight bytes at a time. Keys on the fast
/// path are short (at most [`HASH_ABOVE`] bytes), so this stays inline
/// rather than calling `memchr`.
#[inline(always)]
pub(super) fn has_byte<const N: u8>(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let needles = ONES * N as u64;
    let mut words = b.chunks_exact(8);
    for word in words.by_ref() {
        let x = u64::from_ne_bytes(word.try_into().expect("eight bytes")) ^ needles;
        // A zero byte in `x` is the byte sought.
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return true;
        }
    }
    // Not `contains`: for bytes that is a `memchr` call, and the point here
    // is to stay inline.
    #[allow(clippy::manual_contains)]
    words.remainder().iter().any(|&c| c == N)
}

/// Whether `b` holds a `%`.
#[inline(always)]
fn has_percent(b: &[u8]) -> bool {
    has_byte::<b'%'>(b)
}

/// Checks percent-encoding: every `%` is followed by two hex digits, and
/// `%00` (an encoded NUL) is refused.
#[inline]
pub(crate) fn well_formed(s: &str) -> bool {
    !has_percent(s.as_bytes()) || well_escaped(s.as_bytes())
}

fn well_escaped(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            let (h, l) = (b[i + 1], b[i + 2]);
            if !h.is_ascii_hexdigit() || !l.is_ascii_hexdigit() || (h == b'0' && l == b'0') {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn push_headers(out: &mut String, names: &[HeaderName], headers: &HeaderMap, hasher: &ScopeHasher) {
    for name in names {
        out.push('\n');
        out.push_str(name.as_str());
        let values = headers.get_all(name);
        if values.iter().next().is_none() {
            // Absent: the name alone, so that it matches only absent
            // (RFC 9111, section 4.1), never an empty value.
            continue;
        }
        out.push(':');
        let mut first = true;
        for value in values {
            if !first {
                out.push(',');
            }
            first = false;
            if is_credential(name, value) {
                // A credential (a response that varies on `Cookie`, a key
                // on `Authorization`): its keyed hash, never the value.
                out.push('#');
                // Its bytes, not a lossy text: two values that differ only
                // in bytes that are not UTF-8 must not share a hash.
                out.push_str(&hasher.hash(value.as_bytes()));
                continue;
            }
            // Header values cannot hold newlines; bytes that are not visible
            // ASCII are written escaped so that distinct values stay distinct.
            for &b in value.as_bytes() {
                if (0x20..0x7f).contains(&b) && b != b'\\' {
                    out.push(b as char);
                } else {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    }
}

/// Whether a header value authenticates someone: the credential headers,
/// and any value its maker marked sensitive.
fn is_credential(name: &HeaderName, value: &http::HeaderValue) -> bool {
    value.is_sensitive()
        || name == http::header::AUTHORIZATION
        || name == http::header::PROXY_AUTHORIZATION
        || name == http::header::COOKIE
}

/// What a request's key is made of.
#[derive(Clone, Copy)]
pub(crate) struct KeyRequest<'a> {
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// The authority the request named (`None`: the layer keys no host, or
    /// the request named none).
    pub(crate) host: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    /// The scope value, already hashed.
    pub(crate) scope: Option<&'a str>,
}

/// What separates a key's host from its path and query.
pub(crate) const HOST_MARK: &str = "\nhost:";

/// The key of a request whose key is its path and query as they stand,
/// then its host (already normal): made in a reused buffer.
pub(crate) fn with_host(path_and_query: &str, host: &str) -> CacheKey {
    let mut full = buffer(path_and_query.len() + HOST_MARK.len() + host.len());
    full.push_str(path_and_query);
    full.push_str(HOST_MARK);
    full.push_str(host);
    CacheKey::finish(full)
}

/// Builds the key of a GET or HEAD request.
pub(crate) fn build(
    request: KeyRequest<'_>,
    policy: &RoutePolicy,
    max_key_bytes: usize,
    hasher: &ScopeHasher,
) -> Result<CacheKey, KeyError> {
    let KeyRequest {
        path,
        query,
        host,
        headers,
        scope,
    } = request;
    let query = query.unwrap_or("");
    if path.len() + query.len() > max_key_bytes {
        return Err(KeyError::TooLong);
    }
    if !well_formed(path) || !well_formed(query) {
        return Err(KeyError::Malformed);
    }
    if !crate::path::is_canonical(path) {
        return Err(KeyError::NotCanonical);
    }
    let mut full = buffer(path.len() + query.len() + 2);
    full.push_str(path);
    if !query.is_empty() {
        push_query(&mut full, query, policy);
    }
    if let Some(host) = host {
        full.push_str(HOST_MARK);
        full.push_str(&crate::host::normal_host(host)?);
    }
    if !policy.key_headers.is_empty() {
        full.push_str("\nh");
        push_headers(&mut full, &policy.key_headers, headers, hasher);
    }
    if let Some(scope) = scope {
        // Length-prefixed, so no scope value can forge another key's shape.
        let _ = write!(full, "\n@{}:", scope.len());
        full.push_str(scope);
    }
    Ok(CacheKey::finish(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

    fn plain<'a>(path: &'a str, query: Option<&'a str>) -> KeyRequest<'a> {
        KeyRequest {
            path,
            query,
            host: None,
            headers: &NO_HEADERS,
            scope: None,
        }
    }

    #[test]
    fn a_key_holds_the_host_in_its_normal_form() {
        let policy = RoutePolicy::ttl(std::time::Duration::from_secs(1));
        let h = ScopeHasher::new(b"t");
        let built = build(
            KeyRequest {
                host: Some("ACME.example:80"),
                ..plain("/p", Some("a=1"))
            },
            &policy,
            8192,
            &h,
        )
        .unwrap();
        assert_eq!(built.full, with_host("/p?a=1", "acme.example").full);
        assert_eq!(built.full, "/p?a=1\nhost:acme.example");
    }

    use std::time::Duration;

    fn key(path: &str, query: Option<&str>, policy: &RoutePolicy) -> Result<CacheKey, KeyError> {
        build(plain(path, query), policy, 8192, &ScopeHasher::new(b"t"))
    }

    #[test]
    fn query_is_sorted_stably_and_filtered() {
        let p = RoutePolicy::ttl(Duration::from_secs(1)).ignore_query_params(["utm_*", "fbclid"]);
        let a = key("/p", Some("b=2&a=1&a=0&utm_source=x&fbclid=9"), &p).unwrap();
        assert_eq!(a.full, "/p?a=1&a=0&b=2");
        let b = key("/p", Some("a=1&utm_medium=y&b=2&a=0"), &p).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            key("/p", Some(""), &p).unwrap(),
            key("/p", None, &p).unwrap()
        );
        assert_eq!(key("/p", Some("utm_x=1"), &p).unwrap().full, "/p");
    }

    #[test]
    fn query_fast_and_slow_paths_agree() {
        let p = RoutePolicy::ttl(Duration::from_secs(1)).ignore_query_params(["utm_*"]);
        let cases = [
            ("a=1&b=2", "/p?a=1&b=2"),
            ("a=1&a=0&b", "/p?a=1&a=0&b"),
            ("b=1&a=2", "/p?a=2&b=1"),
            ("a=1&&b=2&", "/p?a=1&b=2"),
            ("&", "/p"),
            ("utm_a=1", "/p"),
            ("a=1&utm_a=1&b=2", "/p?a=1&b=2"),
            ("=1&a", "/p?=1&a"),
        ];
        for (query, want) in cases {
            assert_eq!(key("/p", Some(query), &p).unwrap().full, want, "{query}");
        }
        let many: Vec<String> = (0..40).rev().map(|i| format!("k{i:02}={i}")).collect();
        let mut sorted = many.clone();
        sorted.sort();
        assert_eq!(
            key("/p", Some(&many.join("&")), &p).unwrap().full,
            format!("/p?{}", sorted.join("&"))
        );
    }

    #[test]
    fn malformed_and_long() {
        let p = RoutePolicy::ttl(Duration::from_secs(1));
        assert_eq!(key("/p", Some("a=%zz"), &p), Err(KeyError::Malformed));
        assert_eq!(key("/p", Some("a=%0"), &p), Err(KeyError::Malformed));
        assert_eq!(key("/p", Some("a=%"), &p), Err(KeyError::Malformed));
        assert_eq!(key("/p%00", None, &p), Err(KeyError::Malformed));
        assert!(key("/p", Some("a=%41"), &p).is_ok());
        let long = "a=".to_owned() + &"x".repeat(9000);
        assert_eq!(key("/p", Some(&long), &p), Err(KeyError::TooLong));
        let medium = "a=".to_owned() + &"x".repeat(500);
        let k = key("/p", Some(&medium), &p).unwrap();
        assert!(k.hashed.is_some());
        assert_eq!(k.lookup().len(), 33);
        assert!(is_hashed_form_of(k.lookup(), &k.full));
        assert!(!is_hashed_form_of(k.lookup(), "/p"));
        assert!(!is_hashed_form_of(&k.full, &k.full));
    }

    #[test]
    fn percent_found_in_any_position() {
        for len in 0..20 {
            let clean = "a".repeat(len);
            assert!(!has_percent(clean.as_bytes()));
            for at in 0..len {
                let mut b = clean.clone().into_bytes();
                b[at] = b'%';
                assert!(has_percent(&b), "len {len}, at {at}");
            }
        }
        let pairs = "a=1&b=2&cc=3";
        assert!(has_byte::<b'&'>(pairs.as_bytes()));
        assert!(!has_byte::<b'&'>(b"a=1;b=2;cc=3"));
        // Bytes next to `%` (0x25) in value do not count.
        assert!(!has_percent(&[
            0x24, 0x26, 0xa5, 0x05, 0x24, 0x26, 0xa5, 0x05, 0x26
        ]));
    }

    #[test]
    fn scope_cannot_forge_another_key() {
        let p = RoutePolicy::ttl(Duration::from_secs(1));
        let a = build(
            KeyRequest {
                scope: Some("u1"),
                ..plain("/p", None)
            },
            &p,
            8192,
            &ScopeHasher::new(b"t"),
        )
        .unwrap();
        let b = build(
            KeyRequest {
                scope: Some(
                    "u1
@2:u1",
                ),
                ..plain("/p", None)
            },
            &p,
            8192,
            &ScopeHasher::new(b"t"),
        )
        .unwrap();
        assert_ne!(a, b);
    }
}
