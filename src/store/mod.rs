//! Where entries live: the [`Store`] trait, the in-memory [`MemoryStore`]
//! (the default) and, with the `redis` feature, `RedisStore`, given to
//! [`CacheBuilder::store`](crate::CacheBuilder::store).
//!
//! A store keeps entries by key and owns the invalidation index, so that a
//! store shared by several processes (Redis) can make an invalidation on
//! one of them hold on all of them.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use memory::MemoryStore;
/// Hand-built entries for the Redis store's integration tests.
#[cfg(feature = "redis")]
#[doc(hidden)]
pub use redis::testing as __redis_testing;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};

pub use crate::invalidate::Target;

/// Bytes a stored item costs the memory store beyond the entry itself: its
/// slot (the `u64` key, the `Arc` pointer, eviction state and links) and its
/// share of the hash table, about 45 bytes, times the room the store's
/// tables keep for growth (they double: 1.4 times on average), as measured
/// with a counting allocator.
pub(crate) const STORE_SLOT: usize = 64;

/// Bytes the `bytes` crate allocates to share a buffer (its reference count).
const SHARED_BUFFER: usize = 24;

/// Header values common enough that an entry refers to a static copy rather
/// than keeping its own bytes (no memory, and no reference count per hit).
static COMMON_VALUES: [HeaderValue; 8] = [
    HeaderValue::from_static("application/json"),
    HeaderValue::from_static("application/json; charset=utf-8"),
    HeaderValue::from_static("text/plain; charset=utf-8"),
    HeaderValue::from_static("text/html; charset=utf-8"),
    HeaderValue::from_static("text/plain"),
    HeaderValue::from_static("text/html"),
    HeaderValue::from_static("application/octet-stream"),
    HeaderValue::from_static("gzip"),
];

fn common_value(value: &HeaderValue) -> Option<usize> {
    if value.is_sensitive() {
        return None;
    }
    COMMON_VALUES
        .iter()
        .position(|c| c.as_bytes() == value.as_bytes())
}

/// The most common set of stored headers, a `Content-Type` alone (an ETag
/// aside), for each common value: an entry with such headers keeps no
/// header slice of its own.
static COMMON_HEADERS: [[(HeaderName, HeaderValue); 1]; COMMON_VALUES.len()] = {
    const fn one(value: &'static str) -> [(HeaderName, HeaderValue); 1] {
        [(header::CONTENT_TYPE, HeaderValue::from_static(value))]
    }
    [
        one("application/json"),
        one("application/json; charset=utf-8"),
        one("text/plain; charset=utf-8"),
        one("text/html; charset=utf-8"),
        one("text/plain"),
        one("text/html"),
        one("application/octet-stream"),
        one("gzip"),
    ]
};

/// A response's head: its status, version, headers and extensions.
pub(crate) type ResponseHead = http::response::Parts;

/// `ETag`, as a static the entry's headers can borrow.
static ETAG: HeaderName = header::ETAG;

/// For each common `Content-Type`, the head of the usual hit, made once:
/// a response head whose headers are that `Content-Type`, then `ETag`,
/// `Age` and `Cache-Status` with empty values to be set by position.
/// Cloning it copies the names and their hashes rather than hashing each
/// name into a new map, and gives the response its head in one piece.
static READY_HEADS: [OnceLock<ResponseHead>; COMMON_VALUES.len()] =
    [const { OnceLock::new() }; COMMON_VALUES.len()];

