//! Request coalescing: one origin call per key at a time.
//!
//! The first miss on a key becomes the *leader* and goes to the origin; the
//! misses that follow wait for it. When the leader's response is stored,
//! the waiters are answered from the store. When it cannot be stored, the
//! waiters go to the origin at once (no convoy) and a short *pass marker*
//! lets later requests on that key skip waiting. A leader that goes away
//! (its client disconnected) releases its waiters; a waiter that waits too
//! long goes to the origin.
//!
//! A leader whose response turns out to vary (`Vary`) on a URL not known
//! to vary moves to its own variant's flight and tells its waiters the
//! header names: each joins its own variant's flight, so that only
//! requests for the same variant wait for each other.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::stats::{Counters, Reason};
use super::Cache;

/// How a leader's origin call ended, as its waiters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still under way.
    Pending,
    /// The response was stored: look it up.
    Stored,
    /// The response could not be stored: go to the origin.
    Pass,
    /// The leader went away: go to the origin.
    Abandoned,
    /// The response varies on these request headers: join the flight of
    /// the variant they select.
    Varies(Arc<[http::HeaderName]>),
}

/// One key's slot. The id tells one flight from a later one on the same
/// key, so that a leader (or an expiring marker) removes only its own.
enum Slot {
    InFlight {
        id: u64,
        rx: watch::Receiver<Outcome>,
    },
    Pass {
        id: u64,
        until_ms: u64,
    },
}

/// At most this many slots (origin calls under way and pass markers).
pub(crate) const MAX_SLOTS: usize = 4096;

/// A pass marker, in the order markers were set: as every marker lasts
/// the same time, also the order they expire in.
struct Marker {
    key: Arc<str>,
    id: u64,
    until_ms: u64,
}

#[derive(Default)]
struct Table {
    slots: HashMap<Arc<str>, Slot>,
    /// Every pass marker in `slots`, oldest first (and entries for markers
    /// already gone, skipped when they come up): at most [`MAX_SLOTS`].
    markers: VecDeque<Marker>,
    next_id: u64,
}

impl Table {
    /// Drops the markers that have expired, oldest first: each marker is
    /// queued once and dropped once, so this is O(1) amortised.
    fn expire(&mut self, now_ms: u64) {
        while self.markers.front().is_some_and(|m| m.until_ms <= now_ms) {
            self.drop_oldest_marker();
        }
    }

    /// Drops the oldest marker still queued (if its slot still holds it);
    /// whether a slot was freed.
    fn drop_oldest_marker(&mut self) -> bool {
        let Some(marker) = self.markers.pop_front() else {
            return false;
        };
        let ours = matches!(
            self.slots.get(&*marker.key),
            Some(Slot::Pass { id, .. }) if *id == marker.id
        );
        if ours {
            self.slots.remove(&*marker.key);
        }
        ours
    }

    /// Removes the slot of `key` if it is still flight `id`'s.
    fn remove_flight(&mut self, key: &str, id: u64) {
        if matches!(self.slots.get(key), Some(Slot::InFlight { id: i, .. }) if *i == id) {
            self.slots.remove(key);
        }
    }
}

#[derive(Default)]
struct Inner {
    table: Mutex<Table>,
    /// Times the table was full (see [`Stats::flights_full`](super::stats::Stats::flights_full)).
    full: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The table of keys with an origin call under way or a pass marker.
///
/// Bounded in count: at most [`MAX_SLOTS`] slots, whatever the request
/// rate. A slot goes when its flight ends, or when its leader is dropped
/// unfinished (its client went away); a pass marker goes when it expires
/// (markers are queued in the order set, which is the order they expire
/// in, and every miss drops the expired ones at the front of the queue).
/// When the table is full, a new flight takes the place of the oldest pass
/// marker; with none to take, the miss goes to the origin without
/// coalescing. Each counts in [`Stats::flights_full`](super::stats::Stats::flights_full).
/// Every operation is O(1) (amortised, for the expiry of markers).
///
/// Bounded in bytes: a key is at most 200 bytes (longer keys are looked up
/// by a 33-byte hash), a slot about 450 bytes besides its key while its
/// origin call is under way (the table's share, the key's allocation and
/// the watch channel waiters subscribe to; `tests/weight.rs` measures 644
/// bytes with a 200-byte key) and about 150 as a pass marker (with its
/// place in the expiry queue); so the table holds at most 4,096 × 650
/// bytes, under 3 MiB.
#[derive(Default)]
pub(crate) struct Flights {
    inner: Arc<Inner>,
}

/// What a miss should do.
pub(crate) enum Join {
    /// Go to the origin and report the outcome through the guard.
    Leader(Leader),
    /// Wait for the leader.
    Follower(watch::Receiver<Outcome>),
    /// A pass marker is set, or the table is full: go to the origin,
    /// without coalescing.
    Pass,
}

impl Flights {
    pub(crate) fn join(&self, key: &str, now_ms: u64) -> Join {
        let mut table = self.inner.lock();
        table.expire(now_ms);
        let key = match table.slots.get_key_value(key) {
            // A flight whose leader went away without reporting (its
            // sender is closed) is replaced.
            Some((_, Slot::InFlight { rx, .. }))
                if rx.has_changed().is_ok() && *rx.borrow() == Outcome::Pending =>
            {
                return Join::Follower(rx.clone());
            }
            Some((_, Slot::Pass { until_ms, .. })) if now_ms < *until_ms => return Join::Pass,
            // A finished flight or an expired marker: its place is taken.
            Some((key, _)) => key.clone(),
            None => {
                if table.slots.len() >= MAX_SLOTS {
                    self.inner.full.fetch_add(1, Relaxed);
                    while !table.drop_oldest_marker() {
                        if table.markers.is_empty() {
                            // Every slot is an origin call under way.
                            return Join::Pass;
                        }
                    }
                }
                Arc::from(key)
            }
        };
        let id = table.next_id;
        table.next_id += 1;
        let (tx, rx) = watch::channel(Outcome::Pending);
        table.slots.insert(key.clone(), Slot::InFlight { id, rx });
        Join::Leader(Leader {
            flights: self.inner.clone(),
            key,
            id,
            tx: Some(tx),
        })
    }

