//! What a cache hit costs, and what an entry holds in memory.
//!
//! (a) A GET `/items/1?a=1` answered from the cache, against the bare
//!     handler it wraps (a `service_fn` returning a 1 KiB body). Both are
//!     driven the same way: `oneshot` on a clone of the service, polled
//!     once with a no-op waker. Neither path awaits anything, so no runtime
//!     sits between the two figures. Criterion reports both; a timed pass
//!     of its own gives the `hit overhead` line at the end (criterion's
//!     figures are not available to the program): thousands of rounds,
//!     each a batch of 100 requests through one side then the other, and
//!     the median of the rounds' differences, so that a moment when the
//!     machine is busy slows both sides of a round alike. The rounds run
//!     at four stack offsets in turn: where the stack starts within a
//!     cache line moves either side by 10 ns or more, and would otherwise
//!     be one draw per process. The pass also runs in four more processes
//!     of this bench (the program starts itself again), and the headline
//!     is the median of the five: where the stack, the heap and the code
//!     sit relative to one another is drawn once per process as well, and
//!     one process's figure can sit 10–20 ns from another's. A process
//!     whose bare handler ran well below the machine's best speed (its
//!     median over 1.25 times the fastest tenth of any process's: another
//!     program had the CPU) is marked and left out of the headline, unless
//!     every one was.
//! (b) Memory: a counting global allocator measures what 10 000 distinct
//!     1 KiB entries keep allocated in a fresh cache, next to the store's
//!     own weight estimate (`stats().bytes / entries`). It counts only
//!     while memory and allocations are measured, so that the timed
//!     requests run on the plain system allocator, as a server's do.
//!
//! ```text
//! cargo bench --bench hit_path
//! ```

#[path = "support/inline.rs"]
mod inline;

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{service_fn, Service, ServiceBuilder};
use tower_response_cache::{Cache, CacheLayer};

use inline::*;

// ---------------------------------------------------------------------------
// A counting allocator: bytes and blocks currently allocated.
// ---------------------------------------------------------------------------

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Counting is on only while memory or allocations are measured: its
/// atomics would otherwise be part of every timed request.
static COUNTING: AtomicBool = AtomicBool::new(true);