/// A stored response, with what invalidation needs to judge it: the path it
/// was stored for, its tags, and the generation at which its origin read
/// began.
///
/// An entry owns all its bytes: nothing in it points into a request's or a
/// connection's buffers. The body, the header values, the `Content-Length`
/// value, the path and the key share one buffer, allocated once.
#[derive(Debug)]
pub struct Entry {
    /// Headers to send, their values slices of the entry's buffer (or
    /// static copies of common values); empty when `common_headers` says
    /// which static set they are, and never the `ETag` kept apart: read them
    /// through `headers()` and `header_count()`.
    own_headers: Box<[(HeaderName, HeaderValue)]>,
    /// The last stored header when it is an `ETag` (the one the cache
    /// computes, usually), kept apart so the usual headers are a static set.
    etag: Option<HeaderValue>,
    body: Bytes,
    /// The rest of the buffer: the body's length in decimal, then the path,
    /// then (when known) the rest of the key.
    tail: Bytes,
    born: u64,
    /// The hash of the request key (before any Vary variant), which an
    /// exact-request flush records.
    key_hash: u64,
    born_ms: u64,
    /// Freshness, stale-while-revalidate and grace ends, in ms after
    /// `born_ms` (`rare.until_ms` when one does not fit in 32 bits).
    fresh_for_ms: u32,
    stale_while_revalidate_for_ms: u32,
    grace_for_ms: u32,
    path_len: u32,
    /// Where the key starts in `tail` and how long it is (0: not known).
    key_at: u32,
    key_len: u32,
    weight: u32,
    status: StatusCode,
    /// 1 + the index in `COMMON_HEADERS` of the entry's headers, or 0.
    common_headers: u8,
    /// The key is longer than [`HASH_ABOVE`](crate::key::HASH_ABOVE): the
    /// store indexes it by a hash, and `full_key()` returns it.
    hashed: bool,
    /// What few entries have: tags, a Vary marker's names, far-off times.
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Default)]
struct Rare {
    tags: Box<[Box<str>]>,
    vary: Option<Box<[HeaderName]>>,
    /// Freshness, stale-while-revalidate and grace ends (Unix ms), when they
    /// lie too far from `born_ms` for 32-bit offsets.
    until_ms: Option<[u64; 3]>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.vary.is_none() && self.until_ms.is_none()
    }
}

/// Everything an entry holds, as plain owned data: what a store that
/// serialises entries (Redis) decodes into before [`Entry::from_parts`].
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by serialising stores
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryParts {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
    pub(crate) born: u64,
    pub(crate) key_hash: u64,
    pub(crate) born_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) stale_while_revalidate_until_ms: u64,
    pub(crate) grace_until_ms: u64,
    pub(crate) path: String,
    pub(crate) tags: Vec<String>,
    pub(crate) full_key: Option<String>,
    pub(crate) vary: Option<Vec<HeaderName>>,
}

