//! Flushing: the programmatic API ([`Cache::invalidate_prefix`] and
//! friends), and the retries of a flush a network store refused.

use std::future::Future;
use std::time::Duration;

use super::backend::Backend;
use super::unconfirmed::Ticket;
use super::Cache;
use crate::invalidate::Target;
use crate::store::StoreError;

/// How long a failed flush is retried in the background (while it is
/// owed, this instance serves none of the entries it covers), and the
/// longest pause between two attempts.
const RETRY_FOR: Duration = Duration::from_secs(3600);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

impl Cache {
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
    /// With a network store ([`CacheBuilder::store`](crate::CacheBuilder::store))
    /// the flush is sent in the background (retried for a few seconds if
    /// the store fails) and this returns 0; await [`flush`](Self::flush) to
    /// know it holds.
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
        let Backend::Memory(memory) = &self.shared.backend else {
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
        };
        let generation = memory.invalidate_now(targets);
        self.counted(targets, generation, by);
        generation
    }

    /// Records a write's flush once more (when its body ends), not counted
    /// as another invalidation: at once in memory (`None`), else as a future
    /// to await, which keeps trying for the store timeout as the first
    /// flush does.
    pub(crate) fn flush_again(&self, targets: &[Target]) -> Option<impl Future<Output = bool>> {
        if let Backend::Memory(memory) = &self.shared.backend {
            let generation = memory.invalidate_now(targets);
            tracing::debug!(
                ?targets,
                generation,
                "a write's flush repeated as its body ended"
            );
            return None;
        }
        let cache = self.clone();
        let targets = targets.to_vec();
        Some(async move {
            // As patient as the first: a stall shorter than the store
            // timeout must not leave it owed.
            match cache.record_within_budget(&targets).await {
                Ok(generation) => {
                    tracing::debug!(
                        ?targets,
                        generation,
                        "a write's flush repeated as its body ended"
                    );
                    true
                }
                Err(e) => {
                    tracing::error!(
                        ?targets,
                        error = %e,
                        "a write's flush, repeated as its body ended, could not be recorded \
                         in the store within its time budget; other instances may serve the \
                         flushed entries until a retry lands"
                    );
                    cache.retry_in_background(targets, None);
                    false
                }
            }
        })
    }

    /// Flushes targets and waits for the store; a failed flush is retried
    /// in the background.
    pub(crate) async fn flush_by(
        &self,
        targets: &[Target],
        by: &'static str,
    ) -> Result<u64, StoreError> {
        match self.record_within_budget(targets).await {
            Ok(generation) => {
                self.counted(targets, generation, by);
                Ok(generation)
            }
            Err(e) => {
                tracing::error!(
                    ?targets,
                    by,
                    error = %e,
                    "a flush could not be recorded in the store within its time budget; \
                     other instances may serve the flushed entries until a retry lands"
                );
                self.retry_in_background(targets.to_vec(), Some(by));
                Err(e)
            }
        }
    }

    /// Records an invalidation, trying again (with a short, growing pause)
    /// until the store timeout has passed: a store that is paused, or
    /// reconnecting, for less than that still gets the flush before the
    /// write's response leaves.
    async fn record_within_budget(&self, targets: &[Target]) -> Result<u64, StoreError> {
        let deadline = tokio::time::Instant::now() + self.shared.flush_budget;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.shared.backend.invalidate(targets).await {
                Ok(generation) => return Ok(generation),
                Err(e) => {
                    self.store_error("invalidate", &e);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Owes a failed flush at once (this instance serves none of what it
    /// covers from now on), and retries it in the background: by a task of
    /// its own, or, past the bound of flushes owed one by one, by the one
    /// task that retries a flush of everything for all of them.
    fn retry_in_background(&self, targets: Vec<Target>, by: Option<&'static str>) {
        let hashes: Vec<u64> = targets.iter().map(Target::hash).collect();
        let bytes = targets
            .iter()
            .map(|t| match t {
                Target::Prefix(s) | Target::Tag(s) | Target::Key(s) => s.len(),
            })
            .sum();
        let cache = self.clone();
        match self.shared.unconfirmed.owe(&hashes, bytes) {
            Ticket::Merged { sweep: false } => {}
            Ticket::Merged { sweep: true } => {
                tracing::error!(
                    ?targets,
                    "too many flushes owed to the store: merged into one flush of \
                     everything, retried in the background; until it lands this \
                     instance serves nothing from the cache"
                );
                tokio::spawn(async move { cache.sweep().await });
            }
            ticket => {
                tokio::spawn(async move { cache.retry_flush(targets, by, ticket).await });
            }
        }
    }

    /// Retries a failed flush a bounded number of times: a store that comes
    /// back soon must not keep entries a write made stale. Counted when it
    /// lands on behalf of `by` (a repeated flush is not counted again).
    ///
    /// Until it lands, the flush is owed: this instance serves none of the
    /// entries it covers (see [`unconfirmed`](super::unconfirmed)).
    async fn retry_flush(&self, targets: Vec<Target>, by: Option<&'static str>, ticket: Ticket) {
        if let Some(generation) = self.retry(&targets).await {
            if let Some(by) = by {
                self.counted(&targets, generation, by);
            }
        }
        self.shared.unconfirmed.settle(ticket);
    }

    /// Retries a flush of everything for the flushes merged into it, until
    /// one attempt lands after the last of them was merged (or is given
    /// up).
    async fn sweep(&self) {
        let everything = [Target::prefix("/")];
        loop {
            let merged = self.shared.unconfirmed.merged();
            let landed = self.retry(&everything).await;
            if let Some(generation) = landed {
                self.counted(&everything, generation, "retry");
            }
            if self.shared.unconfirmed.swept(merged) {
                break;
            }
        }
    }

    /// Tries to record `targets` in the store, with a growing pause, for
    /// up to [`RETRY_FOR`]; the generation it landed at, if it did.
    async fn retry(&self, targets: &[Target]) -> Option<u64> {
        let give_up = tokio::time::Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            tokio::time::sleep(pause).await;
            attempt += 1;
            match self.shared.backend.invalidate(targets).await {
                Ok(generation) => {
                    tracing::info!(?targets, attempt, "flush retried and recorded");
                    return Some(generation);
                }
                Err(e) => self.store_error("invalidate", &e),
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::error!(
                    ?targets,
                    "flush could not be recorded in the store for an hour; given up: \
                     entries under these targets may be served until their TTL ends"
                );
                return None;
            }
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Counts and traces a recorded flush.
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
}
