//! [`CacheBuilder`]: the settings of a [`Cache`], checked when it is built.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backend::{Backend, Remote};
use super::clock::Clock;
use super::flight::Flights;
use super::stats::{Counters, Extra};
use super::{Cache, Shared};
use crate::scope::ScopeHasher;
use crate::store::{MemoryStore, Store};

/// Bytes allowed for an entry's key and headers on top of its body when
/// sizing the memory store's shards.
const HEADROOM: u64 = 16 << 10;

/// How long a network store's call may take by default before the
/// request goes to the origin without it.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds a [`Cache`].
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    max_bytes: u64,
    max_body_bytes: usize,
    max_key_bytes: usize,
    coalesce_timeout: Duration,
    pass_marker: Duration,
    store_timeout: Duration,
    remote: Option<Remote>,
    clock: Option<Clock>,
    scope_secret: Option<Arc<[u8]>>,
    lean: bool,
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("coalesce_timeout", &self.coalesce_timeout)
            .field("pass_marker", &self.pass_marker)
            .field("store_timeout", &self.store_timeout)
            .field("remote", &self.remote)
            .field("clock", &self.clock)
            .field("scope_secret", &self.scope_secret.as_ref().map(|_| ".."))
            .finish()
    }
}

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
            clock: None,
            scope_secret: None,
            lean: false,
        }
    }
}

impl CacheBuilder {
    /// The memory bound, in bytes, of the in-memory store: its entries,
    /// each weighed as allocated (key, headers, body and bookkeeping), and
    /// its invalidation index together (default 64 MiB).
    ///
    /// The index's records take up to an eighth of the bound (at most 63
    /// bytes a record: 114,688 records in 64 MiB), and only as flushes
    /// need them: the store gives the index its room in steps of 1/64 of
    /// the bound, evicting entries to do so, and keeps that room for it.
    /// Past its share, the oldest record is dropped before a new one is
    /// made, and every entry born before it counts as flushed (more misses,
    /// never a stale answer). [`Stats::bytes`](crate::Stats::bytes) plus
    /// [`Stats::index_bytes`](crate::Stats::index_bytes) never exceeds it.
    ///
    /// Beside it, with fixed bounds of their own: the coalescing table
    /// (under 3 MiB), the flushes owed to a failing network store, the
    /// statistics (per rule pattern); see the crate docs' memory section.
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

    /// The clock TTLs are measured on: [`Clock::system`], [`Clock::tokio`]
    /// or a [`ManualClock`](crate::ManualClock) a test advances itself.
    ///
    /// Without it, a cache built inside a tokio runtime whose clock is
    /// paused (as in `#[tokio::test(start_paused = true)]`) follows tokio's
    /// clock, and any other the system's coarse monotonic clock.
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    /// The secret under which a route's scope value (what
    /// [`RoutePolicy::scope`](crate::RoutePolicy::scope) returns, often the
    /// credential itself) is hashed before it goes into a key.
    ///
    /// Keys, the admin listing, the store's own key names and traces hold
    /// an HMAC-SHA-256 of the scope value (128 bits of it), never the value.
    /// Without a secret, each cache draws a random one: its keys cannot be
    /// tested against guesses, and they are its own. Instances sharing a
    /// network store share their users' entries only when every one of them
    /// is given the same secret (keep it as secret as the credentials).
    pub fn scope_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.scope_secret = Some(secret.as_ref().into());
        self
    }

    /// The lean header profile: the cache adds no `Cache-Status` and
    /// computes no `ETag`; a response from the store carries only the
    /// `Age` RFC 9111 asks for (and the origin's own validators, with
    /// which conditional requests are still answered `304`).
    ///
    /// By default the cache adds `Cache-Status` to every response it
    /// handles and, to a stored response that has no `ETag`, a weak one of
    /// its own (`W/"trc-…"`), on the miss that stores it as on every hit:
    /// about 110 bytes per hit in all, which a small response over HTTP/1.1
    /// pays for in throughput (see `BENCHMARKS.md`).
    pub fn lean_headers(mut self) -> Self {
        self.lean = true;
        self
    }

    /// Builds the cache.
    ///
    /// The cache measures TTLs with the system's coarse monotonic clock
    /// (a few milliseconds coarse, and cheap to read on every request),
    /// unless [`clock`](Self::clock) says otherwise. Built inside a tokio
    /// runtime whose clock is paused, as in
    /// `#[tokio::test(start_paused = true)]`, it follows tokio's clock
    /// instead, so `tokio::time::advance` ages its entries; build it after
    /// pausing the clock, not before.
    ///
    /// # Errors
    ///
    /// When `max_bytes`, less the index's eighth, cannot hold even one
    /// entry of `max_body_bytes`.
    pub fn try_build(self) -> Result<Cache, BuildError> {
        let clock = self.clock.unwrap_or_else(Clock::detect);
        let scope_hasher = match &self.scope_secret {
            Some(secret) => ScopeHasher::new(secret),
            None => {
                if self.remote.is_some() {
                    tracing::info!(
                        "no scope_secret: scoped entries in the shared store are this \
                         instance's own; give every instance the same secret to share them"
                    );
                }
                ScopeHasher::random()
            }
        };
        let backend = match self.remote {
            Some(remote) => Backend::Remote(remote),
            None => {
                let largest = self.max_body_bytes as u64 + self.max_key_bytes as u64 + HEADROOM;
                let memory =
                    MemoryStore::new(self.max_bytes, largest, clock.clone()).map_err(BuildError)?;
                Backend::Memory(memory)
            }
        };
        Ok(Cache {
            shared: Arc::new(Shared {
                backend,
                clock,
                unrouted: Counters::default(),
                routes: Mutex::new(HashMap::new()),
                invalidations: AtomicU64::new(0),
                extra: Extra::default(),
                flights: Flights::default(),
                coalesce_timeout: self.coalesce_timeout,
                flush_budget: self.store_timeout,
                pass_ms: u64::try_from(self.pass_marker.as_millis()).unwrap_or(u64::MAX),
                max_body_bytes: self.max_body_bytes,
                max_key_bytes: self.max_key_bytes,
                scope_hasher,
                unconfirmed: Default::default(),
                lean: self.lean,
                tags: crate::headers::TagSource::random(),
                remote_writes: Default::default(),
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
