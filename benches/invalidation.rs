//! What invalidation costs.
//!
//! (a) `Cache::invalidate_prefix` with 1 000, 100 000 and 1 000 000 entries
//!     stored. Each cache is filled through a `CacheLayer` in front of a
//!     `service_fn` returning a small body, every response body read to its
//!     end (that is what stores it), all in-process: the paths involved never
//!     wait, so each future is polled once with a no-op waker. Every call
//!     measured flushes a prefix never flushed before (`/items/<i>`, `i`
//!     counting up). The design's promise: the same cost at every size.
//! (b) A hit with no invalidation record against a hit with 10 000 live
//!     records on unrelated prefixes (`/other/<i>`), made after the entry
//!     was stored, so the entry stays valid and every lookup checks it
//!     against the index.
//! (c) The index itself: it keeps one record per prefix flushed until the
//!     longest lifetime of any stored entry has passed, so a stream of
//!     distinct flushes grows it. 4 Mi flushes into an empty index, each
//!     timed alone: the mean per million records and the slowest call
//!     (a table resize, made under the index's write lock).
//!
//! For (a), each size is timed three ways: a first pass on an empty index,
//! criterion, then a pass on the index criterion's calls left behind.
//!
//! Criterion reports every case; since its figures are not available to
//! the program, a short timing pass of its own (fixed iterations, median of
//! several runs) ends with a summary block.
//!
//! ```text
//! cargo bench --bench invalidation
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::util::ServiceFn;
use tower::{service_fn, Layer, Service};
use tower_response_cache::{Cache, CacheLayer, CacheService};

/// A waker that does nothing: nothing polled here ever waits.
struct Idle;

impl Wake for Idle {
    fn wake(self: Arc<Self>) {}
}

/// Polls a future once and returns its output; it must be ready.
fn ready_now<F: Future>(cx: &mut Context<'_>, future: F) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future that should complete at once is pending"),
    }
}

/// Sends one request through a clone of `service`, as hyper would: wait
/// for readiness, call, poll the response future.
fn send<S>(cx: &mut Context<'_>, service: &S, req: Request<()>) -> S::Response
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = service.clone();
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("service not ready: {e:?}"),
        Poll::Pending => panic!("service pending on poll_ready"),
    }
    ready_now(cx, svc.call(req)).expect("the origin never fails")
}

fn cache_status<B>(res: &Response<B>) -> String {
    res.headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned()
}

/// Writes `base` followed by the decimal digits of `n` into `buf`, without
/// going through `fmt` (so the measured loop stays tight).
fn path_into<'a>(buf: &'a mut String, base: &str, mut n: u64) -> &'a str {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.clear();
    buf.push_str(base);
    for &d in &digits[at..] {
        buf.push(d as char);
    }
    buf.as_str()
}

const BODY: &[u8] = b"{\"id\":1,\"name\":\"x\"}";
const TTL: Duration = Duration::from_secs(3600);

type Reply = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;
type Origin = ServiceFn<fn(Request<()>) -> Reply>;

/// The origin: every path answered at once with the same small body.
fn origin(_req: Request<()>) -> Reply {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(BODY)))))
}

/// A `CacheLayer` (one rule, `/items/{id}`, one hour) in front of the
/// origin.
fn cached_service(cache: &Cache) -> CacheService<Origin> {
    let origin: Origin = service_fn(origin as fn(Request<()>) -> Reply);
    CacheLayer::new(cache)
        .route("/items/{id}", TTL)
        .layer(origin)
}

/// A cache with room for a million small entries.
fn new_cache() -> Cache {
    Cache::builder()
        .max_bytes(2 << 30)
        .max_body_bytes(64 << 10)
        .build()
}

/// Stores `n` entries `/items/0` .. `/items/<n-1>`; returns the time taken.
fn fill<S, B>(cx: &mut Context<'_>, service: &S, n: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let started = Instant::now();
    let mut buf = String::with_capacity(32);
    for i in 0..n {
        let req = Request::get(path_into(&mut buf, "/items/", i))
            .body(())
            .expect("a valid request");
        let res = send(cx, service, req);
        ready_now(cx, res.into_body().collect()).expect("the body never fails");
    }
    started.elapsed()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds per `invalidate_prefix`, median of `runs` runs of `iters`
/// calls each; `next` numbers the prefixes so none repeats.
fn time_invalidations(cache: &Cache, next: &mut u64, runs: usize, iters: u64) -> f64 {
    let mut buf = String::with_capacity(32);
    let mut per_run = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        for _ in 0..iters {
            cache.invalidate_prefix(path_into(&mut buf, "/items/", *next));
            *next += 1;
        }
        per_run.push(started.elapsed().as_nanos() as f64 / iters as f64);
    }
    median(per_run)
}

