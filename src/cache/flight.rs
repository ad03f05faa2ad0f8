//! Request coalescing: one origin call per key at a time.
//!
//! The first miss on a key becomes the *leader* and goes to the origin; the
//! misses that follow wait for it. When the leader's response is stored,
//! the waiters are answered from the store. When it cannot be stored, the
//! waiters go to the origin at once (no convoy) and a short *pass marker*
//! lets later requests on that key skip waiting. A leader that goes away
//! (its client disconnected) releases its waiters; a waiter that waits too
//! long goes to the origin.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::stats::{Counters, Reason};
use super::Cache;

/// How a leader's origin call ended, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still under way.
    Pending,
    /// The response was stored: look it up.
    Stored,
    /// The response could not be stored: go to the origin.
    Pass,
    /// The leader went away: go to the origin.
    Abandoned,
}

enum Slot {
    InFlight(watch::Receiver<Outcome>),
    Pass { until_ms: u64 },
}

/// Past this many slots, expired pass markers are swept on insert.
const SWEEP_ABOVE: usize = 4096;

/// The table of keys with an origin call under way or a pass marker.
#[derive(Default)]
pub(crate) struct Flights {
    slots: Mutex<HashMap<Box<str>, Slot>>,
}

/// What a miss should do.
pub(crate) enum Join {
    /// Go to the origin and report the outcome through the guard.
    Leader(Leader),
    /// Wait for the leader.
    Follower(watch::Receiver<Outcome>),
    /// A pass marker is set: go to the origin, without coalescing.
    Pass,
}

impl Flights {
    pub(crate) fn join(&self, key: &str, now_ms: u64) -> Join {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(key) {
            // A flight whose leader went away without reporting (its
            // sender is closed) is replaced.
            Some(Slot::InFlight(rx))
                if rx.has_changed().is_ok() && *rx.borrow() == Outcome::Pending =>
            {
                return Join::Follower(rx.clone());
            }
            Some(Slot::Pass { until_ms }) if now_ms < *until_ms => return Join::Pass,
            _ => {}
        }
        if slots.len() >= SWEEP_ABOVE {
            slots.retain(|_, s| match s {
                Slot::InFlight(_) => true,
                Slot::Pass { until_ms } => now_ms < *until_ms,
            });
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        slots.insert(key.into(), Slot::InFlight(rx));
        Join::Leader(Leader {
            key: key.into(),
            tx: Some(tx),
        })
    }

    /// Ends a leader's flight: a pass marker (until `pass_until_ms`) when
    /// its response could not be stored, nothing otherwise.
    fn finish(&self, key: &str, outcome: Outcome, pass_until_ms: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if outcome == Outcome::Pass && pass_until_ms > 0 {
            slots.insert(
                key.into(),
                Slot::Pass {
                    until_ms: pass_until_ms,
                },
            );
        } else {
            slots.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

/// A leader's duty to report how its origin call ended. Dropping it
/// unreported releases the waiters as abandoned.
pub(crate) struct Leader {
    key: Box<str>,
    tx: Option<watch::Sender<Outcome>>,
}

impl Leader {
    /// Reports the outcome. `pass_until_ms` sets a pass marker for
    /// [`Outcome::Pass`] (0 for none).
    pub(crate) fn finish(mut self, flights: &Flights, outcome: Outcome, pass_until_ms: u64) {
        if let Some(tx) = self.tx.take() {
            flights.finish(&self.key, outcome, pass_until_ms);
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The table entry stays until the next miss on the key replaces
            // it (`Flights::join` skips finished flights); the waiters go
            // to the origin now.
            let _ = tx.send(Outcome::Abandoned);
        }
    }
}

impl Cache {
    /// Ends a leader's flight for a response that was not stored: waiters
    /// go to the origin; a pass marker is set unless the failure was
    /// transient (a body error, a client gone).
    pub(crate) fn end_flight(&self, flight: Leader, reason: Reason) {
        let shared = &self.shared;
        match reason {
            Reason::BodyError | Reason::Incomplete | Reason::RequestNoStore => {
                flight.finish(&shared.flights, Outcome::Abandoned, 0);
            }
            _ => {
                let pass = shared.pass_ms;
                if pass > 0 {
                    Counters::add(&shared.extra.pass_markers);
                }
                let until = if pass > 0 {
                    shared.clock.now_ms() + pass
                } else {
                    0
                };
                flight.finish(&shared.flights, Outcome::Pass, until);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_then_followers_then_pass() {
        let f = Flights::default();
        let Join::Leader(leader) = f.join("k", 0) else {
            panic!()
        };
        let Join::Follower(rx) = f.join("k", 0) else {
            panic!()
        };
        leader.finish(&f, Outcome::Pass, 100);
        assert_eq!(*rx.borrow(), Outcome::Pass);
        assert!(matches!(f.join("k", 50), Join::Pass));
        assert!(matches!(f.join("k", 150), Join::Leader(_)));
    }

    #[test]
    fn a_dropped_leader_releases_waiters_and_is_replaced() {
        let f = Flights::default();
        let Join::Leader(leader) = f.join("k", 0) else {
            panic!()
        };
        let Join::Follower(rx) = f.join("k", 0) else {
            panic!()
        };
        drop(leader);
        assert_eq!(*rx.borrow(), Outcome::Abandoned);
        assert!(matches!(f.join("k", 0), Join::Leader(_)));
    }

    #[test]
    fn a_stored_flight_leaves_no_slot() {
        let f = Flights::default();
        let Join::Leader(leader) = f.join("k", 0) else {
            panic!()
        };
        leader.finish(&f, Outcome::Stored, 0);
        assert_eq!(f.len(), 0);
    }
}
