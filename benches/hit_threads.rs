//! Hits per second on one hot route with one and two worker threads,
//! against the plain handler with the same threads, and what one counter
//! every thread bumps costs next to one counter per thread.
//!
//! (a) Every thread drives its own clone of the service (as hyper's and
//!     axum's tasks do, one clone per connection) and sends it requests
//!     polled with a no-op waker (nothing on the hit path waits):
//!     - *hot route*: each thread asks for URLs of its own (64 in turn) on
//!       the one route. What every hit writes that all threads share is
//!       then the route's hit counter (and the reference count of the
//!       layer's configuration, which the service clone made per request
//!       bumps); entries, bodies and store shards are apart.
//!     - *hot URL*: every thread asks for the same URL. Add the shared
//!       entry's, body's and `ETag`'s reference counts and its store
//!       shard's lock.
//!     - *plain*: the handler alone, which shares nothing.
//!     If the shared lines cost, the cached side gains less from a second
//!     thread than the plain one, and its CPU time per request grows.
//! (b) The counter alone: threads bumping one `AtomicU64` that they all
//!     share, or each its own on a line of its own, as a striped counter
//!     does.
//!
//! Criterion reports (a). A timed pass of our own then prints the ratios
//! in the same run (criterion's figures are not available to the program):
//! rounds that take the cases in turn, so that a moment when the machine is
//! busy slows every case of a round alike, and the median of the rounds.
//! Besides requests per second it reports CPU time per request (from
//! `/proc/thread-self/schedstat`, on Linux) and how many cores the two
//! threads had between them: on a machine shared with other work, two
//! threads may take turns on one core, and then little is contended.
//!
//! ```text
//! cargo bench --bench hit_threads
//! ```

#[path = "support/inline.rs"]
mod inline;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use http::Request;
use tower::{Service, ServiceExt};

use inline::*;

/// Requests per thread in one round of the timed pass.
const PER_THREAD: u64 = 100_000;
/// Rounds of the timed pass.
const ROUNDS: usize = 9;
/// Counter bumps per thread in one round.
const BUMPS: u64 = 2_000_000;

/// What a run on some threads took: from their common start to the last
/// one's end, and the CPU time they had between them.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

/// The calling thread's CPU time so far, where Linux tells it
/// (`/proc/thread-self/schedstat`, in ns); zero elsewhere.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Runs `work(i, n)` on `threads` threads at once, `n` each.
fn on_threads(threads: usize, n: u64, work: impl Fn(usize, u64) + Sync) -> Took {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (start, work) = (&start, &work);
                s.spawn(move || {
                    start.wait();
                    let cpu = thread_cpu();
                    work(i, n);
                    thread_cpu() - cpu
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let cpu = workers.into_iter().map(|w| w.join().unwrap()).sum();
        Took {
            wall: began.elapsed(),
            cpu,
        }
    })
}

/// URLs per thread on the hot route.
const URLS: usize = 64;

/// The URLs thread `i` asks for on the hot route.
fn route_urls(i: usize) -> Vec<String> {
    (0..URLS)
        .map(|k| format!("/items/{}?a=1", i * URLS + k))
        .collect()
}

/// `n` requests through a clone of `service`, for `urls` in turn.
fn requests<S>(service: &S, urls: &[String], n: u64)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let service = service.clone();
    for url in urls.iter().cycle().take(n as usize) {
        black_box(one(&mut cx, &service, request(url)));
    }
}

/// `n` requests through one clone of `service` that every request reuses
/// (no reference count touched per request), for `urls` in turn.
fn requests_one_clone<S>(service: &S, urls: &[String], n: u64)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let mut service = service.clone();
    for url in urls.iter().cycle().take(n as usize) {
        let response = poll_now(&mut cx, async {
            service.ready().await?;
            service.call(request(url)).await
        });
        black_box(response.expect("the service does not fail"));
    }
}

/// One counter line per thread (of the two at most measured here).
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

struct Counters {
    shared: Line,
    own: [Line; 2],
}

fn bump(counter: &AtomicU64, n: u64) {
    for _ in 0..n {
        black_box(counter).fetch_add(1, Relaxed);
    }
}

