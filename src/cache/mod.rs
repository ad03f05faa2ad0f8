//! The shared [`Cache`] handle, its builder, and its statistics.

pub(crate) mod backend;
pub(crate) mod flight;
pub(crate) mod stats;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::invalidate::Target;
use crate::store::{MemoryStore, Store, StoreError};
use backend::Remote;
use flight::Flights;
use stats::{Counters, Extra, Stats};
use std::time::Duration;

/// Bytes allowed for an entry's key and headers on top of its body when
/// sizing the memory store's shards.
const HEADROOM: u64 = 16 << 10;

/// The cache's time: milliseconds on a wall-clock scale, advanced by a
/// monotonic clock.
///
/// That clock is the system's coarse one (`CLOCK_MONOTONIC_COARSE` on
/// Linux, through `coarsetime`): a few milliseconds coarse, which a TTL
/// does not notice, and several times cheaper to read than the precise
/// clock on the hit path. A cache built inside a tokio runtime whose clock
/// is paused (a test) follows tokio's clock instead, so that
/// `tokio::time::advance` moves its TTLs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: u64,
    source: Source,
}

/// Where a [`Clock`] reads the time elapsed since it was made.
#[derive(Debug, Clone, Copy)]
enum Source {
    Coarse(coarsetime::Instant),
    Tokio(Instant),
}

impl Clock {
    fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let source = if tokio_clock_paused() {
            Source::Tokio(Instant::now())
        } else {
            Source::Coarse(coarsetime::Instant::now_without_cache_update())
        };
        Self { base_ms, source }
    }

    /// Whether this clock follows tokio's clock.
    #[cfg(test)]
    pub(crate) fn follows_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio(_))
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = match self.source {
            // Not `elapsed()`: that also writes coarsetime's shared
            // "recent" timestamp, one cache line every core would fight for.
            Source::Coarse(start) => coarsetime::Instant::now_without_cache_update()
                .duration_since(start)
                .as_millis(),
            Source::Tokio(start) => start.elapsed().as_millis() as u64,
        };
        self.base_ms + elapsed
    }
}

/// Whether the current thread runs inside a tokio runtime whose clock is
/// paused. Only a current-thread runtime can pause its clock, and a paused
/// clock stands still while this thread spins, whereas a running one moves
/// with the system's monotonic clock.
fn tokio_clock_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let before = Instant::now();
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    Instant::now() == before
}

/// Builds a [`Cache`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheBuilder {
    max_bytes: u64,
    max_body_bytes: usize,
    max_key_bytes: usize,
    coalesce_timeout: Duration,
    pass_marker: Duration,
    store_timeout: Duration,
    remote: Option<Remote>,
}

/// How long a network store's call may take by default before the
/// request goes to the origin without it.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_body_bytes: 1 << 20,
            max_key_bytes: 8 << 10,
            coalesce_timeout: Duration::from_secs(5),
            pass_marker: Duration::from_secs(2),
            store_timeout: STORE_TIMEOUT,
            remote: None,
        }
    }
}

impl CacheBuilder {
    /// The memory bound, in bytes, weighing each entry's key, headers and
    /// body (default 64 MiB).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The largest body stored (default 1 MiB). Larger bodies stream to the
    /// client untouched and are not stored.
    pub fn max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The longest path plus query the cache will key (default 8 KiB).
    /// Longer request targets bypass the cache and are counted as
    /// `uri-too-long`.
    pub fn max_key_bytes(mut self, max_key_bytes: usize) -> Self {
        self.max_key_bytes = max_key_bytes;
        self
    }