fn counting() -> bool {
    COUNTING.load(Relaxed)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && counting() {
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
            LIVE_BLOCKS.fetch_add(1, Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && counting() {
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
            LIVE_BLOCKS.fetch_add(1, Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counting() {
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            LIVE_BLOCKS.fetch_sub(1, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && counting() {
            LIVE_BYTES.fetch_add(new_size, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (usize, usize) {
    (LIVE_BYTES.load(Relaxed), LIVE_BLOCKS.load(Relaxed))
}

fn cache_status<B>(response: &Response<B>) -> &str {
    response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

// ---------------------------------------------------------------------------
// (b) Memory per entry
// ---------------------------------------------------------------------------

const ENTRIES: usize = 10_000;

struct Memory {
    empty_bytes: usize,
    per_entry_bytes: f64,
    per_entry_blocks: f64,
    weight_per_entry: f64,
    entries: u64,
}

/// Fills a fresh cache with `ENTRIES` distinct 1 KiB responses, each body
/// freshly allocated by the handler (as a real handler's would be), and
/// measures what stays allocated.
fn measure_memory(cx: &mut Context<'_>) -> Memory {
    let paths: Vec<String> = (0..ENTRIES).map(|i| format!("/items/{i}")).collect();
    let (bytes0, _) = live();
    let cache = Cache::builder().build();
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(&cache).ttl(Duration::from_secs(3600)))
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(origin_response(Bytes::from(BODY.to_vec())))
        }));
    let (bytes1, blocks1) = live();
    for path in &paths {
        let response = one(cx, &service, request(path));
        // Reading the body to its end is what stores it.
        poll_now(cx, response.into_body().collect()).expect("an infallible body");
    }
    let (bytes2, blocks2) = live();
    let stats = cache.stats();
    assert_eq!(stats.totals.stores, ENTRIES as u64, "every response stored");
    let n = ENTRIES as f64;
    let memory = Memory {
        empty_bytes: bytes1 - bytes0,
        per_entry_bytes: (bytes2 as f64 - bytes1 as f64) / n,
        per_entry_blocks: (blocks2 as f64 - blocks1 as f64) / n,
        weight_per_entry: stats.bytes as f64 / stats.entries.max(1) as f64,
        entries: stats.entries,
    };
    drop(service);
    drop(cache);
    memory
}

// ---------------------------------------------------------------------------
// (a) Hit against bare
// ---------------------------------------------------------------------------

/// Requests per timed batch. Each batch is built just before it is timed,
/// so its requests are in cache, as one hyper has just parsed would be.
const BATCH: usize = 100;

/// How far down the stack a round's batches run, in bytes. Where the
/// stack starts within a cache line is drawn once per process (address
/// space randomisation), and both sides' times shift by 10 ns or more with
/// it, in opposite directions; so the rounds take these offsets in turn,
/// and the figure is over all of them rather than one process's draw.
const STACK_OFFSETS: [usize; 4] = [0, 16, 32, 48];

/// Runs `f` with `PAD` more bytes of this frame above it on the stack.
#[inline(never)]
fn below<const PAD: usize, R>(f: impl FnOnce() -> R) -> R {
    let pad = [0u8; PAD];
    black_box(&pad);
    let out = f();
    black_box(&pad);
    out
}

/// One batch through `service` at stack offset `STACK_OFFSETS[which]`.
fn time_batch_at<S>(which: usize, cx: &mut Context<'_>, service: &S) -> f64
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    match which {
        0 => below::<0, _>(|| time_batch(cx, service)),
        1 => below::<16, _>(|| time_batch(cx, service)),
        2 => below::<32, _>(|| time_batch(cx, service)),
        _ => below::<48, _>(|| time_batch(cx, service)),
    }
}

/// One batch of `BATCH` requests through `service`, in nanoseconds per
/// request.
#[inline(never)]
fn time_batch<S>(cx: &mut Context<'_>, service: &S) -> f64
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let requests: Vec<Request<()>> = (0..BATCH).map(|_| request(HIT_PATH)).collect();
    let started = Instant::now();
    for req in requests {
        black_box(one(cx, service, req));
    }
    started.elapsed().as_nanos() as f64 / BATCH as f64
}

/// Allocator calls (alloc, alloc_zeroed, realloc) per request, building
/// the requests aside.
fn allocs_per_request<S>(cx: &mut Context<'_>, service: &S) -> f64
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    const N: usize = 1000;
    let requests: Vec<Request<()>> = (0..N).map(|_| request(HIT_PATH)).collect();
    let before = ALLOC_CALLS.load(Relaxed);
    for req in requests {
        black_box(one(cx, service, req));
    }
    (ALLOC_CALLS.load(Relaxed) - before) as f64 / N as f64
}

/// The middle value of `xs`, or the mean of the two middle ones.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The value a fraction `q` of `xs` lies below.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

/// Processes the timing pass runs in: this one and the others it starts.
const PROCESSES: usize = 5;

/// Set in the environment of the processes this bench starts, which run
/// the timing pass alone and print one `timing` line.
const CHILD_ENV: &str = "HIT_PATH_TIMING_ONLY";

/// A process whose bare handler ran, at the median, this many times slower
/// than the fastest tenth of any process's was slowed by other work on the
/// machine (on the project's machine, a quiet process's median is 1.03–1.12
/// times its own fastest tenth; a slowed one's, 1.4–1.6 times).
const SLOWED: f64 = 1.25;

/// One process's result, in nanoseconds per request: the overhead, and the
/// bare handler's median and fastest tenth.
#[derive(Clone, Copy)]
struct ProcessResult {
    over: f64,
    bare: f64,
    bare_q: f64,
}

/// What one process's timing pass found, in nanoseconds per request.
struct Timing {
    rounds: usize,
    /// The median of the rounds' differences (hit less bare).
    over: f64,
    hit: f64,
    bare: f64,
    /// The fastest tenth of each side's batches.
    hit_q: f64,
    bare_q: f64,
    /// The median difference at each stack offset.
    over_at: Vec<f64>,
}

/// The bare handler, and the same handler behind a cache holding the
/// measured entry, checked to answer from it.
fn setup(
    cx: &mut Context<'_>,
) -> (
    impl Service<Request<()>, Error = Infallible> + Clone,
    Cache,
    impl Service<Request<()>, Error = Infallible> + Clone,
) {
    let bare = bare();
    let (cache, cached) = cached(bare.clone());

    // Prime, then make sure what is measured is a hit.
    let first = one(cx, &cached, request(HIT_PATH));
    assert!(
        cache_status(&first).contains("fwd=miss; stored"),
        "first request: {}",
        cache_status(&first)
    );
    poll_now(cx, first.into_body().collect()).expect("an infallible body");
    let second = one(cx, &cached, request(HIT_PATH));
    assert!(
        cache_status(&second).starts_with("tower-response-cache; hit"),
        "not a hit: {}",
        cache_status(&second)
    );
    let body = poll_now(cx, second.into_body().collect()).expect("an infallible body");
    assert_eq!(body.to_bytes().len(), BODY_LEN);
    (bare, cache, cached)
}

/// Rounds of one batch through each side, in turns, so that whatever slows
/// the machine for a moment slows both sides of a round; each stack offset
/// takes rounds in both orders.
fn timing_pass<B, C>(cx: &mut Context<'_>, bare: &B, cached: &C, rounds: usize) -> Timing
where
    B: Service<Request<()>> + Clone,
    B::Error: std::fmt::Debug,
    C: Service<Request<()>> + Clone,
    C::Error: std::fmt::Debug,
{
    let (mut bare_ns, mut hit_ns, mut over) = (Vec::new(), Vec::new(), Vec::new());
    let mut over_at = vec![Vec::new(); STACK_OFFSETS.len()];
    for round in 0..rounds {
        let at = (round / 2) % STACK_OFFSETS.len();
        let (b, h) = if round % 2 == 0 {
            let b = time_batch_at(at, cx, bare);
            (b, time_batch_at(at, cx, cached))
        } else {
            let h = time_batch_at(at, cx, cached);
            (time_batch_at(at, cx, bare), h)
        };
        bare_ns.push(b);
        hit_ns.push(h);
        over.push(h - b);
        over_at[at].push(h - b);
    }
    let tenth = |xs: &[f64]| quantile(xs, 0.1);
    Timing {
        rounds,
        hit_q: tenth(&hit_ns),
        bare_q: tenth(&bare_ns),
        over: median(over),
        hit: median(hit_ns),
        bare: median(bare_ns),
        over_at: over_at.into_iter().map(median).collect(),
    }
}

impl Timing {
    fn result(&self) -> ProcessResult {
        ProcessResult {
            over: self.over,
            bare: self.bare,
            bare_q: self.bare_q,
        }
    }
}

/// Runs the timing pass in `n` fresh processes of this bench, one after
/// the other.
fn timing_in_other_processes(n: usize) -> Vec<ProcessResult> {
    let exe = std::env::current_exe().expect("the bench's own path");
    (0..n)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .env(CHILD_ENV, "1")
                .output()
                .expect("the bench starts itself");
            assert!(out.status.success(), "a timing process failed: {out:?}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<f64> = stdout
                .lines()
                .find_map(|l| l.strip_prefix("timing "))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|f| f.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let [over, _hit, bare, bare_q] = fields[..] else {
                panic!("no timing line in {stdout:?}");
            };
            ProcessResult { over, bare, bare_q }
        })
        .collect()
}

fn main() {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--list");

    if std::env::var_os(CHILD_ENV).is_some() {
        COUNTING.store(false, Relaxed);
        let (bare, _cache, cached) = setup(&mut cx);
        let timing = timing_pass(&mut cx, &bare, &cached, 4000);
        // Overhead, hit, bare, and the bare handler's fastest tenth.
        println!(
            "timing {:.1} {:.1} {:.1} {:.1}",
            timing.over, timing.hit, timing.bare, timing.bare_q
        );
        return;
    }

    // Memory first, while nothing else in the process allocates.
    let memory = measure_memory(&mut cx);

    let (bare, cache, cached) = setup(&mut cx);
    let hits_before = cache.stats().totals.hits;
    // From here to the allocation count, nothing is counted.
    COUNTING.store(false, Relaxed);

    let mut criterion = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("hit_path");
        group.bench_function("bare", |b| {
            b.iter_batched(
                || request(HIT_PATH),
                |req| black_box(one(&mut cx, &bare, req)),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("hit", |b| {
            b.iter_batched(
                || request(HIT_PATH),
                |req| black_box(one(&mut cx, &cached, req)),
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
    criterion.final_summary();

    // Our own timing pass, here and in other processes.
    let t = timing_pass(&mut cx, &bare, &cached, if quick { 16 } else { 4000 });
    let stats = cache.stats();
    assert_eq!(stats.totals.misses, 1, "only the priming request may miss");
    assert!(
        stats.totals.hits > hits_before,
        "the measured requests were hits"
    );
    let mut processes = vec![t.result()];
    if !quick {
        processes.extend(timing_in_other_processes(PROCESSES - 1));
    }
    COUNTING.store(true, Relaxed);
    let (bare_allocs, hit_allocs) = (
        allocs_per_request(&mut cx, &bare),
        allocs_per_request(&mut cx, &cached),
    );

    processes.sort_by(|a, b| a.over.total_cmp(&b.over));
    let fastest = processes
        .iter()
        .map(|p| p.bare_q)
        .fold(f64::INFINITY, f64::min);
    let slowed = |p: &ProcessResult| p.bare > SLOWED * fastest;
    let each: Vec<String> = processes
        .iter()
        .map(|p| format!("{:.0}{}", p.over, if slowed(p) { "*" } else { "" }))
        .collect();
    let quiet: Vec<f64> = processes
        .iter()
        .filter(|p| !slowed(p))
        .map(|p| p.over)
        .collect();
    let over_at: Vec<String> = STACK_OFFSETS
        .iter()
        .zip(&t.over_at)
        .map(|(offset, o)| format!("+{offset}: {o:.0} ns"))
        .collect();
    println!();
    let (headline, which) = if quiet.is_empty() {
        (
            median(processes.iter().map(|p| p.over).collect()),
            format!(
                "the median of {} processes, every one slowed by other work on the machine: rerun when it is quiet",
                processes.len()
            ),
        )
    } else {
        let n = quiet.len();
        (
            median(quiet),
            format!(
                "the median of the {n} of {} processes not slowed",
                processes.len()
            ),
        )
    };
    println!(
        "hit overhead: {headline:.0} ns over bare, GET {HIT_PATH}, 1 KiB body: {which} ({} ns; \
         * slowed: the bare handler's median over {SLOWED}x the fastest tenth of any), \
         each the median of {} paired rounds of {BATCH} requests",
        each.join(", "),
        t.rounds,
    );
    println!(
        "              this process: {:.0} ns over bare ({:.0} ns vs {:.0} ns; {:.2}x)",
        t.over,
        t.hit,
        t.bare,
        t.hit / t.bare
    );
    println!(
        "              {:.0} ns over bare between the fastest tenths ({:.0} ns vs {:.0} ns): \
         what the path costs when the machine does not interrupt it",
        t.hit_q - t.bare_q,
        t.hit_q,
        t.bare_q,
    );
    println!(
        "              by stack offset: {} (the medians of each offset's rounds)",
        over_at.join(", ")
    );
    println!("allocations per request: hit {hit_allocs:.1}, bare {bare_allocs:.1}");
    println!(
        "memory: {:.0} bytes allocated per cached 1 KiB entry ({:.1} blocks each), over {} entries; \
         store's weight estimate {:.0} bytes per entry; empty cache {} bytes",
        memory.per_entry_bytes,
        memory.per_entry_blocks,
        memory.entries,
        memory.weight_per_entry,
        memory.empty_bytes,
    );
    println!(
        "        (requested sizes: the system allocator adds its own overhead per block; \
         the store's table growth is part of the per-entry figure)"
    );
}
