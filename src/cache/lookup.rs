//! Lookup: what a key finds in the store, judged on freshness, grace, the
//! full key of a hashed entry, and the `Vary` marker that points to the
//! variant a request's headers select.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use super::stats::{Counters, Event};
use super::Cache;
use crate::key::CacheKey;
use crate::store::{Entry, Lookup, MemoryStore, StoreError};

/// What a lookup found for a request.
pub(crate) enum Found {
    Fresh(Arc<Entry>),
    /// Expired, inside its stale-while-revalidate window.
    Stale {
        entry: Arc<Entry>,
        marker: Option<VaryMarker>,
    },
    /// No usable entry; the variant names if the primary key held a marker,
    /// and an expired entry that may still answer an origin failure.
    Miss {
        marker: Option<VaryMarker>,
        stale: Option<Arc<Entry>>,
    },
}

/// A request key whose responses vary, and the request headers they vary
/// on: where a new variant's marker is rewritten when it is stored.
pub(crate) type VaryMarker = (CacheKey, Box<[HeaderName]>);

/// What a lookup is about: the request's key and headers (to select a
/// variant), the time, and the route's counters.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub(crate) key: &'a CacheKey,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) now_ms: u64,
    pub(crate) counters: &'a Counters,
}

/// What one lookup told [`Cache::judge`]: the answer, or the variant key
/// to look up next.
enum Judged {
    Done(Found),
    FollowVariant(CacheKey),
}

impl Cache {
    /// Judges what the lookup of `looked_up` (the request's key, or the
    /// variant a marker selected) gave.
    fn judge(
        &self,
        lookup: Lookup,
        looked_up: &CacheKey,
        probe: Probe<'_>,
        marker: &mut Option<VaryMarker>,
    ) -> Judged {
        let miss = |marker: &mut Option<_>| {
            Judged::Done(Found::Miss {
                marker: marker.take(),
                stale: None,
            })
        };
        let entry = match lookup {
            // A flush this instance could not record covers it: flushed,
            // here, whatever the store says.
            Lookup::Found(entry) if self.shared.unconfirmed.covers(&entry) => {
                return miss(marker);
            }
            Lookup::Found(entry) => entry,
            Lookup::Invalidated => {
                self.record(Some(probe.counters), Event::StaleDropped);
                return miss(marker);
            }
            Lookup::Miss => return miss(marker),
        };
        if !entry.key_is(&looked_up.full) {
            return miss(marker);
        }
        let now_ms = probe.now_ms;
        if now_ms >= entry.fresh_until_ms() {
            if now_ms >= entry.grace_until_ms() {
                if let Some(memory) = self.shared.backend.memory() {
                    // A network store drops entries past their grace itself.
                    memory.remove_if_same(looked_up.lookup(), &entry);
                }
                return miss(marker);
            }
            if entry.vary().is_none() {
                if now_ms < entry.stale_while_revalidate_until_ms() {
                    return Judged::Done(Found::Stale {
                        entry,
                        marker: marker.take(),
                    });
                }
                return Judged::Done(Found::Miss {
                    marker: marker.take(),
                    stale: Some(entry),
                });
            }
        }
        match entry.vary() {
            None => Judged::Done(Found::Fresh(entry)),
            Some(names) if marker.is_none() => {
                *marker = Some((probe.key.clone(), names.into()));
                Judged::FollowVariant(probe.key.variant(
                    names,
                    probe.headers,
                    &self.shared.scope_hasher,
                ))
            }
            Some(_) => miss(marker),
        }
    }

    /// Looks a key up in the memory store (following a Vary marker), given
    /// what the lookup of the request's own key gave.
    pub(crate) fn find_from(&self, memory: &MemoryStore, first: Lookup, probe: Probe<'_>) -> Found {
        let mut variant: Option<CacheKey> = None;
        let mut marker = None;
        let mut lookup = first;
        loop {
            let looked_up = variant.as_ref().unwrap_or(probe.key);
            match self.judge(lookup, looked_up, probe, &mut marker) {
                Judged::Done(found) => return found,
                Judged::FollowVariant(v) => {
                    lookup = memory.lookup_now(v.lookup());
                    variant = Some(v);
                }
            }
        }
    }

    /// Looks a key up in whichever store holds the entries, awaiting a
    /// network store.
    pub(crate) async fn find(&self, probe: Probe<'_>) -> Result<Found, StoreError> {
        let mut variant: Option<CacheKey> = None;
        let mut marker = None;
        loop {
            let looked_up = variant.as_ref().unwrap_or(probe.key);
            let lookup = self.shared.backend.get(looked_up.lookup()).await?;
            match self.judge(lookup, looked_up, probe, &mut marker) {
                Judged::Done(found) => return Ok(found),
                Judged::FollowVariant(v) => variant = Some(v),
            }
        }
    }
}
