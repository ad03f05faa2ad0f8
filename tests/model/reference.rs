//! The reference model, for one request at a time on the paused clock:
//! what every answer, statistic and origin call must be.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::SeqCst;

use tower_response_cache::{Counts, Stats};

use crate::app::{App, Db};
use crate::program::Op;
use crate::world::{
    dash_max_age_ms, data_key, spec, swr_route, write_flushes, Flush, User, DASH_KEEP, PATTERNS,
    REVIEWS,
};

/// A stored entry, as the model predicts it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: &'static str,
    pub version: u64,
    /// When its origin read happened (and its read began).
    pub at: u64,
    pub born: u64,
    pub fresh_until: u64,
    pub swr_until: u64,
    pub sie_until: u64,
    pub keep_until: u64,
    /// It carries the origin's `ETag`: revalidated when stale.
    pub validator: bool,
}

/// Per route: what the statistics must say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub hits: u64,
    pub stale: u64,
    pub misses: u64,
    pub stores: u64,
    pub stale_dropped: u64,
    pub bypasses: BTreeMap<&'static str, u64>,
    pub not_stored: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn of(c: &Counts) -> Tally {
        Tally {
            hits: c.hits,
            stale: c.stale,
            misses: c.misses,
            stores: c.stores,
            stale_dropped: c.stale_dropped,
            bypasses: c.bypasses.clone(),
            not_stored: c.not_stored.clone(),
        }
    }
}

/// The answer the model expects.
#[derive(Debug, PartialEq)]
pub struct Expect {
    pub kind: String,
    pub v: u64,
    pub at: u64,
    pub status: u16,
}

#[derive(Default)]
pub struct Model {
    pub now: u64,
    /// The invalidation clock, and the last record of each target.
    pub generation: u64,
    pub records: HashMap<Flush, Record>,
    /// The longest life of an entry stored so far: records older than
    /// this are pruned (they can no longer cover a live entry).
    pub horizon: u64,
    pub entries: BTreeMap<(&'static str, Option<User>), Entry>,
    pub tally: BTreeMap<&'static str, Tally>,
    pub reads: u64,
    pub writes: u64,
    pub refreshes: u64,
    pub revalidations: u64,
    pub revalidated: u64,
    pub outage: bool,
    /// What a read takes at the origin (`Op::Slow`).
    pub delay: u64,
}

/// The last invalidation of one target.
#[derive(Debug)]
pub struct Record {
    pub generation: u64,
    pub at: u64,
    /// Dropped from the index (past the horizon when the index was last
    /// pruned): it still says whether an entry is valid here, since an
    /// entry it covers is past all its windows by then; it only decides
    /// whether dropping the entry is counted.
    pub pruned: bool,
}

impl Model {
    pub fn flush(&mut self, flushes: &[Flush]) {
        self.generation += 1;
        for f in flushes {
            let record = Record {
                generation: self.generation,
                at: self.now,
                pruned: false,
            };
            self.records.insert(f.clone(), record);
        }
        self.prune();
    }

    /// The index is pruned when a flush is recorded and when an entry is
    /// stored.
    pub fn prune(&mut self) {
        for r in self.records.values_mut() {
            r.pruned |= r.at + self.horizon < self.now;
        }
    }

    pub fn store(&mut self, key: (&'static str, Option<User>), entry: Entry) {
        self.horizon = self.horizon.max(entry.keep_until - entry.at);
        self.entries.insert(key, entry);
        self.prune();
    }

    /// The records, pruned or not, that flush an entry.
    pub fn flushing<'a>(&'a self, e: &'a Entry) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .iter()
            .filter(move |(f, r)| r.generation > e.born && f.covers(e.path))
            .map(|(_, r)| r)
    }

    /// The entry an origin read of `version` begun `at` makes (its age
    /// counts from there: the origin's delay is in its age on arrival).
    pub fn entry(&self, path: &'static str, version: u64, at: u64) -> Entry {
        let s = spec(path);
        let (ttl, keep) = match s.ttl_ms {
            Some(ttl) => (ttl, s.swr_ms.max(s.sie_ms)),
            None => (dash_max_age_ms(version), DASH_KEEP),
        };
        let fresh_until = at + ttl;
        Entry {
            path,
            version,
            at,
            born: self.generation,
            fresh_until,
            swr_until: fresh_until + s.swr_ms,
            sie_until: fresh_until + s.sie_ms,
            keep_until: fresh_until + keep,
            validator: s.ttl_ms.is_none(),
        }
    }

    /// Applies one step; for a read, the answer it must get.
    pub fn step(&mut self, op: &Op, db: &Db) -> Option<Expect> {
        match *op {
            Op::Get(path, user) => Some(self.read(path, user, false, db)),
            Op::Head(path, user) => Some(self.read(path, user, true, db)),
            Op::Put(path, _) | Op::Delete(path, _) => {
                self.writes += 1;
                let tally = self.tally.entry(spec(path).pattern).or_default();
                *tally.bypasses.entry("method").or_default() += 1;
                // Flushed when the head arrives, and again as the body ends.
                self.flush(&write_flushes(path));
                self.flush(&write_flushes(path));
                None
            }
            Op::FlushPrefix(p) => {
                self.flush(&[Flush::Prefix(p.into())]);
                None
            }
            Op::FlushTag(t) => {
                self.flush(&[Flush::Tag(t.into())]);
                None
            }
            Op::Outage(on) => {
                self.outage = on;
                None
            }
            Op::Slow(by) => {
                self.delay = by;
                None
            }
            Op::Advance(by) => {
                self.now += by;
                None
            }
            Op::Job(..) => None,
        }
    }

