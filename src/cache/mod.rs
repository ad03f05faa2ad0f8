//! The shared [`Cache`] handle: one store, its invalidation index and the
//! statistics, behind an `Arc` that every layer and clone shares.
//!
//! - [`builder`]: the settings, checked when the cache is built.
//! - [`clock`]: the time TTLs are measured on (injectable).
//! - [`backend`]: the memory store or a network store.
//! - [`lookup`]: what a key finds, judged on freshness and `Vary`.
//! - [`flight`]: one origin call per key at a time (coalescing).
//! - [`flush`]: invalidation, programmatic and retried.
//! - [`stats`]: the counters and their snapshot.

pub(crate) mod backend;
pub(crate) mod builder;
pub(crate) mod clock;
pub(crate) mod flight;
mod flush;
pub(crate) mod lookup;
pub(crate) mod stats;
pub(crate) mod unconfirmed;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::StoreError;
use backend::Backend;
pub use builder::{BuildError, CacheBuilder};
pub(crate) use clock::Clock;
use flight::Flights;
use stats::{Counters, Extra, Stats};

/// Aligned to a cache line, so that the reference count every service
/// clone bumps shares no line with the store's fields that every lookup
/// reads.
#[repr(align(64))]
pub(crate) struct Shared {
    /// Where the entries and the invalidation index live.
    pub(crate) backend: Backend,
    pub(crate) clock: Clock,
    /// Events of no route (bypasses before a rule matched).
    pub(crate) unrouted: Counters,
    routes: Mutex<HashMap<Arc<str>, Arc<Counters>>>,
    invalidations: AtomicU64,
    pub(crate) extra: Extra,
    pub(crate) flights: Flights,
    pub(crate) coalesce_timeout: Duration,
    /// How long a flush keeps trying a network store before its write is
    /// answered anyway (the store timeout).
    pub(crate) flush_budget: Duration,
    pub(crate) pass_ms: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
    /// Flushes a network store has not recorded yet.
    pub(crate) unconfirmed: unconfirmed::Unconfirmed,
    /// What keys hold of a route's scope value.
    pub(crate) scope_hasher: crate::scope::ScopeHasher,
    /// The lean header profile: no `Cache-Status`, no computed `ETag`.
    pub(crate) lean: bool,
    /// Where the `ETag`s the cache computes come from.
    pub(crate) tags: crate::headers::TagSource,
    /// Writes of responses to a network store under way (at most
    /// `MAX_REMOTE_WRITES`).
    pub(crate) remote_writes: std::sync::atomic::AtomicUsize,
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
            .field("backend", &self.shared.backend)
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
                if let Some(memory) = self.shared.backend.memory() {
                    crate::metrics::gauges(memory.len() as u64, memory.bytes());
                }
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
        let memory = self.shared.backend.memory();
        let mut totals = self.shared.unrouted.snapshot();
        for route in routes.values() {
            totals.add(route);
        }
        // A network store's entries are counted by the store itself.
        let (entries, bytes, evictions, index_records, index_bytes) =
            memory.map_or((0, 0, 0, 0, 0), |m| {
                (
                    m.responses() as u64,
                    m.bytes(),
                    m.evictions(),
                    m.index.len() as u64,
                    m.index_bytes(),
                )
            });
        #[cfg(feature = "metrics")]
        crate::metrics::gauges(entries, bytes);
        Stats {
            hit_ratio: totals.hit_ratio(),
            totals,
            routes,
            entries,
            bytes,
            evictions,
            invalidations: self.shared.invalidations.load(Ordering::Relaxed),
            index_records,
            index_bytes,
            coalesce_timeouts: self.shared.extra.coalesce_timeouts.load(Ordering::Relaxed),
            pass_markers: self.shared.extra.pass_markers.load(Ordering::Relaxed),
            refreshes: self.shared.extra.refreshes.load(Ordering::Relaxed),
            revalidations: self.shared.extra.revalidations.load(Ordering::Relaxed),
            revalidated: self
                .shared
                .extra
                .not_modified_upstream
                .load(Ordering::Relaxed),
            store_errors: self.shared.extra.store_errors.load(Ordering::Relaxed),
            owed_flush_records: match self.shared.unconfirmed.len() {
                usize::MAX => u64::MAX,
                n => n as u64,
            },
            flights: self.shared.flights.len() as u64,
            flights_full: self.shared.flights.full(),
        }
    }

    /// Counts and traces a failed call to a network store.
    pub(crate) fn store_error(&self, op: &'static str, error: &StoreError) {
        Counters::add(&self.shared.extra.store_errors);
        tracing::warn!(op, %error, "cache store unavailable; serving from the origin");
    }

    /// The generation an origin read begins at.
    pub(crate) async fn born(&self) -> Result<u64, StoreError> {
        self.shared.backend.generation().await
    }

    pub(crate) fn count_invalidation(&self, _kind: &'static str) {
        self.shared.invalidations.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::invalidation(_kind);
    }
}
