//! The fleet under Redis faults: two instances on one real `redis-server`,
//! a write on one of them, and the other's very next read. A write's 2xx
//! must leave only after its flush is recorded, whatever happened to the
//! writer's connection: an idle connection Redis closed, a pause longer
//! than the command timeout (and the cool-down it trips), a Redis whose
//! memory is full.
//!
//! `matrix` holds the fault matrix: each fault made while readers and
//! writers run on both instances (`fleet`), traced (`traced`).
#![cfg(feature = "redis")]

#[path = "fleet_faults/fleet.rs"]
mod fleet;
#[path = "fleet_faults/matrix.rs"]
mod matrix;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;
#[path = "fleet_faults/traced.rs"]
mod traced;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use redis_server::RedisServer;
use support::*;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_response_cache::store::RedisStore;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn};

const MIN: Duration = Duration::from_secs(60);

/// One instance: its own `Cache` on the shared Redis, over one database.
fn instance(server: &RedisServer, db: &Db) -> (Cache, Router) {
    let store = RedisStore::builder(server.url()).build().unwrap();
    let cache = Cache::builder().store(store).build();
    let app = Router::new()
        .route("/products/{id}", get(db_read).put(db_write))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(&cache))
                .layer(CacheLayer::new(&cache).ttl(MIN)),
        );
    (cache, app)
}

