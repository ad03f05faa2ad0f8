//! [`RedisStoreBuilder`]: the settings of a [`RedisStore`], checked when it
//! is built (nothing connects until the first call).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;

use super::breaker::Breaker;
use super::near::Near;
use super::{scripts, Inner, Keys, RedisStore, Scripts};
use crate::store::ConfigError;

/// The most index records Redis keeps by default (they live in Redis, not
/// in this process's memory).
const MAX_RECORDS: usize = 1 << 18;

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
    /// The defaults, for a store at `url`.
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            namespace: "trc".into(),
            connect_timeout: Duration::from_millis(250),
            command_timeout: Duration::from_millis(100),
            cooldown: Duration::from_secs(1),
            failure_threshold: 3,
            near_cache: None,
            max_records: MAX_RECORDS,
        }
    }

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
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| ConfigError::with_source(format!("invalid redis url: {e}"), e))?;
        if self.namespace.contains(['{', '}']) {
            return Err(ConfigError::new(format!(
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
            dropped: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        Ok(RedisStore { inner })
    }
}