/// Decimal digits of `n`.
#[inline]
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Entry {
    /// Builds an entry from its parts, weighed for a store key of
    /// `key_len` bytes. `None` when the status is not a valid one.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by serialising stores
    pub(crate) fn from_parts(parts: EntryParts, key_len: usize) -> Option<Self> {
        let mut entry = Self::build(parts, None)?;
        entry.compute_weight(key_len);
        Some(entry)
    }

    /// Builds an entry for the memory store from its parts and the full key
    /// it is stored under (kept in the entry and compared on lookup); its
    /// weight counts the key once.
    pub(crate) fn keyed(parts: EntryParts, key: &str) -> Option<Self> {
        let mut entry = Self::build(parts, Some(key))?;
        entry.compute_weight(0);
        Some(entry)
    }

    /// Lays the parts out: one buffer for the body, the `Content-Length`
    /// digits, the path, the key and the header values that are not common.
    fn build(parts: EntryParts, key: Option<&str>) -> Option<Self> {
        let status = StatusCode::from_u16(parts.status).ok()?;
        let hashed = match key {
            Some(k) => k.len() > crate::key::HASH_ABOVE,
            None => parts.full_key.is_some(),
        };
        let key = key.or(parts.full_key.as_deref());
        let body_len = parts.body.len();
        let path = parts.path.as_str();
        // The key usually starts with the path: then only its rest is kept.
        let key_rest = key.map(|k| k.strip_prefix(path).map_or((false, k), |r| (true, r)));
        let mut headers = parts.headers;
        // What describes one connection, or what the cache writes itself, is
        // never stored (a hit appends those without looking for them).
        headers.retain(|(name, _)| !crate::headers::is_unstorable_header(name));
        let etag = match headers.last() {
            Some((name, _)) if name == header::ETAG => headers.pop().map(|(_, v)| v),
            _ => None,
        };
        let common_headers = match headers.as_slice() {
            [(name, value)] if name == header::CONTENT_TYPE => common_value(value),
            _ => None,
        };
        if common_headers.is_some() {
            headers.clear();
        }
        let values = || headers.iter().map(|(_, v)| v).chain(etag.as_ref());
        let owned_values: usize = values()
            .filter(|v| common_value(v).is_none())
            .map(HeaderValue::len)
            .sum();
        let cl = digits(body_len);
        let tail_len = cl + path.len() + key_rest.map_or(0, |(_, r)| r.len()) + owned_values;
        let mut buf = Vec::with_capacity(body_len + tail_len);
        buf.extend_from_slice(&parts.body);
        buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        buf.extend_from_slice(path.as_bytes());
        let (key_at, key_len) = match key_rest {
            Some((true, rest)) => {
                buf.extend_from_slice(rest.as_bytes());
                (cl, path.len() + rest.len())
            }
            Some((false, whole)) => {
                buf.extend_from_slice(whole.as_bytes());
                (cl + path.len(), whole.len())
            }
            None => (cl, 0),
        };
        let mut at = buf.len();
        for v in values() {
            if common_value(v).is_none() {
                buf.extend_from_slice(v.as_bytes());
            }
        }
        let buf = Bytes::from(buf);
        // Each value a slice of the buffer, in the order copied above.
        let mut own = |v: &HeaderValue| match common_value(v) {
            Some(i) => COMMON_VALUES[i].clone(),
            None => {
                let mut copy = HeaderValue::from_maybe_shared(buf.slice(at..at + v.len()))
                    .expect("a valid value stays valid");
                copy.set_sensitive(v.is_sensitive());
                at += v.len();
                copy
            }
        };
        let headers: Box<[(HeaderName, HeaderValue)]> =
            headers.iter().map(|(n, v)| (n.clone(), own(v))).collect();
        let etag = etag.as_ref().map(own);
        let offset = |until: u64| {
            until
                .checked_sub(parts.born_ms)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|&d| d != u32::MAX)
        };
        let offsets = (
            offset(parts.fresh_until_ms),
            offset(parts.stale_while_revalidate_until_ms),
            offset(parts.grace_until_ms),
        );
        let (times, until_ms) = match offsets {
            (Some(f), Some(s), Some(g)) => ((f, s, g), None),
            _ => (
                (u32::MAX, u32::MAX, u32::MAX),
                Some([
                    parts.fresh_until_ms,
                    parts.stale_while_revalidate_until_ms,
                    parts.grace_until_ms,
                ]),
            ),
        };
        let rare = Rare {
            tags: parts.tags.into_iter().map(String::into_boxed_str).collect(),
            vary: parts.vary.map(Vec::into_boxed_slice),
            until_ms,
        };
        let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Some(Entry {
            own_headers: headers,
            etag,
            body: buf.slice(..body_len),
            tail: buf.slice(body_len..),
            born: parts.born,
            key_hash: parts.key_hash,
            born_ms: parts.born_ms,
            fresh_for_ms: times.0,
            stale_while_revalidate_for_ms: times.1,
            grace_for_ms: times.2,
            path_len: u32_of(path.len()),
            key_at: u32_of(key_at),
            key_len: u32_of(key_len),
            weight: 0,
            status,
            common_headers: common_headers.map_or(0, |i| i as u8 + 1),
            hashed,
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
        })
    }

    /// Weighs the entry as allocated: the entry in its `Arc`, the header
    /// slice, the shared buffer, the rare fields, the store's slot, and a
    /// store key of `key_len` bytes kept outside the entry.
    pub(crate) fn compute_weight(&mut self, key_len: usize) {
        const HEADER: usize = std::mem::size_of::<(HeaderName, HeaderValue)>();
        let buffer = self.body.len() + self.tail.len();
        let rare = self.rare.as_ref().map_or(0, |r| {
            std::mem::size_of::<Rare>()
                + r.tags.iter().map(|t| 16 + t.len()).sum::<usize>()
                + r.vary.as_ref().map_or(0, |v| v.len() * 32)
        });
        let w = 16
            + std::mem::size_of::<Entry>()
            + self.own_headers.len() * HEADER
            + buffer
            + if buffer > 0 { SHARED_BUFFER } else { 0 }
            + rare
            + STORE_SLOT
            + key_len;
        self.weight = u32::try_from(w).unwrap_or(u32::MAX);
    }

    /// The `Content-Length` value of the stored body.
    #[inline]
    pub(crate) fn content_length(&self) -> HeaderValue {
        let len = self.body.len();
        crate::headers::small_number(len).unwrap_or_else(|| {
            HeaderValue::from_maybe_shared(self.tail.slice(..digits(len)))
                .expect("digits are a valid value")
        })
    }

    /// The key the entry was stored under, when the entry knows it.
    pub(crate) fn key(&self) -> Option<&str> {
        if self.key_len == 0 {
            return None;
        }
        let at = self.key_at as usize;
        std::str::from_utf8(&self.tail[at..at + self.key_len as usize]).ok()
    }

    /// Whether the entry was stored under exactly this key (entries that do
    /// not know their key match any).
    #[inline]
    pub(crate) fn key_is(&self, key: &str) -> bool {
        if self.key_len == 0 {
            return true;
        }
        let at = self.key_at as usize;
        self.tail[at..at + self.key_len as usize] == *key.as_bytes()
    }

    /// The stored headers but a trailing `ETag`, as a slice.
    #[inline]
    fn header_slice(&self) -> &[(HeaderName, HeaderValue)] {
        match self.common_headers {
            0 => &self.own_headers,
            i => &COMMON_HEADERS[usize::from(i) - 1],
        }
    }

    /// Whether the entry was stored under this store key: its key, or for a
    /// long key, the key's hashed form (entries that do not know their key
    /// match any).
    #[inline]
    pub(crate) fn stored_under(&self, store_key: &str) -> bool {
        if !self.hashed {
            return self.key_is(store_key);
        }
        self.key()
            .is_none_or(|full| crate::key::is_hashed_form_of(store_key, full))
    }

    /// How many headers are stored.
    #[inline]
    pub(crate) fn header_count(&self) -> usize {
        self.header_slice().len() + usize::from(self.etag.is_some())
    }

    #[inline]
    pub(crate) fn tag_slice(&self) -> &[Box<str>] {
        self.rare.as_ref().map_or(&[], |r| &r.tags)
    }

    fn until_ms(&self, i: usize, offset: u32) -> u64 {
        match self.rare.as_ref().and_then(|r| r.until_ms) {
            Some(times) => times[i],
            None => self.born_ms + u64::from(offset),
        }
    }

    /// The hash of the request key (before any Vary variant).
    #[inline]
    pub(crate) fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// When the origin read began, in cache-clock milliseconds (Unix ms).
    pub(crate) fn born_ms(&self) -> u64 {
        self.born_ms
    }

    /// Until when the entry is fresh (Unix ms).
    #[inline]
    pub(crate) fn fresh_until_ms(&self) -> u64 {
        self.until_ms(0, self.fresh_for_ms)
    }

    /// Until when a stale entry may be served while it is refreshed.
    pub(crate) fn stale_while_revalidate_until_ms(&self) -> u64 {
        self.until_ms(1, self.stale_while_revalidate_for_ms)
    }

    /// Until when the entry may be served at all (freshness plus grace):
    /// a store may drop it after this.
    pub(crate) fn grace_until_ms(&self) -> u64 {
        self.until_ms(2, self.grace_for_ms)
    }

    /// The full key of an entry stored under a hashed key.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by serialising stores
    pub(crate) fn full_key(&self) -> Option<&str> {
        if self.hashed {
            self.key()
        } else {
            None
        }
    }

    /// The request headers a Vary marker names (`None` for a response).
    #[inline]
    pub(crate) fn vary(&self) -> Option<&[HeaderName]> {
        self.rare.as_ref().and_then(|r| r.vary.as_deref())
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored response headers (never `Set-Cookie`, nor hop-by-hop ones).
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let etag = self.etag.as_ref().map(|v| (&ETAG, v));
        self.header_slice().iter().map(|(n, v)| (n, v)).chain(etag)
    }

    /// The head of a full response from this entry, ready to clone, with
    /// its `ETag`, `Age` and `Cache-Status` values (the last three) to be
    /// set by position: for the usual entry, a common `Content-Type` and an
    /// `ETag`; `None` for any other.
    #[inline]
    pub(crate) fn ready_head(&self) -> Option<(&'static ResponseHead, &HeaderValue)> {
        let etag = self.etag.as_ref()?;
        let i = usize::from(self.common_headers).checked_sub(1)?;
        let head = READY_HEADS[i].get_or_init(|| {
            let empty = HeaderValue::from_static("");
            let mut head = HeaderMap::with_capacity(4);
            head.append(header::CONTENT_TYPE, COMMON_VALUES[i].clone());
            head.append(header::ETAG, empty.clone());
            head.append(header::AGE, empty.clone());
            head.append(crate::headers::CACHE_STATUS.clone(), empty);
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.headers = head;
            parts
        });
        Some((head, etag))
    }

    /// The stored body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The path the entry was stored for.
    pub fn path(&self) -> &str {
        std::str::from_utf8(self.path_bytes()).unwrap_or("")
    }

    /// The path's bytes (what invalidation checks, without validating them
    /// again as UTF-8).
    #[inline]
    pub(crate) fn path_bytes(&self) -> &[u8] {
        let cl = digits(self.body.len());
        &self.tail[cl..cl + self.path_len as usize]
    }

    /// The tags the entry carries.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tag_slice().iter().map(|t| &**t)
    }

    /// The cache generation when the entry's origin read began.
    #[inline]
    pub fn born(&self) -> u64 {
        self.born
    }

    /// How many bytes the entry is weighed at.
    pub fn weight(&self) -> u64 {
        u64::from(self.weight)
    }
}

