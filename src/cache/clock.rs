//! The cache's time: milliseconds on a wall-clock scale, advanced by a
//! monotonic source, which a test may drive itself ([`ManualClock`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a cache reads the time, given to
/// [`CacheBuilder::clock`](crate::CacheBuilder::clock).
///
/// Entries carry their times in milliseconds since the Unix epoch, as
/// read on this clock when they were stored; TTLs, grace windows, `Age`
/// and the pruning of invalidation records all follow it.
///
/// - [`Clock::system`]: the system's coarse monotonic clock
///   (`CLOCK_MONOTONIC_COARSE` on Linux), a few milliseconds coarse, which
///   a TTL does not notice, and several times cheaper to read than the
///   precise clock on the hit path.
/// - [`Clock::tokio`]: tokio's clock, so that `tokio::time::pause` and
///   `tokio::time::advance` move the cache's TTLs in tests.
/// - a [`ManualClock`]: time moves only when the test says so, whatever
///   runtime (or none) the test uses.
///
/// Without a call to `clock`, a cache built inside a tokio runtime whose
/// clock is paused follows tokio's clock, and any other follows the
/// system's.
#[derive(Debug, Clone)]
pub struct Clock {
    base_ms: u64,
    source: Source,
}

/// Where a [`Clock`] reads the time elapsed since it was made.
#[derive(Debug, Clone)]
enum Source {
    Coarse(coarsetime::Instant),
    Tokio(tokio::time::Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system's coarse monotonic clock, on a wall-clock scale.
    pub fn system() -> Self {
        Self {
            base_ms: unix_ms(),
            source: Source::Coarse(coarsetime::Instant::now_without_cache_update()),
        }
    }

    /// tokio's clock (`tokio::time::Instant`), on a wall-clock scale: a
    /// paused runtime's clock stands still until advanced.
    pub fn tokio() -> Self {
        Self {
            base_ms: unix_ms(),
            source: Source::Tokio(tokio::time::Instant::now()),
        }
    }

    /// The default: tokio's clock when called inside a runtime whose clock
    /// is paused, else the system's.
    pub(crate) fn detect() -> Self {
        if tokio_clock_paused() {
            Self::tokio()
        } else {
            Self::system()
        }
    }

    /// Whether this clock follows tokio's clock.
    #[cfg(test)]
    pub(crate) fn follows_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio(_))
    }

    /// Now, in milliseconds since the Unix epoch as this clock counts them.
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = match &self.source {
            // Not `elapsed()`: that also writes coarsetime's shared
            // "recent" timestamp, one cache line every core would fight for.
            Source::Coarse(start) => coarsetime::Instant::now_without_cache_update()
                .duration_since(*start)
                .as_millis(),
            Source::Tokio(start) => start.elapsed().as_millis() as u64,
            Source::Manual(elapsed) => elapsed.load(Ordering::Relaxed),
        };
        self.base_ms + elapsed
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self {
            base_ms: manual.base_ms,
            source: Source::Manual(manual.elapsed_ms),
        }
    }
}

/// A clock that moves only when told to: give it to
/// [`CacheBuilder::clock`](crate::CacheBuilder::clock) and keep a clone to
/// [`advance`](Self::advance) it. Clones share one time.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::{Cache, ManualClock};
///
/// let clock = ManualClock::new();
/// let cache = Cache::builder().clock(clock.clone()).build();
/// clock.advance(Duration::from_secs(61)); // entries with a 60 s TTL are now stale
/// # let _ = cache;
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    base_ms: u64,
    elapsed_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at the current wall-clock time.
    pub fn new() -> Self {
        Self {
            base_ms: unix_ms(),
            elapsed_ms: Arc::default(),
        }
    }

    /// Moves the clock forward (to the millisecond).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.elapsed_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The time it stands at, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.elapsed_ms.load(Ordering::Relaxed)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether the current thread runs inside a tokio runtime whose clock is
/// paused. tokio does not say; but only a current-thread runtime can pause
/// its clock, and a paused clock stands still while this thread spins,
/// whereas a running one moves with the system's monotonic clock. The
/// spin (2 µs) happens once, when a cache is built without a clock.
fn tokio_clock_paused() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::CurrentThread => {}
        _ => return false,
    }
    let before = tokio::time::Instant::now();
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_the_clock_is_the_coarse_one_and_moves() {
        let clock = Clock::detect();
        assert!(!clock.follows_tokio());
        let first = clock.now_ms();
        assert!(first.abs_diff(unix_ms()) < 1_000, "{first}");
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
        assert!(!Clock::detect().follows_tokio());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_runtime_clock_is_followed() {
        let clock = Clock::detect();
        assert!(clock.follows_tokio());
        let first = clock.now_ms();
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(clock.now_ms(), first, "a paused clock stands still");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_ms(), first + 5_000);
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let manual = ManualClock::new();
        let clock = Clock::from(manual.clone());
        let first = clock.now_ms();
        assert_eq!(first, manual.now_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), first);
        manual.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), first + 1_500);
    }
}
