//! Hit, miss, store and bypass counters, and their snapshots.
//!
//! A hit's count is striped ([`Striped`]): a hit is the one request whose
//! whole cost is the cache's own work, and on a server with many cores one
//! hot route would otherwise have every core write the same cache line
//! (`docs/many-cores.md` in the repository). The other counters come with
//! an origin call or a store write, which costs far more than a line moving
//! between cores.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Why a request was not answered from the cache, or why a response was
/// not stored. The token is what `Cache-Status` says after `detail=` and
/// what [`Counts::bypasses`] and [`Counts::not_stored`] are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    // Request side: the cache was not consulted.
    Method,
    Authorization,
    Cookie,
    NoRule,
    NoScope,
    UriTooLong,
    UriMalformed,
    UriNotCanonical,
    /// `Upgrade`, or `Connection: upgrade`: the request asks the origin to
    /// switch protocols (a WebSocket handshake), which no stored response
    /// can do.
    Upgrade,
    /// `Proxy-Authorization`: credentials, whatever the route's scope.
    ProxyAuthorization,
    /// A request body (`Content-Length` other than 0, `Transfer-Encoding`),
    /// which the key does not hold.
    RequestBody,
    /// `If-Match` or `If-Unmodified-Since`: preconditions only the origin
    /// can evaluate (RFC 9111, section 4.3.2).
    Precondition,
    StoreError,
    // Response side: forwarded, not stored.
    Head,
    Status,
    SetCookie,
    CacheControl,
    VaryStar,
    EventStream,
    TooLarge,
    BodyError,
    Incomplete,
    Handler,
    Trailers,
    Rejected,
    Invalidated,
    /// A network store failed to take the response.
    StoreFailed,
    /// The body's length was not the one its `Content-Length` or its exact
    /// size hint declared (a truncated or overlong body).
    LengthMismatch,
    /// The request said `Cache-Control: no-store` (RFC 9111, section
    /// 5.2.1.5).
    RequestNoStore,
    /// A route whose freshness comes from the response: the response gave
    /// none (no `max-age`, `s-maxage` or `Expires`, and no default or
    /// heuristic applies).
    NoFreshness,
}

impl Reason {
    const ALL: [Reason; 30] = [
        Reason::Method,
        Reason::Authorization,
        Reason::Cookie,
        Reason::NoRule,
        Reason::NoScope,
        Reason::UriTooLong,
        Reason::UriMalformed,
        Reason::UriNotCanonical,
        Reason::Upgrade,
        Reason::ProxyAuthorization,
        Reason::RequestBody,
        Reason::Precondition,
        Reason::StoreError,
        Reason::Head,
        Reason::Status,
        Reason::SetCookie,
        Reason::CacheControl,
        Reason::VaryStar,
        Reason::EventStream,
        Reason::TooLarge,
        Reason::BodyError,
        Reason::Incomplete,
        Reason::Handler,
        Reason::Trailers,
        Reason::Rejected,
        Reason::Invalidated,
        Reason::StoreFailed,
        Reason::LengthMismatch,
        Reason::RequestNoStore,
        Reason::NoFreshness,
    ];

    /// The token written in `Cache-Status` and used as a stats key.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Method => "method",
            Reason::Authorization => "authorization",
            Reason::Cookie => "cookie",
            Reason::NoRule => "no-rule",
            Reason::NoScope => "no-scope",
            Reason::UriTooLong => "uri-too-long",
            Reason::UriMalformed => "uri-malformed",
            Reason::UriNotCanonical => "uri-not-canonical",
            Reason::Upgrade => "upgrade",
            Reason::ProxyAuthorization => "proxy-authorization",
            Reason::RequestBody => "request-body",
            Reason::Precondition => "precondition",
            Reason::StoreError => "store-error",
            Reason::Head => "head",
            Reason::Status => "status",
            Reason::SetCookie => "set-cookie",
            Reason::CacheControl => "cache-control",
            Reason::VaryStar => "vary-star",
            Reason::EventStream => "event-stream",
            Reason::TooLarge => "too-large",
            Reason::BodyError => "body-error",
            Reason::Incomplete => "incomplete",
            Reason::Handler => "handler",
            Reason::Trailers => "trailers",
            Reason::Rejected => "rejected",
            Reason::Invalidated => "invalidated",
            Reason::StoreFailed => "store-error",
            Reason::LengthMismatch => "length-mismatch",
            Reason::RequestNoStore => "request-no-store",
            Reason::NoFreshness => "no-freshness",
        }
    }

    /// Request-side reasons are bypasses; the rest say why a forwarded
    /// response was not stored.
    pub(crate) fn is_bypass(self) -> bool {
        (self as u8) <= Reason::StoreError as u8
    }
}