/// Nanoseconds per hit over `iters` requests (built outside the timed
/// loop).
fn time_hits<S>(cx: &mut Context<'_>, service: &S, iters: usize) -> f64
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let requests: Vec<Request<()>> = (0..iters).map(|_| hit_request()).collect();
    let started = Instant::now();
    for req in requests {
        black_box(send(cx, service, req));
    }
    started.elapsed().as_nanos() as f64 / iters as f64
}

const HIT_PATH: &str = "/items/1";
const RECORDS: u64 = 10_000;

fn hit_request() -> Request<()> {
    Request::get(HIT_PATH).body(()).expect("a valid request")
}

fn main() {
    let waker = Waker::from(Arc::new(Idle));
    let mut cx = Context::from_waker(&waker);
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // this is a smoke run: small sizes, one short pass.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(u64, &str)] = if full {
        &[(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")]
    } else {
        &[(1_000, "1k")]
    };
    let (runs, iters) = if full { (7, 200_000) } else { (1, 1_000) };

    let mut criterion = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    // (a) invalidate_prefix at each size.
    let mut prefix_ns = Vec::new();
    let mut fresh_ns = Vec::new();
    for &(n, label) in sizes {
        let cache = new_cache();
        let service = cached_service(&cache);
        let took = fill(&mut cx, &service, n);
        let stats = cache.stats();
        println!(
            "filled {label}: {} entries stored in {:.2} s ({} bytes as weighed, {} evicted, {} refused)",
            stats.entries,
            took.as_secs_f64(),
            stats.bytes,
            stats.evictions,
            stats.totals.rejected_inserts,
        );
        assert_eq!(stats.entries, n, "every response must be stored");
        // A stored entry is a hit before any flush...
        let first = send(
            &mut cx,
            &service,
            Request::get("/items/0").body(()).unwrap(),
        );
        assert!(
            cache_status(&first).contains("; hit"),
            "{}",
            cache_status(&first)
        );

        // First on an empty index (no record yet), then under criterion,
        // then our own pass on the index criterion's calls left behind.
        let mut next: u64 = 0;
        let fresh = time_invalidations(&cache, &mut next, 1, iters);
        fresh_ns.push((label, fresh));
        {
            let mut group = criterion.benchmark_group("invalidate_prefix");
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                let mut buf = String::with_capacity(32);
                b.iter(|| {
                    cache.invalidate_prefix(path_into(&mut buf, "/items/", next));
                    next += 1;
                });
            });
            group.finish();
        }
        let ns = time_invalidations(&cache, &mut next, runs, iters);
        let after = cache.stats();
        println!(
            "  {label}: {ns:.0} ns per invalidate_prefix (median of {runs} x {iters}); \
             {} flushes made, {} index records live, {} entries still held",
            after.invalidations, after.index_records, after.entries
        );
        // ... and flushed after.
        let again = send(
            &mut cx,
            &service,
            Request::get("/items/0").body(()).unwrap(),
        );
        assert!(
            cache_status(&again).contains("fwd=miss"),
            "a flushed entry was served: {}",
            cache_status(&again)
        );
        prefix_ns.push((label, ns));
        drop(service);
        drop(cache);
    }

    // (c) The index keeps a record per prefix flushed until the longest
    // lifetime of a stored entry has passed (here an hour), whatever the
    // number of entries: how its growth shows in single calls.
    let growth = full.then(|| index_growth(&mut cx));

    // (b) a hit with no record, and with 10 000 live records elsewhere.
    let plain = new_cache();
    let plain_svc = cached_service(&plain);
    let busy = new_cache();
    let busy_svc = cached_service(&busy);
    for svc in [&plain_svc, &busy_svc] {
        let res = send(&mut cx, svc, hit_request());
        assert!(cache_status(&res).contains("fwd=miss; stored"));
        ready_now(&mut cx, res.into_body().collect()).unwrap();
    }
    let mut buf = String::with_capacity(32);
    for i in 0..RECORDS {
        busy.invalidate_prefix(path_into(&mut buf, "/other/", i));
    }
    assert_eq!(plain.stats().index_records, 0);
    assert_eq!(busy.stats().index_records, RECORDS);
    for (name, svc) in [("0 records", &plain_svc), ("10k records", &busy_svc)] {
        let res = send(&mut cx, svc, hit_request());
        let status = cache_status(&res);
        assert!(status.contains("; hit"), "{name}: not a hit: {status}");
        let body = ready_now(&mut cx, res.into_body().collect()).unwrap();
        assert_eq!(body.to_bytes(), BODY);
        println!("{name}: cache-status {status:?}");
    }
    {
        let mut group = criterion.benchmark_group("hit");
        group.bench_function("0_records", |b| {
            b.iter_batched(
                hit_request,
                |req| black_box(send(&mut cx, &plain_svc, req)),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("10k_records", |b| {
            b.iter_batched(
                hit_request,
                |req| black_box(send(&mut cx, &busy_svc, req)),
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
    criterion.final_summary();

    // Our own pass, alternating the two so drift affects both alike.
    let hit_iters = if full { 100_000 } else { 1_000 };
    let hit_runs = if full { 9 } else { 1 };
    let (mut plain_ns, mut busy_ns) = (Vec::new(), Vec::new());
    for _ in 0..hit_runs {
        plain_ns.push(time_hits(&mut cx, &plain_svc, hit_iters));
        busy_ns.push(time_hits(&mut cx, &busy_svc, hit_iters));
    }
    let (plain_ns, busy_ns) = (median(plain_ns), median(busy_ns));
    for (name, cache) in [("0 records", &plain), ("10k records", &busy)] {
        let s = cache.stats();
        assert_eq!(
            s.totals.misses, 1,
            "{name}: only the first request may miss"
        );
        assert_eq!(s.entries, 1, "{name}: the entry must stay");
    }
    assert_eq!(
        busy.stats().index_records,
        RECORDS,
        "no record may be pruned"
    );

    println!();
    println!("summary (median of {runs} runs of {iters} flushes; of {hit_runs} runs of {hit_iters} hits):");
    let line: Vec<String> = prefix_ns
        .iter()
        .enumerate()
        .map(|(i, (label, ns))| {
            if i == 0 {
                format!("{label} entries {ns:.0} ns")
            } else {
                format!("{label} {ns:.0} ns")
            }
        })
        .collect();
    println!("invalidate_prefix: {}", line.join(", "));
    let line: Vec<String> = fresh_ns
        .iter()
        .map(|(label, ns)| format!("{label} {ns:.0} ns"))
        .collect();
    println!(
        "invalidate_prefix, first {iters} flushes on an empty index: {}",
        line.join(", ")
    );
    println!(
        "hit: 0 records {plain_ns:.0} ns, 10k records {busy_ns:.0} ns, ratio {:.2}",
        busy_ns / plain_ns
    );
    if let Some(g) = growth {
        println!("{g}");
    }
}

/// Flushes 4 Mi distinct prefixes into a fresh cache holding one entry,
/// timing each call: mean per million records, the slowest call, and how
/// many calls took over 100 us.
fn index_growth(cx: &mut Context<'_>) -> String {
    const STEP: u64 = 1 << 20;
    const CALLS: u64 = 4 * STEP;
    let cache = new_cache();
    let service = cached_service(&cache);
    fill(cx, &service, 1);
    let mut buf = String::with_capacity(32);
    let (mut slowest, mut slow_calls, mut step_total) = (Duration::ZERO, 0u64, Duration::ZERO);
    let mut steps = Vec::new();
    for i in 0..CALLS {
        let prefix = path_into(&mut buf, "/items/", i);
        let started = Instant::now();
        cache.invalidate_prefix(prefix);
        let took = started.elapsed();
        step_total += took;
        slowest = slowest.max(took);
        if took > Duration::from_micros(100) {
            slow_calls += 1;
        }
        if (i + 1) % STEP == 0 {
            steps.push(format!("{:.0}", step_total.as_nanos() as f64 / STEP as f64));
            step_total = Duration::ZERO;
        }
    }
    let records = cache.stats().index_records;
    format!(
        "index growth: {} flushes into an empty index, mean ns per call for each \
         successive million: [{}]; slowest call {:.2} ms; {slow_calls} calls over 100 us; \
         {records} records live at the end",
        CALLS,
        steps.join(", "),
        slowest.as_secs_f64() * 1e3,
    )
}
