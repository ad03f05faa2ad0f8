//! The embedded store: quick_cache weighed in bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nohash_hasher::BuildNoHashHasher;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

use super::{Entry, Lookup, Store, StoreError, Target};
use crate::cache::Clock;
use crate::invalidate::index::Index;

/// The 64-bit hash a key is stored under, seeded per store so that a
/// client cannot choose keys whose hashes crowd one shard or one probe
/// sequence (the map uses the hash as it is).
#[inline]
fn store_hash(seed: u64, key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed)
}

/// quick_cache admits an item only when it fits in this share of a shard
/// (its default hot allocation).
const HOT_SHARE: f64 = 0.97;

/// At most this many shards: enough for two cores' worth of contention
/// and then some.
const MAX_SHARDS: u64 = 64;

/// The invalidation index may take up to 1/`INDEX_SHARE` of `max_bytes`.
const INDEX_SHARE: u64 = 8;

/// The store gives the index room in this many steps (of 1/64 of
/// `max_bytes` each), so that its capacity changes at most this many times.
const INDEX_STEPS: u64 = 8;

/// Bytes left between the heaviest entry admitted and a shard's share, for
/// quick_cache's rounding when the capacity changes.
const ROUNDING: u64 = 64;

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<u64, Arc<Entry>> for ByBytes {
    #[inline]
    fn weight(&self, _key: &u64, val: &Arc<Entry>) -> u64 {
        val.weight()
    }
}

/// What the store counts as items leave it: evictions, and the `Vary`
/// markers it holds (so that the entries it reports are responses).
#[derive(Default)]
struct Tally {
    evictions: AtomicU64,
    markers: AtomicU64,
}

impl Tally {
    /// An item left the store (evicted, replaced, refused or removed).
    fn gone(&self, item: &Entry) {
        if item.vary().is_some() {
            self.markers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<Tally>);

impl Lifecycle<u64, Arc<Entry>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _key: u64, val: Arc<Entry>) {
        self.0.evictions.fetch_add(1, Ordering::Relaxed);
        self.0.gone(&val);
    }
}

