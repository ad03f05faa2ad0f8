//! The Redis store: entries, the logical clock and the invalidation index
//! in Redis (or Valkey). See [`RedisStore`] for the layout and behaviour;
//! `builder` holds its settings, `conn` the connection and the calls'
//! time budget, `codec` the binary form of an entry, `scripts` the Lua scripts,
//! `near` the near cache and `breaker` the cool-down.

mod breaker;
mod builder;
pub(crate) mod codec;
mod conn;
mod near;
mod scripts;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::task::AbortHandle;

use super::{Entry, Lookup, Store, StoreError, StoreErrorKind, Target};
use breaker::Breaker;
pub use builder::RedisStoreBuilder;
use near::Near;

/// How many records past the horizon one call prunes at most.
const PRUNE_BATCH: usize = 1024;

/// A [`Store`] in Redis (or Valkey): entries, the logical clock and the
/// invalidation index live in Redis, so that every instance of an
/// application shares one cache and an invalidation made on one instance
/// holds on all of them.
///
/// Cloning is cheap (an `Arc`): clones share one connection, one circuit
/// breaker and one near cache. Use it from a Tokio runtime; the connection
/// and the near cache's subscription are made on first use.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_response_cache::store::RedisStore;
///
/// # fn main() -> Result<(), tower_response_cache::store::ConfigError> {
/// // Nothing connects here: an application starts even when Redis is down,
/// // and the first request that needs Redis connects.
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .namespace("catalogue")
///     .command_timeout(Duration::from_millis(100))
///     .near_cache(32 << 20) // optional in-process tier, 32 MiB
///     .build()?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
///
/// # What is stored where
///
/// Every key carries the namespace (default `trc`) in braces, a Redis
/// Cluster hash tag, so that all the keys of one namespace hash to one
/// slot.
///
/// | Key | Type | Holds |
/// |-----|------|-------|
/// | `{ns}:e:<key>` | string | an entry, binary, with a TTL of freshness plus grace |
/// | `{ns}:clock` | string | the logical clock (the current generation) |
/// | `{ns}:idx` | hash | record hash (8 bytes) → generation of its latest invalidation |
/// | `{ns}:idx:t` | sorted set | record hash, scored by the time of that invalidation (ms) |
/// | `{ns}:meta` | hash | `horizon` (longest entry lifetime, ms), `pruned`, `floor` |
/// | `{ns}:inv` | pub/sub channel | invalidation messages, for near caches |
///
/// The store talks to one Redis server (a primary, or a proxy in front of
/// several). The layout is ready for Redis Cluster, where one namespace
/// would be served by one node (the clock, the index and the entries must
/// share a slot, since one script reads them together); spreading a large
/// cache over several nodes then means several namespaces, each its own
/// [`Cache`](crate::Cache). Connecting through a cluster client is not
/// built yet.
///
/// Redis must keep the clock and index keys, which have no TTL: use a
/// `volatile-*` eviction policy (such as `volatile-lru`, which evicts only
/// entries) or `noeviction`, never `allkeys-*`. Persistence is not needed:
/// when the namespace is lost (a restart without persistence, a flush), the
/// clock restarts above every generation handed out before, and entries
/// whose origin read began before the loss are not stored. Restoring an
/// older snapshot, on the other hand, can lose the last invalidations; flush
/// the namespace after such a restore.
///
/// # One round trip per lookup
///
/// An entry's value starts with a short prefix the lookup script reads
/// without decoding the rest: the generation at which its origin read began
/// and the hashes of everything that can flush it (its request key, each
/// segment prefix of its path, each tag). The script fetches the value, the
/// index records for those hashes and the floor, and answers *found* (with
/// the value), *invalidated* (deleting it) or *miss*, in one `EVALSHA`
/// (loaded again by itself after a Redis restart). The rule is the
/// in-memory index's: an entry is current when no record covering it is
/// newer than its birth, so an origin read that began before an
/// invalidation is never served after it, even when stored after it.
///
/// The index stays bounded as in memory: records older than the longest
/// entry lifetime stored are pruned (an entry born before a pruned record
/// is refused), and past a cap of 262 144 records (in Redis's memory, not
/// this process's) the oldest are dropped early and every entry born
/// before them counts as invalidated.
///
/// # Faults
///
/// Every call is bounded by the command timeout (plus the connect timeout
/// while connecting) and fails with a [`StoreError`] saying what happened
/// (timed out, connection refused, cool-down), which the cache turns into a
/// pass-through. After a number of consecutive failures (default 3), every
/// call fails at once for a cool-down (default 1 s) while a background
/// probe pings Redis once per cool-down; when it answers, or when a flush
/// (which no cool-down skips) gets through, caching resumes by itself.
/// A call that fails on a connection that broke under it is sent again at
/// once on a fresh one ([`resent_calls`](Self::resent_calls)).
///
/// # Near cache
///
/// With [`near_cache`](RedisStoreBuilder::near_cache), hits are answered
/// from an in-process tier with no round trip. Each invalidation is
/// published on `{ns}:inv`; every store with a near cache subscribes and
/// applies the messages to its tier, which answers only while subscribed
/// and is emptied whenever the subscription is made, remade or lost.
///
/// The price is a staleness window: after an invalidation on another
/// instance, this instance may serve a flushed entry from its tier until
/// the message arrives, which is the pub/sub delivery delay: on one host,
/// the tests measure a median of about a millisecond and at worst tens of
/// milliseconds under load; a fleet adds its network's latency. A
/// subscription connection that dies silently is noticed by a ping every
/// second, so then the window is at most about a second plus the connect
/// and command timeouts (1.35 s with the defaults). An instance's own
/// invalidations apply to its own tier before `invalidate` returns, so
/// read-your-writes holds on the instance that wrote. Removing a key
/// (rather than invalidating) is not broadcast.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.namespace)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("command_timeout", &self.inner.command_timeout)
            .field("breaker", &self.inner.breaker)
            .field("near", &self.inner.near)
            .finish()
    }
}

