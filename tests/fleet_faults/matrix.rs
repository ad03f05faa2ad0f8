//! The Redis fault matrix: one test per fault, each with readers and
//! writers running on two instances before, during and after it (see
//! [`fleet`](crate::fleet) for the check each read passes). For every
//! fault: no request fails, no read returns data older than a write it
//! must see, the fault is counted and traced, and caching resumes by
//! itself once the fault is gone.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tracing::Level;

use crate::fleet::{Fleet, Instance};
use crate::redis_server::RedisServer;
use crate::traced;

/// The read bodies: small, or large enough that Redis writes a reply over
/// several turns of its event loop (64 KiB a turn), so that a connection
/// killed while one is on its way is cut mid-reply.
const SMALL: usize = 1024;
const LARGE: usize = 128 << 10;

/// Hits each instance must answer to show caching works.
const HITS: u64 = 10;

/// Checks both instances.
fn each(fleet: &Fleet, what: &str, ok: impl Fn(&Instance) -> bool) {
    for (name, instance) in ["A", "B"].into_iter().zip(fleet.both()) {
        assert!(ok(instance), "{name}: {what}");
    }
}

#[tokio::test]
async fn redis_killed_then_back() {
    let log = traced::this_thread();
    let fleet = Fleet::start(RedisServer::start(), SMALL).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;

    fleet.redis.kill().await;
    fleet
        .until("a cool-down on both instances", |f| {
            f.a.store.is_cooling_down() && f.b.store.is_cooling_down()
        })
        .await;
    // Writes answered during the outage, each after its flush budget.
    traffic.until_owed_writes(2).await;
    fleet.redis.restart().await;

    fleet.until_caching(HITS).await;
    let report = traffic.stop("killed").await;
    report.assert_held();
    fleet.until_settled().await;
    each(&fleet, "store errors counted", |i| i.store_errors() > 0);
    each(&fleet, "reads passed through", |i| {
        i.store_error_bypasses() > 0
    });
    log.assert_has(Level::WARN, "cache store unavailable");
    log.assert_has(Level::WARN, "skipping redis for a cool-down");
    log.assert_has(Level::ERROR, "a flush could not be recorded");
    log.assert_has(Level::INFO, "flush retried and recorded");
    log.assert_has(Level::INFO, "redis answers again");
}

#[tokio::test]
async fn redis_hung_then_thawed() {
    let log = traced::this_thread();
    let fleet = Fleet::start(RedisServer::start(), SMALL).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;

    fleet.redis.pause().await;
    fleet
        .until("a cool-down on both instances", |f| {
            f.a.store.is_cooling_down() && f.b.store.is_cooling_down()
        })
        .await;
    traffic.until_owed_writes(2).await;
    fleet.redis.resume().await;

    fleet.until_caching(HITS).await;
    let report = traffic.stop("hung").await;
    report.assert_held();
    fleet.until_settled().await;
    each(&fleet, "store errors counted", |i| i.store_errors() > 0);
    each(&fleet, "reads passed through", |i| {
        i.store_error_bypasses() > 0
    });
    log.assert_has(Level::WARN, "timed out");
    log.assert_has(Level::WARN, "skipping redis for a cool-down");
    log.assert_has(Level::ERROR, "a flush could not be recorded");
    log.assert_has(Level::INFO, "flush retried and recorded");
    log.assert_has(Level::INFO, "redis answers again");
}

#[tokio::test]
async fn redis_restarted_empty() {
    let log = traced::this_thread();
    let fleet = Fleet::start(RedisServer::start(), SMALL).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;
    let before = faults_seen(&fleet);

    // Entries, clock and index vanish while reads and writes are under
    // way, twice.
    const RESTARTS: u64 = 2;
    for _ in 0..RESTARTS {
        traffic.until_writes(4).await;
        fleet.redis.restart().await;
        fleet.until_caching(HITS).await;
    }
    let report = traffic.stop("restarted empty").await;
    report.assert_held();
    fleet.until_settled().await;
    // The first call to find the namespace empty starts it afresh: once at
    // the start, once per restart, whichever instance made that call.
    let resets: u64 = fleet
        .both()
        .map(|i| i.store.namespace_resets())
        .iter()
        .sum();
    assert_eq!(resets, 1 + RESTARTS);
    assert!(faults_seen(&fleet) > before, "the restarts went unseen");
    log.assert_has(Level::INFO, "the namespace was empty");
    log.assert_has_any(&[
        (Level::DEBUG, "the connection broke; sending again"),
        (Level::WARN, "cache store unavailable"),
    ]);
}

