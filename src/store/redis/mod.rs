//! The Redis store: entries, the logical clock and the invalidation index
//! in Redis (or Valkey). See [`RedisStore`] for the layout and behaviour;
//! `codec` holds the binary form of an entry, `scripts` the Lua scripts,
//! `near` the near cache and `breaker` the cool-down.

mod breaker;
mod codec;
mod near;
mod scripts;
#[doc(hidden)]
pub mod testing;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{Entry, Lookup, Store, StoreError, Target};
use crate::invalidate::index::MAX_RECORDS;
use breaker::{Breaker, Tripped};
use near::Near;

/// How many records past the horizon one call prunes at most.
const PRUNE_BATCH: usize = 1024;

/// Builds a [`RedisStore`]; see [`RedisStore::builder`]. Every setting has
/// a default.
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    cooldown: Duration,
    failure_threshold: u32,
    near_cache: Option<u64>,
    max_records: usize,
}

impl RedisStoreBuilder {
    /// The prefix of every key and of the pub/sub channel (default `trc`).
    /// Caches that must not see each other's entries or invalidations use
    /// different namespaces. It may not contain `{` or `}`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The longest wait for a connection to Redis (default 250 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest wait for one command's answer (default 100 ms). A 1 MiB
    /// entry stores and loads well within the default on a local network.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long Redis is skipped after
    /// [`failure_threshold`](Self::failure_threshold) consecutive failures
    /// (default 1 s); then a probe tries it again, and again after each
    /// further cool-down until it answers.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// How many consecutive failures (timeouts, refused or lost
    /// connections) start a cool-down (default 3; at least 1). Errors that
    /// Redis answers with (such as out of memory) fail the call but do not
    /// count.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// Adds an in-process tier of up to `max_bytes` in front of Redis,
    /// kept coherent by pub/sub (off by default). See
    /// [`RedisStore`](RedisStore#near-cache) for the staleness window it
    /// allows.
    pub fn near_cache(mut self, max_bytes: u64) -> Self {
        self.near_cache = Some(max_bytes);
        self
    }

    /// The most index records kept before the oldest are dropped early
    /// (default 262 144). For tests.
    #[doc(hidden)]
    pub fn max_records(mut self, records: usize) -> Self {
        self.max_records = records.max(1);
        self
    }

    /// Builds the store, without connecting.
    ///
    /// # Errors
    ///
    /// When the URL is not a valid Redis URL, or the namespace holds a
    /// brace.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| StoreError(format!("invalid redis url: {e}")))?;
        if self.namespace.contains(['{', '}']) {
            return Err(StoreError(format!(
                "invalid redis namespace {:?}: it may not contain braces",
                self.namespace
            )));
        }
        let ns = &self.namespace;
        let keys = Keys {
            entry_prefix: format!("{{{ns}}}:e:"),
            clock: format!("{{{ns}}}:clock"),
            idx: format!("{{{ns}}}:idx"),
            idx_t: format!("{{{ns}}}:idx:t"),
            meta: format!("{{{ns}}}:meta"),
            channel: format!("{{{ns}}}:inv"),
        };
        let inner = Arc::new_cyclic(|weak| Inner {
            weak: weak.clone(),
            client,
            manager: OnceLock::new(),
            keys,
            namespace: self.namespace.clone(),
            scripts: Scripts {
                get: Script::new(scripts::GET),
                put: Script::new(scripts::PUT),
                invalidate: Script::new(scripts::INVALIDATE),
                generation: Script::new(scripts::GENERATION),
            },
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            breaker: Breaker::new(self.failure_threshold, self.cooldown),
            connected: AtomicBool::new(false),
            scripts_loaded: AtomicBool::new(false),
            near: self.near_cache.map(|bytes| Arc::new(Near::new(bytes))),
            subscriber: OnceLock::new(),
            max_records: self.max_records,
        });
        Ok(RedisStore { inner })
    }
}

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
/// # fn main() -> Result<(), tower_response_cache::store::StoreError> {
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
/// is refused), and past a cap of 262 144 records the oldest are dropped
/// early and every entry born before them counts as invalidated.
///
/// # Faults
///
/// Every call is bounded by the command timeout (plus the connect timeout
/// while connecting) and fails with a [`StoreError`] saying what happened
/// (timed out, connection refused, cool-down), which the cache turns into a
/// pass-through. After a number of consecutive failures (default 3), every
/// call fails at once for a cool-down (default 1 s) while a background
/// probe pings Redis once per cool-down; when it answers, caching resumes
/// by itself.
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

