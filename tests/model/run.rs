//! The runners: one request at a time on tokio's paused clock against
//! the model, or overlapping groups on a manual clock.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use tower_response_cache::{Cache, Clock, ManualClock};

use crate::app::{ms, stack, App, TestClock};
use crate::program::{Op, Overlapping};
use crate::promises::{check_read, check_stats};
use crate::reference::{Expect, Model};
use crate::step::{from_cache, perform, Done};
use crate::support::BOUND;

/// Lets spawned work (a background refresh) finish: on a current-thread
/// runtime it runs while this task yields.
pub async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// Runs a program one request at a time on tokio's paused clock, checking
/// the promises and the model after every step.
pub fn run_sequential(program: &[Op]) -> Result<Vec<String>, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(sequential(program))
}

pub async fn sequential(program: &[Op]) -> Result<Vec<String>, String> {
    let start = tokio::time::Instant::now();
    let cache = Cache::builder().clock(Clock::tokio()).build();
    let app = App::new(TestClock::Tokio(start));
    let router = stack(&cache, app.clone());
    let mut model = Model::default();
    let mut acks = Vec::new();
    let mut kinds = Vec::new();
    for (step, op) in program.iter().enumerate() {
        let at = |what: String| format!("step {step} ({op:?}): {what}");
        let before = cache.stats();
        let expect = model.step(op, &app.db);
        let done = match op {
            Op::Advance(by) => {
                tokio::time::advance(ms(*by)).await;
                Done::Other
            }
            op => perform(&router, &app, &cache, step, op, (0, 0)).await?,
        };
        settle().await;
        let after = cache.stats();
        match done {
            Done::Read(r) => {
                check_read(&r, &acks)?;
                let got = Expect {
                    kind: r.kind.clone(),
                    v: r.stamp.v,
                    at: r.stamp.at,
                    status: r.status,
                };
                let want = expect.expect("a read has an expected answer");
                if got != want {
                    return Err(at(format!(
                        "the cache answered {got:?}, the model expected {want:?}"
                    )));
                }
                let age = from_cache(&r.kind).then(|| (r.now_ms - r.stamp.at) / 1000);
                if r.age != age {
                    return Err(at(format!("Age {:?}, the model's {age:?}", r.age)));
                }
                if r.head
                    && (after.totals.stores != before.totals.stores
                        || after.entries > before.entries)
                {
                    return Err(at(format!(
                        "a HEAD filled the cache: stores {} then {}, entries {} then {}",
                        before.totals.stores, after.totals.stores, before.entries, after.entries
                    )));
                }
                kinds.push(r.kind);
            }
            Done::Ack(a) => acks.push(a),
            Done::Other => {}
        }
        model.agrees(&after, &app).map_err(at)?;
        let clock = start.elapsed();
        if clock != ms(model.now) {
            return Err(at(format!(
                "tokio's clock moved by itself: {clock:?}, the program's {} ms",
                model.now
            )));
        }
    }
    check_stats(
        &cache.stats(),
        app.reads.load(SeqCst),
        app.writes.load(SeqCst),
    )?;
    Ok(kinds)
}

/// Runs a program in overlapping groups (each request a task of its own,
/// on whichever runtime runs this), the cache on a manual clock moved
/// between groups; checks every read once its group has ended.
pub async fn overlapping(program: Overlapping) -> Result<(), String> {
    let clock = ManualClock::new();
    let cache = Cache::builder().clock(clock.clone()).build();
    let app = App::new(TestClock::Manual(clock.clone(), clock.now_ms()));
    let router = stack(&cache, app.clone());
    let mut acks = Vec::new();
    for group in program.groups() {
        if let [(_, Op::Advance(by), _)] = group[..] {
            clock.advance(ms(by));
            continue;
        }
        let tasks: Vec<_> = group
            .into_iter()
            .map(|(step, op, yields)| {
                let (router, app, cache) = (router.clone(), app.clone(), cache.clone());
                tokio::spawn(async move { perform(&router, &app, &cache, step, &op, yields).await })
            })
            .collect();
        let mut reads = Vec::new();
        for task in tasks {
            let done = tokio::time::timeout(BOUND, task)
                .await
                .map_err(|_| format!("a group did not finish within {BOUND:?}"))?
                .map_err(|e| format!("a request panicked: {e}"))??;
            match done {
                Done::Read(r) => reads.push(r),
                Done::Ack(a) => acks.push(a),
                Done::Other => {}
            }
        }
        for r in &reads {
            check_read(r, &acks)?;
        }
    }
    // Background refreshes may still be reaching the origin.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = cache.stats();
        let checked = check_stats(&stats, app.reads.load(SeqCst), app.writes.load(SeqCst));
        if checked.is_ok() || tokio::time::Instant::now() > deadline {
            return checked;
        }
        tokio::time::sleep(ms(1)).await;
    }
}
