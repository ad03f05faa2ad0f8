//! A model-based property test of the whole stack (issue #21, point 2).
//!
//! Random programs of GETs, HEADs, PUTs and DELETEs by three users (one
//! anonymous, two signed in), changes to the data behind the cache's back,
//! programmatic prefix and tag flushes, origin outages, slow origins and
//! time steps run against a real axum `Router` with `InvalidateOn` and
//! `CacheLayer` in front of handlers that read a versioned in-memory
//! database. Every answer names what the origin read: the path, the user,
//! the data's version, when it was read, and a sequence number taken at the
//! read.
//!
//! Every answer is checked against the promises (`check_read`):
//!
//! 1. never another scope's response (the user and the path it names are
//!    the requester's);
//! 2. never older than an acknowledged write or a finished flush that
//!    covers it (read-your-writes);
//! 3. the race rule: never an answer whose origin read happened before an
//!    invalidation covering it began, once that invalidation has ended;
//! 4. never past its TTL plus the grace window it was served in (the age
//!    measured from the origin read, and the `Age` header).
//!
//! On tokio's paused clock (`programs_agree_with_the_model`), one request
//! at a time, a small reference model also predicts every answer exactly:
//! hit, stale, miss, revalidation or bypass, the version and the read
//! time it carries, its `Age`; and after every step the statistics of
//! every route, the entries held and the origin calls; a HEAD never stores
//! anything; at the end the statistics account for every origin call.
//!
//! The same programs run again with requests overlapping
//! (`overlapping_programs_keep_the_promises`): in groups of up to eight
//! sent at once, each handler yielding to the others a generated number
//! of times before and after it touches the data, time moving between
//! groups on a `ManualClock`; once on a current-thread runtime, where the
//! interleaving is the program's own (a failure shrinks and replays), then
//! on two worker threads. There the promises are checked on the history
//! (read-your-writes and the race rule against what had finished before
//! each read began), and the statistics against the origin calls.
//!
//! # Layout
//!
//! In `tests/model/`: `world.rs` (users, paths, routes, what covers what),
//! `app.rs` (the database, the handlers, the layers), `program.rs` (steps
//! and how they are drawn), `step.rs` (running a step, what its client
//! saw), `promises.rs` (the checks), `reference.rs` (the model), `run.rs`
//! (the runners). Here: the properties, fixed programs and regressions.
//!
//! # Running more
//!
//! By default each property runs 256 programs of up to 40 steps (a few
//! seconds in a debug build). Locally, for longer:
//!
//! ```text
//! PROPTEST_CASES=5000 MODEL_MAX_OPS=120 cargo test --release --test model
//! ```
//!
//! A failure prints the seed of its run and the shrunk program, one step
//! a line; `PROPTEST_RNG_SEED=<seed>` replays the run (the same programs,
//! hence the same failure on the paused clock and on one thread). A
//! program found to break a promise is kept at the end as a plain test.

mod support;

#[path = "model/app.rs"]
mod app;
#[path = "model/program.rs"]
mod program;
#[path = "model/promises.rs"]
mod promises;
#[path = "model/reference.rs"]
mod reference;
#[path = "model/run.rs"]
mod run;
#[path = "model/step.rs"]
mod step;
#[path = "model/world.rs"]
mod world;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use tower_response_cache::{Cache, CacheLayer, Clock, RoutePolicy};

use app::ms;
use program::{max_ops, op, Op, Overlapping, Program};
use run::{overlapping, run_sequential};
use support::send;
use world::{changes, write_flushes, User, DASH, PATHS, REVIEWS};

// ---------------------------------------------------------------------------
// The property tests.

/// The seed of this run: `PROPTEST_RNG_SEED`, else a fresh one.
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(std::time::SystemTime::now()))
}

