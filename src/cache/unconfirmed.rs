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

/// One owed flush, as [`Unconfirmed::owe`] kept it.
#[derive(Debug)]
pub(crate) enum Ticket {
    Listed(Vec<u64>),
    Overflow,
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
    /// Flushes owed beyond the bound: everything counts as covered.
    overflow: u32,
}

impl Unconfirmed {
    /// A flush of these record hashes could not be recorded: owed until
    /// its ticket is [settled](Self::settle).
    pub(crate) fn owe(&self, hashes: &[u64]) -> Ticket {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = if owed.hashes.len() + hashes.len() > MAX_HASHES {
            owed.overflow += 1;
            Ticket::Overflow
        } else {
            for &h in hashes {
                *owed.hashes.entry(h).or_default() += 1;
            }
            Ticket::Listed(hashes.to_vec())
        };
        self.publish(&owed);
        ticket
    }

    /// An owed flush landed (or was given up).
    pub(crate) fn settle(&self, ticket: Ticket) {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        match ticket {
            Ticket::Overflow => owed.overflow = owed.overflow.saturating_sub(1),
            Ticket::Listed(hashes) => {
                for h in hashes {
                    if let Some(n) = owed.hashes.get_mut(&h) {
                        *n -= 1;
                        if *n == 0 {
                            owed.hashes.remove(&h);
                        }
                    }
                }
            }
        }
        self.publish(&owed);
    }

    fn publish(&self, owed: &Owed) {
        let len = if owed.overflow > 0 {
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
        if owed.overflow > 0 {
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
        let first = u.owe(&flush);
        let second = u.owe(&flush[..1]);
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
    fn past_the_bound_everything_is_covered_until_the_backlog_clears() {
        let u = Unconfirmed::default();
        let many: Vec<u64> = (0..MAX_HASHES as u64 + 1).collect();
        let listed = u.owe(&[1, 2]);
        let over = u.owe(&many);
        assert!(u.covers(&entry("/anything", &[])));
        u.settle(over);
        assert!(!u.covers(&entry("/anything", &[])));
        u.settle(listed);
        assert!(!u.covers(&entry("/anything", &[])));
    }
}
