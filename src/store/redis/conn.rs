//! The connection to Redis: made on first use, every command under its time
//! budget, every failure a [`StoreError`] with its kind and its cause, and
//! the cool-down with its background probe.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use tokio::time::Instant;

use super::breaker::Tripped;
use super::{ms, near, scripts, Inner};
use crate::store::{StoreError, StoreErrorKind};

/// Whether an error says Redis is unreachable or unresponsive (rather than
/// an answer Redis gave): only these count towards a cool-down.
fn is_outage(e: &RedisError) -> bool {
    e.is_timeout()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
}

/// Whether a call failed on a connection that broke under it (Redis closed
/// an idle connection, a proxy cut it): the connection manager has a fresh
/// one by the next call, so the call is worth sending again at once.
pub(super) fn broken(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .is_some_and(|r| {
            // Not a refused connection (Redis is down: the next call would
            // be refused too), nor a timeout (it would cost the budget
            // twice).
            (r.is_connection_dropped() || r.is_io_error())
                && !r.is_connection_refusal()
                && !r.is_timeout()
        })
}

/// Runs a call, and once more at once when it failed on a broken
/// connection, before anything is given up (counted in `inner.resent`).
pub(super) async fn once_more<T, F, Fut>(inner: &Inner, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    match attempt().await {
        Err(e) if broken(&e) => {
            inner.resent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "redis store: the connection broke; sending again");
            attempt().await
        }
        other => other,
    }
}

/// A failed command as a [`StoreError`]: its kind from what Redis (or the
/// connection) said, the error itself as the source.
fn store_error(op: &str, e: RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        StoreErrorKind::Timeout
    } else if is_outage(&e) {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Protocol
    };
    StoreError::with_source(kind, describe(op, &e), e)
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
            let msg = format!("redis {} timed out (cancelled)", self.op);
            self.inner.failed(self.op, msg, false);
        }
    }
}

impl Inner {
    pub(super) fn entry_key(&self, key: &str) -> String {
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
            .map_err(|e| store_error("connect", e))?;
        Ok(self.manager.get_or_init(|| m).clone())
    }

    /// Starts the near cache's subscriber once, on first use.
    pub(super) fn start_subscriber(&self) {
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
                    [self.keys.clock.clone(), self.keys.meta.clone()],
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
    pub(super) async fn begin(&self) -> Result<ConnectionManager, StoreError> {
        self.breaker
            .check()
            .map_err(|msg| StoreError::new(StoreErrorKind::Unavailable, msg))?;
        self.begin_anyway().await
    }

    /// Hands out a connection, with the scripts loaded, whatever the
    /// breaker says: for flushes, which a cool-down must never skip.
    pub(super) async fn begin_anyway(&self) -> Result<ConnectionManager, StoreError> {
        self.start_subscriber();
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
    pub(super) async fn run<T>(
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
                if self.breaker.success() {
                    tracing::info!(
                        op,
                        "redis store: redis answers again; caching through it resumes"
                    );
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                let error = if e.is_timeout() {
                    let msg = format!("redis {op} timed out after {} ms", ms(budget));
                    StoreError::with_source(StoreErrorKind::Timeout, msg, e)
                } else {
                    store_error(op, e)
                };
                if error.kind() == StoreErrorKind::Protocol {
                    tracing::debug!(op, %error, "redis store: command failed");
                } else {
                    let lost = error.kind() != StoreErrorKind::Timeout;
                    self.failed(op, error.message().to_owned(), lost);
                }
                Err(error)
            }
            Err(_) => {
                let msg = format!("redis {op} timed out after {} ms", ms(budget));
                self.failed(op, msg.clone(), false);
                Err(StoreError::timeout(msg))
            }
        }
    }

    /// Counts and traces a script's finding that the namespace was empty
    /// (`seeded` is 1).
    pub(super) fn seeded(&self, seeded: i64) {
        if seeded == 1 {
            self.resets.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                namespace = %self.namespace,
                "redis store: the namespace was empty (a new Redis, or one restarted without \
                 persistence or flushed): the clock starts above every generation handed out \
                 before, and entries stored before are gone"
            );
        }
    }

    /// Books a failure that says Redis is out of reach (`lost`: the
    /// connection, rather than a timely answer); may open the breaker and
    /// start the prober.
    fn failed(&self, op: &'static str, msg: String, lost: bool) {
        self.connected.store(false, Ordering::Relaxed);
        if lost {
            // The server may come back without them (a restart). Not after
            // a timeout: a stalled Redis keeps them, and a call that begins
            // with loading them again would leave only that load, not the
            // flush itself, queued for when Redis answers again.
            self.scripts_loaded.store(false, Ordering::Release);
        }
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
            Ok(Err(e)) => Err(store_error("ping", e)),
            Err(_) => Err(StoreError::timeout("redis ping timed out")),
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
        if !inner.breaker.is_open() {
            // A call got through meanwhile and ended the cool-down.
            return;
        }
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