/// Waits (bounded) until a cache has stored `n` responses: entries land in
/// Redis in the background, after the body has ended.
async fn until_stored(cache: &Cache, n: u64) {
    let start = Instant::now();
    while cache.stats().totals.stores < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "entry {n} never stored"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (bounded) until a read on `app` is a hit.
async fn until_hit(app: &Router, path: &str) {
    let start = Instant::now();
    while !send(app, read(path)).await.is_hit() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} never a hit again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two warm instances: `/products/7` stored by A, a hit on B.
async fn warm_pair(server: &RedisServer, db: &Db) -> ((Cache, Router), (Cache, Router)) {
    let (a_cache, a) = instance(server, db);
    let (b_cache, b) = instance(server, db);
    assert_eq!(send(&a, read("/products/7")).await.text(), "v0");
    until_stored(&a_cache, 1).await;
    let on_b = send(&b, read("/products/7")).await;
    assert!(on_b.is_hit(), "{}", on_b.cache_status());
    ((a_cache, a), (b_cache, b))
}

/// A write on A, then the next read on B and on A: never the old data.
async fn write_then_read(a: &Router, b: &Router, db: &Db) {
    write(a).await;
    read_after_write(a, b, db).await;
}

async fn write(a: &Router) {
    let w = send(a, method("PUT", "/products/7")).await;
    assert_eq!(w.status, StatusCode::NO_CONTENT);
}

async fn read_after_write(a: &Router, b: &Router, db: &Db) {
    let version = format!("v{}", db.version.load(std::sync::atomic::Ordering::SeqCst));
    let on_b = send(b, read("/products/7")).await;
    assert_eq!(
        on_b.text(),
        version,
        "B after A's write: {}",
        on_b.cache_status()
    );
    let on_a = send(a, read("/products/7")).await;
    assert_eq!(
        on_a.text(),
        version,
        "A after its own write: {}",
        on_a.cache_status()
    );
}

#[tokio::test]
async fn a_flush_on_a_connection_redis_closed_is_sent_again_on_a_fresh_one() {
    let server = RedisServer::start();
    let db = Db::default();
    let ((_, a), (_, b)) = warm_pair(&server, &db).await;
    // Redis drops every client's idle connection (a `timeout`, a load
    // balancer): B reconnects as it reads; A stays idle.
    let killed = server.command("CLIENT KILL TYPE normal");
    assert!(killed.starts_with(':'), "{killed}");
    until_hit(&b, "/products/7").await;
    // A's write is the first command on its dead connection.
    write_then_read(&a, &b, &db).await;
}

#[tokio::test]
async fn a_flush_waits_out_a_pause_and_is_never_skipped_by_the_cool_down() {
    let server = RedisServer::start();
    let db = Db::default();
    let ((a_cache, a), (_, b)) = warm_pair(&server, &db).await;
    // Longer than the command timeout (100 ms), shorter than the time a
    // write waits for its flush.
    let paused = server.command("CLIENT PAUSE 500");
    assert!(paused.starts_with("+OK"), "{paused}");
    // Reads on A time out and trip its cool-down.
    for _ in 0..3 {
        let seen = send(&a, read("/products/9")).await;
        assert_eq!(seen.status, StatusCode::OK);
    }
    assert!(a_cache.stats().store_errors >= 3);
    write(&a).await;
    // The moment Redis answers again (a PING waits out the pause), B's
    // next read must not be the old data.
    let pong = tokio::task::spawn_blocking(move || {
        let pong = server.command("PING");
        (server, pong)
    });
    let (_server, pong) = pong.await.unwrap();
    assert!(pong.starts_with("+PONG"), "{pong}");
    read_after_write(&a, &b, &db).await;
}

#[tokio::test]
async fn a_flush_is_recorded_when_redis_memory_is_full() {
    let server = RedisServer::start();
    let db = Db::default();
    let ((_, a), (_, b)) = warm_pair(&server, &db).await;
    for cmd in [
        "CONFIG SET maxmemory-policy noeviction",
        "CONFIG SET maxmemory 1",
    ] {
        let answer = server.command(cmd);
        assert!(answer.starts_with("+OK"), "{cmd}: {answer}");
    }
    // Full: Redis refuses writes, and still answers lookups.
    assert!(send(&b, read("/products/7")).await.is_hit());
    write_then_read(&a, &b, &db).await;
}

/// A TCP proxy in front of Redis that the test can cut (every connection
/// closed, new ones refused) and mend: a writer cut off from Redis while
/// the other instances still reach it.
struct Link {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Link {
    async fn to(redis: std::net::SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watching) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *watching.borrow() {
                    continue; // dropped: refused
                }
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(redis).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Link { addr, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn mend(&self) {
        self.cut.send_replace(false);
    }
}

/// An instance on a store reached at `url`, strict or not.
fn instance_at(url: &str, db: &Db, strict: bool) -> (Cache, Router) {
    let store = RedisStore::builder(url).build().unwrap();
    let cache = Cache::builder().store(store).build();
    let invalidate = InvalidateOn::new(&cache);
    let invalidate = if strict {
        invalidate.strict()
    } else {
        invalidate
    };
    let app = Router::new()
        .route("/products/{id}", get(db_read).put(db_write))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(invalidate)
                .layer(CacheLayer::new(&cache).ttl(MIN)),
        );
    (cache, app)
}

#[tokio::test]
async fn a_writer_cut_off_from_redis_serves_none_of_what_its_write_flushed() {
    let server = RedisServer::start();
    let link = Link::to(server.addr()).await;
    let db = Db::default();
    let (a_cache, a) = instance_at(&link.url(), &db, false);
    let (_, b) = instance_at(&server.url(), &db, false);
    assert_eq!(send(&a, read("/products/7")).await.text(), "v0");
    until_stored(&a_cache, 1).await;
    assert!(send(&b, read("/products/7")).await.is_hit());
    assert!(send(&a, read("/products/7")).await.is_hit());

    link.cut();
    // The write waits a bounded time for its flush, then is answered.
    let started = Instant::now();
    write(&a).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(a_cache.stats().owed_flush_records > 0);
    // The writer's own instance: never the pre-write entry.
    let on_a = send(&a, read("/products/7")).await;
    assert_eq!(on_a.text(), "v1", "{}", on_a.cache_status());
    // The others, still reaching Redis, serve it until the record lands
    // (the promise under a partition, written in the README).
    assert_eq!(send(&b, read("/products/7")).await.text(), "v0");

    link.mend();
    let start = Instant::now();
    while send(&b, read("/products/7")).await.text() != "v1" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the retry never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    while a_cache.stats().owed_flush_records != 0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_strict_writer_cut_off_from_redis_answers_503() {
    let server = RedisServer::start();
    let link = Link::to(server.addr()).await;
    let db = Db::default();
    let (a_cache, a) = instance_at(&link.url(), &db, true);
    assert_eq!(send(&a, read("/products/7")).await.text(), "v0");
    until_stored(&a_cache, 1).await;
    link.cut();
    let w = send(&a, method("PUT", "/products/7")).await;
    assert_eq!(w.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(w.header("retry-after"), Some("1"));
    link.mend();
    // Reachable again: a strict write is answered with its own 2xx.
    let start = Instant::now();
    loop {
        let w = send(&a, method("PUT", "/products/7")).await;
        if w.status == StatusCode::NO_CONTENT {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", w.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write that commits while its body streams: it answers 200 at once
/// with a first line, and commits (bumps the version) and ends its body
/// once let go.
fn importing(server: &RedisServer, db: &Db, go: &Arc<Semaphore>) -> (Cache, Router) {
    let store = RedisStore::builder(server.url()).build().unwrap();
    let cache = Cache::builder().store(store).build();
    let (db_, go) = (db.clone(), go.clone());
    let import = move || {
        let (db, go) = (db_.clone(), go.clone());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"started\n")).await;
                go.acquire().await.unwrap().forget();
                db.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send(Bytes::from_static(b"done\n")).await;
            });
            axum::body::Body::new(Lines(rx))
        }
    };
    let app = Router::new()
        .route("/products", get(db_read).put(import))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                .layer(InvalidateOn::new(&cache))
                .layer(CacheLayer::new(&cache).ttl(MIN)),
        );
    (cache, app)
}

/// A body of the lines a channel carries, ending when it closes.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(http_body::Frame::data(l))))
    }
}