/// Something the layer counts, in total and per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Hit,
    Stale,
    Miss,
    Coalesced,
    Collapsed,
    Store,
    Rejected,
    StaleDropped,
    NotModified,
    /// A bypass or an unstored response, by reason.
    Reason(Reason),
}

impl Event {
    /// The `outcome` label of `http_cache_requests_total` for events that
    /// decide how a request was answered.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn outcome(self) -> Option<&'static str> {
        match self {
            Event::Hit => Some("hit"),
            Event::Stale => Some("stale"),
            Event::Miss => Some("miss"),
            Event::Coalesced => Some("coalesced"),
            Event::Reason(r) if r.is_bypass() => Some("bypass"),
            _ => None,
        }
    }
}

/// Stripes of a [`Striped`] counter: threads take them in turn, so that
/// with up to this many busy threads none shares a stripe, and with more
/// (64 cores) a few share each rather than all one.
const STRIPES: usize = 16;

/// A counter in stripes, each on cache lines of its own, bumped on the
/// calling thread's stripe and summed when read: exact (every bump is an
/// atomic add) and, read after read, never going back.
#[derive(Debug, Default)]
pub(crate) struct Striped([Stripe; STRIPES]);

/// 128 bytes: CPUs that fetch cache lines in pairs (adjacent-line
/// prefetch) would otherwise share a pair between two stripes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

thread_local! {
    /// This thread's stripe (`usize::MAX` until its first bump).
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe the next thread to bump takes.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

impl Striped {
    #[inline]
    pub(crate) fn add(&self) {
        let i = STRIPE.with(|stripe| match stripe.get() {
            i @ 0..STRIPES => i,
            _ => {
                let i = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
                stripe.set(i);
                i
            }
        });
        self.0[i].0.fetch_add(1, Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// Live counters, of one route pattern (shared by every layer naming it)
/// or of the events of no route.
///
/// Aligned to cache lines, so that counters bumped on every request share
/// no line with anything else (their `Arc`'s reference count included).
/// The hits (2 KiB of stripes) come first.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) hits: Striped,
    /// The route pattern ("" for the totals).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) pattern: std::sync::Arc<str>,
    pub(crate) stale: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) collapsed: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) rejected_inserts: AtomicU64,
    pub(crate) stale_dropped: AtomicU64,
    pub(crate) not_modified: AtomicU64,
    reasons: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    pub(crate) fn named(pattern: std::sync::Arc<str>) -> Self {
        Self {
            pattern,
            ..Self::default()
        }
    }

    #[inline]
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::Hit => return self.hits.add(),
            Event::Stale => &self.stale,
            Event::Miss => &self.misses,
            Event::Coalesced => &self.coalesced,
            Event::Collapsed => &self.collapsed,
            Event::Store => &self.stores,
            Event::Rejected => &self.rejected_inserts,
            Event::StaleDropped => &self.stale_dropped,
            Event::NotModified => &self.not_modified,
            Event::Reason(r) => &self.reasons[r as usize],
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counts {
        let mut bypasses = BTreeMap::new();
        let mut not_stored = BTreeMap::new();
        for r in Reason::ALL {
            let n = self.reasons[r as usize].load(Relaxed);
            if n > 0 {
                if r.is_bypass() {
                    bypasses.insert(r.as_str(), n);
                } else {
                    not_stored.insert(r.as_str(), n);
                }
            }
        }
        Counts {
            hits: self.hits.sum(),
            stale: self.stale.load(Relaxed),
            misses: self.misses.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            collapsed: self.collapsed.load(Relaxed),
            not_modified: self.not_modified.load(Relaxed),
            stores: self.stores.load(Relaxed),
            rejected_inserts: self.rejected_inserts.load(Relaxed),
            stale_dropped: self.stale_dropped.load(Relaxed),
            bypasses,
            not_stored,
        }
    }
}

/// Cache-wide counters of coalescing and revalidation.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) coalesce_timeouts: AtomicU64,
    pub(crate) pass_markers: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) not_modified_upstream: AtomicU64,
}

