//! What a test's thread traced: every event, at every level, kept for the
//! threads that asked.
//!
//! One global subscriber, installed once, hands each event to the calling
//! thread's log if it keeps one. A scoped default (`set_default`) would
//! lose events at callsites another test's thread reached first
//! (tokio-rs/tracing#3611). The fault tests run on a current-thread
//! runtime, so every event of the fleet they drive (requests, store calls,
//! background flushes and probes) is on that thread.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};

thread_local! {
    static LOG: RefCell<Option<Log>> = const { RefCell::new(None) };
}

/// The events of one thread, one line each: `LEVEL message field=value ...`.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Level, String)>>>);

impl Log {
    /// Panics unless an event at `level` holds `needle`.
    pub fn assert_has(&self, level: Level, needle: &str) {
        self.assert_has_any(&[(level, needle)]);
    }

    /// Panics unless, for one of the pairs, an event at its level holds its
    /// needle.
    pub fn assert_has_any(&self, wanted: &[(Level, &str)]) {
        let events = self.0.lock().unwrap();
        assert!(
            wanted.iter().any(|(level, needle)| events
                .iter()
                .any(|(l, line)| l == level && line.contains(needle))),
            "no event matching {wanted:?} among {} events; the last ones: {:#?}",
            events.len(),
            &events[events.len().saturating_sub(20)..],
        );
    }
}

struct Recorder;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        LOG.with(|log| {
            let Some(log) = &*log.borrow() else { return };
            let mut line = Line(String::new());
            event.record(&mut line);
            let level = *event.metadata().level();
            log.0.lock().unwrap().push((level, line.0));
        });
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }
}

/// Keeps every event of the calling thread from now on.
pub fn this_thread() -> Log {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder))
            .expect("the only global subscriber of this test binary");
    });
    // Callsites another thread was registering while the recorder was
    // installed get its interest too.
    tracing::callsite::rebuild_interest_cache();
    let log = Log::default();
    LOG.with(|l| *l.borrow_mut() = Some(log.clone()));
    log
}
