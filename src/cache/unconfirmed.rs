//! Flushes a network store has not recorded yet: while one is owed, this
//! instance serves none of the entries it covers, whatever the store says.
//!
//! A writer cut off from Redis cannot make the others drop what its write
//! made stale (they keep serving it until the record lands or the entry
//! expires); it can keep its own promise. Each failed flush's record hashes
//! (its prefixes and tags, as the index records them) are kept here until a
//! retry lands; a lookup that finds an entry any of them covers treats it as
//! flushed. Bounded: past [`MAX_HASHES`] owed hashes, every entry counts as
//! covered until the backlog clears.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::invalidate::target::{for_each_prefix, tag_hash};
use crate::store::Entry;

/// The most owed record hashes kept one by one.
pub(crate) const MAX_HASHES: usize = 4096;

/// The most owed flushes kept (and retried) one by one.
pub(crate) const MAX_LISTED: usize = 256;

/// The most bytes of prefixes and tags the flushes kept one by one hold.
pub(crate) const MAX_LISTED_BYTES: usize = 256 << 10;

/// One owed flush, as [`Unconfirmed::owe`] kept it.
#[derive(Debug)]
pub(crate) enum Ticket {
    /// Kept one by one: retry its own targets (of `bytes` bytes), then
    /// [settle](Unconfirmed::settle).
    Listed { hashes: Vec<u64>, bytes: usize },
    /// Merged into the flush of everything; `sweep` when no task retries
    /// that flush yet (start one: see [`Unconfirmed::swept`]).
    Merged { sweep: bool },
}

/// Owed record hashes, each with the number of failed flushes naming it.
#[derive(Debug, Default)]
pub(crate) struct Unconfirmed {
    /// Hashes held (0: the lookup's one check); `usize::MAX` when over the
    /// bound.
    len: AtomicUsize,
    owed: Mutex<Owed>,
}

#[derive(Debug, Default)]
struct Owed {
    hashes: HashMap<u64, u32>,
    /// Flushes kept one by one, and the bytes of their targets.
    listed: usize,
    listed_bytes: usize,
    /// Flushes merged into the flush of everything so far (while one is
    /// owed, everything counts as covered).
    merged: u64,
    /// Whether a task retries the flush of everything.
    sweeping: bool,
}

impl Unconfirmed {
    /// A flush of these record hashes, whose targets hold `bytes` bytes of
    /// text, could not be recorded: owed until its ticket is
    /// [settled](Self::settle) (or, merged, until a flush of everything is
    /// [swept](Self::swept)).
    pub(crate) fn owe(&self, hashes: &[u64], bytes: usize) -> Ticket {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = if owed.sweeping
            || owed.listed >= MAX_LISTED
            || owed.listed_bytes + bytes > MAX_LISTED_BYTES
            || owed.hashes.len() + hashes.len() > MAX_HASHES
        {
            owed.merged += 1;
            let sweep = !std::mem::replace(&mut owed.sweeping, true);
            Ticket::Merged { sweep }
        } else {
            owed.listed += 1;
            owed.listed_bytes += bytes;
            for &h in hashes {
                *owed.hashes.entry(h).or_default() += 1;
            }
            Ticket::Listed {
                hashes: hashes.to_vec(),
                bytes,
            }
        };
        self.publish(&owed);
        ticket
    }

