//! What a step does, and what its client saw: answers with the stamp of
//! the origin read they carry, acknowledged writes and flushes.

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;

use axum::body::Body;
use axum::Router;
use http::{Method, Request};
use tower_response_cache::Cache;

use crate::app::App;
use crate::program::{Op, Yields};
use crate::support::send;
use crate::world::{changes, data_keys, write_flushes, DataKey, Flush, User};

/// What the origin said it read, from `x-seen` (or a body).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub path: String,
    pub user: String,
    pub v: u64,
    pub at: u64,
    pub seq: u64,
}

pub fn stamp(s: &str) -> Option<Stamp> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for pair in s.split(' ') {
        let (k, v) = pair.split_once('=')?;
        fields.insert(k, v);
    }
    Some(Stamp {
        path: fields.get("path")?.to_string(),
        user: fields.get("user")?.to_string(),
        v: fields.get("v")?.parse().ok()?,
        at: fields.get("at")?.parse().ok()?,
        seq: fields.get("seq")?.parse().ok()?,
    })
}

/// A `Cache-Status` in short: `hit`, `stale-while-revalidate`,
/// `stale-if-error`, `revalidated`, `collapsed`, `stored`, `miss:<detail>`,
/// `bypass:<detail>`.
pub fn kind(cache_status: &str) -> String {
    let parts: Vec<&str> = cache_status.split("; ").collect();
    let has = |t: &str| parts.contains(&t);
    let detail = parts.iter().find_map(|p| p.strip_prefix("detail="));
    if parts.first() != Some(&"tower-response-cache") {
        format!("unknown:{cache_status}")
    } else if has("hit") {
        detail.unwrap_or("hit").to_owned()
    } else if has("fwd=stale") {
        detail.unwrap_or("revalidated").to_owned()
    } else if has("fwd=miss") && has("collapsed") {
        "collapsed".to_owned()
    } else if has("fwd=miss") {
        match detail {
            Some(d) => format!("miss:{d}"),
            None if has("stored") => "stored".to_owned(),
            None => format!("unknown:{cache_status}"),
        }
    } else if has("fwd=bypass") {
        format!("bypass:{}", detail.unwrap_or("?"))
    } else {
        format!("unknown:{cache_status}")
    }
}

/// Answers made from a stored entry (not by this request's origin call).
pub fn from_cache(kind: &str) -> bool {
    matches!(
        kind,
        "hit" | "stale-while-revalidate" | "stale-if-error" | "revalidated" | "collapsed"
    )
}

/// A read, as its client saw it.
#[derive(Debug)]
pub struct Read {
    pub step: usize,
    pub path: &'static str,
    pub user: User,
    pub head: bool,
    pub start: u64,
    /// The time when it was answered.
    pub now_ms: u64,
    pub status: u16,
    pub kind: String,
    pub stamp: Stamp,
    pub age: Option<u64>,
}

impl Read {
    pub fn who(&self) -> String {
        let m = if self.head { "HEAD" } else { "GET" };
        format!("step {} ({m} {} as {:?})", self.step, self.path, self.user)
    }
}

/// An acknowledged write or a finished flush: the versions every later
/// read of these keys must reach, and what it invalidated.
#[derive(Debug)]
pub struct Ack {
    pub step: usize,
    pub start: u64,
    pub end: u64,
    pub floors: Vec<(DataKey, u64)>,
    pub flushes: Vec<Flush>,
}

pub enum Done {
    Read(Read),
    Ack(Ack),
    Other,
}

/// Runs one step (not a time step) through the router or the cache.
pub async fn perform(
    router: &Router,
    app: &App,
    cache: &Cache,
    step: usize,
    op: &Op,
    yields: Yields,
) -> Result<Done, String> {
    let request = |method: Method, path: &str, user: User| {
        let mut req = user.sign(Request::builder().method(method).uri(path));
        if yields != (0, 0) {
            req = req.header("x-yield", format!("{},{}", yields.0, yields.1));
        }
        req.body(Body::empty()).unwrap()
    };
    match *op {
        Op::Get(path, user) | Op::Head(path, user) => {
            let head = matches!(op, Op::Head(..));
            let method = if head { Method::HEAD } else { Method::GET };
            let start = app.tick();
            let seen = send(router, request(method, path, user)).await;
            let now_ms = app.clock.now_ms();
            let fail = |what: &str| {
                format!(
                    "step {step} ({op:?}): {what}; the answer: {} {:?} {:?}",
                    seen.status,
                    seen.headers,
                    seen.text()
                )
            };
            let header = seen
                .header("x-seen")
                .and_then(stamp)
                .ok_or_else(|| fail("no x-seen header"))?;
            if head {
                if !seen.body.is_empty() {
                    return Err(fail("a HEAD answered with a body"));
                }
            } else {
                let body = stamp(&seen.text()).ok_or_else(|| fail("a body that is no stamp"))?;
                if (&body.path, &body.user, body.v) != (&header.path, &header.user, header.v) {
                    return Err(fail("the body and x-seen name different data"));
                }
            }
            let age = match seen.header("age") {
                Some(a) => Some(a.parse().map_err(|_| fail("an unreadable Age"))?),
                None => None,
            };
            Ok(Done::Read(Read {
                step,
                path,
                user,
                head,
                start,
                now_ms,
                status: seen.status.as_u16(),
                kind: kind(seen.cache_status()),
                stamp: header,
                age,
            }))
        }
        Op::Put(path, user) | Op::Delete(path, user) => {
            let method = match op {
                Op::Put(..) => Method::PUT,
                _ => Method::DELETE,
            };
            let start = app.tick();
            let seen = send(router, request(method, path, user)).await;
            let end = app.tick();
            let fail = |what: &str| {
                format!(
                    "step {step} ({op:?}): {what}; the answer: {} {:?}",
                    seen.status, seen.headers
                )
            };
            if !seen.status.is_success() {
                return Err(fail("the write failed"));
            }
            if kind(seen.cache_status()) != "bypass:method" {
                return Err(fail("a write not counted as a method bypass"));
            }
            let w: u64 = seen
                .header("x-wrote")
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| fail("no x-wrote header"))?;
            Ok(Done::Ack(Ack {
                step,
                start,
                end,
                floors: changes(path, user).into_iter().map(|k| (k, w)).collect(),
                flushes: write_flushes(path),
            }))
        }
        Op::Job(path, user) => {
            app.db.write(&changes(path, user));
            Ok(Done::Other)
        }
        Op::FlushPrefix(p) | Op::FlushTag(p) => {
            let flush = match op {
                Op::FlushPrefix(_) => Flush::Prefix(p.into()),
                _ => Flush::Tag(p.into()),
            };
            let start = app.tick();
            // The data as it stands before the flush: no read that begins
            // after the flush ends may answer older.
            let floors = data_keys()
                .into_iter()
                .filter(|k| flush.covers(k.0))
                .map(|k| (k, app.db.get(k)))
                .collect();
            match &flush {
                Flush::Prefix(p) => cache.invalidate_prefix(p),
                Flush::Tag(t) => cache.invalidate_tag(t),
            }
            let end = app.tick();
            Ok(Done::Ack(Ack {
                step,
                start,
                end,
                floors,
                flushes: vec![flush],
            }))
        }
        Op::Outage(on) => {
            app.outage.store(on, SeqCst);
            Ok(Done::Other)
        }
        Op::Slow(by) => {
            app.delay.store(by, SeqCst);
            Ok(Done::Other)
        }
        Op::Advance(_) => unreachable!("time steps are the runners' business"),
    }
}