    pub fn read(&mut self, path: &'static str, user: User, head: bool, db: &Db) -> Expect {
        let s = spec(path);
        let version = db.get(data_key(path, user));
        let failing = path == REVIEWS && self.outage;
        let origin_status = if failing { 503 } else { 200 };
        // The read's start; an origin call ends `delay` later.
        let now = self.now;
        let delay = if swr_route(path) { 0 } else { self.delay };
        let answer = |kind: &str, v: u64, at: u64, status: u16| Expect {
            kind: kind.to_owned(),
            v,
            at,
            status,
        };
        let bypass = match (s.scoped, user) {
            (true, User::Anon) => Some("no-scope"),
            (false, User::Alice | User::Bob) => Some("authorization"),
            _ => None,
        };
        if let Some(reason) = bypass {
            self.reads += 1;
            self.now += delay;
            let tally = self.tally.entry(s.pattern).or_default();
            *tally.bypasses.entry(reason).or_default() += 1;
            return answer(&format!("bypass:{reason}"), version, now, origin_status);
        }
        let key = (path, s.scoped.then_some(user));
        // The lookup: a flushed entry is dropped (and counted), one past
        // all its windows dropped.
        let mut dropped = false;
        let found = match self.entries.get(&key) {
            Some(e) if self.flushing(e).next().is_some() => {
                // Counted when the index still holds a record of the
                // flush; else the entry is past its windows, and goes as
                // an expired one.
                dropped = self.flushing(e).any(|r| !r.pruned);
                None
            }
            Some(e) if now >= e.keep_until => None,
            found => found.cloned(),
        };
        if found.is_none() {
            self.entries.remove(&key);
        }
        let mut tally = self.tally.remove(s.pattern).unwrap_or_default();
        if dropped {
            tally.stale_dropped += 1;
        }
        let expect = match found {
            Some(e) if now < e.fresh_until => {
                tally.hits += 1;
                answer("hit", e.version, e.at, 200)
            }
            Some(e) if now < e.swr_until => {
                tally.stale += 1;
                if !head {
                    // One background refresh, stored.
                    self.refreshes += 1;
                    self.reads += 1;
                    tally.stores += 1;
                    self.store(key, self.entry(path, version, now));
                }
                answer("stale-while-revalidate", e.version, e.at, 200)
            }
            stale => {
                tally.misses += 1;
                self.reads += 1;
                self.now += delay;
                match stale {
                    Some(e) if !head && e.validator => {
                        self.revalidations += 1;
                        tally.stores += 1;
                        self.store(key, self.entry(path, version, now));
                        if e.version == version {
                            // 304: the entry freshened, the client answered
                            // from it.
                            self.revalidated += 1;
                            tally.hits += 1;
                            answer("revalidated", version, now, 200)
                        } else {
                            answer("stored", version, now, 200)
                        }
                    }
                    // Judged when the origin's failure arrives.
                    Some(e) if failing && self.now < e.sie_until => {
                        tally.stale += 1;
                        answer("stale-if-error", e.version, e.at, 200)
                    }
                    _ if head => {
                        *tally.not_stored.entry("head").or_default() += 1;
                        answer("miss:head", version, now, origin_status)
                    }
                    _ if failing => {
                        *tally.not_stored.entry("status").or_default() += 1;
                        answer("miss:status", version, now, 503)
                    }
                    _ => {
                        tally.stores += 1;
                        self.store(key, self.entry(path, version, now));
                        answer("stored", version, now, 200)
                    }
                }
            }
        };
        self.tally.insert(s.pattern, tally);
        expect
    }

    /// The statistics and origin calls agree with the model's.
    pub fn agrees(&self, stats: &Stats, app: &App) -> Result<(), String> {
        for pattern in PATTERNS {
            let got = stats.routes.get(pattern).map(Tally::of).unwrap_or_default();
            let want = self.tally.get(pattern).cloned().unwrap_or_default();
            if got != want {
                return Err(format!(
                    "the statistics of {pattern} are\n    {got:?}\n  the model's\n    {want:?}"
                ));
            }
        }
        let t = &stats.totals;
        let got = [
            ("entries", stats.entries),
            ("refreshes", stats.refreshes),
            ("revalidations", stats.revalidations),
            ("revalidated", stats.revalidated),
            ("coalesced", t.coalesced),
            ("collapsed", t.collapsed),
            ("not_modified", t.not_modified),
            ("rejected_inserts", t.rejected_inserts),
            ("origin reads", app.reads.load(SeqCst)),
            ("origin writes", app.writes.load(SeqCst)),
        ];
        let want = [
            self.entries.len() as u64,
            self.refreshes,
            self.revalidations,
            self.revalidated,
            0,
            0,
            0,
            0,
            self.reads,
            self.writes,
        ];
        for ((name, got), want) in got.into_iter().zip(want) {
            if got != want {
                return Err(format!("{name}: {got}, the model's {want}"));
            }
        }
        Ok(())
    }
}
