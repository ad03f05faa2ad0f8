//! The near cache: an in-process tier in front of Redis, kept coherent by
//! the invalidation messages every `invalidate` publishes.
//!
//! The tier answers only while its subscription is live. It keeps its own
//! records of the invalidations it has received (hash → Redis generation),
//! and an entry in it is served only while no such record is newer than
//! the entry's `born`, the Redis generation at which its origin read began:
//! the same rule as the index in Redis. When the subscription is made or
//! remade, or drops, the tier is emptied, since messages may have been
//! missed; an insert racing with that is taken back (an epoch counter).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use quick_cache::sync::{Cache as QuickCache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

use crate::invalidate::target::{for_each_prefix, tag_hash};
use crate::store::Entry;

/// Past this many received records, the tier is emptied with them (an
/// empty tier needs no records), which bounds their memory.
const MAX_NEAR_RECORDS: usize = 1 << 16;

/// How often the subscription connection is pinged, so that a silently
/// dead connection is noticed (and the tier emptied) within about this
/// long plus the ping's timeout.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between two subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct ByWeight;

impl Weighter<Box<str>, Arc<Entry>> for ByWeight {
    fn weight(&self, _key: &Box<str>, val: &Arc<Entry>) -> u64 {
        val.weight()
    }
}

type Map = QuickCache<
    Box<str>,
    Arc<Entry>,
    ByWeight,
    DefaultHashBuilder,
    DefaultLifecycle<Box<str>, Arc<Entry>>,
>;

pub(crate) struct Near {
    map: Map,
    records: RwLock<HashMap<u64, u64, foldhash::fast::RandomState>>,
    /// Bumped on every clear: an insert that read another epoch before its
    /// Redis call is not kept.
    epoch: AtomicU64,
    /// Whether the subscription is live (the tier answers only then).
    live: AtomicBool,
    /// The generation Redis's clock stood at once the subscription was
    /// made: a flush before it may have been missed, so an entry born
    /// before it that this instance stored is not kept (`u64::MAX` while not
    /// subscribed).
    floor: AtomicU64,
    /// How many times the subscription was made or lost.
    pub(crate) transitions: AtomicU64,
}

impl std::fmt::Debug for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Near")
            .field("entries", &self.map.len())
            .field("bytes", &self.map.weight())
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish()
    }
}