/// Whether an error says Redis is unreachable or unresponsive (rather than
/// an answer Redis gave): only these count towards a cool-down.
fn is_outage(e: &RedisError) -> bool {
    e.is_timeout()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
}

fn describe(op: &str, e: &RedisError) -> String {
    if e.is_timeout() {
        format!("redis {op} timed out ({e})")
    } else if e.is_connection_refusal() {
        format!("redis {op}: connection refused ({e})")
    } else if e.is_connection_dropped() || e.is_io_error() {
        format!("redis {op}: connection lost ({e})")
    } else {
        format!("redis {op}: {e}")
    }
}

/// Marks a call in flight; one dropped unfinished after its whole time
/// budget (a caller's own timeout cut it off) counts as a timeout.
struct InFlight<'a> {
    inner: &'a Inner,
    op: &'static str,
    started: Instant,
    budget: Duration,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done && self.started.elapsed() >= self.budget {
            self.inner
                .failed(self.op, format!("redis {} timed out (cancelled)", self.op));
        }
    }
}

impl Inner {
    fn entry_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.keys.entry_prefix.len() + key.len());
        k.push_str(&self.keys.entry_prefix);
        k.push_str(key);
        k
    }

    /// The connection manager, made on first use (it needs a runtime). It
    /// connects lazily and reconnects by itself after a lost connection.
    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            // One attempt per (re)connection: the breaker and the callers'
            // next calls do the retrying.
            .set_number_of_retries(0);
        let m = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError(describe("connect", &e)))?;
        Ok(self.manager.get_or_init(|| m).clone())
    }

    /// Starts the near cache's subscriber once, on first use.
    fn start_subscriber(&self) {
        let Some(near) = &self.near else { return };
        if self.subscriber.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.subscriber.get_or_init(|| {
            runtime
                .spawn(near::subscriber(
                    near.clone(),
                    self.client.clone(),
                    self.keys.channel.clone(),
                    self.connect_timeout,
                    self.command_timeout,
                ))
                .abort_handle()
        });
    }

    /// A call's time budget.
    fn budget(&self) -> Duration {
        if self.connected.load(Ordering::Relaxed) {
            self.command_timeout
        } else {
            self.command_timeout + self.connect_timeout
        }
    }

    /// Checks the breaker and hands out a connection, with the scripts
    /// loaded.
    async fn begin(&self) -> Result<ConnectionManager, StoreError> {
        self.start_subscriber();
        self.breaker.check().map_err(StoreError)?;
        let mut con = self.manager()?;
        if !self.scripts_loaded.load(Ordering::Acquire) {
            // Loaded up front (one round trip) rather than on NOSCRIPT, which
            // would send a large entry twice.
            let mut pipe = redis::pipe();
            for source in scripts::ALL {
                pipe.cmd("SCRIPT").arg("LOAD").arg(source);
            }
            self.run("script load", pipe.query_async::<Value>(&mut con))
                .await?;
            self.scripts_loaded.store(true, Ordering::Release);
        }
        Ok(con)
    }

    /// Runs one command under the time budget and books its outcome.
    async fn run<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let budget = self.budget();
        let mut flight = InFlight {
            inner: self,
            op,
            started: Instant::now(),
            budget,
            done: false,
        };
        let result = tokio::time::timeout(budget, command).await;
        flight.done = true;
        match result {
            Ok(Ok(v)) => {
                self.connected.store(true, Ordering::Relaxed);
                self.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                let msg = if e.is_timeout() {
                    format!("redis {op} timed out after {} ms", ms(budget))
                } else {
                    describe(op, &e)
                };
                if is_outage(&e) {
                    self.failed(op, msg.clone());
                } else {
                    tracing::debug!(op, error = %e, "redis store: command failed");
                }
                Err(StoreError(msg))
            }
            Err(_) => {
                let msg = format!("redis {op} timed out after {} ms", ms(budget));
                self.failed(op, msg.clone());
                Err(StoreError(msg))
            }
        }
    }

    /// Books a failure that says Redis is out of reach; may open the
    /// breaker and start the prober.
    fn failed(&self, op: &'static str, msg: String) {
        self.connected.store(false, Ordering::Relaxed);
        // The server may come back without them (a restart).
        self.scripts_loaded.store(false, Ordering::Release);
        tracing::debug!(op, error = %msg, "redis store: call failed");
        if self.breaker.failure() == Tripped::Now {
            tracing::warn!(
                error = %msg,
                cooldown_ms = ms(self.breaker.cooldown()) as u64,
                "redis store: skipping redis for a cool-down after consecutive failures"
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(probe(self.weak.clone()));
            } else {
                // No runtime to probe from: let the next call try.
                self.breaker.close();
            }
        }
    }

    /// One PING, under the budget (for the prober).
    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.manager()?;
        let budget = self.command_timeout + self.connect_timeout;
        match tokio::time::timeout(budget, redis::cmd("PING").query_async::<Value>(&mut con)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError(describe("ping", &e))),
            Err(_) => Err(StoreError("redis ping timed out".into())),
        }
    }
}