/// Request counters, for the whole cache or for one route pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Counts {
    /// Requests answered from the store (fresh entries, 304s included).
    pub hits: u64,
    /// Requests answered with a stale entry (stale-while-revalidate, or
    /// stale-if-error in place of an origin failure).
    pub stale: u64,
    /// Cacheable requests that found no usable entry and went to the origin
    /// (or waited for another request's origin call).
    pub misses: u64,
    /// Of the misses, those that waited for another request's origin call
    /// on the same key.
    pub coalesced: u64,
    /// Of the coalesced waits, those answered with the other request's
    /// stored response (origin calls saved).
    pub collapsed: u64,
    /// `304 Not Modified` answers to conditional requests (also hits).
    pub not_modified: u64,
    /// Responses stored.
    pub stores: u64,
    /// Responses the store refused (heavier than one memory shard can hold).
    pub rejected_inserts: u64,
    /// Entries found invalidated on lookup and removed.
    pub stale_dropped: u64,
    /// Requests that bypassed the cache, by reason (`authorization`,
    /// `method`, `uri-too-long`, ...).
    pub bypasses: BTreeMap<&'static str, u64>,
    /// Forwarded responses that were not stored, by reason (`status`,
    /// `set-cookie`, `too-large`, ...).
    pub not_stored: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Adds another set of counts to these.
    pub(crate) fn add(&mut self, other: &Counts) {
        self.hits += other.hits;
        self.stale += other.stale;
        self.misses += other.misses;
        self.coalesced += other.coalesced;
        self.collapsed += other.collapsed;
        self.not_modified += other.not_modified;
        self.stores += other.stores;
        self.rejected_inserts += other.rejected_inserts;
        self.stale_dropped += other.stale_dropped;
        for (reason, n) in &other.bypasses {
            *self.bypasses.entry(reason).or_default() += n;
        }
        for (reason, n) in &other.not_stored {
            *self.not_stored.entry(reason).or_default() += n;
        }
    }

    /// All bypasses, whatever the reason.
    pub fn bypassed(&self) -> u64 {
        self.bypasses.values().sum()
    }

    /// Hits over hits plus misses (0 when neither happened).
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A snapshot of a cache's statistics, from [`Cache::stats`](crate::Cache::stats).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Counters over every route.
    pub totals: Counts,
    /// The same counters per route pattern (`/products/{id}`; `*` for a
    /// layer's fallback `ttl`).
    pub routes: BTreeMap<String, Counts>,
    /// Responses held in the memory store: each `Vary` variant counts
    /// once, and the hidden markers that record which request headers a
    /// URL varies on are not counted (their bytes are, in `bytes`). A
    /// network store's entries are not counted here (0).
    pub entries: u64,
    /// Bytes held by the memory store's entries, as it weighs them (key,
    /// headers, body, bookkeeping). With [`index_bytes`](Self::index_bytes),
    /// at most `max_bytes`.
    pub bytes: u64,
    /// Items that left the memory store without a flush or an expiry: evicted
    /// to stay within `max_bytes`, replaced by a newer response for the
    /// same key, or refused as too heavy.
    pub evictions: u64,
    /// Invalidations made (prefixes, tags, whole-cache flushes).
    pub invalidations: u64,
    /// Invalidation records currently kept in the memory store's index.
    pub index_records: u64,
    /// Bytes the memory store's invalidation index takes on the heap now:
    /// counted in `max_bytes` (up to an eighth of it), the entries yielding
    /// the room (see [`CacheBuilder::max_bytes`](crate::CacheBuilder::max_bytes)).
    pub index_bytes: u64,
    /// Coalesced waits that timed out and went to the origin.
    pub coalesce_timeouts: u64,
    /// Pass markers set (a coalesced origin call whose response could not
    /// be stored).
    pub pass_markers: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Conditional requests sent to the origin to revalidate a stale entry
    /// with its origin validators.
    pub revalidations: u64,
    /// Revalidations the origin answered `304 Not Modified`: the stale
    /// entry was freshened and served, with no body sent by the origin.
    pub revalidated: u64,
    /// Calls to a network store that failed or timed out (lookups, stores,
    /// clock reads, invalidations); the requests concerned were served by
    /// the origin.
    pub store_errors: u64,
    /// Record hashes of flushes a network store has not recorded yet (a
    /// writer cut off from Redis): until a retry lands, this instance serves
    /// none of the entries they cover. `u64::MAX` past the bound, when no
    /// entry is served at all.
    pub owed_flush_records: u64,
    /// Slots in the coalescing table now: keys with an origin call under
    /// way that later misses may wait for, and pass markers. Bounded (4,096
    /// slots, under 3 MiB) whatever the request rate; a slot goes when its
    /// origin call ends or its client goes away, a pass marker when it
    /// expires.
    pub flights: u64,
    /// Times the coalescing table was full: the oldest pass marker was
    /// dropped to make room, or, every slot being an origin call under way,
    /// a miss went to the origin without coalescing.
    pub flights_full: u64,
    /// Hits over hits plus misses, over every route.
    pub hit_ratio: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_hits_are_exact_whatever_the_threads() {
        let counters = Counters::default();
        std::thread::scope(|s| {
            for _ in 0..2 * STRIPES + 3 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counters.record(Event::Hit);
                    }
                });
            }
        });
        counters.record(Event::Hit);
        let expected = (2 * STRIPES as u64 + 3) * 1000 + 1;
        assert_eq!(counters.snapshot().hits, expected);
        assert_eq!(counters.snapshot().misses, 0);
    }
}
