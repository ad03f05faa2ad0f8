//! What a hit costs through Redis, against the in-memory store, and how
//! many hits two instances sharing one Redis serve.
//!
//! (a) Latency: a GET `/items/1` answered from the cache, in process
//!     (`oneshot` on a clone of the service, on a current-thread tokio
//!     runtime), on three caches: the in-memory store, a `RedisStore`, and
//!     a `RedisStore` with its near cache. Criterion reports each; a simple
//!     timed pass (median of several runs) prints the ratios at the end.
//! (b) Throughput: two instances (two `Cache`s on one Redis), each driven
//!     by 16 concurrent callers on a two-thread runtime for a fixed time;
//!     hits per second in total, against one in-memory instance driven the
//!     same way.
//!
//! Starts its own `redis-server` on a free 127.0.0.1 port (it must be on
//! PATH) and stops it at the end.
//!
//! ```text
//! cargo bench --features redis --bench redis
//! ```

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use redis_server::RedisServer;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_response_cache::store::RedisStore;
use tower_response_cache::{Cache, CacheLayer};

/// The body every origin call returns: 1 KiB.
const BODY: [u8; 1024] = [b'x'; 1024];

/// How long each throughput run drives its instances.
const RUN: Duration = Duration::from_secs(2);

/// Callers per instance in the throughput runs.
const CALLERS: usize = 16;

type Svc = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<tower_response_cache::CacheBody<Full<Bytes>>>,
    Infallible,
>;

fn service(cache: &Cache) -> Svc {
    let origin = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
    });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache).ttl(Duration::from_secs(600)))
        .service(origin);
    tower::util::BoxCloneSyncService::new(svc)
}

fn redis_cache(url: &str, near: bool) -> Cache {
    let mut store = RedisStore::builder(url).namespace("bench");
    if near {
        store = store.near_cache(16 << 20);
    }
    Cache::builder()
        .store(store.build().expect("a valid URL"))
        .build()
}

/// One GET, read to the end; whether it was a hit.
async fn get(svc: &Svc, path: &str) -> bool {
    let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let hit = res
        .headers()
        .get("cache-status")
        .is_some_and(|v| v.as_bytes().windows(5).any(|w| w == b"; hit"));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BODY.len());
    hit
}

/// Warms a key until it is a hit (entries land in Redis in the background).
async fn warm(svc: &Svc, path: &str) {
    let start = Instant::now();
    while !get(svc, path).await {
        assert!(start.elapsed() < Duration::from_secs(5), "{path} never hit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The median time of one hit over `runs` timed passes of `n` hits.
fn timed(rt: &tokio::runtime::Runtime, svc: &Svc, n: u32, runs: usize) -> Duration {
    let mut per = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(get(svc, "/items/1").await);
            }
        });
        per.push(start.elapsed() / n);
    }
    per.sort();
    per[runs / 2]
}

/// Hits per second served by `services` together, each driven by
/// `CALLERS` concurrent callers for `RUN`.
fn throughput(services: &[Svc]) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for svc in services {
            warm(svc, "/items/1").await;
        }
        let hits = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + RUN;
        let mut tasks = Vec::new();
        for svc in services {
            for _ in 0..CALLERS {
                let (svc, hits) = (svc.clone(), hits.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u32;
                    while Instant::now() < deadline {
                        if get(&svc, "/items/1").await {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        // An in-memory hit never waits: let the scheduler
                        // (and its timers) run now and then.
                        n += 1;
                        if n.is_multiple_of(32) {
                            tokio::task::yield_now().await;
                        }
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        hits.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

fn main() {
    let server = RedisServer::start();
    let url = server.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = service(&Cache::builder().build());
    let redis = rt.block_on(async { service(&redis_cache(&url, false)) });
    let near = rt.block_on(async { service(&redis_cache(&url, true)) });
    rt.block_on(async {
        for svc in [&memory, &redis, &near] {
            warm(svc, "/items/1").await;
        }
    });

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("hit");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (name, svc) in [
        ("memory", &memory),
        ("redis", &redis),
        ("redis + near cache", &near),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| get(svc, "/items/1"));
        });
    }
    group.finish();

    let m = timed(&rt, &memory, 2000, 5);
    let r = timed(&rt, &redis, 500, 5);
    let n = timed(&rt, &near, 2000, 5);
    println!("\nhit latency, one 1 KiB GET in process (median of 5 timed passes):");
    println!("  memory               {:>9.1} µs", m.as_secs_f64() * 1e6);
    println!(
        "  redis                {:>9.1} µs   {:.1}x memory",
        r.as_secs_f64() * 1e6,
        r.as_secs_f64() / m.as_secs_f64()
    );
    println!(
        "  redis + near cache   {:>9.1} µs   {:.1}x memory",
        n.as_secs_f64() * 1e6,
        n.as_secs_f64() / m.as_secs_f64()
    );

    let one_memory = throughput(std::slice::from_ref(&memory));
    let two_redis = rt.block_on(async {
        [
            service(&redis_cache(&url, false)),
            service(&redis_cache(&url, false)),
        ]
    });
    let fleet = throughput(&two_redis);
    let two_near = rt.block_on(async {
        [
            service(&redis_cache(&url, true)),
            service(&redis_cache(&url, true)),
        ]
    });
    let fleet_near = throughput(&two_near);
    println!(
        "\nhits per second, {CALLERS} callers per instance for {} s on 2 threads:",
        RUN.as_secs()
    );
    println!("  one instance, memory            {one_memory:>10.0}");
    println!(
        "  two instances, one redis        {fleet:>10.0}   {:.2}x memory",
        fleet / one_memory
    );
    println!(
        "  two instances, redis + near     {fleet_near:>10.0}   {:.2}x memory",
        fleet_near / one_memory
    );
    drop(server);
}
