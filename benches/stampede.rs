//! A cold-key stampede over real HTTP.
//!
//! An axum server on 127.0.0.1 (a free port) serves three copies of one
//! slow handler (it sleeps 20 ms and counts its calls):
//!
//! - `/cached/{id}` behind a `CacheLayer`: 1000 concurrent requests for one
//!   key nobody has asked for yet. Request coalescing should send exactly
//!   one of them to the origin and answer the rest when it returns, so the
//!   slowest should take about one origin call, not a queue of them.
//! - `/private/{id}` behind the same layer, answering `Cache-Control:
//!   private`: 100 concurrent requests. Nothing can be stored, so the
//!   waiters must go to the origin as soon as the first call shows that
//!   (about 2 x 20 ms in all), not one after the other (100 x 20 ms).
//! - `/direct/{id}` with no cache: the origin's own latency over the same
//!   client, for comparison.
//!
//! Each round uses a fresh key. The client is hyper-util's pooled legacy
//! client on HTTP/1.1 (one request per connection at a time), so 1000
//! concurrent requests need 1000 connections: connections are opened once
//! before the rounds and reused, and their number is capped to what the
//! open-file limit allows (two descriptors each, client and server side).
//!
//! ```text
//! cargo bench --bench stampede
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;
use tower_response_cache::{Cache, CacheLayer};

const ORIGIN_DELAY: Duration = Duration::from_millis(20);
const STAMPEDE: usize = 1000;
const PRIVATE: usize = 100;
const ROUND_LIMIT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Calls {
    cached: AtomicUsize,
    private: AtomicUsize,
    direct: AtomicUsize,
    /// Releases the warm-up requests once they are all in flight.
    hold: Barrier,
}

async fn cached(State(calls): State<Arc<Calls>>) -> &'static str {
    calls.cached.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(ORIGIN_DELAY).await;
    "a slow answer"
}

async fn private(State(calls): State<Arc<Calls>>) -> impl IntoResponse {
    calls.private.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(ORIGIN_DELAY).await;
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("private"))],
        "a slow private answer",
    )
}

async fn direct(State(calls): State<Arc<Calls>>) -> &'static str {
    calls.direct.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(ORIGIN_DELAY).await;
    "a slow answer"
}

/// Holds each warm-up request until as many are in flight as there are
/// connections wanted (or a few seconds pass), so that each needs its own
/// connection.
async fn hold(State(calls): State<Arc<Calls>>) -> &'static str {
    let _ = tokio::time::timeout(Duration::from_secs(3), calls.hold.wait()).await;
    "held"
}

/// The soft limit on open files, from `/proc/self/limits` (None when it
/// cannot be read or is unlimited).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One request's outcome: latency, `Cache-Status`, whether all went well.
struct Outcome {
    latency: Duration,
    status: String,
    ok: bool,
}

async fn get_once(client: &HttpClient, uri: &str) -> Outcome {
    let req = Request::get(uri)
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let started = Instant::now();
    let result = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let code = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((code, status, body.to_bytes()))
    }
    .await;
    let latency = started.elapsed();
    match result {
        Ok((code, status, body)) => Outcome {
            latency,
            ok: code == StatusCode::OK && !body.is_empty(),
            status,
        },
        Err(e) => Outcome {
            latency,
            status: format!("error: {e}"),
            ok: false,
        },
    }
}

/// Fires `n` requests for `uri` at once (released together by a barrier,
/// at most `permits` in flight); returns each outcome and the wall time
/// from the release to the last answer, or None past `ROUND_LIMIT`.
async fn fire(
    client: &HttpClient,
    gate: &Arc<Semaphore>,
    uri: String,
    n: usize,
) -> Option<(Vec<Outcome>, Duration)> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, gate, barrier, uri) =
            (client.clone(), gate.clone(), barrier.clone(), uri.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let queued = Instant::now();
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            let mut outcome = get_once(&client, &uri).await;
            // Waiting for a connection is part of the client's latency.
            outcome.latency = queued.elapsed();
            outcome
        });
    }
    barrier.wait().await;
    let released = Instant::now();
    let collect = async {
        let mut out = Vec::with_capacity(n);
        while let Some(joined) = tasks.join_next().await {
            out.push(joined.expect("a request task panicked"));
        }
        out
    };
    let outcomes = tokio::time::timeout(ROUND_LIMIT, collect).await.ok()?;
    Some((outcomes, released.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; without it this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 3 } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(rounds));
}