impl Near {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        // Shards of at least 4 MiB each, so a 1 MiB body fits one.
        let fit = (max_bytes / (4 << 20)).clamp(1, 16);
        let shards = 1u64 << (63 - fit.leading_zeros());
        let estimated = (max_bytes / 2048).clamp(64, 1 << 20) as usize;
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(estimated)
            .weight_capacity(max_bytes)
            .build()
            .expect("valid near cache options");
        Self {
            map: QuickCache::with_options(
                options,
                ByWeight,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            records: RwLock::default(),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            floor: AtomicU64::new(u64::MAX),
            transitions: AtomicU64::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// An entry the tier may serve: present, within its grace, and covered
    /// by no received invalidation. Anything else is dropped and left to
    /// Redis.
    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        if !self.is_live() {
            return None;
        }
        let entry = self.map.get(key)?;
        if now_ms < entry.grace_until_ms() && self.is_current(&entry) {
            Some(entry)
        } else {
            self.map.remove_if(key, |v| Arc::ptr_eq(v, &entry));
            None
        }
    }

    fn is_current(&self, entry: &Entry) -> bool {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        if records.is_empty() {
            return true;
        }
        let born = entry.born();
        let fresh = |h: u64| records.get(&h).is_none_or(|&g| g <= born);
        fresh(entry.key_hash())
            && for_each_prefix(entry.path(), fresh)
            && entry.tags().all(|t| fresh(tag_hash(t)))
    }

    /// Keeps an entry this instance stored (from its own origin read),
    /// unless it was born before the subscription was made: a flush that
    /// covers it may have been published while nobody here listened.
    pub(crate) fn insert_stored(&self, epoch: u64, key: &str, entry: Arc<Entry>) {
        if entry.born() < self.floor.load(Ordering::SeqCst) {
            return;
        }
        self.insert(epoch, key, entry);
    }

    /// Keeps an entry read from (or written to) Redis, unless the tier was
    /// cleared since `epoch` was read, or is not live.
    pub(crate) fn insert(&self, epoch: u64, key: &str, entry: Arc<Entry>) {
        if !self.is_live() || self.epoch() != epoch {
            return;
        }
        self.map.insert(key.into(), entry.clone());
        if !self.is_live() || self.epoch() != epoch {
            self.map.remove_if(key, |v| Arc::ptr_eq(v, &entry));
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        self.map.remove(key);
    }

    /// Records an invalidation at a Redis generation.
    pub(crate) fn apply(&self, generation: u64, hashes: impl IntoIterator<Item = u64>) {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        for h in hashes {
            let g = records.entry(h).or_insert(generation);
            *g = (*g).max(generation);
        }
        if records.len() > MAX_NEAR_RECORDS {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.map.clear();
            records.clear();
            records.shrink_to_fit();
        }
    }

    /// Empties the tier and its records.
    pub(crate) fn clear(&self) {
        self.floor.store(u64::MAX, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.clear();
        records.shrink_to_fit();
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        self.transitions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Parses an invalidation message: generation (u64 BE), then the 8-byte
/// hashes.
pub(crate) fn parse_message(payload: &[u8]) -> Option<(u64, impl Iterator<Item = u64> + '_)> {
    if payload.len() < 8 || !payload.len().is_multiple_of(8) {
        return None;
    }
    let generation = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let hashes = payload[8..]
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")));
    Some((generation, hashes))
}

/// Keeps the tier subscribed to `channel` for as long as the task lives
/// (the store aborts it when dropped): subscribes, empties the tier, applies
/// every message, pings every [`PING_EVERY`], and on any failure marks the
/// tier not live, empties it, and subscribes again after a short backoff.
pub(crate) async fn subscriber(
    near: Arc<Near>,
    client: redis::Client,
    channel: String,
    [clock, meta]: [String; 2],
    connect_timeout: Duration,
    command_timeout: Duration,
) {
    let budget = connect_timeout + command_timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout(budget, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(&channel).await?;
            // The clock once subscribed: every flush after it reaches us.
            let mut con = client.get_multiplexed_async_connection().await?;
            let (c, high): (Option<u64>, Option<u64>) = redis::pipe()
                .cmd("GET")
                .arg(&clock)
                .cmd("HGET")
                .arg(&meta)
                .arg("high")
                .query_async(&mut con)
                .await?;
            let floor = c.unwrap_or(0).max(high.unwrap_or(0));
            redis::RedisResult::Ok((sink, stream, floor))
        })
        .await;
        let (mut sink, mut stream, floor) = match attempt {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "near cache: subscription failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::debug!("near cache: subscription timed out");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Messages sent before this point may have been missed.
        near.clear();
        near.floor.store(floor, Ordering::SeqCst);
        near.set_live(true);
        tracing::debug!(channel = %channel, "near cache: subscribed");

        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            enum Event {
                Message(Option<redis::Msg>),
                Ping,
            }
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(m) = Pin::new(&mut stream).poll_next(cx) {
                    return Poll::Ready(Event::Message(m));
                }
                if ping.poll_tick(cx).is_ready() {
                    return Poll::Ready(Event::Ping);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Message(Some(msg)) => match parse_message(msg.get_payload_bytes()) {
                    Some((generation, hashes)) => near.apply(generation, hashes),
                    None => {
                        tracing::warn!("near cache: malformed invalidation message; emptied");
                        near.clear();
                    }
                },
                Event::Message(None) => {
                    tracing::debug!("near cache: subscription dropped");
                    break;
                }
                Event::Ping => {
                    let pong = tokio::time::timeout(budget, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::debug!("near cache: subscription ping failed");
                        break;
                    }
                }
            }
        }
        near.set_live(false);
        near.clear();
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidate::Target;
    use crate::store::EntryParts;

    fn entry(born: u64, path: &str, tags: &[&str]) -> Arc<Entry> {
        Arc::new(
            Entry::from_parts(
                EntryParts {
                    status: 200,
                    born,
                    path: path.into(),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    grace_until_ms: u64::MAX,
                    ..EntryParts::default()
                },
                1,
            )
            .unwrap(),
        )
    }

    #[test]
    fn serves_only_while_live_and_current() {
        let near = Near::new(1 << 20);
        near.insert(near.epoch(), "k", entry(5, "/a/b", &["t"]));
        assert_eq!(near.len(), 0, "not live: nothing kept");
        near.set_live(true);
        let epoch = near.epoch();
        near.insert(epoch, "k", entry(5, "/a/b", &["t"]));
        assert!(near.get("k", 0).is_some());
        near.apply(5, [Target::prefix("/a").hash()]);
        assert!(
            near.get("k", 0).is_some(),
            "a record at born covers nothing"
        );
        near.apply(6, [Target::prefix("/a-b").hash()]);
        assert!(near.get("k", 0).is_some(), "other segment");
        near.apply(6, [Target::tag("t").hash()]);
        assert!(near.get("k", 0).is_none());
        assert_eq!(near.len(), 0, "dropped");
        near.insert(near.epoch(), "k", entry(6, "/a/b", &["t"]));
        assert!(near.get("k", 0).is_some(), "born at the record: current");
        assert!(near.get("k", u64::MAX).is_none(), "past grace");
    }

    #[test]
    fn inserts_racing_a_clear_are_dropped() {
        let near = Near::new(1 << 20);
        near.set_live(true);
        let before = near.epoch();
        near.clear();
        near.insert(before, "k", entry(1, "/", &[]));
        assert_eq!(near.len(), 0);
    }

    #[test]
    fn messages_parse() {
        let mut m = 7u64.to_be_bytes().to_vec();
        m.extend_from_slice(&1u64.to_be_bytes());
        m.extend_from_slice(&2u64.to_be_bytes());
        let (g, hashes) = parse_message(&m).unwrap();
        assert_eq!(g, 7);
        assert_eq!(hashes.collect::<Vec<_>>(), [1, 2]);
        assert!(parse_message(&m[..9]).is_none());
        assert!(parse_message(b"").is_none());
    }
}