    /// How long a miss waits for another request's origin call on the same
    /// key before going to the origin itself (default 5 s).
    /// `Duration::ZERO` turns request coalescing off.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.coalesce_timeout = timeout;
        self
    }

    /// How long, after a coalesced origin call returned a response that
    /// could not be stored, later misses on that key go to the origin
    /// without waiting for one another (default 2 s; `Duration::ZERO` for
    /// no pass marker).
    pub fn pass_marker(mut self, ttl: Duration) -> Self {
        self.pass_marker = ttl;
        self
    }

    /// Keeps entries and the invalidation index in `store` instead of in
    /// this process's memory: with a
    /// `RedisStore` (feature `redis`, in [`store`](crate::store)), every
    /// instance of a service shares one cache, and a write on one of them
    /// flushes all of them. Nothing else changes: the layers, the headers
    /// and the statistics work the same.
    ///
    /// Every call to the store is bounded by
    /// [`store_timeout`](Self::store_timeout); a call that fails or times
    /// out sends the request to the origin, counted as a bypass with reason
    /// `store-error`, never an error to the client. A network store needs a
    /// tokio runtime (responses are written to it in the background).
    pub fn store<S: Store>(mut self, store: S) -> Self {
        self.remote = Some(Remote::new(store, self.store_timeout));
        self
    }

    /// The longest a call to a network store may take (default 1 s; a
    /// store's own, shorter timeouts apply first).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        if let Some(remote) = &mut self.remote {
            remote.set_timeout(timeout);
        }
        self
    }

    /// Builds the cache.
    ///
    /// The cache measures TTLs with the system's coarse monotonic clock
    /// (a few milliseconds coarse, and cheap to read on every request).
    /// Built inside a tokio runtime whose clock is paused, as in
    /// `#[tokio::test(start_paused = true)]`, it follows tokio's clock
    /// instead, so `tokio::time::advance` ages its entries; build it after
    /// pausing the clock, not before.
    ///
    /// # Errors
    ///
    /// When `max_bytes` cannot hold even one entry of `max_body_bytes`.
    pub fn try_build(self) -> Result<Cache, BuildError> {
        let clock = Clock::new();
        let largest = self.max_body_bytes as u64 + self.max_key_bytes as u64 + HEADROOM;
        let memory = MemoryStore::new(self.max_bytes, largest, clock).map_err(BuildError)?;
        Ok(Cache {
            shared: Arc::new(Shared {
                memory,
                remote: self.remote,
                clock,
                unrouted: Counters::default(),
                routes: Mutex::new(HashMap::new()),
                invalidations: AtomicU64::new(0),
                extra: Extra::default(),
                flights: Flights::default(),
                coalesce_timeout: self.coalesce_timeout,
                pass_ms: u64::try_from(self.pass_marker.as_millis()).unwrap_or(u64::MAX),
                max_body_bytes: self.max_body_bytes,
                max_key_bytes: self.max_key_bytes,
            }),
        })
    }

    /// Builds the cache (see [`try_build`](Self::try_build) for its clock).
    ///
    /// # Panics
    ///
    /// When `max_bytes` cannot hold even one entry of `max_body_bytes`; see
    /// [`try_build`](Self::try_build).
    pub fn build(self) -> Cache {
        match self.try_build() {
            Ok(cache) => cache,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The cache could not be built with the settings given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

/// Aligned to a cache line, so that the reference count every service
/// clone bumps shares no line with the store's fields that every lookup
/// reads.
#[repr(align(64))]
pub(crate) struct Shared {
    pub(crate) memory: MemoryStore,
    /// A network store, when one was given: then `memory` holds nothing.
    pub(crate) remote: Option<Remote>,
    pub(crate) clock: Clock,
    /// Events of no route (bypasses before a rule matched).
    pub(crate) unrouted: Counters,
    routes: Mutex<HashMap<Arc<str>, Arc<Counters>>>,
    invalidations: AtomicU64,
    pub(crate) extra: Extra,
    pub(crate) flights: Flights,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) pass_ms: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
}

/// A shared response cache: the store, the invalidation index and the
/// statistics.
///
/// Cloning is cheap (an `Arc`), and every clone sees the same entries:
/// build one, then hand it to each [`CacheLayer`](crate::CacheLayer) and
/// `InvalidateOn` that should share it.
///
/// ```
/// use tower_response_cache::Cache;
///
/// let cache = Cache::builder()
///     .max_bytes(64 << 20)
///     .max_body_bytes(1 << 20)
///     .build();
/// assert_eq!(cache.stats().entries, 0);
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("memory", &self.shared.memory)
            .field("remote", &self.shared.remote)
            .field("max_body_bytes", &self.shared.max_body_bytes)
            .finish()
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::builder().build()
    }
}

