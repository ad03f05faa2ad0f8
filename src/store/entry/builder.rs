//! Building an entry: from the cache's own parts, or, for a store that
//! keeps entries elsewhere, field by field with [`EntryBuilder`].

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::Entry;

/// Everything an entry holds, as plain owned data: what the cache fills in
/// when it stores a response, and what the Redis codec decodes into.
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
    pub(crate) stale_if_error_until_ms: u64,
    pub(crate) lean: bool,
    pub(crate) path: String,
    pub(crate) tags: Vec<String>,
    pub(crate) full_key: Option<String>,
    pub(crate) vary: Option<Vec<HeaderName>>,
}

impl Entry {
    /// Builds an entry from its parts, weighed for a store key of
    /// `key_len` bytes. `None` when the status is not a valid one.
    pub(crate) fn from_parts(parts: EntryParts, key_len: usize) -> Option<Self> {
        let (mut entry, names_heap) = Self::lay_out(parts, None)?;
        entry.compute_weight(key_len, names_heap);
        Some(entry)
    }

    /// Builds an entry for the memory store from its parts and the full key
    /// it is stored under (kept in the entry and compared on lookup); its
    /// weight counts the key once.
    pub(crate) fn keyed(parts: EntryParts, key: &str) -> Option<Self> {
        let (mut entry, names_heap) = Self::lay_out(parts, Some(key))?;
        entry.compute_weight(0, names_heap);
        Some(entry)
    }
}

/// Builds an [`Entry`] field by field: what a [`Store`](crate::store::Store)
/// that keeps entries elsewhere (a database, another cache) needs to give
/// back what it was handed. Read every field of the entry it was given
/// with the accessors of the same names, store them, and build the entry
/// again from them on lookup.
///
/// Times are milliseconds on the cache's clock, which counts from the Unix
/// epoch ([`Entry::born_ms`]). Unset, an entry is a `200` with no headers,
/// an empty body, the path `/`, born at generation 0 now (wall clock), and
/// already stale.
///
/// ```
/// use bytes::Bytes;
/// use http::{header, HeaderValue, StatusCode};
/// use tower_response_cache::store::Entry;
///
/// let now = 1_700_000_000_000;
/// let entry = Entry::builder()
///     .status(StatusCode::OK)
///     .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
///     .body(Bytes::from_static(b"[1,2,3]"))
///     .key("/products?page=2")
///     .path("/products")
///     .born(41)
///     .born_ms(now)
///     .fresh_until_ms(now + 60_000)
///     .grace_until_ms(now + 90_000)
///     .tags(["products"])
///     .build();
///
/// // What a store keeps of it, read back the same way.
/// let copy = Entry::builder()
///     .status(entry.status())
///     .headers(entry.headers().map(|(n, v)| (n.clone(), v.clone())))
///     .body(entry.body().clone())
///     .key_hash(entry.key_hash())
///     .path(entry.path())
///     .born(entry.born())
///     .born_ms(entry.born_ms())
///     .fresh_until_ms(entry.fresh_until_ms())
///     .stale_while_revalidate_until_ms(entry.stale_while_revalidate_until_ms())
///     .grace_until_ms(entry.grace_until_ms())
///     .stale_if_error_until_ms(entry.stale_if_error_until_ms())
///     .lean_headers(entry.lean_headers())
///     .tags(entry.tags())
///     .build();
/// assert_eq!(copy.body(), entry.body());
/// assert_eq!(copy.grace_until_ms(), now + 90_000);
/// assert_eq!(copy.key_hash(), entry.key_hash());
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct EntryBuilder {
    parts: EntryParts,
    status: StatusCode,
    stale_while_revalidate_until_ms: Option<u64>,
    stale_if_error_until_ms: Option<u64>,
    store_key_len: usize,
}

impl Entry {
    /// Starts building an entry (see [`EntryBuilder`]).
    pub fn builder() -> EntryBuilder {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        EntryBuilder {
            parts: EntryParts {
                status: 200,
                path: "/".into(),
                born_ms: now_ms,
                fresh_until_ms: now_ms,
                grace_until_ms: now_ms,
                ..EntryParts::default()
            },
            status: StatusCode::OK,
            stale_while_revalidate_until_ms: None,
            stale_if_error_until_ms: None,
            store_key_len: 0,
        }
    }
}

