//! What an invalidation names ([`Target`]), and the 64-bit hashes the
//! index records it under: a prefix's (in its canonical form), a tag's, a
//! request key's, and every segment prefix of an entry's path.

use xxhash_rust::xxh3::xxh3_64_with_seed;

const PREFIX_SEED: u64 = 0x7072_6566;
const TAG_SEED: u64 = 0x0074_6167;
const KEY_SEED: u64 = 0x006b_6579;

/// What an invalidation flushes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A path prefix, matched on whole segments: `/products` covers
    /// `/products`, `/products/42` and `/products?page=2`, never
    /// `/products-archive`; `/` covers everything.
    Prefix(String),
    /// Every entry carrying this tag.
    Tag(String),
    /// One request's cache key, as built by the layer (what
    /// [`CacheLayer::invalidate_request`](crate::CacheLayer::invalidate_request)
    /// flushes). Hidden: keys are the layer's business.
    #[doc(hidden)]
    Key(String),
}

impl Target {
    /// A path-prefix target.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Target::Prefix(prefix.into())
    }

    /// A tag target.
    pub fn tag(tag: impl Into<String>) -> Self {
        Target::Tag(tag.into())
    }

    pub(crate) fn hash(&self) -> u64 {
        match self {
            // Whichever spelling names the path, its canonical form: the
            // one entries are stored under.
            Target::Prefix(p) => prefix_hash(normalise_prefix(&crate::path::canonical(p))),
            Target::Tag(t) => tag_hash(t),
            Target::Key(k) => key_hash(k),
        }
    }
}

impl From<&str> for Target {
    fn from(prefix: &str) -> Self {
        Target::Prefix(prefix.to_owned())
    }
}

impl From<String> for Target {
    fn from(prefix: String) -> Self {
        Target::Prefix(prefix)
    }
}

/// `/products/` and `/products` are the same prefix; the query is not
/// part of it; an empty prefix is the root.
pub(crate) fn normalise_prefix(p: &str) -> &str {
    let p = p.split('?').next().unwrap_or("");
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

#[inline]
pub(crate) fn prefix_hash(p: &str) -> u64 {
    xxh3_64_with_seed(p.as_bytes(), PREFIX_SEED)
}

/// The hash an entry's own key is recorded under (exact-request flushes).
#[inline]
pub(crate) fn key_hash(key: &str) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), KEY_SEED)
}

#[inline]
pub(crate) fn tag_hash(t: &str) -> u64 {
    xxh3_64_with_seed(t.as_bytes(), TAG_SEED)
}

/// Calls `f` with the hash of every segment prefix of `path`: `/`, then
/// `/a`, `/a/b`, ... (a trailing slash adds nothing); stops when `f`
/// returns `false`.
#[allow(dead_code)] // used by serialising stores
pub(crate) fn for_each_prefix(path: &str, f: impl FnMut(u64) -> bool) -> bool {
    for_each_prefix_bytes(path.as_bytes(), f)
}

/// [`for_each_prefix`] over the path's bytes.
#[inline]
pub(crate) fn for_each_prefix_bytes(bytes: &[u8], mut f: impl FnMut(u64) -> bool) -> bool {
    let hash = |p: &[u8]| xxh3_64_with_seed(p, PREFIX_SEED);
    if !f(hash(b"/")) {
        return false;
    }
    let mut i = 1;
    while i <= bytes.len() {
        let boundary = i == bytes.len() || bytes[i] == b'/';
        if boundary && i > 1 && bytes[i - 1] != b'/' && !f(hash(&bytes[..i])) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(path: &str) -> usize {
        let mut n = 0;
        for_each_prefix(path, |_| {
            n += 1;
            true
        });
        n
    }

    #[test]
    fn segment_prefixes() {
        assert_eq!(prefixes("/"), 1);
        assert_eq!(prefixes("/products"), 2);
        assert_eq!(prefixes("/products/"), 2);
        assert_eq!(prefixes("/products/42"), 3);
        assert_eq!(normalise_prefix("/products/"), "/products");
        assert_eq!(normalise_prefix(""), "/");
    }
}
