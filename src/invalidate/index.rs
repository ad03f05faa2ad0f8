//! The generation index: a logical clock and the latest invalidation
//! record per prefix or tag, checked lazily on lookup.
//!
//! Records are keyed by a 64-bit hash of the prefix or tag (see
//! [`target`](super::target)). Two names that collide share a record,
//! which can only flush more than asked, never less.
//!
//! Bounded in bytes: an index is given a budget (the memory store's share
//! of `max_bytes`, see [`MemoryStore`](crate::store::MemoryStore)) and keeps
//! at most [`records_within`] that budget records. Past it, the oldest
//! record goes before a new one is made, and every entry born before it
//! counts as invalidated (a conservative flush: more misses, never a stale
//! answer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

#[cfg(test)]
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Named here by the layer, which records a request's own key.
pub(crate) use super::target::key_hash;
use super::target::{for_each_prefix_bytes, tag_hash};

/// How many expired records one call prunes at most, so that no single
/// request pays for a backlog.
const PRUNE_BATCH: usize = 4096;

/// A record in the order queue: (hash, generation, time in ms).
type Queued = (u64, u64, u64);

/// Bytes a bucket of the record map takes: its (hash, generation) pair and
/// its control byte.
const BUCKET_BYTES: u64 = 17;

/// The control bytes a map allocates past its buckets (one SIMD group).
const GROUP_BYTES: u64 = 16;

/// The most records an index of `budget` bytes keeps.
///
/// The map's buckets are a power of two, `b`, and it holds at most 7/16 of
/// them: out of free slots, hashbrown grows a table only when its items
/// would fill more than half its capacity (7/8 of its buckets), and
/// otherwise rehashes it in place to take back removed slots, so the map
/// never outgrows `b`. The
/// queue is grown by hand, never past the cap. So the index allocates at
/// most `17 b + 16 + 24 × 7 b / 16` bytes, and `b` is the largest power of
/// two for which that fits the budget (16 at least).
pub(crate) fn records_within(budget: u64) -> usize {
    let most = |buckets: u64| {
        buckets * BUCKET_BYTES + GROUP_BYTES + 7 * buckets / 16 * size_of::<Queued>() as u64
    };
    let mut buckets: u64 = 16;
    while most(buckets * 2) <= budget {
        buckets *= 2;
    }
    (7 * buckets / 16) as usize
}

struct Records {
    latest: hashbrown::HashMap<u64, u64, foldhash::fast::RandomState>,
    /// Every record in the order made, oldest first.
    order: VecDeque<Queued>,
}

impl Records {
    /// Bytes the records take on the heap.
    fn allocated(&self) -> u64 {
        (self.latest.allocation_size() + self.order.capacity() * size_of::<Queued>()) as u64
    }
}

/// The in-memory invalidation index.
pub(crate) struct Index {
    clock: AtomicU64,
    len: AtomicUsize,
    /// What the records take on the heap ([`Records::allocated`]).
    bytes: AtomicU64,
    /// The most records kept ([`records_within`] the budget).
    cap: usize,
    records: RwLock<Records>,
    /// The longest lifetime (freshness plus grace) of any stored entry, in
    /// ms: a record older than this can no longer match a live entry.
    horizon_ms: AtomicU64,
    /// The newest generation of any pruned record: an entry born before it
    /// may have been covered by a record that is gone, so it is not stored.
    pruned_gen: AtomicU64,
    /// Entries born before this generation are invalid: records newer than
    /// the horizon were dropped to keep the index within its budget.
    floor: AtomicU64,
}