/// Waits out the cool-down, then pings; closes the breaker when Redis
/// answers, or waits another cool-down. Ends with the store.
async fn probe(weak: Weak<Inner>) {
    loop {
        let Some(cooldown) = weak.upgrade().map(|i| i.breaker.cooldown()) else {
            return;
        };
        tokio::time::sleep(cooldown).await;
        let Some(inner) = weak.upgrade() else { return };
        // The first ping may meet the failed connection of the outage and
        // only start a new one; the second waits for that.
        let mut answered = false;
        for _ in 0..2 {
            if inner.ping().await.is_ok() {
                answered = true;
                break;
            }
        }
        if answered {
            inner.connected.store(true, Ordering::Relaxed);
            inner.breaker.close();
            tracing::info!("redis store: redis answers again; caching through it resumes");
            return;
        }
        inner.breaker.schedule_probe();
        tracing::debug!("redis store: probe failed; another cool-down");
    }
}

impl RedisStore {
    /// A builder for a store at `url`, such as `redis://127.0.0.1:6379/`
    /// (`redis://[user:password@]host[:port][/db]`, or `redis+unix://`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: "trc".into(),
            connect_timeout: Duration::from_millis(250),
            command_timeout: Duration::from_millis(100),
            cooldown: Duration::from_secs(1),
            failure_threshold: 3,
            near_cache: None,
            max_records: MAX_RECORDS,
        }
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

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
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
                return Err(StoreError(format!(
                    "redis get: unexpected answer {other:?}"
                )))
            }
        };
        match (code, value) {
            (Value::Int(0), _) => Ok(Lookup::Miss),
            (Value::Int(1), Some(Value::BulkString(bytes))) => {
                match codec::decode(Bytes::from(bytes), key.len()) {
                    Ok(entry) => {
                        let entry = Arc::new(entry);
                        if let (Some(near), Some(epoch)) = (&inner.near, epoch) {
                            near.insert(epoch, key, entry.clone());
                        }
                        Ok(Lookup::Found(entry))
                    }
                    Err(e) => {
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
                tracing::warn!(key, "redis store: unreadable entry dropped");
                Ok(Lookup::Miss)
            }
            (code, _) => Err(StoreError(format!("redis get: unexpected answer {code:?}"))),
        }
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let px = entry.grace_until_ms().saturating_sub(now_ms());
        if px == 0 {
            return Ok(());
        }
        let Some(value) = codec::encode(&entry) else {
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
        let stored: i64 = inner.run("put", inv.invoke_async(&mut con)).await?;
        if stored == 1 {
            if let (Some(near), Some(epoch)) = (&inner.near, epoch) {
                near.insert(epoch, key, entry);
            }
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
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

    async fn generation(&self) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let mut con = inner.begin().await?;
        let mut inv = inner.scripts.generation.prepare_invoke();
        self.index_keys(&mut inv, &inner.keys.clock);
        inner.run("generation", inv.invoke_async(&mut con)).await
    }

    async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let hashes: Vec<u64> = targets.iter().map(Target::hash).collect();
        let mut con = inner.begin().await?;
        let mut inv = inner.scripts.invalidate.prepare_invoke();
        self.index_keys(&mut inv, &inner.keys.clock);
        inv.arg(inner.max_records)
            .arg(PRUNE_BATCH)
            .arg(&inner.keys.channel);
        for h in &hashes {
            inv.arg(&h.to_be_bytes()[..]);
        }
        let generation: u64 = inner.run("invalidate", inv.invoke_async(&mut con)).await?;
        if let Some(near) = &inner.near {
            near.apply(generation, hashes);
        }
        Ok(generation)
    }
}