impl EntryBuilder {
    /// The response status.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Appends a response header (repeated names are kept, in order).
    /// Headers the cache never stores (hop-by-hop ones, `Age`,
    /// `Content-Length`, `Cache-Status`) are dropped when it is built.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.parts.headers.push((name, value));
        self
    }

    /// Appends response headers, in order.
    pub fn headers(mut self, headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> Self {
        self.parts.headers.extend(headers);
        self
    }

    /// The response body. The entry copies it into a buffer of its own.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.parts.body = body.into();
        self
    }

    /// The request key the entry answers (as [`Store::put`] was given
    /// it): its hash becomes the entry's [`key_hash`](Entry::key_hash), and
    /// its length is weighed. The entry does not keep the key itself: the
    /// store looks entries up by it.
    ///
    /// [`Store::put`]: crate::store::Store::put
    pub fn key(mut self, key: &str) -> Self {
        self.parts.key_hash = crate::invalidate::target::key_hash(key);
        self.store_key_len = key.len();
        self
    }

    /// The hash an exact-request flush is recorded under, as
    /// [`Entry::key_hash`] gave it (instead of [`key`](Self::key)).
    pub fn key_hash(mut self, hash: u64) -> Self {
        self.parts.key_hash = hash;
        self
    }

    /// The full key of an entry stored under a hashed key, as
    /// [`Entry::full_key`] gave it.
    pub fn full_key(mut self, full_key: Option<String>) -> Self {
        self.parts.full_key = full_key;
        self
    }

    /// The length of the key the store keeps the entry under, added to its
    /// weight (instead of [`key`](Self::key)).
    pub fn store_key_len(mut self, len: usize) -> Self {
        self.store_key_len = len;
        self
    }

    /// The request path the entry was stored for: what prefix flushes
    /// match.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.parts.path = path.into();
        self
    }

    /// The generation at which the entry's origin read began
    /// ([`Store::generation`](crate::store::Store::generation)).
    pub fn born(mut self, generation: u64) -> Self {
        self.parts.born = generation;
        self
    }

    /// When the entry's origin read began.
    pub fn born_ms(mut self, ms: u64) -> Self {
        self.parts.born_ms = ms;
        self
    }

    /// Until when the entry is fresh.
    pub fn fresh_until_ms(mut self, ms: u64) -> Self {
        self.parts.fresh_until_ms = ms;
        self
    }

    /// Until when the entry may be served stale while one request
    /// refreshes it (default: its grace end).
    pub fn stale_while_revalidate_until_ms(mut self, ms: u64) -> Self {
        self.stale_while_revalidate_until_ms = Some(ms);
        self
    }

    /// Until when the entry is kept (freshness plus grace); a store may
    /// drop it after this.
    pub fn grace_until_ms(mut self, ms: u64) -> Self {
        self.parts.grace_until_ms = ms;
        self
    }

    /// Whether answers from the entry leave out `Cache-Status`, as
    /// [`Entry::lean_headers`] gave it.
    pub fn lean_headers(mut self, lean: bool) -> Self {
        self.parts.lean = lean;
        self
    }

    /// Until when the stale entry may answer in place of an origin error
    /// (default: its grace end).
    pub fn stale_if_error_until_ms(mut self, ms: u64) -> Self {
        self.stale_if_error_until_ms = Some(ms);
        self
    }

    /// The tags the entry carries (what tag flushes match).
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.parts.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Makes the entry a `Vary` marker naming these request headers, as
    /// [`Entry::vary`] gave them.
    pub fn vary(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.parts.vary = Some(names.into_iter().collect());
        self
    }

    /// Builds the entry, weighed as allocated.
    pub fn build(self) -> Entry {
        let mut parts = self.parts;
        parts.status = self.status.as_u16();
        parts.stale_while_revalidate_until_ms = self
            .stale_while_revalidate_until_ms
            .unwrap_or(parts.grace_until_ms);
        parts.stale_if_error_until_ms =
            self.stale_if_error_until_ms.unwrap_or(parts.grace_until_ms);
        Entry::from_parts(parts, self.store_key_len).expect("a StatusCode is a valid status")
    }
}