struct Keys {
    entry_prefix: String,
    clock: String,
    idx: String,
    idx_t: String,
    meta: String,
    channel: String,
}

struct Scripts {
    get: Script,
    put: Script,
    invalidate: Script,
    generation: Script,
}

struct Inner {
    weak: Weak<Inner>,
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    keys: Keys,
    namespace: String,
    scripts: Scripts,
    connect_timeout: Duration,
    command_timeout: Duration,
    breaker: Breaker,
    /// Whether the last call reached Redis (if not, the next one may have
    /// to connect first, and is given the connect timeout too).
    connected: AtomicBool,
    /// Whether the scripts were loaded since the last outage.
    scripts_loaded: AtomicBool,
    near: Option<Arc<Near>>,
    subscriber: OnceLock<AbortHandle>,
    max_records: usize,
    /// Values dropped as untrustworthy.
    dropped: AtomicU64,
    /// Calls sent again because the connection broke under them.
    resent: AtomicU64,
    /// Times a script found the namespace empty and started its clock.
    resets: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.subscriber.get() {
            task.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl RedisStore {
    /// A builder for a store at `url`, such as `redis://127.0.0.1:6379/`
    /// (`redis://[user:password@]host[:port][/db]`, or `redis+unix://`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url.into())
    }

    /// The namespace every key carries.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The Redis key an entry stored under the cache key `key` lives at:
    /// `{namespace}:e:key`.
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.entry_key(key)
    }