    /// Slots held now.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// Times the table was full.
    pub(crate) fn full(&self) -> u64 {
        self.inner.full.load(Relaxed)
    }
}

/// A leader's duty to report how its origin call ended. Dropping it
/// unreported releases the waiters as abandoned and frees its slot.
pub(crate) struct Leader {
    flights: Arc<Inner>,
    key: Arc<str>,
    id: u64,
    tx: Option<watch::Sender<Outcome>>,
}

impl Leader {
    /// The key this flight coalesces on.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Reports the outcome. `pass_until_ms` sets a pass marker for
    /// [`Outcome::Pass`] (0 for none), in the leader's own slot.
    pub(crate) fn finish(mut self, outcome: Outcome, pass_until_ms: u64) {
        let Some(tx) = self.tx.take() else { return };
        {
            let mut table = self.flights.lock();
            let own = matches!(
                table.slots.get(&*self.key),
                Some(Slot::InFlight { id, .. }) if *id == self.id
            );
            if own && matches!(outcome, Outcome::Pass) && pass_until_ms > 0 {
                let marker = Slot::Pass {
                    id: self.id,
                    until_ms: pass_until_ms,
                };
                table.slots.insert(self.key.clone(), marker);
                if table.markers.len() >= MAX_SLOTS {
                    table.drop_oldest_marker();
                }
                table.markers.push_back(Marker {
                    key: self.key.clone(),
                    id: self.id,
                    until_ms: pass_until_ms,
                });
            } else if own {
                table.slots.remove(&*self.key);
            }
        }
        let _ = tx.send(outcome);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Its slot first (only its own: the key may have a newer
            // flight), then its waiters go to the origin.
            self.flights.lock().remove_flight(&self.key, self.id);
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
                flight.finish(Outcome::Abandoned, 0);
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
                flight.finish(Outcome::Pass, until);
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
        leader.finish(Outcome::Pass, 100);
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
        leader.finish(Outcome::Stored, 0);
        assert_eq!(f.len(), 0);
    }

    fn lead(f: &Flights, key: &str, now_ms: u64) -> Leader {
        match f.join(key, now_ms) {
            Join::Leader(leader) => leader,
            _ => panic!("{key}: not a leader"),
        }
    }

    #[test]
    fn a_leader_removes_only_its_own_flight() {
        let f = Flights::default();
        let old = lead(&f, "k", 0);
        // Its outcome is out (so the key is taken by a newer flight) but
        // its slot not yet released: the newer flight must survive it.
        let _ = old.tx.as_ref().unwrap().send(Outcome::Abandoned);
        let new = lead(&f, "k", 0);
        drop(old);
        assert_eq!(f.len(), 1);
        assert!(matches!(f.join("k", 0), Join::Follower(_)));
        drop(new);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn markers_expire_in_order_and_make_room_when_full() {
        let f = Flights::default();
        for i in 0..MAX_SLOTS {
            lead(&f, &format!("k{i}"), 0).finish(Outcome::Pass, 1000 + i as u64);
        }
        assert_eq!(f.len(), MAX_SLOTS);
        // Full: a new flight takes the oldest marker's place (k0's), and
        // the next one k1's.
        let newest = lead(&f, "new", 10);
        assert_eq!((f.len(), f.full()), (MAX_SLOTS, 1));
        drop(lead(&f, "k0", 10));
        assert_eq!((f.len(), f.full()), (MAX_SLOTS - 1, 2));
        assert!(matches!(f.join("k2", 10), Join::Pass));
        // Expiry drops the markers due (k2 to k99), and only those.
        drop(lead(&f, "x", 1000 + 99));
        assert_eq!(f.len(), MAX_SLOTS - 100 + 1);
        assert!(matches!(f.join("k100", 1000 + 99), Join::Pass));
        drop(newest);
        // Every slot an origin call under way: no coalescing, no waiting.
        let f = Flights::default();
        let leaders: Vec<_> = (0..MAX_SLOTS)
            .map(|i| lead(&f, &format!("k{i}"), 0))
            .collect();
        assert!(matches!(f.join("one more", 0), Join::Pass));
        assert_eq!((f.len(), f.full()), (MAX_SLOTS, 1));
        drop(leaders);
        assert_eq!(f.len(), 0);
    }
}
