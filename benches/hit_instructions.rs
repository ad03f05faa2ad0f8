//! The hit path in instructions, for a noise-free comparison of builds.
//!
//! The same two services as `hit_path` (a bare `service_fn` returning a
//! 1 KiB body, and the same behind `CacheLayer`), each driven `N` times
//! (default 20 000) by a function of its own, so that a profiler that counts
//! instructions can tell the two apart:
//!
//! ```text
//! cargo bench --bench hit_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/deps/hit_instructions-* 20000
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'run_(bare|hit|lean)'
//! ```
//!
//! The hit's instructions per request over the bare service's are the
//! difference of the two inclusive counts divided by `N`. Run directly, the
//! program only checks that what it drives is a hit; `bare`, `hit` or
//! `lean` as an argument drives only that service (for `perf stat`).
//! `run_lean` is the same hit in a cache with the lean header profile
//! (`CacheBuilder::lean_headers`).

#[path = "support/inline.rs"]
mod inline;

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Waker};

use http::Request;
use tower::{Service, ServiceExt};

use inline::*;

fn requests(n: usize) -> Vec<Request<()>> {
    (0..n).map(|_| request(HIT_PATH)).collect()
}

#[inline(never)]
fn run<S>(cx: &mut Context<'_>, service: &S, requests: Vec<Request<()>>, which: &'static str)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    // Named, so that two drivers of the same service type stay apart.
    black_box(which);
    for req in requests {
        black_box(poll_now(cx, service.clone().oneshot(req)).expect("infallible"));
    }
}

#[inline(never)]
fn run_bare<S>(cx: &mut Context<'_>, service: &S, requests: Vec<Request<()>>)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    run(cx, service, requests, "bare");
}

#[inline(never)]
fn run_hit<S>(cx: &mut Context<'_>, service: &S, requests: Vec<Request<()>>)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    run(cx, service, requests, "hit");
}

#[inline(never)]
fn run_lean<S>(cx: &mut Context<'_>, service: &S, requests: Vec<Request<()>>)
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    run(cx, service, requests, "lean");
}

/// Stores the hit's entry: the first request, once its body is read.
fn prime<S, B>(cx: &mut Context<'_>, service: &S)
where
    S: Service<Request<()>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for req in requests(2) {
        let response = poll_now(cx, service.clone().oneshot(req)).expect("infallible");
        poll_now(cx, http_body_util::BodyExt::collect(response.into_body())).expect("infallible");
    }
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(20_000);
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let bare = bare();
    let (cache, cached) = cached(bare.clone());
    let (lean_cache, lean) = cached_lean(bare.clone());
    prime(&mut cx, &cached);
    prime(&mut cx, &lean);
    // `bare`, `hit` or `lean` drives only that one (for counters of a
    // whole run, such as `perf stat`).
    let only = std::env::args()
        .skip(1)
        .find(|a| ["bare", "hit", "lean"].contains(&a.as_str()));
    let drives = |what: &str| only.as_deref().is_none_or(|o| o == what);
    if drives("bare") {
        run_bare(&mut cx, &bare, requests(n));
    }
    for (what, cache) in [("hit", &cache), ("lean", &lean_cache)] {
        if !drives(what) {
            continue;
        }
        let hits = cache.stats().totals.hits;
        if what == "hit" {
            run_hit(&mut cx, &cached, requests(n));
        } else {
            run_lean(&mut cx, &lean, requests(n));
        }
        let stats = cache.stats();
        assert_eq!(
            stats.totals.hits - hits,
            n as u64,
            "every measured {what} request hit"
        );
        assert_eq!(stats.totals.misses, 1);
    }
    println!("{n} bare requests, {n} hits and {n} lean hits driven");
}