    /// The command timeout: a caller bounding store calls with a timeout
    /// of its own should allow at least this (plus
    /// [`connect_timeout`](Self::connect_timeout) while reconnecting).
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// Whether Redis is being skipped for a cool-down after consecutive
    /// failures (every call fails at once meanwhile).
    pub fn is_cooling_down(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Values found in Redis that could not be judged and were dropped: an
    /// unreadable or oversized index prefix, a birth after the clock's, a
    /// seal that does not match (a body cut or changed, a value copied from
    /// another key or namespace). Each was served as a miss.
    pub fn dropped_values(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Calls sent again at once on a fresh connection because the one they
    /// were sent on broke under them (Redis closed it, a proxy cut it, a
    /// reply was cut off midway). Such a call fails only if it fails again.
    pub fn resent_calls(&self) -> u64 {
        self.inner.resent.load(Ordering::Relaxed)
    }

    /// Times this store found its namespace empty in Redis and started it
    /// afresh: once for a new Redis, and again after each loss (a restart
    /// without persistence, a flush). Every entry stored before a loss is
    /// gone with it, the clock restarts above every generation handed out
    /// before, and a read that began before it is not stored. Counted by
    /// the instance whose call found the namespace empty.
    pub fn namespace_resets(&self) -> u64 {
        self.inner.resets.load(Ordering::Relaxed)
    }

    /// How many calls in a row have failed to reach Redis.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.breaker.consecutive_failures()
    }

    /// Whether the near cache is subscribed, and so answering (`false`
    /// without a near cache).
    pub fn near_cache_live(&self) -> bool {
        self.inner.near.as_ref().is_some_and(|n| n.is_live())
    }

    /// Entries held by the near cache.
    #[doc(hidden)]
    pub fn near_cache_len(&self) -> usize {
        self.inner.near.as_ref().map_or(0, |n| n.len())
    }

    /// Starts the near cache's subscription now rather than on first use
    /// (it still completes in the background).
    #[doc(hidden)]
    pub fn start_near_cache(&self) {
        self.inner.start_subscriber();
    }

    /// Adds the keys every script takes: `first`, then the clock, the
    /// index, its time order and the meta hash.
    fn index_keys(&self, inv: &mut redis::ScriptInvocation<'_>, first: &str) {
        let k = &self.inner.keys;
        inv.key(first)
            .key(&k.clock)
            .key(&k.idx)
            .key(&k.idx_t)
            .key(&k.meta);
    }
}

impl RedisStore {
    async fn get_once(&self, key: &str) -> Result<Lookup, StoreError> {
        let inner = &*self.inner;
        inner.start_subscriber();
        let epoch = inner.near.as_ref().map(|n| n.epoch());
        if let Some(near) = &inner.near {
            if let Some(entry) = near.get(key, now_ms()) {
                return Ok(Lookup::Found(entry));
            }
        }
        let mut con = inner.begin().await?;
        let entry_key = inner.entry_key(key);
        let mut inv = inner.scripts.get.prepare_invoke();
        self.index_keys(&mut inv, &entry_key);
        let answer: Value = inner.run("get", inv.invoke_async(&mut con)).await?;
        let (code, value) = match answer {
            Value::Array(mut items) if !items.is_empty() => {
                let value = if items.len() > 1 { items.pop() } else { None };
                (items.swap_remove(0), value)
            }
            other => {
                return Err(StoreError::new(
                    StoreErrorKind::Protocol,
                    format!("redis get: unexpected answer {other:?}"),
                ))
            }
        };
        match (code, value) {
            (Value::Int(0), _) => Ok(Lookup::Miss),
            (Value::Int(1), Some(Value::BulkString(bytes))) => {
                match codec::decode(Bytes::from(bytes), &entry_key, key.len()) {
                    Ok(entry) => {
                        let entry = Arc::new(entry);
                        if let (Some(near), Some(epoch)) = (&inner.near, epoch) {
                            near.insert(epoch, key, entry.clone());
                        }
                        Ok(Lookup::Found(entry))
                    }
                    Err(e) => {
                        inner.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key, error = %e, "redis store: undecodable entry dropped");
                        let _ = inner
                            .run(
                                "del",
                                redis::cmd("DEL")
                                    .arg(&entry_key)
                                    .query_async::<Value>(&mut con),
                            )
                            .await;
                        Ok(Lookup::Miss)
                    }
                }
            }
            (Value::Int(2), _) => {
                if let Some(near) = &inner.near {
                    near.remove(key);
                }
                Ok(Lookup::Invalidated)
            }
            (Value::Int(3), _) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key, "redis store: unreadable entry dropped");
                Ok(Lookup::Miss)
            }
            (code, _) => Err(StoreError::new(
                StoreErrorKind::Protocol,
                format!("redis get: unexpected answer {code:?}"),
            )),
        }
    }

    async fn put_once(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let px = entry.grace_until_ms().saturating_sub(now_ms());
        if px == 0 {
            return Ok(());
        }
        let Some(value) = codec::encode(&entry, &inner.entry_key(key)) else {
            tracing::debug!(
                key,
                "redis store: entry with too many index hashes not stored"
            );
            return Ok(());
        };
        let lifetime = entry.grace_until_ms().saturating_sub(entry.born_ms());
        let epoch = inner.near.as_ref().map(|n| n.epoch());
        let mut con = inner.begin().await?;
        let entry_key = inner.entry_key(key);
        let mut inv = inner.scripts.put.prepare_invoke();
        self.index_keys(&mut inv, &entry_key);
        inv.arg(value)
            .arg(px)
            .arg(lifetime)
            .arg(entry.born())
            .arg(inner.max_records)
            .arg(PRUNE_BATCH);
        let (stored, seeded): (i64, i64) = inner.run("put", inv.invoke_async(&mut con)).await?;
        inner.seeded(seeded);
        if stored == 1 {
            if let (Some(near), Some(epoch)) = (&inner.near, epoch) {
                near.insert_stored(epoch, key, entry);
            }
        }
        Ok(())
    }

    async fn remove_once(&self, key: &str) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if let Some(near) = &inner.near {
            near.remove(key);
        }
        let mut con = inner.begin().await?;
        let entry_key = inner.entry_key(key);
        inner
            .run(
                "remove",
                redis::cmd("DEL")
                    .arg(&entry_key)
                    .query_async::<Value>(&mut con),
            )
            .await
            .map(drop)
    }

    async fn generation_once(&self) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let mut con = inner.begin().await?;
        let mut inv = inner.scripts.generation.prepare_invoke();
        self.index_keys(&mut inv, &inner.keys.clock);
        let (generation, seeded): (u64, i64) =
            inner.run("generation", inv.invoke_async(&mut con)).await?;
        inner.seeded(seeded);
        Ok(generation)
    }

    async fn invalidate_once(&self, targets: &[Target]) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let hashes: Vec<u64> = targets.iter().map(Target::hash).collect();
        // Never skipped by a cool-down: a write waits for its flush.
        let mut con = inner.begin_anyway().await?;
        let mut inv = inner.scripts.invalidate.prepare_invoke();
        self.index_keys(&mut inv, &inner.keys.clock);
        inv.arg(inner.max_records)
            .arg(PRUNE_BATCH)
            .arg(&inner.keys.channel);
        for h in &hashes {
            inv.arg(&h.to_be_bytes()[..]);
        }
        let (generation, seeded): (u64, i64) =
            inner.run("invalidate", inv.invoke_async(&mut con)).await?;
        inner.seeded(seeded);
        if let Some(near) = &inner.near {
            near.apply(generation, hashes);
        }
        Ok(generation)
    }
}

/// Each call is sent once more at once when it failed on a broken
/// connection (`conn::once_more`): a connection Redis closed costs no
/// failed call.
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
        conn::once_more(&self.inner, || self.get_once(key)).await
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        conn::once_more(&self.inner, || self.put_once(key, entry.clone())).await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        conn::once_more(&self.inner, || self.remove_once(key)).await
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        conn::once_more(&self.inner, || self.generation_once()).await
    }

    async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        conn::once_more(&self.inner, || self.invalidate_once(targets)).await
    }
}
