//! The circuit breaker: after `threshold` consecutive failures, every call
//! fails at once until a background probe finds Redis answering again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    start: Instant,
    failures: AtomicU32,
    open: AtomicBool,
    /// When the next probe is due, in ms since `start`.
    probe_at_ms: AtomicU64,
}

/// What a failed call did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tripped {
    /// Still closed.
    No,
    /// Opened by this failure: the caller starts the prober.
    Now,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            start: Instant::now(),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            probe_at_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn cooldown(&self) -> Duration {
        self.cooldown
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `Err` with a message while the breaker is open.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let left = self
            .probe_at_ms
            .load(Ordering::Relaxed)
            .saturating_sub(self.elapsed_ms());
        Err(format!(
            "redis skipped during cool-down after {} consecutive failures \
             (next probe in {left} ms)",
            self.failures.load(Ordering::Relaxed)
        ))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A call reached Redis: the run of failures is over, and so is a
    /// cool-down (a flush, which no cool-down skips, got through). `true`
    /// when this ended a cool-down.
    pub(crate) fn success(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        self.open.load(Ordering::Acquire) && self.open.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn failure(&self) -> Tripped {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= self.threshold && !self.open.load(Ordering::Acquire) {
            self.schedule_probe();
            if !self.open.swap(true, Ordering::AcqRel) {
                return Tripped::Now;
            }
        }
        Tripped::No
    }

    /// Sets the next probe one cool-down from now.
    pub(crate) fn schedule_probe(&self) {
        let cooldown = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
        self.probe_at_ms.store(
            self.elapsed_ms().saturating_add(cooldown),
            Ordering::Relaxed,
        );
    }

    /// Closes the breaker after a successful probe.
    pub(crate) fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_on_probe() {
        let b = Breaker::new(3, Duration::from_millis(100));
        assert!(b.check().is_ok());
        assert_eq!(b.failure(), Tripped::No);
        b.success();
        assert_eq!(b.failure(), Tripped::No);
        assert_eq!(b.failure(), Tripped::No);
        assert_eq!(b.failure(), Tripped::Now);
        assert_eq!(b.failure(), Tripped::No);
        let msg = b.check().unwrap_err();
        assert!(msg.contains("cool-down"), "{msg}");
        b.close();
        assert!(b.check().is_ok());
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn a_call_that_gets_through_ends_a_cool_down() {
        let b = Breaker::new(1, Duration::from_secs(60));
        assert!(!b.success());
        assert_eq!(b.failure(), Tripped::Now);
        assert!(b.check().is_err());
        assert!(b.success(), "ended the cool-down");
        assert!(b.check().is_ok());
        assert!(!b.success());
    }
}