impl Index {
    /// An index whose records take at most `budget` bytes.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            clock: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            cap: records_within(budget),
            records: RwLock::new(Records {
                latest: hashbrown::HashMap::with_hasher(Default::default()),
                order: VecDeque::new(),
            }),
            horizon_ms: AtomicU64::new(0),
            pruned_gen: AtomicU64::new(0),
            floor: AtomicU64::new(0),
        }
    }

    /// The current generation (read when an origin read begins).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes the records take on the heap now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most records kept.
    #[cfg(test)]
    pub(crate) fn cap(&self) -> usize {
        self.cap
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
    ///
    /// O(targets): at the cap, each new record drops the oldest one first.
    pub(crate) fn invalidate(&self, hashes: &[u64], now_ms: u64) -> u64 {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        let generation = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        for &h in hashes {
            while records.order.len() >= self.cap {
                self.drop_oldest(&mut records, true);
            }
            let (len, room) = (records.order.len(), records.order.capacity());
            if len == room {
                // Doubling, but never past the cap.
                records.order.reserve_exact(len.max(4).min(self.cap - len));
            }
            records.latest.insert(h, generation);
            records.order.push_back((h, generation, now_ms));
        }
        self.prune_locked(&mut records, now_ms);
        generation
    }

    /// Prunes expired records if the lock is free (called off the hot path).
    pub(crate) fn try_prune(&self, now_ms: u64) {
        if self.len() == 0 {
            return;
        }
        if let Ok(mut records) = self.records.try_write() {
            self.prune_locked(&mut records, now_ms);
        }
    }

    /// Drops the oldest record; `early` when it may still match a live
    /// entry (dropped for room, not for age).
    fn drop_oldest(&self, records: &mut Records, early: bool) {
        let Some((h, generation, _)) = records.order.pop_front() else {
            return;
        };
        if records.latest.get(&h) == Some(&generation) {
            records.latest.remove(&h);
        }
        if early {
            // Set before the pruned generation, so a lookup never sees the
            // record gone without the floor.
            self.floor.fetch_max(generation, Ordering::SeqCst);
        }
        self.pruned_gen.fetch_max(generation, Ordering::SeqCst);
    }

    fn prune_locked(&self, records: &mut Records, now_ms: u64) {
        let horizon = self.horizon_ms.load(Ordering::SeqCst);
        for _ in 0..PRUNE_BATCH {
            match records.order.front() {
                Some(&(_, _, at)) if at.saturating_add(horizon) < now_ms => {
                    self.drop_oldest(records, false);
                }
                _ => break,
            }
        }
        if records.order.capacity() > 64 && records.order.len() < records.order.capacity() / 4 {
            records.order.shrink_to_fit();
            records.latest.shrink_to_fit();
        }
        self.len.store(records.latest.len(), Ordering::Relaxed);
        self.bytes.store(records.allocated(), Ordering::Relaxed);
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
    use crate::invalidate::Target;

    #[test]
    fn records_cover_whole_segments_only() {
        let idx = Index::new(1 << 20);
        let born = idx.generation();
        idx.invalidate(&[Target::prefix("/products").hash()], 0);
        assert!(!idx.is_current("/products", &[], 0, born));
        assert!(!idx.is_current("/products/42", &[], 0, born));
        assert!(idx.is_current("/products-archive", &[], 0, born));
        assert!(idx.is_current("/products/42", &[], 0, idx.generation()));
        idx.invalidate(&[Target::tag("t").hash()], 0);
        assert!(!idx.is_current("/x", &["t".into()], 0, born));
    }

    #[test]
    fn a_flood_of_records_stays_within_its_budget() {
        assert_eq!(records_within(0), 7);
        for budget in [4 << 10, 1 << 20, 8 << 20] {
            let idx = Index::new(budget);
            let born = idx.generation();
            let mut most = 0;
            for i in 0..3 * idx.cap() as u64 {
                idx.invalidate(&[xxh3_64_with_seed(&i.to_le_bytes(), 1)], 0);
                most = most.max(idx.bytes());
            }
            assert!(most <= budget, "{most} bytes for a budget of {budget}");
            // The budget is used: less than half of it would have bought
            // twice the buckets.
            assert!(most > budget / 3, "{most} bytes for a budget of {budget}");
            assert_eq!(idx.len(), idx.cap());
            assert!(idx.floor() > born, "records dropped early raise the floor");
            assert!(!idx.is_current("/a", &[], 0, born));
        }
    }
}