/// What a store found for a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Nothing stored.
    Miss,
    /// An entry no invalidation covers (it may still be past its TTL; the
    /// cache judges freshness).
    Found(Arc<Entry>),
    /// An entry an invalidation covers; the store has dropped it.
    Invalidated,
}

/// A store failed (a network store that is down, a timeout). The cache
/// turns this into a bypass; no client ever sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A place to keep entries and the invalidation index.
///
/// Every method takes `&self`; a store is shared by every clone of a
/// [`Cache`](crate::Cache). The in-memory [`MemoryStore`] answers at once;
/// a network store answers asynchronously and may fail, which the cache
/// treats as a bypass.
pub trait Store: Send + Sync + 'static {
    /// Looks a key up and checks the entry against the invalidation index
    /// (entries found invalidated are removed).
    fn get(&self, key: &str) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// Stores an entry under a key, replacing any other.
    fn put(
        &self,
        key: &str,
        entry: Arc<Entry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a key.
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads the logical clock, as an origin read begins.
    fn generation(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records an invalidation of every target at a new generation, which
    /// it returns. Must cost O(number of targets), whatever the number of
    /// entries.
    fn invalidate(
        &self,
        targets: &[Target],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> EntryParts {
        EntryParts {
            status: 200,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, HeaderValue::from_static("\"abc\"")),
            ],
            body: Bytes::from_static(b"hello"),
            born: 7,
            key_hash: 42,
            born_ms: 1_000,
            fresh_until_ms: 61_000,
            stale_while_revalidate_until_ms: 71_000,
            grace_until_ms: 81_000,
            path: "/items/1".into(),
            tags: vec!["t".into()],
            full_key: None,
            vary: None,
        }
    }

    fn headers(e: &Entry) -> Vec<(String, String)> {
        e.headers()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn digits_counts_decimal_digits() {
        for (n, d) in [
            (0, 1),
            (9, 1),
            (10, 2),
            (99, 2),
            (100, 3),
            (1024, 4),
            (usize::MAX, 20),
        ] {
            assert_eq!(digits(n), d, "{n}");
            assert_eq!(digits(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn parts_round_trip() {
        let e = Entry::from_parts(parts(), 10).unwrap();
        assert_eq!(e.status(), StatusCode::OK);
        assert_eq!(
            headers(&e),
            [("content-type", "application/json"), ("etag", "\"abc\"")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(e.body(), "hello");
        assert_eq!(e.content_length(), "5");
        assert_eq!(e.path(), "/items/1");
        assert_eq!(e.tags().collect::<Vec<_>>(), ["t"]);
        assert_eq!((e.born(), e.key_hash(), e.born_ms()), (7, 42, 1_000));
        assert_eq!(e.fresh_until_ms(), 61_000);
        assert_eq!(e.stale_while_revalidate_until_ms(), 71_000);
        assert_eq!(e.grace_until_ms(), 81_000);
        assert_eq!((e.full_key(), e.key(), e.vary()), (None, None, None));
        assert!(e.key_is("anything"), "an entry without its key matches any");
    }

    #[test]
    fn keys_far_times_and_unusual_headers() {
        let mut p = parts();
        p.fresh_until_ms = u64::MAX;
        p.stale_while_revalidate_until_ms = u64::MAX;
        p.grace_until_ms = u64::MAX;
        p.headers
            .insert(0, (header::VARY, HeaderValue::from_static("accept")));
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        p.headers
            .push((HeaderName::from_static("x-secret"), secret));
        let e = Entry::keyed(p, "/items/1?a=1").unwrap();
        assert_eq!(e.fresh_until_ms(), u64::MAX);
        assert_eq!(e.grace_until_ms(), u64::MAX);
        assert_eq!(e.key(), Some("/items/1?a=1"));
        assert_eq!(e.path(), "/items/1");
        assert_eq!(e.full_key(), None);
        assert!(e.key_is("/items/1?a=1") && !e.key_is("/items/1?a=2"));
        let names: Vec<_> = e.headers().map(|(n, _)| n.as_str().to_owned()).collect();
        assert_eq!(names, ["vary", "content-type", "etag", "x-secret"]);
        assert!(e.headers().last().unwrap().1.is_sensitive());

        // A long key is the full key; one that does not start with the path
        // is kept whole.
        let long = format!("/other?{}", "x".repeat(300));
        let e = Entry::keyed(parts(), &long).unwrap();
        assert_eq!(e.full_key(), Some(long.as_str()));
        assert_eq!(e.path(), "/items/1");
        let hashed = format!("#{:032x}", xxhash_rust::xxh3::xxh3_128(long.as_bytes()));
        assert!(e.stored_under(&hashed) && !e.stored_under(&long));
        assert!(Entry::keyed(parts(), "/items/1")
            .unwrap()
            .stored_under("/items/1"));
        let mut p = parts();
        p.full_key = Some(long.clone());
        p.vary = Some(vec![header::ACCEPT]);
        let e = Entry::from_parts(p, 33).unwrap();
        assert_eq!(e.full_key(), Some(long.as_str()));
        assert_eq!(e.vary(), Some(&[header::ACCEPT][..]));
    }

    #[test]
    fn weight_counts_what_is_allocated() {
        let small = Entry::keyed(parts(), "/items/1").unwrap();
        let mut p = parts();
        p.body = Bytes::from(vec![b'x'; 1000]);
        let big = Entry::keyed(p, "/items/1").unwrap();
        assert_eq!(big.weight() - small.weight(), 995 + 3);
        assert!(Entry::from_parts(parts(), 100).unwrap().weight() > small.weight());
        let mut p = parts();
        p.status = 1000;
        assert!(Entry::from_parts(p, 0).is_none());
    }
}
