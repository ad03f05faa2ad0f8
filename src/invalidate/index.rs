//! The generation index: a logical clock and the latest invalidation
//! record per prefix or tag, checked lazily on lookup.
//!
//! Records are keyed by a 64-bit hash of the prefix or tag. Two names that
//! collide share a record, which can only flush more than asked, never less.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;

const PREFIX_SEED: u64 = 0x7072_6566;
const TAG_SEED: u64 = 0x0074_6167;
const KEY_SEED: u64 = 0x006b_6579;

/// How many expired records one call prunes at most, so that no single
/// request pays for a backlog.
const PRUNE_BATCH: usize = 4096;

/// The most records the index keeps. Past it, the oldest records are
/// dropped early and every entry born before them counts as invalidated (a
/// conservative flush: more misses, never a stale answer), so the index's
/// memory stays bounded whatever the TTLs and the rate of flushes.
pub(crate) const MAX_RECORDS: usize = 1 << 18;

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
fn for_each_prefix_bytes(bytes: &[u8], mut f: impl FnMut(u64) -> bool) -> bool {
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

#[derive(Default)]
struct Records {
    latest: HashMap<u64, u64, foldhash::fast::RandomState>,
    /// (hash, generation, time in ms) in the order they were made.
    order: VecDeque<(u64, u64, u64)>,
}

/// The in-memory invalidation index.
#[derive(Default)]
pub(crate) struct Index {
    clock: AtomicU64,
    len: AtomicUsize,
    records: RwLock<Records>,
    /// The longest lifetime (freshness plus grace) of any stored entry, in
    /// ms: a record older than this can no longer match a live entry.
    horizon_ms: AtomicU64,
    /// The newest generation of any pruned record: an entry born before it
    /// may have been covered by a record that is gone, so it is not stored.
    pruned_gen: AtomicU64,
    /// Entries born before this generation are invalid: records newer than
    /// the horizon were dropped to keep the index within `MAX_RECORDS`.
    floor: AtomicU64,
}

impl Index {
    /// The current generation (read when an origin read begins).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Raises the pruning horizon to cover an entry living `lifetime_ms`.
    pub(crate) fn extend_horizon(&self, lifetime_ms: u64) {
        self.horizon_ms.fetch_max(lifetime_ms, Ordering::SeqCst);
    }

    /// Whether an entry born at `born` may still be stored: false when a
    /// record that could cover it was pruned.
    pub(crate) fn admits(&self, born: u64) -> bool {
        born >= self.pruned_gen.load(Ordering::SeqCst)
    }

    /// The generation below which every entry counts as invalidated.
    #[inline]
    pub(crate) fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Records an invalidation of every target; returns the new generation.
    pub(crate) fn invalidate(&self, hashes: &[u64], now_ms: u64) -> u64 {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        let generation = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        for &h in hashes {
            records.latest.insert(h, generation);
            records.order.push_back((h, generation, now_ms));
        }
        self.prune_locked(&mut records, now_ms);
        self.len.store(records.latest.len(), Ordering::Relaxed);
        generation
    }

    /// Prunes expired records if the lock is free (called off the hot path).
    pub(crate) fn try_prune(&self, now_ms: u64) {
        if self.len() == 0 {
            return;
        }
        if let Ok(mut records) = self.records.try_write() {
            self.prune_locked(&mut records, now_ms);
            self.len.store(records.latest.len(), Ordering::Relaxed);
        }
    }

    fn prune_locked(&self, records: &mut Records, now_ms: u64) {
        let horizon = self.horizon_ms.load(Ordering::SeqCst);
        for _ in 0..PRUNE_BATCH {
            let over = records.order.len() > MAX_RECORDS;
            match records.order.front() {
                Some(&(h, generation, at)) if over || at.saturating_add(horizon) < now_ms => {
                    records.order.pop_front();
                    if records.latest.get(&h) == Some(&generation) {
                        records.latest.remove(&h);
                    }
                    if over {
                        // Set before the pruned generation, so a lookup
                        // never sees the record gone without the floor.
                        self.floor.fetch_max(generation, Ordering::SeqCst);
                    }
                    self.pruned_gen.fetch_max(generation, Ordering::SeqCst);
                }
                _ => break,
            }
        }
        if records.order.capacity() > 64 && records.order.len() < records.order.capacity() / 4 {
            records.order.shrink_to_fit();
            records.latest.shrink_to_fit();
        }
    }

    /// Whether an entry for `path` with `tags`, born at `born`, is still
    /// valid: no record covering it is newer than its birth.
    #[inline]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_current(&self, path: &str, tags: &[Box<str>], key: u64, born: u64) -> bool {
        self.is_current_bytes(path.as_bytes(), tags, key, born)
    }

    /// [`is_current`](Self::is_current) with the path as bytes.
    #[inline(always)]
    pub(crate) fn is_current_bytes(
        &self,
        path: &[u8],
        tags: &[Box<str>],
        key: u64,
        born: u64,
    ) -> bool {
        if born < self.floor() {
            return false;
        }
        // No record at all, or none newer than the entry: every record's
        // generation is at most the clock's, so none can cover an entry
        // born at the clock's current value.
        if self.len() == 0 || born >= self.generation() {
            return true;
        }
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let fresh = |h: u64| records.latest.get(&h).is_none_or(|&g| g <= born);
        fresh(key) && for_each_prefix_bytes(path, fresh) && tags.iter().all(|t| fresh(tag_hash(t)))
    }
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

    #[test]
    fn records_cover_whole_segments_only() {
        let idx = Index::default();
        let born = idx.generation();
        idx.invalidate(&[Target::prefix("/products").hash()], 0);
        assert!(!idx.is_current("/products", &[], 0, born));
        assert!(!idx.is_current("/products/42", &[], 0, born));
        assert!(idx.is_current("/products-archive", &[], 0, born));
        assert!(idx.is_current("/products/42", &[], 0, idx.generation()));
        idx.invalidate(&[Target::tag("t").hash()], 0);
        assert!(!idx.is_current("/x", &["t".into()], 0, born));
    }
}