/// The in-memory store: a quick_cache (S3-FIFO eviction, sharded locks)
/// weighed in bytes, plus the in-process invalidation index.
///
/// Both live within `max_bytes`: the index's records may take up to an
/// eighth of it (at most 63 bytes a record: 114,688 records in 64 MiB),
/// and the entries what the index leaves. The index takes its room only as
/// its records need it, in steps of 1/64 of `max_bytes` (the store evicts
/// to make way), and keeps what it took: a cache that once needed that
/// many records is ready to need them again, and the store's capacity
/// changes at most eight times.
///
/// Entries are indexed by a 64-bit hash of their store key (the key, or the
/// hashed form of a long one); each entry keeps its key, and a lookup whose
/// key differs (a collision) is a miss.
///
/// quick_cache divides its weight budget evenly across shards and silently
/// refuses an item heavier than a shard's share, so the shard count is
/// chosen here so that the largest entry the cache will ever offer (the
/// body limit plus headers and key) fits; heavier entries are refused
/// before insertion and counted.
pub struct MemoryStore {
    map: QuickCache<u64, Arc<Entry>, ByBytes, BuildNoHashHasher<u64>, CountEvictions>,
    pub(crate) index: Index,
    clock: Clock,
    max_item_weight: u64,
    tally: Arc<Tally>,
    /// The seed of [`store_hash`], random per store.
    seed: u64,
    max_bytes: u64,
    /// The most the index may take ([`INDEX_SHARE`]).
    index_budget: u64,
    /// What the store has given the index so far: its capacity is
    /// `max_bytes` less this.
    index_room: AtomicU64,
    /// Held while the room is raised, so that two raises keep their order.
    raising: Mutex<()>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.map.len())
            .field("bytes", &self.map.weight())
            .field("shards", &self.map.num_shards())
            .field("max_item_weight", &self.max_item_weight)
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes`, able to hold any single entry
    /// weighing up to `largest_entry` bytes.
    ///
    /// # Errors
    ///
    /// When `largest_entry` does not fit in `max_bytes` at all.
    pub(crate) fn new(max_bytes: u64, largest_entry: u64, clock: Clock) -> Result<Self, String> {
        let index_budget = max_bytes / INDEX_SHARE;
        // The entries' share once the index has taken all of its own: the
        // largest entry must still fit a shard then.
        let least = max_bytes - index_budget;
        let usable = (least as f64 * HOT_SHARE) as u64;
        let fitted = largest_entry.saturating_add(2 * ROUNDING);
        if largest_entry == 0 || fitted > usable {
            return Err(format!(
                "max_bytes ({max_bytes}) cannot hold one entry of the largest size \
                 ({largest_entry} bytes: max_body_bytes plus headers and key) beside \
                 the invalidation index's share (an eighth); raise max_bytes or lower \
                 max_body_bytes"
            ));
        }
        // The largest power of two such that one shard's admissible share
        // still holds the largest entry.
        let fit = (usable / fitted).clamp(1, MAX_SHARDS);
        let shards = 1u64 << (63 - fit.leading_zeros());
        // Estimated items: assume entries of about 2 KiB on average.
        let estimated = (max_bytes / 2048).clamp(shards * 32, 4 << 20) as usize;
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(estimated)
            // A multiple of the shard count: each shard gets an exact share.
            .weight_capacity(max_bytes / shards * shards)
            .hot_allocation(HOT_SHARE)
            .build()
            .map_err(|e| format!("{e:?}"))?;
        let tally = Arc::new(Tally::default());
        let map = QuickCache::with_options(
            options,
            ByBytes,
            // The keys are already 64-bit hashes (xxh3): hashing them again
            // would only cost time.
            BuildNoHashHasher::default(),
            CountEvictions(tally.clone()),
        );
        let shards = map.num_shards() as u64;
        let max_item_weight = ((least / shards) as f64 * HOT_SHARE) as u64 - ROUNDING;
        Ok(Self {
            map,
            index: Index::new(index_budget),
            clock,
            max_item_weight,
            tally,
            seed: std::hash::BuildHasher::hash_one(&foldhash::fast::RandomState::default(), 0u64),
            max_bytes,
            index_budget,
            index_room: AtomicU64::new(0),
            raising: Mutex::new(()),
        })
    }

    /// Gives the index the room its records take now, if it has less:
    /// rounded up to a step, and taken from the entries' capacity.
    fn make_room_for_index(&self) {
        if self.index.bytes() <= self.index_room.load(Ordering::Acquire) {
            return;
        }
        let _raising = self.raising.lock().unwrap_or_else(|e| e.into_inner());
        let needed = self.index.bytes();
        if needed <= self.index_room.load(Ordering::Acquire) {
            return;
        }
        let step = self.index_budget.div_ceil(INDEX_STEPS).max(1);
        let room = needed
            .div_ceil(step)
            .saturating_mul(step)
            .min(self.index_budget);
        let shards = self.map.num_shards() as u64;
        self.map
            .set_capacity((self.max_bytes - room) / shards * shards);
        self.index_room.store(room, Ordering::Release);
    }

    /// Bytes the invalidation index's records take now (within
    /// `max_bytes`, beside [`bytes`](Self::bytes)).
    pub(crate) fn index_bytes(&self) -> u64 {
        self.index.bytes()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held, as weighed.
    pub fn bytes(&self) -> u64 {
        self.map.weight()
    }

    /// The heaviest entry this store admits.
    pub fn max_item_weight(&self) -> u64 {
        self.max_item_weight
    }

    /// Every entry held, cloned out one at a time (for the admin view).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn entries(&self) -> impl Iterator<Item = Arc<Entry>> + '_ {
        self.map.iter().map(|(_, entry)| entry)
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.tally.evictions.load(Ordering::Relaxed)
    }

    /// Responses held: the items, less the `Vary` markers that say which
    /// request headers a URL's variants are keyed on.
    pub(crate) fn responses(&self) -> usize {
        let markers = self.tally.markers.load(Ordering::Relaxed) as usize;
        self.map.len().saturating_sub(markers)
    }

    /// Removes the item under `hash` when `matches` says so, counting a
    /// marker that goes.
    fn remove_where(&self, hash: u64, matches: impl FnOnce(&Arc<Entry>) -> bool) {
        if let Some((_, gone)) = self.map.remove_if(&hash, matches) {
            self.tally.gone(&gone);
        }
    }

    /// Looks a key up now (the memory store never waits).
    #[inline(always)]
    pub(crate) fn lookup_now(&self, key: &str) -> Lookup {
        let hash = store_hash(self.seed, key);
        let Some(entry) = self.map.get(&hash) else {
            return Lookup::Miss;
        };
        if !entry.stored_under(key) {
            // Another key with the same hash.
            return Lookup::Miss;
        }
        if self.index.is_current_bytes(
            entry.path_bytes(),
            entry.tag_slice(),
            entry.key_hash(),
            entry.born(),
        ) {
            Lookup::Found(entry)
        } else {
            self.remove_where(hash, |v| Arc::ptr_eq(v, &entry));
            Lookup::Invalidated
        }
    }

    /// Stores an entry now; `false` when it is refused (too heavy for a
    /// shard, or born before a pruned invalidation record).
    pub(crate) fn put_now(&self, key: &str, entry: Arc<Entry>) -> bool {
        if entry.weight() > self.max_item_weight {
            return false;
        }
        self.index
            .extend_horizon(entry.grace_until_ms().saturating_sub(entry.born_ms()));
        if !self.index.admits(entry.born()) {
            return false;
        }
        let hash = store_hash(self.seed, key);
        if entry.vary().is_some() {
            // Counted before it goes in: whatever replaces or evicts it
            // counts it out.
            self.tally.markers.fetch_add(1, Ordering::Relaxed);
        }
        self.map.insert(hash, entry.clone());
        // A record pruned between the check and the insert: take it back.
        if !self.index.admits(entry.born()) {
            self.remove_where(hash, |v| Arc::ptr_eq(v, &entry));
            return false;
        }
        self.index.try_prune(self.clock.now_ms());
        true
    }

    pub(crate) fn remove_now(&self, key: &str) {
        let hash = store_hash(self.seed, key);
        self.remove_where(hash, |v| v.stored_under(key));
    }

    pub(crate) fn remove_if_same(&self, key: &str, entry: &Arc<Entry>) {
        self.remove_where(store_hash(self.seed, key), |v| Arc::ptr_eq(v, entry));
    }

    pub(crate) fn invalidate_now(&self, targets: &[Target]) -> u64 {
        let hashes: Vec<u64> = targets.iter().map(Target::hash).collect();
        self.invalidate_hashes(&hashes)
    }

    pub(crate) fn invalidate_hashes(&self, hashes: &[u64]) -> u64 {
        let generation = self.index.invalidate(hashes, self.clock.now_ms());
        self.make_room_for_index();
        generation
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
        Ok(self.lookup_now(key))
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        self.put_now(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.remove_now(key);
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.index.generation())
    }

    async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        Ok(self.invalidate_now(targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_seeds_its_key_hashes() {
        let (a, b) = (
            crate::Cache::builder().build(),
            crate::Cache::builder().build(),
        );
        let (a, b) = (
            a.shared.backend.memory().unwrap(),
            b.shared.backend.memory().unwrap(),
        );
        assert_ne!(a.seed, b.seed);
        let key = "/items/1?a=1";
        assert_ne!(store_hash(a.seed, key), store_hash(b.seed, key));
        assert_eq!(store_hash(a.seed, key), store_hash(a.seed, key));
    }
}