/// A case of the timed pass: its name, its work, operations per thread.
type Case<'a> = (&'static str, &'a (dyn Fn(usize, u64) + Sync), u64);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--list");

    let plain = bare();
    let (cache, cached) = cached(plain.clone());
    let route: [Vec<String>; 2] = [route_urls(0), route_urls(1)];
    let url = [HIT_PATH.to_owned()];
    // Prime: a miss stores once its body is read; every URL once.
    {
        let waker = Waker::from(Arc::new(NoopWake));
        let mut cx = Context::from_waker(&waker);
        for path in route.iter().flatten().chain(&url) {
            let response = poll_now(&mut cx, cached.clone().oneshot(request(path)));
            let body = response.expect("infallible").into_body();
            poll_now(&mut cx, http_body_util::BodyExt::collect(body)).expect("infallible");
        }
    }
    let primed = cache.stats().totals;
    let counters = Counters {
        shared: Line::default(),
        own: Default::default(),
    };
    let (per_thread, bumps, rounds) = if quick {
        (100, 1000, 1)
    } else {
        (PER_THREAD, BUMPS, ROUNDS)
    };
    let cases: [Case<'_>; 6] = [
        ("plain", &|i, n| requests(&plain, &route[i], n), per_thread),
        (
            "hot-route",
            &|i, n| requests(&cached, &route[i], n),
            per_thread,
        ),
        ("hot-url", &|_, n| requests(&cached, &url, n), per_thread),
        (
            "hot-route-one-clone",
            &|i, n| requests_one_clone(&cached, &route[i], n),
            per_thread,
        ),
        ("shared-counter", &|_, n| bump(&counters.shared.0, n), bumps),
        ("own-counter", &|i, n| bump(&counters.own[i].0, n), bumps),
    ];

    // Without plots: drawing them takes longer than the measurements.
    let mut criterion = Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("hit_threads");
        group.throughput(Throughput::Elements(1));
        for threads in [1, 2] {
            for (name, work, _) in &cases[..4] {
                group.bench_function(format!("{name}/{threads}"), |b| {
                    b.iter_custom(|iters| {
                        on_threads(threads, iters.div_ceil(threads as u64), work).wall
                    })
                });
            }
        }
        group.finish();
    }
    criterion.final_summary();

    // Our own pass: every case in each round, the median of the rounds.
    // Per case and thread count: operations per second of wall time, CPU
    // ns per operation, and the CPU time over the wall time.
    let mut seen = vec![[Vec::new(), Vec::new(), Vec::new()]; cases.len() * 2];
    for _ in 0..rounds {
        for (t, threads) in [1usize, 2].into_iter().enumerate() {
            for (c, (_, work, n)) in cases.iter().enumerate() {
                let took = on_threads(threads, *n, work);
                let ops = (*n * threads as u64) as f64;
                let [per_s, cpu_ns, busy] = &mut seen[c * 2 + t];
                per_s.push(ops / took.wall.as_secs_f64());
                cpu_ns.push(took.cpu.as_nanos() as f64 / ops);
                busy.push(took.cpu.as_secs_f64() / took.wall.as_secs_f64());
            }
        }
    }
    let m: Vec<[f64; 3]> = seen.into_iter().map(|s| s.map(median)).collect();
    let at = |case: usize, threads: usize| m[case * 2 + threads - 1];
    let totals = cache.stats().totals;
    assert_eq!(
        totals.misses, primed.misses,
        "every measured request was a hit"
    );

    println!();
    println!(
        "hits per second on one route, 1 KiB bodies: the median of {rounds} rounds of \
         {per_thread} requests per thread"
    );
    for threads in [1, 2] {
        let [plain, plain_cpu, busy] = at(0, threads);
        let both = match threads {
            1 => String::new(),
            _ => format!("; the threads had {busy:.2} cores between them"),
        };
        println!(
            "  {threads} thread(s): plain {:.2} M/s, {plain_cpu:.0} ns of CPU per request{both}",
            plain / 1e6
        );
        for case in [1, 3, 2] {
            let [hits, cpu, _] = at(case, threads);
            println!(
                "    {:20}: {:.2} M/s, {:.3} x plain; {cpu:.0} ns of CPU per hit",
                cases[case].0,
                hits / 1e6,
                hits / plain,
            );
        }
    }
    println!("  a second thread gives (requests per second, CPU per request):");
    for case in [0, 1, 3, 2] {
        println!(
            "    {:20}: {:.2}x, {:.2}x",
            cases[case].0,
            at(case, 2)[0] / at(case, 1)[0],
            at(case, 2)[1] / at(case, 1)[1],
        );
    }
    let (shared, own) = (4, 5);
    println!(
        "a counter every thread bumps, against one per thread (CPU ns per bump; two threads \
         had {:.2} cores between them):",
        at(shared, 2)[2],
    );
    for threads in [1, 2] {
        println!(
            "  {threads} thread(s): shared {:.1} ns, own {:.1} ns",
            at(shared, threads)[1],
            at(own, threads)[1],
        );
    }
}