#[tokio::test]
async fn a_flush_as_a_write_s_body_ends_waits_out_a_pause_too() {
    let server = RedisServer::start();
    let (db, go) = (Db::default(), Arc::new(Semaphore::new(0)));
    let (a_cache, a) = importing(&server, &db, &go);
    let (b_cache, b) = importing(&server, &db, &go);
    assert_eq!(send(&a, read("/products")).await.text(), "v0");
    until_stored(&a_cache, 1).await;

    // The write's head (its first flush), then a read on B in between,
    // which stores the data from before the commit.
    let response = a.clone().oneshot(method("PUT", "/products")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "started\n");
    assert_eq!(send(&b, read("/products")).await.text(), "v0");
    until_stored(&b_cache, 1).await;

    // Redis stalls for longer than a command's timeout, shorter than the
    // store timeout, as the handler commits and its body ends.
    let paused = server.command("CLIENT PAUSE 300");
    assert!(paused.starts_with("+OK"), "{paused}");
    go.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "done\n");
    // The second flush waited the stall out rather than be owed.
    assert_eq!(a_cache.stats().owed_flush_records, 0);
    let pong = tokio::task::spawn_blocking(move || {
        let pong = server.command("PING");
        (server, pong)
    });
    let (_server, pong) = pong.await.unwrap();
    assert!(pong.starts_with("+PONG"), "{pong}");
    let on_b = send(&b, read("/products")).await;
    assert_eq!(on_b.text(), "v1", "{}", on_b.cache_status());
}

#[tokio::test]
async fn a_flush_sent_into_a_hung_redis_lands_when_it_thaws_even_with_its_writer_gone() {
    let server = RedisServer::start();
    let link = Link::to(server.addr()).await;
    let db = Db::default();
    let (a_cache, a) = instance_at(&link.url(), &db, false);
    let (_, b) = instance_at(&server.url(), &db, false);
    assert_eq!(send(&a, read("/products/7")).await.text(), "v0");
    until_stored(&a_cache, 1).await;
    assert!(send(&b, read("/products/7")).await.is_hit());

    server.pause();
    // A read on A times out first: a stall, not a lost connection.
    let seen = send(&a, read("/products/9")).await;
    assert_eq!(seen.status, StatusCode::OK);
    // The write's flush is sent into the stalled Redis, and sent again,
    // until the write is answered with its flush owed.
    write(&a).await;
    assert!(a_cache.stats().owed_flush_records > 0);
    // A is cut off before Redis thaws: none of its retries can land.
    link.cut();
    server.resume();
    // What A sent while Redis hung is what Redis runs first.
    let on_b = send(&b, read("/products/7")).await;
    assert_eq!(on_b.text(), "v1", "{}", on_b.cache_status());
}
