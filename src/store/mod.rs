//! Where entries live: the [`Store`] trait and the in-memory [`MemoryStore`].
//!
//! A store keeps entries by key and owns the invalidation index, so that a
//! store shared by several processes (Redis) can make an invalidation on
//! one of them hold on all of them.

mod memory;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

pub use memory::MemoryStore;

pub use crate::invalidate::Target;

/// Bytes counted for an entry's bookkeeping on top of its key, headers and
/// body (the entry struct, its `Arc` and the store's slot).
pub(crate) const ENTRY_OVERHEAD: usize = 160;

/// A stored response, with what invalidation needs to judge it: the path it
/// was stored for, its tags, and the generation at which its origin read
/// began.
///
/// An entry owns all its bytes: nothing in it points into a request's or a
/// connection's buffers.
#[derive(Debug)]
pub struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: Box<[(HeaderName, HeaderValue)]>,
    pub(crate) body: Bytes,
    /// The body's length as a `Content-Length` value, made once.
    pub(crate) content_length: HeaderValue,
    pub(crate) born: u64,
    /// The hash of the request key (before any Vary variant), which an
    /// exact-request flush records.
    pub(crate) key_hash: u64,
    pub(crate) born_ms: u64,
    pub(crate) fresh_until_ms: u64,
    /// Until when a stale entry may be served while it is refreshed.
    pub(crate) stale_while_revalidate_until_ms: u64,
    /// Until when the entry may be served stale at all (the longer of its
    /// stale-while-revalidate and stale-if-error windows).
    pub(crate) grace_until_ms: u64,
    pub(crate) path: Box<str>,
    pub(crate) tags: Box<[Box<str>]>,
    /// The full key, kept when the store indexes the entry by its hash.
    pub(crate) full_key: Option<Box<str>>,
    /// `Some` for a marker saying that the response at this key varies on
    /// these request headers; the variants live under their own keys.
    pub(crate) vary: Option<Box<[HeaderName]>>,
    pub(crate) weight: u32,
}

/// Everything an entry holds, as plain owned data: what a store that
/// serialises entries (Redis) decodes into before [`Entry::from_parts`].
#[allow(dead_code)] // used by serialising stores
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

impl Entry {
    pub(crate) fn empty() -> Self {
        Entry {
            status: StatusCode::OK,
            headers: Box::new([]),
            body: Bytes::new(),
            content_length: HeaderValue::from_static("0"),
            born: 0,
            key_hash: 0,
            born_ms: 0,
            fresh_until_ms: 0,
            stale_while_revalidate_until_ms: 0,
            grace_until_ms: 0,
            path: Box::from(""),
            tags: Box::new([]),
            full_key: None,
            vary: None,
            weight: 0,
        }
    }

    /// Builds an entry from its parts, weighed for a store key of
    /// `key_len` bytes. `None` when the status is not a valid one.
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn from_parts(parts: EntryParts, key_len: usize) -> Option<Self> {
        let mut entry = Entry {
            status: StatusCode::from_u16(parts.status).ok()?,
            headers: parts.headers.into(),
            content_length: HeaderValue::from(parts.body.len()),
            body: parts.body,
            born: parts.born,
            key_hash: parts.key_hash,
            born_ms: parts.born_ms,
            fresh_until_ms: parts.fresh_until_ms,
            stale_while_revalidate_until_ms: parts.stale_while_revalidate_until_ms,
            grace_until_ms: parts.grace_until_ms,
            path: parts.path.into(),
            tags: parts.tags.into_iter().map(String::into_boxed_str).collect(),
            full_key: parts.full_key.map(String::into_boxed_str),
            vary: parts.vary.map(Vec::into_boxed_slice),
            weight: 0,
        };
        entry.compute_weight(key_len);
        Some(entry)
    }

    /// The hash of the request key (before any Vary variant).
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// When the origin read began, in cache-clock milliseconds (Unix ms).
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn born_ms(&self) -> u64 {
        self.born_ms
    }

    /// Until when the entry is fresh (Unix ms).
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn fresh_until_ms(&self) -> u64 {
        self.fresh_until_ms
    }

    /// Until when a stale entry may be served while it is refreshed.
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn stale_while_revalidate_until_ms(&self) -> u64 {
        self.stale_while_revalidate_until_ms
    }

    /// Until when the entry may be served at all (freshness plus grace):
    /// a store may drop it after this.
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn grace_until_ms(&self) -> u64 {
        self.grace_until_ms
    }

    /// The full key of an entry stored under a hashed key.
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn full_key(&self) -> Option<&str> {
        self.full_key.as_deref()
    }

    /// The request headers a Vary marker names (`None` for a response).
    #[allow(dead_code)] // used by serialising stores
    pub(crate) fn vary(&self) -> Option<&[HeaderName]> {
        self.vary.as_deref()
    }

    pub(crate) fn compute_weight(&mut self, key_len: usize) {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 8)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        let w = key_len
            + self.full_key.as_ref().map_or(0, |k| k.len())
            + self.path.len()
            + headers
            + tags
            + self.body.len()
            + self.vary.as_ref().map_or(0, |v| v.len() * 24)
            + ENTRY_OVERHEAD;
        self.weight = u32::try_from(w).unwrap_or(u32::MAX);
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored response headers (never `Set-Cookie`, nor hop-by-hop ones).
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers.iter().map(|(n, v)| (n, v))
    }

    /// The stored body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The path the entry was stored for.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tags the entry carries.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &**t)
    }

    /// The cache generation when the entry's origin read began.
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