/// Calls that failed, or were sent again on a fresh connection, on either
/// instance (which of them meets a dead connection is a matter of timing).
fn faults_seen(fleet: &Fleet) -> u64 {
    let seen = |i: &Instance| i.store_errors() + i.store.resent_calls();
    fleet.both().map(seen).iter().sum()
}

#[tokio::test]
async fn redis_out_of_memory() {
    let log = traced::this_thread();
    let fleet = Fleet::start(RedisServer::start(), SMALL).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;

    fleet
        .redis
        .command("CONFIG SET maxmemory-policy noeviction", "+OK")
        .await;
    fleet.redis.command("CONFIG SET maxmemory 1", "+OK").await;
    // Full: every write's flush still lands; the entries it flushed can
    // no longer be stored again.
    fleet
        .until("puts refused on both instances", |f| {
            f.a.store_failed_puts() > 0 && f.b.store_failed_puts() > 0
        })
        .await;
    traffic.until_writes(10).await;
    fleet.redis.command("CONFIG SET maxmemory 0", "+OK").await;

    fleet.until_caching(HITS).await;
    let report = traffic.stop("out of memory").await;
    report.assert_held();
    assert_eq!(report.owed_writes, 0, "a flush is recorded in a full Redis");
    each(&fleet, "store errors counted", |i| i.store_errors() > 0);
    log.assert_has(Level::WARN, "OOM");
}

#[tokio::test]
async fn redis_slowed() {
    let log = traced::this_thread();
    let server = RedisServer::start_with(&["--enable-debug-command", "local"]);
    let fleet = Fleet::start(server, SMALL).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;
    let before: Vec<u64> = fleet.both().map(Instance::store_errors).to_vec();

    // Slow answers (20 ms, within the 100 ms command timeout) and stalls
    // past it (300 ms, within the 1 s a write waits for its flush).
    let slowing = Arc::new(AtomicBool::new(true));
    let slow = tokio::spawn({
        let (redis, slowing) = (fleet.redis.clone(), slowing.clone());
        async move {
            for _ in 0..20 {
                if !slowing.load(SeqCst) {
                    return;
                }
                for _ in 0..3 {
                    redis.command("DEBUG SLEEP 0.02", "+OK").await;
                }
                redis.command("DEBUG SLEEP 0.3", "+OK").await;
            }
        }
    });
    fleet
        .until("timeouts on both instances", |f| {
            f.both()
                .into_iter()
                .zip(&before)
                .all(|(i, before)| i.store_errors() > *before)
        })
        .await;
    traffic.until_writes(10).await;
    slowing.store(false, SeqCst);
    slow.await.unwrap();

    fleet.until_caching(HITS).await;
    let report = traffic.stop("slowed").await;
    report.assert_held();
    assert_eq!(
        report.owed_writes, 0,
        "a stall shorter than the store timeout delays a write's flush, never loses it"
    );
    log.assert_has(Level::WARN, "timed out");
}

#[tokio::test]
async fn redis_connections_killed_mid_reply() {
    let log = traced::this_thread();
    let fleet = Fleet::start(RedisServer::start(), LARGE).await;
    let traffic = fleet.traffic();
    fleet.until_caching(HITS).await;

    // Every client connection killed, again and again, until each instance
    // has had calls cut under it and writes were answered meanwhile
    // (bounded). Between two kills, both instances get a hit through (so
    // each kill cuts calls under way on connections that work, rather than
    // keeping a starved machine from ever finishing one), and a few ms
    // more, so that kills land at varying points of the traffic.
    let writes = traffic.writes();
    for k in 0..500 {
        if fleet.both().iter().all(|i| i.store.resent_calls() >= 5)
            && traffic.writes() >= writes + 10
        {
            break;
        }
        fleet.redis.command("CLIENT KILL TYPE normal", ":").await;
        fleet.until_caching(1).await;
        tokio::time::sleep(Duration::from_millis(k % 10)).await;
    }
    each(&fleet, "calls sent again", |i| i.store.resent_calls() >= 5);

    fleet.until_caching(HITS).await;
    let report = traffic.stop("connections killed").await;
    report.assert_held();
    assert_eq!(
        report.owed_writes, 0,
        "a flush cut off is sent again and recorded"
    );
    log.assert_has(Level::DEBUG, "the connection broke; sending again");
}