/// `cases` unless `PROPTEST_CASES` says otherwise; no persistence file:
/// a failure prints its seed.
fn config(seed: u64, cases: u32) -> Config {
    let cases = match std::env::var("PROPTEST_CASES") {
        Ok(_) => Config::default().cases,
        Err(_) => cases,
    };
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// How a property runs.
struct Explore {
    name: &'static str,
    cases: u32,
    /// Once a program has failed, how many times each smaller one is run
    /// before it counts as passing: a failure that depends on scheduling
    /// does not come back at every run.
    tries: u32,
    /// What a replay of the seed gives.
    replay: &'static str,
}

/// Runs `test` on programs from `strategy`; on failure panics with the
/// seed, the shrunk program and what broke.
fn explore<S>(how: Explore, strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: fmt::Debug + Clone,
{
    let Explore {
        name,
        cases,
        tries,
        replay,
    } = how;
    let seed = seed();
    let mut runner = TestRunner::new(config(seed, cases));
    let failed = AtomicBool::new(false);
    let result = runner.run(&strategy, |program| {
        let tries = if failed.load(SeqCst) { tries } else { 1 };
        for _ in 0..tries {
            if let Err(e) = test(program.clone()) {
                failed.store(true, SeqCst);
                return Err(TestCaseError::fail(e));
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, program)) => panic!(
            "{name} failed: {reason}\n\
             seed: {seed} (replay: PROPTEST_RNG_SEED={seed} cargo test --test model {name}; \
             {replay})\n\
             shrunk program:\n{program:?}"
        ),
        Err(TestError::Abort(reason)) => panic!("{name} aborted (seed {seed}): {reason}"),
    }
}

#[test]
fn programs_agree_with_the_model() {
    let programs = prop::collection::vec(op(), 1..=max_ops()).prop_map(Program);
    let how = Explore {
        name: "programs_agree_with_the_model",
        cases: 256,
        tries: 1,
        replay: "the same programs, the same answers",
    };
    explore(how, programs, |p| run_sequential(&p.0).map(drop));
}

#[test]
fn overlapping_programs_keep_the_promises() {
    // One thread: the interleaving is the one the yields make, the same at
    // every run of a program (so a failure shrinks and replays). Two: the
    // requests run in parallel too.
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let two = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let programs = (
        prop::collection::vec((op(), (0u8..16, 0u8..16)), 1..=max_ops()),
        2usize..=8,
    )
        .prop_map(|(ops, width)| Overlapping { ops, width });
    let how = Explore {
        name: "overlapping_programs_keep_the_promises",
        cases: 256,
        tries: 16,
        replay: "on one thread the same failure; on two, the same programs",
    };
    explore(how, programs, |p| {
        let on = |threads: &str, e: String| format!("on {threads}: {e}");
        one.block_on(overlapping(p.clone()))
            .map_err(|e| on("one thread", e))?;
        two.block_on(overlapping(p))
            .map_err(|e| on("two threads", e))
    });
}

// ---------------------------------------------------------------------------
// Fixed programs.

/// The harness itself: every write's flushes cover what it changes, so a
/// stale read after a write is the cache's fault, not the rules'.
#[test]
fn the_rules_flush_what_writes_change() {
    for path in PATHS {
        for user in User::ALL {
            for (changed, _) in changes(path, user) {
                assert!(
                    write_flushes(path).iter().any(|f| f.covers(changed)),
                    "a write on {path} changes {changed} but does not flush it"
                );
            }
        }
    }
}

/// One program that reaches every kind of answer the model knows, so that
/// the random ones are checked against a model that has been seen to
/// predict them all.
#[test]
fn a_fixed_program_reaches_every_answer() {
    use Op::*;
    use User::*;
    let program = vec![
        Get("/items", Anon),    // stored
        Get("/items", Anon),    // hit
        Get("/items", Alice),   // bypass: authorization
        Get("/dash", Anon),     // bypass: no-scope
        Head("/items/1", Anon), // miss: head
        Get("/items/1", Anon),  // stored (the HEAD did not fill)
        Get(REVIEWS, Alice),    // stored
        Get(DASH, Bob),         // stored, max-age 1 s (version 0)
        Advance(3_000),         // /items/1 stale, reviews fresh, dash stale
        Get("/items/1", Anon),  // stale-while-revalidate, refreshed
        Get("/items/1", Anon),  // hit on the refresh
        Get(DASH, Bob),         // revalidated (304)
        Advance(2_500),         // reviews past its TTL, in stale-if-error
        Outage(true),           //
        Get(REVIEWS, Alice),    // stale-if-error
        Get(REVIEWS, Bob),      // miss: status
        Outage(false),          //
        Put("/items/1", Bob),   // flushes /items/1, list, dash
        Get("/items/1", Anon),  // stored, the new version
        Get("/items", Anon),    // stored (the old entry dropped)
        FlushPrefix("/item"),   // covers nothing
        Get("/items", Anon),    // hit
        FlushTag("item:1"),     //
        Get("/items/1", Anon),  // stored
        Job("/dash", Bob),      // behind the cache's back
        FlushPrefix("/"),       //
        Get(DASH, Bob),         // stored, the new version
    ];
    let kinds = run_sequential(&program)
        .unwrap_or_else(|e| panic!("{e}\nprogram:\n{:?}", Program(program.clone())));
    for kind in [
        "stored",
        "hit",
        "bypass:authorization",
        "bypass:no-scope",
        "miss:head",
        "stale-while-revalidate",
        "revalidated",
        "stale-if-error",
        "miss:status",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

// ---------------------------------------------------------------------------
// Regressions: programs that broke a promise, made plain and deterministic.

/// Found by `overlapping_programs_keep_the_promises`: two GETs without
/// validators meet a stale entry that has an `ETag`. The first revalidates
/// it; the second waits for the first. The origin's `304` freshens the
/// entry, and the waiter must be answered with it in full: it was answered
/// `304 Not Modified` with no body, for the validator the cache had put in
/// its request to the origin (a client error caused by the cache). A
/// waiter that sends the validator itself still gets its `304`.
#[tokio::test(start_paused = true)]
async fn a_waiter_is_not_answered_304_for_validators_it_never_sent() {
    let cache = Cache::builder().clock(Clock::tokio()).build();
    let gate = support::Gate::default();
    let calls = support::Hits::default();
    let (g, c) = (gate.clone(), calls.clone());
    let handler = move |headers: HeaderMap| {
        let (gate, calls) = (g.clone(), c.clone());
        async move {
            calls.bump();
            let mut res = Response::new(Body::from("the dashboard"));
            let h = res.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
            h.insert(header::ETAG, HeaderValue::from_static("\"d0\""));
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"d0\"")
            {
                gate.pass().await;
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                *res.body_mut() = Body::empty();
            }
            res
        }
    };
    let app = Router::new()
        .route("/dash", get(handler))
        .layer(CacheLayer::new(&cache).route("/dash", RoutePolicy::from_headers()));
    assert_eq!(
        send(&app, support::read("/dash")).await.cache_status(),
        "tower-response-cache; fwd=miss; stored"
    );
    tokio::time::advance(ms(2_000)).await;

    let spawn_get = |validator: Option<&'static str>| {
        let app = app.clone();
        let req = match validator {
            Some(etag) => support::get_with("/dash", "if-none-match", etag),
            None => support::read("/dash"),
        };
        tokio::spawn(async move { send(&app, req).await })
    };
    let revalidating = spawn_get(None);
    while calls.get() < 2 {
        tokio::task::yield_now().await;
    }
    let waiting = spawn_get(None);
    let asking = spawn_get(Some("\"d0\""));
    while cache.stats().totals.coalesced < 2 {
        tokio::task::yield_now().await;
    }
    gate.open();
    let answers = [
        (
            "revalidating",
            revalidating,
            StatusCode::OK,
            "the dashboard",
        ),
        ("waiting", waiting, StatusCode::OK, "the dashboard"),
        ("asking", asking, StatusCode::NOT_MODIFIED, ""),
    ];
    for (who, seen, status, body) in answers {
        let seen = seen.await.unwrap();
        assert_eq!(
            (seen.status, seen.text().as_str()),
            (status, body),
            "the {who} GET: {:?}",
            seen.headers
        );
        assert_eq!(seen.header("etag"), Some("\"d0\""), "the {who} GET");
    }
    assert_eq!(calls.get(), 2, "one revalidation for all three");
}

/// Found by `overlapping_programs_keep_the_promises` (a background
/// refresh still at the origin while time moved on): an entry's age
/// counted the origin's delay twice. RFC 9111 (section 4.2.3) counts an
/// entry's age from its arrival, starting at its age on arrival (its `Age`
/// plus the time the origin took); the cache counted from the read's
/// start instead. After an origin that took two seconds, a hit on a
/// 3 s route said `Age: 4` (next to `ttl=1`), and a response with
/// `max-age=3` was stale one second after it arrived.
#[tokio::test(start_paused = true)]
async fn the_origins_delay_counts_once_in_an_entrys_age() {
    let cache = Cache::builder().clock(Clock::tokio()).build();
    let calls = support::Hits::default();
    let c = calls.clone();
    let slow = move || {
        let calls = c.clone();
        async move {
            calls.bump();
            tokio::time::sleep(ms(2_000)).await;
            ([(header::CACHE_CONTROL, "max-age=3")], "slow")
        }
    };
    let app = Router::new()
        .route("/fixed", get(slow.clone()))
        .route("/from-headers", get(slow))
        .layer(
            CacheLayer::new(&cache)
                .route("/fixed", ms(3_000))
                .route("/from-headers", RoutePolicy::from_headers()),
        );
    for path in ["/fixed", "/from-headers"] {
        let start = tokio::time::Instant::now();
        let miss = send(&app, support::read(path)).await;
        assert_eq!(
            miss.cache_status(),
            "tower-response-cache; fwd=miss; stored"
        );
        assert_eq!(start.elapsed(), ms(2_000), "the origin took its time");
        let hit = send(&app, support::read(path)).await;
        assert_eq!(
            (hit.cache_status(), hit.header("age")),
            ("tower-response-cache; hit; ttl=1", Some("2")),
            "{path} as it arrived"
        );
        tokio::time::advance(ms(1_000)).await;
        let later = send(&app, support::read(path)).await;
        assert!(
            !later.is_hit(),
            "{path} past its 3 s: {}",
            later.cache_status()
        );
    }
    assert_eq!(calls.get(), 4);
}