async fn run(rounds: usize) {
    let bench_started = Instant::now();

    // Connections: two descriptors each (client and server ends, both in
    // this process), plus room for everything else.
    let fd_limit = open_file_limit();
    let connections = match fd_limit {
        Some(limit) => STAMPEDE.min(limit.saturating_sub(128) / 2).max(1),
        None => STAMPEDE,
    };
    match fd_limit {
        Some(limit) => println!("open-file soft limit: {limit}"),
        None => println!("open-file soft limit: unlimited or unknown"),
    }
    if connections < STAMPEDE {
        println!(
            "NOTE: client limited to {connections} concurrent connections (the open-file \
             limit cannot hold {STAMPEDE} x 2 sockets); the other requests queue for a \
             connection, and that wait counts in their latency"
        );
    }

    let cache = Cache::builder().build();
    let calls = Arc::new(Calls {
        cached: AtomicUsize::new(0),
        private: AtomicUsize::new(0),
        direct: AtomicUsize::new(0),
        hold: Barrier::new(connections),
    });
    let layer = CacheLayer::new(&cache).ttl(Duration::from_secs(300));
    let app = Router::new()
        .route("/cached/{id}", get(cached).route_layer(layer.clone()))
        .route("/private/{id}", get(private).route_layer(layer))
        .route("/direct/{id}", get(direct))
        .route("/hold", get(hold))
        .with_state(calls.clone());

    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on 127.0.0.1")
        .tap_io(move |tcp| {
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
        });
    let addr = axum::serve::Listener::local_addr(&listener).expect("a bound address");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("the server runs");
    });

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(120))
        .build(connector);
    let gate = Arc::new(Semaphore::new(connections));
    let base = format!("http://{addr}");

    // Open the connections once, with as many slow requests at once, so
    // that the rounds measure the cache and not TCP handshakes.
    let warm = fire(&client, &gate, format!("{base}/hold"), connections).await;
    let warm_ok = warm
        .as_ref()
        .map_or(0, |(o, _)| o.iter().filter(|o| o.ok).count());
    println!(
        "warm-up: {warm_ok}/{connections} requests ok, {} connections accepted by the server",
        accepted.load(Ordering::Relaxed)
    );

    // The origin's own latency, one request at a time over the same client.
    let mut direct_ms = Vec::new();
    for i in 0..15 {
        let o = get_once(&client, &format!("{base}/direct/alone-{i}")).await;
        assert!(o.ok, "direct request failed: {}", o.status);
        direct_ms.push(o.latency);
    }
    direct_ms.sort();
    let origin = direct_ms[direct_ms.len() / 2];
    println!(
        "origin: handler sleeps {} ms; an uncached request measured {:.2} ms median \
         (min {:.2}, max {:.2}, {} sequential requests)",
        ORIGIN_DELAY.as_millis(),
        ms(origin),
        ms(direct_ms[0]),
        ms(direct_ms[direct_ms.len() - 1]),
        direct_ms.len()
    );
    println!();

    for round in 1..=rounds {
        // Case 1: a cacheable cold key, 1000 at once.
        let before_calls = calls.cached.load(Ordering::SeqCst);
        let before_conns = accepted.load(Ordering::Relaxed);
        let before = cache.stats();
        let uri = format!("{base}/cached/round-{round}");
        let Some((outcomes, wall)) = fire(&client, &gate, uri, STAMPEDE).await else {
            println!("round {round}: cacheable stampede did not finish within {ROUND_LIMIT:?}");
            continue;
        };
        let after = cache.stats();
        let origin_calls = calls.cached.load(Ordering::SeqCst) - before_calls;
        let new_conns = accepted.load(Ordering::Relaxed) - before_conns;
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        let count = |s: &str| outcomes.iter().filter(|o| o.status.contains(s)).count();
        let (hits, collapsed, stored) = (count("; hit"), count("collapsed"), count("stored"));
        let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        lat.sort();
        let (p50, p99, max) = (
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
        );
        println!(
            "round {round}, cacheable, {STAMPEDE} concurrent cold requests on one key: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; wall {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max),
            ms(wall)
        );
        println!(
            "  origin {} ms ({:.2} ms measured); p99/origin {:.2}; origin calls {origin_calls}; \
             coalesced {} (stats, this round); responses: {stored} stored miss, {collapsed} \
             collapsed, {hits} hits, {failed} failed; {new_conns} new connections",
            ORIGIN_DELAY.as_millis(),
            ms(origin),
            ms(p99) / ms(origin),
            after.totals.coalesced - before.totals.coalesced,
        );
        if failed > 0 {
            let first = outcomes.iter().find(|o| !o.ok).expect("one failed");
            println!("  first failure: {}", first.status);
        }

        // The same burst on the key now cached: what 1000 concurrent
        // requests cost this client and server (two worker threads for
        // both) when no origin call is involved.
        let uri = format!("{base}/cached/round-{round}");
        if let Some((warm, warm_wall)) = fire(&client, &gate, uri, STAMPEDE).await {
            let warm_hits = warm.iter().filter(|o| o.status.contains("; hit")).count();
            let mut wl: Vec<Duration> = warm.iter().map(|o| o.latency).collect();
            wl.sort();
            let warm_p99 = percentile(&wl, 0.99);
            println!(
                "  same burst on the warm key (baseline, {warm_hits} hits): p50 {:.2} ms, \
                 p99 {:.2} ms, max {:.2} ms; wall {:.2} ms; cold p99 - warm p99 = {:.2} ms",
                ms(percentile(&wl, 0.50)),
                ms(warm_p99),
                ms(wl[wl.len() - 1]),
                ms(warm_wall),
                ms(p99) - ms(warm_p99),
            );
        }

        // Case 2: an uncacheable key, 100 at once.
        let before_calls = calls.private.load(Ordering::SeqCst);
        let before = cache.stats();
        let uri = format!("{base}/private/round-{round}");
        let Some((outcomes, wall)) = fire(&client, &gate, uri, PRIVATE).await else {
            println!("round {round}: private stampede did not finish within {ROUND_LIMIT:?}");
            continue;
        };
        let after = cache.stats();
        let origin_calls = calls.private.load(Ordering::SeqCst) - before_calls;
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        lat.sort();
        println!(
            "round {round}, private (Cache-Control: private), {PRIVATE} concurrent: total {:.2} ms \
             ({:.1} x origin); origin calls {origin_calls}; p50 {:.2} ms, max {:.2} ms; \
             coalesced {}, pass markers {}; {failed} failed",
            ms(wall),
            ms(wall) / ms(origin),
            ms(percentile(&lat, 0.50)),
            ms(lat[lat.len() - 1]),
            after.totals.coalesced - before.totals.coalesced,
            after.pass_markers - before.pass_markers,
        );
    }

    let stats = cache.stats();
    println!();
    println!(
        "totals: cache hits {}, misses {}, coalesced {}, coalesce timeouts {}, \
         pass markers {}; origin calls: cached {}, private {}, direct {}; \
         connections accepted {}; bench took {:.1} s",
        stats.totals.hits,
        stats.totals.misses,
        stats.totals.coalesced,
        stats.coalesce_timeouts,
        stats.pass_markers,
        calls.cached.load(Ordering::SeqCst),
        calls.private.load(Ordering::SeqCst),
        calls.direct.load(Ordering::SeqCst),
        accepted.load(Ordering::Relaxed),
        bench_started.elapsed().as_secs_f64()
    );
    server.abort();
}