    /// An owed flush landed (or was given up).
    pub(crate) fn settle(&self, ticket: Ticket) {
        let Ticket::Listed { hashes, bytes } = ticket else {
            return;
        };
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        owed.listed -= 1;
        owed.listed_bytes -= bytes;
        for h in hashes {
            if let Some(n) = owed.hashes.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    owed.hashes.remove(&h);
                }
            }
        }
        self.publish(&owed);
    }

    /// How many flushes were merged so far: read before each attempt of
    /// the flush of everything, and handed to [`swept`](Self::swept).
    pub(crate) fn merged(&self) -> u64 {
        self.owed.lock().unwrap_or_else(|e| e.into_inner()).merged
    }

    /// The flush of everything, attempted after `merged` flushes had been
    /// merged, landed (or was given up): whether that settles them all.
    /// When another was merged since, the attempt may have landed before
    /// it: the sweep goes on.
    pub(crate) fn swept(&self, merged: u64) -> bool {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        if owed.merged != merged {
            return false;
        }
        owed.sweeping = false;
        self.publish(&owed);
        true
    }

    fn publish(&self, owed: &Owed) {
        let len = if owed.sweeping {
            usize::MAX
        } else {
            owed.hashes.len()
        };
        self.len.store(len, Ordering::Release);
    }

    /// Whether an owed flush covers `entry` (its path's segment prefixes,
    /// its tags, its request key).
    #[inline]
    pub(crate) fn covers(&self, entry: &Entry) -> bool {
        match self.len.load(Ordering::Acquire) {
            0 => false,
            usize::MAX => true,
            _ => self.covers_slowly(entry),
        }
    }

    #[inline(never)]
    fn covers_slowly(&self, entry: &Entry) -> bool {
        let owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        if owed.sweeping {
            return true;
        }
        let owes = |h: u64| owed.hashes.contains_key(&h);
        owes(entry.key_hash())
            || !for_each_prefix(entry.path(), |h| !owes(h))
            || entry.tags().any(|t| owes(tag_hash(t)))
    }

    /// Owed hashes held (for the statistics).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidate::Target;

    fn entry(path: &str, tags: &[&str]) -> Entry {
        Entry::builder()
            .path(path)
            .tags(tags.iter().copied())
            .build()
    }

    #[test]
    fn owed_flushes_cover_their_entries_until_settled() {
        let u = Unconfirmed::default();
        let (item, other) = (entry("/products/7", &[]), entry("/orders", &["dash"]));
        assert!(!u.covers(&item));
        let flush = [
            Target::prefix("/products").hash(),
            Target::tag("dash").hash(),
        ];
        let first = u.owe(&flush, 13);
        let second = u.owe(&flush[..1], 9);
        assert!(u.covers(&item) && u.covers(&other));
        assert!(!u.covers(&entry("/productsx", &[])));
        u.settle(first);
        assert!(
            u.covers(&item),
            "the second flush of /products is still owed"
        );
        assert!(!u.covers(&other));
        u.settle(second);
        assert!(!u.covers(&item));
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn past_the_bound_everything_is_covered_until_the_sweep_lands() {
        let u = Unconfirmed::default();
        let many: Vec<u64> = (0..MAX_HASHES as u64 + 1).collect();
        let listed = u.owe(&[1, 2], 4);
        assert!(matches!(u.owe(&many, 4), Ticket::Merged { sweep: true }));
        assert!(u.covers(&entry("/anything", &[])));
        let attempt = u.merged();
        // Merged while the sweep is under way: it must land again.
        assert!(matches!(u.owe(&[3], 1), Ticket::Merged { sweep: false }));
        assert!(!u.swept(attempt));
        assert!(u.covers(&entry("/anything", &[])));
        assert!(u.swept(u.merged()));
        assert!(!u.covers(&entry("/anything", &[])));
        u.settle(listed);
        assert!(!u.covers(&entry("/anything", &[])));
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn owed_flushes_are_kept_one_by_one_up_to_a_count() {
        let u = Unconfirmed::default();
        let tickets: Vec<_> = (1..=MAX_LISTED as u64).map(|h| u.owe(&[h], 8)).collect();
        assert!(tickets.iter().all(|t| matches!(t, Ticket::Listed { .. })));
        assert!(!u.covers(&entry("/anything", &[])));
        assert!(matches!(u.owe(&[7], 8), Ticket::Merged { sweep: true }));
        assert!(u.swept(u.merged()));
        for t in tickets {
            u.settle(t);
        }
        // And in bytes: one long flush is kept, then no more.
        let long = u.owe(&[7], MAX_LISTED_BYTES);
        assert!(matches!(long, Ticket::Listed { .. }));
        assert!(matches!(u.owe(&[8], 1), Ticket::Merged { sweep: true }));
        assert!(u.swept(u.merged()));
        u.settle(long);
        assert!(matches!(u.owe(&[7], 8), Ticket::Listed { .. }));
    }
}