impl Cache {
    /// Starts a builder (64 MiB, 1 MiB bodies, 8 KiB keys).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The counters of a route pattern, shared by every layer naming it.
    pub(crate) fn route_counters(&self, pattern: &Arc<str>) -> Arc<Counters> {
        let mut routes = self.shared.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(pattern.clone())
            .or_insert_with(|| Arc::new(Counters::named(pattern.clone())))
            .clone()
    }

    /// Counts an event for its route, or among the events of no route (the
    /// totals are their sum, made when read: one counter per event), and
    /// reports it to the metrics recorder, with the `metrics` feature.
    #[inline]
    pub(crate) fn record(&self, route: Option<&Counters>, event: stats::Event) {
        route.unwrap_or(&self.shared.unrouted).record(event);
        #[cfg(feature = "metrics")]
        {
            crate::metrics::record(route.map_or("", |r| &r.pattern), event);
            if event == stats::Event::Store {
                let memory = &self.shared.memory;
                crate::metrics::gauges(memory.len() as u64, memory.bytes());
            }
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let routes: BTreeMap<String, _> = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), v.snapshot()))
            .collect();
        let memory = &self.shared.memory;
        let mut totals = self.shared.unrouted.snapshot();
        for route in routes.values() {
            totals.add(route);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::gauges(memory.len() as u64, memory.bytes());
        Stats {
            hit_ratio: totals.hit_ratio(),
            totals,
            routes,
            entries: memory.len() as u64,
            bytes: memory.bytes(),
            evictions: memory.evictions(),
            invalidations: self.shared.invalidations.load(Ordering::Relaxed),
            index_records: memory.index.len() as u64,
            coalesce_timeouts: self.shared.extra.coalesce_timeouts.load(Ordering::Relaxed),
            pass_markers: self.shared.extra.pass_markers.load(Ordering::Relaxed),
            refreshes: self.shared.extra.refreshes.load(Ordering::Relaxed),
            store_errors: self.shared.extra.store_errors.load(Ordering::Relaxed),
        }
    }

    /// Flushes every entry whose path lies under `prefix`, on whole
    /// segments: `/products` covers `/products`, `/products/42` and
    /// `/products?page=2`, never `/products-archive`; `/` covers
    /// everything. Every scope (every user's entry) on those paths goes.
    ///
    /// Costs O(1) whatever the number of entries: the flush is a record
    /// checked when an entry is next looked up.
    pub fn invalidate_prefix(&self, prefix: &str) {
        self.invalidate(&[Target::prefix(prefix)]);
    }

    /// Flushes every entry carrying `tag`. Tags double as named events: a
    /// read route tagged `order.created` is flushed by whatever flushes
    /// that tag.
    pub fn invalidate_tag(&self, tag: &str) {
        self.invalidate(&[Target::tag(tag)]);
    }

    /// Flushes everything.
    pub fn invalidate_all(&self) {
        self.invalidate(&[Target::prefix("/")]);
    }

    /// Flushes every target at once (one generation), and returns that
    /// generation.
    ///
    /// With a network store ([`CacheBuilder::store`]) the flush is sent in
    /// the background (retried for a few seconds if the store fails) and
    /// this returns 0; await [`flush`](Self::flush) to know it holds.
    pub fn invalidate(&self, targets: &[Target]) -> u64 {
        self.invalidate_by(targets, "api")
    }

    /// Flushes every target at once and waits until the flush holds for
    /// every instance sharing the store; returns its generation.
    ///
    /// # Errors
    ///
    /// When a network store failed or timed out (the flush is then retried
    /// in the background for a few seconds).
    pub async fn flush(&self, targets: &[Target]) -> Result<u64, StoreError> {
        self.flush_by(targets, "api").await
    }

    /// Flushes targets on behalf of `by` (`api`, `InvalidateOn`, `admin`),
    /// counted and traced at info level; in the background on a network
    /// store.
    pub(crate) fn invalidate_by(&self, targets: &[Target], by: &'static str) -> u64 {
        if self.shared.remote.is_some() {
            let cache = self.clone();
            let targets = targets.to_vec();
            let flush = async move {
                let _ = cache.flush_by(&targets, by).await;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(flush);
                }
                Err(_) => {
                    tracing::error!(
                        by,
                        "a flush on a network store needs a tokio runtime; use Cache::flush"
                    );
                }
            }
            return 0;
        }
        let generation = self.shared.memory.invalidate_now(targets);
        self.counted(targets, generation, by);
        generation
    }

    /// Flushes targets and waits for the store.
    pub(crate) async fn flush_by(
        &self,
        targets: &[Target],
        by: &'static str,
    ) -> Result<u64, StoreError> {
        let Some(remote) = &self.shared.remote else {
            let generation = self.shared.memory.invalidate_now(targets);
            self.counted(targets, generation, by);
            return Ok(generation);
        };
        match remote.invalidate(targets).await {
            Ok(generation) => {
                self.counted(targets, generation, by);
                Ok(generation)
            }
            Err(e) => {
                self.store_error("invalidate", &e);
                let cache = self.clone();
                let targets = targets.to_vec();
                tokio::spawn(async move { cache.retry_flush(targets, by).await });
                Err(e)
            }
        }
    }

    /// Retries a failed flush a bounded number of times: a store that comes
    /// back soon must not keep entries a write made stale.
    async fn retry_flush(&self, targets: Vec<Target>, by: &'static str) {
        let Some(remote) = &self.shared.remote else {
            return;
        };
        for attempt in 1..=FLUSH_RETRIES {
            tokio::time::sleep(FLUSH_RETRY_EVERY).await;
            match remote.invalidate(&targets).await {
                Ok(generation) => {
                    self.counted(&targets, generation, by);
                    tracing::info!(?targets, attempt, "flush retried and recorded");
                    return;
                }
                Err(e) => self.store_error("invalidate", &e),
            }
        }
        tracing::error!(
            ?targets,
            "flush could not be recorded in the store; entries under these targets may be \
             served until their TTL ends"
        );
    }

    fn counted(&self, targets: &[Target], generation: u64, by: &'static str) {
        for target in targets {
            self.count_invalidation(match target {
                Target::Prefix(_) => "prefix",
                Target::Tag(_) => "tag",
                Target::Key(_) => "key",
            });
        }
        tracing::info!(?targets, generation, by, "cache invalidated");
    }

    /// Counts and traces a failed call to a network store.
    pub(crate) fn store_error(&self, op: &'static str, error: &StoreError) {
        Counters::add(&self.shared.extra.store_errors);
        tracing::warn!(op, %error, "cache store unavailable; serving from the origin");
    }

    /// The generation an origin read begins at.
    pub(crate) async fn born(&self) -> Result<u64, StoreError> {
        match &self.shared.remote {
            None => Ok(self.shared.memory.index.generation()),
            Some(remote) => remote.generation().await,
        }
    }

    pub(crate) fn count_invalidation(&self, _kind: &'static str) {
        self.shared.invalidations.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::invalidation(_kind);
    }
}

/// How often, and how many times, a failed flush is retried.
const FLUSH_RETRIES: u32 = 20;
const FLUSH_RETRY_EVERY: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_the_clock_is_the_coarse_one_and_moves() {
        let clock = Clock::new();
        assert!(!clock.follows_tokio());
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let first = clock.now_ms();
        assert!(first.abs_diff(wall) < 1_000, "{first} vs {wall}");
        std::thread::sleep(Duration::from_millis(30));
        let later = clock.now_ms();
        // A coarse clock may lag by a tick (a few milliseconds).
        assert!(
            (20..1_000).contains(&(later - first)),
            "{first} then {later}"
        );
    }

    #[tokio::test]
    async fn a_running_runtime_clock_is_not_followed() {
        assert!(!Clock::new().follows_tokio());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_runtime_clock_is_followed() {
        let clock = Clock::new();
        assert!(clock.follows_tokio());
        let first = clock.now_ms();
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(clock.now_ms(), first, "a paused clock stands still");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_ms(), first + 5_000);
    }
}
