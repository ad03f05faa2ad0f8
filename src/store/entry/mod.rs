//! [`Entry`]: a stored response and what invalidation needs to judge it,
//! packed into one buffer ([`layout`]), and built by stores that keep
//! entries elsewhere ([`EntryBuilder`]).

mod builder;
mod layout;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

pub use builder::EntryBuilder;
pub(crate) use builder::EntryParts;
pub(crate) use layout::{ResponseHead, Shape};
use layout::{COMMON_HEADERS, ETAG};

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
    /// Stale-if-error end, likewise.
    error_for_ms: u32,
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
    /// Answers from it carry no `Cache-Status` (a cache built with
    /// `CacheBuilder::lean_headers`).
    lean: bool,
    /// What few entries have: tags, a Vary marker's names, far-off times.
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Default)]
struct Rare {
    tags: Box<[Box<str>]>,
    vary: Option<Box<[HeaderName]>>,
    /// Freshness, stale-while-revalidate, grace and stale-if-error ends
    /// (Unix ms), when they lie too far from `born_ms` for 32-bit offsets.
    until_ms: Option<[u64; 4]>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.vary.is_none() && self.until_ms.is_none()
    }
}

/// Decimal digits of `n`.
#[inline]
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Entry {
    /// The `Content-Length` value of the stored body.
    #[inline]
    pub(crate) fn content_length(&self) -> HeaderValue {
        let len = self.body.len();
        crate::headers::small_number(len).unwrap_or_else(|| {
            HeaderValue::from_maybe_shared(self.tail.slice(..digits(len)))
                .expect("digits are a valid value")
        })
    }

    /// The key the entry was stored under, when the entry keeps it: the
    /// memory store's entries do, and a hashed long key's entry does
    /// ([`full_key`](Self::full_key)); an [`EntryBuilder`]'s does not.
    pub fn key(&self) -> Option<&str> {
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

    /// The hash of the request key (before any `Vary` variant), which an
    /// exact-request flush ([`Target::Key`](crate::Target::Key)) is
    /// recorded under. A store that serialises entries keeps it and gives
    /// it back to [`EntryBuilder::key_hash`].
    #[inline]
    pub fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// When the stored response was generated, in cache-clock milliseconds
    /// (Unix ms): when its origin read began, less the age the response
    /// already had on arrival (its `Age`, and the time it took, RFC 9111
    /// section 4.2.3). Its `Age` on a hit is the time since.
    pub fn born_ms(&self) -> u64 {
        self.born_ms
    }

    /// Until when the entry is fresh (Unix ms).
    #[inline]
    pub fn fresh_until_ms(&self) -> u64 {
        self.until_ms(0, self.fresh_for_ms)
    }

    /// Until when a stale entry may be served while it is refreshed.
    pub fn stale_while_revalidate_until_ms(&self) -> u64 {
        self.until_ms(1, self.stale_while_revalidate_for_ms)
    }

    /// Until when the entry is kept (freshness plus grace, and the time a
    /// stale entry is kept to be revalidated): a store may drop it after
    /// this.
    pub fn grace_until_ms(&self) -> u64 {
        self.until_ms(2, self.grace_for_ms)
    }

    /// Whether answers from this entry leave out `Cache-Status` (it was
    /// stored by a cache built with
    /// [`CacheBuilder::lean_headers`](crate::CacheBuilder::lean_headers)).
    pub fn lean_headers(&self) -> bool {
        self.lean
    }

    /// Until when a stale entry may answer in place of an origin error
    /// (stale-if-error); never after [`grace_until_ms`](Self::grace_until_ms).
    pub fn stale_if_error_until_ms(&self) -> u64 {
        self.until_ms(3, self.error_for_ms)
            .min(self.grace_until_ms())
    }

    /// The full key of an entry stored under a hashed key (a key longer
    /// than 200 bytes is stored by its hash, and compared in full on
    /// lookup); `None` for any other.
    pub fn full_key(&self) -> Option<&str> {
        if self.hashed {
            self.key()
        } else {
            None
        }
    }

    /// The request headers a `Vary` marker names (`None` for a response).
    /// A marker is stored under a request's key when its response varies:
    /// it tells the cache which request headers select the variant.
    #[inline]
    pub fn vary(&self) -> Option<&[HeaderName]> {
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
