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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use support::{send, BOUND};
use tower::ServiceBuilder;
use tower_response_cache::{
    Cache, CacheLayer, CacheTags, Clock, Counts, InvalidateOn, ManualClock, RoutePolicy, Stats,
    Target,
};

// ---------------------------------------------------------------------------
// The world: users, paths, routes, and what covers what.

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum User {
    Anon,
    Alice,
    Bob,
}

impl User {
    const ALL: [User; 3] = [User::Anon, User::Alice, User::Bob];

    fn name(self) -> &'static str {
        match self {
            User::Anon => "anon",
            User::Alice => "alice",
            User::Bob => "bob",
        }
    }

    /// Who the origin sees: the `x-user` header, else nobody.
    fn of(headers: &HeaderMap) -> User {
        match headers.get("x-user").and_then(|v| v.to_str().ok()) {
            Some("alice") => User::Alice,
            Some("bob") => User::Bob,
            _ => User::Anon,
        }
    }

    /// A signed-in user sends credentials and names itself.
    fn sign(self, req: http::request::Builder) -> http::request::Builder {
        match self {
            User::Anon => req,
            user => req
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}-token", user.name()),
                )
                .header("x-user", user.name()),
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The paths programs read and write: overlapping on segments.
const PATHS: [&str; 5] = [
    "/items",
    "/items/1",
    "/items/2",
    "/items/1/reviews",
    "/dash",
];
/// What programmatic flushes name: the paths, the root, and prefixes that
/// cover nothing (not on a segment boundary, or below every path).
const PREFIXES: [&str; 9] = [
    "/",
    "/items",
    "/items/1",
    "/items/2",
    "/items/1/reviews",
    "/dash",
    "/item",
    "/items/12",
    "/dash/x",
];
const TAGS: [&str; 5] = ["list", "dash", "item:1", "item:2", "nope"];

const REVIEWS: &str = "/items/1/reviews";
const DASH: &str = "/dash";

/// `/items`: a fixed TTL, tagged `list`.
const LIST_TTL: u64 = 4_000;
/// `/items/{id}`: a fixed TTL and stale-while-revalidate; the handler tags
/// its answers `item:{id}`. Its origin is never slow (`Op::Slow`), so that
/// no background refresh is still at the origin when the next step runs.
const ITEM_TTL: u64 = 3_000;
const ITEM_SWR: u64 = 2_000;
/// `/items/{id}/reviews`: scoped per user, a fixed TTL and stale-if-error.
const REVIEWS_TTL: u64 = 5_000;
const REVIEWS_SIE: u64 = 3_000;
/// `/dash`: scoped per user, tagged `dash`, freshness from the response
/// (`max-age`, which the handler varies with the data) and an `ETag`, so
/// that a stale entry is kept this long (the crate's default) and
/// revalidated.
const DASH_KEEP: u64 = 600_000;

fn swr_route(path: &str) -> bool {
    matches!(path, "/items/1" | "/items/2")
}

fn dash_max_age_ms(version: u64) -> u64 {
    (1 + version % 3) * 1_000
}

/// The route a path belongs to, as the model sees it.
struct Spec {
    pattern: &'static str,
    scoped: bool,
    /// A fixed TTL; `None`: from the response.
    ttl_ms: Option<u64>,
    swr_ms: u64,
    sie_ms: u64,
}

fn spec(path: &str) -> Spec {
    let fixed = |pattern, ttl, swr, sie, scoped| Spec {
        pattern,
        scoped,
        ttl_ms: Some(ttl),
        swr_ms: swr,
        sie_ms: sie,
    };
    match path {
        "/items" => fixed("/items", LIST_TTL, 0, 0, false),
        "/items/1" | "/items/2" => fixed("/items/{id}", ITEM_TTL, ITEM_SWR, 0, false),
        REVIEWS => fixed("/items/{id}/reviews", REVIEWS_TTL, 0, REVIEWS_SIE, true),
        DASH => Spec {
            pattern: "/dash",
            scoped: true,
            ttl_ms: None,
            swr_ms: 0,
            sie_ms: 0,
        },
        _ => unreachable!("not a path of the model: {path}"),
    }
}

const PATTERNS: [&str; 4] = ["/items", "/items/{id}", "/items/{id}/reviews", "/dash"];

/// `/items/{id}` and everything under it: the id.
fn item_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/items/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The tags an entry of `path` carries (the route's and the handler's).
fn entry_tags(path: &str) -> Vec<String> {
    match path {
        "/items" => vec!["list".into()],
        "/items/1" | "/items/2" => vec![format!("item:{}", item_id(path).unwrap())],
        DASH => vec!["dash".into()],
        _ => vec![],
    }
}

/// One invalidation target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Flush {
    Prefix(String),
    Tag(String),
}

impl Flush {
    /// Whether this flush covers the entries of `path`: a prefix on whole
    /// segments, or a tag they carry.
    fn covers(&self, path: &str) -> bool {
        match self {
            Flush::Prefix(p) => {
                p == "/"
                    || path == p
                    || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
            }
            Flush::Tag(t) => entry_tags(path).contains(t),
        }
    }
}

/// What a successful write on `path` flushes: its own path (as a prefix)
/// and its rule's targets (see `stack`).
fn write_flushes(path: &str) -> Vec<Flush> {
    let mut flushes = vec![Flush::Prefix(path.into())];
    let tags: Vec<String> = match path {
        "/items" => vec!["dash".into()],
        "/items/1" | "/items/2" => vec!["list".into(), "dash".into()],
        REVIEWS => vec![format!("item:{}", item_id(path).unwrap())],
        _ => vec![],
    };
    flushes.extend(tags.into_iter().map(Flush::Tag));
    flushes
}

/// The data behind a read: per path, and per user on `/dash`.
type DataKey = (&'static str, Option<User>);

fn data_key(path: &'static str, user: User) -> DataKey {
    (path, (path == DASH).then_some(user))
}

fn data_keys() -> Vec<DataKey> {
    let mut keys: Vec<DataKey> = PATHS[..4].iter().map(|p| (*p, None)).collect();
    keys.extend(User::ALL.iter().map(|u| (DASH, Some(*u))));
    keys
}

/// What a write on `path` by `user` changes, as the application's data
/// works: an item changes the list, its reviews and every dashboard; a
/// review changes its item; a dashboard is its user's own.
fn changes(path: &'static str, user: User) -> Vec<DataKey> {
    let dashes = User::ALL.iter().map(|u| (DASH, Some(*u)));
    match path {
        "/items" => data_keys(),
        "/items/1" => [("/items/1", None), (REVIEWS, None), ("/items", None)]
            .into_iter()
            .chain(dashes)
            .collect(),
        "/items/2" => [("/items/2", None), ("/items", None)]
            .into_iter()
            .chain(dashes)
            .collect(),
        REVIEWS => vec![(REVIEWS, None), ("/items/1", None)],
        DASH => vec![(DASH, Some(user))],
        _ => unreachable!("not a path of the model: {path}"),
    }
}

// ---------------------------------------------------------------------------
// The system under test: a versioned database, its handlers, the layers.

/// Versions per data key, each the number of the last write that changed
/// it (writes may land out of order: a version only goes up).
struct Db {
    versions: HashMap<DataKey, AtomicU64>,
    last_write: AtomicU64,
}

impl Db {
    fn new() -> Self {
        Db {
            versions: data_keys()
                .into_iter()
                .map(|k| (k, AtomicU64::new(0)))
                .collect(),
            last_write: AtomicU64::new(0),
        }
    }

    fn get(&self, key: DataKey) -> u64 {
        self.versions[&key].load(SeqCst)
    }

    /// Changes `keys`; returns the write's number.
    fn write(&self, keys: &[DataKey]) -> u64 {
        let w = self.last_write.fetch_add(1, SeqCst) + 1;
        for key in keys {
            self.versions[key].fetch_max(w, SeqCst);
        }
        w
    }
}

/// Milliseconds since the program began, on the clock the cache follows.
#[derive(Clone)]
enum TestClock {
    Tokio(tokio::time::Instant),
    Manual(ManualClock, u64),
}

impl TestClock {
    fn now_ms(&self) -> u64 {
        match self {
            TestClock::Tokio(start) => start.elapsed().as_millis() as u64,
            TestClock::Manual(clock, base) => clock.now_ms() - base,
        }
    }
}

/// The handlers' state, shared with the test.
#[derive(Clone)]
struct App {
    db: Arc<Db>,
    clock: TestClock,
    /// One sequence for request starts and ends (taken by the test) and
    /// origin reads (taken by the handlers).
    seq: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    outage: Arc<AtomicBool>,
    /// Milliseconds a read takes at the origin (see `Op::Slow`).
    delay: Arc<AtomicU64>,
}

impl App {
    fn new(clock: TestClock) -> Self {
        App {
            db: Arc::new(Db::new()),
            clock,
            seq: Arc::default(),
            reads: Arc::default(),
            writes: Arc::default(),
            outage: Arc::default(),
            delay: Arc::default(),
        }
    }

    fn tick(&self) -> u64 {
        self.seq.fetch_add(1, SeqCst)
    }
}

fn known(path: &str) -> &'static str {
    PATHS
        .into_iter()
        .find(|p| *p == path)
        .unwrap_or_else(|| panic!("not a path of the model: {path}"))
}

/// Lets other tasks run in the middle of a handler, before it touches
/// the data (`0`) or after (`1`), as many times as the request's
/// `x-yield: <before>,<after>` says (the overlapping runs vary it).
async fn jitter(headers: &HeaderMap, when: usize) {
    let n: u8 = headers
        .get("x-yield")
        .and_then(|v| v.to_str().ok()?.split(',').nth(when)?.parse().ok())
        .unwrap_or(0);
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// A read: answers what it read, in the body and in `x-seen` (which HEAD
/// keeps and a `304` updates).
async fn origin_read(State(app): State<App>, uri: Uri, headers: HeaderMap) -> Response {
    app.reads.fetch_add(1, SeqCst);
    jitter(&headers, 0).await;
    let path = known(uri.path());
    let user = User::of(&headers);
    let v = app.db.get(data_key(path, user));
    let seq = app.tick();
    let at = app.clock.now_ms();
    jitter(&headers, 1).await;
    if let (TestClock::Tokio(_), false) = (&app.clock, swr_route(path)) {
        let delay = app.delay.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(ms(delay)).await;
        }
    }
    let stamp = format!("path={path} user={} v={v} at={at} seq={seq}", user.name());
    let mut res = Response::new(Body::from(stamp.clone()));
    res.headers_mut()
        .insert("x-seen", HeaderValue::try_from(stamp).unwrap());
    if path == REVIEWS && app.outage.load(SeqCst) {
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return res;
    }
    if let ("/items/1" | "/items/2", Some(id)) = (path, item_id(path)) {
        res.extensions_mut()
            .insert(CacheTags(vec![format!("item:{id}")]));
    }
    if path == DASH {
        let etag = HeaderValue::try_from(format!("\"d{v}\"")).unwrap();
        let max_age = format!("max-age={}", dash_max_age_ms(v) / 1000);
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, max_age.parse().unwrap());
        h.insert(header::ETAG, etag.clone());
        if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            *res.body_mut() = Body::empty();
        }
    }
    res
}

/// A write: changes the data, answers its number in `x-wrote`.
async fn origin_write(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    app.writes.fetch_add(1, SeqCst);
    jitter(&headers, 0).await;
    let path = known(uri.path());
    let w = app.db.write(&changes(path, User::of(&headers)));
    jitter(&headers, 1).await;
    let mut res = if method == Method::DELETE {
        Response::new(Body::from(format!("deleted by write {w}")))
    } else {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        res
    };
    res.headers_mut().insert("x-wrote", HeaderValue::from(w));
    res
}

fn scope(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The router under test.
fn stack(cache: &Cache, app: App) -> Router {
    let rw = || -> MethodRouter<App> { get(origin_read).put(origin_write).delete(origin_write) };
    Router::new()
        .route("/items", rw())
        .route("/items/{id}", rw())
        .route("/items/{id}/reviews", rw())
        .route("/dash", rw())
        .with_state(app)
        .layer(
            ServiceBuilder::new()
                .layer(
                    InvalidateOn::new(cache)
                        .rule("/items", [Target::tag("dash")])
                        .rule("/items/{id}", [Target::tag("list"), Target::tag("dash")])
                        .rule("/items/{id}/reviews", [Target::tag("item:{id}")]),
                )
                .layer(
                    CacheLayer::new(cache)
                        .route("/items", RoutePolicy::ttl(ms(LIST_TTL)).tags(["list"]))
                        .route(
                            "/items/{id}",
                            RoutePolicy::ttl(ms(ITEM_TTL)).stale_while_revalidate(ms(ITEM_SWR)),
                        )
                        .route(
                            "/items/{id}/reviews",
                            RoutePolicy::ttl(ms(REVIEWS_TTL))
                                .stale_if_error(ms(REVIEWS_SIE))
                                .scope(scope),
                        )
                        .route(
                            "/dash",
                            RoutePolicy::from_headers().tags(["dash"]).scope(scope),
                        ),
                ),
        )
}

// ---------------------------------------------------------------------------
// Programs.

#[derive(Clone, Debug)]
enum Op {
    Get(&'static str, User),
    Head(&'static str, User),
    Put(&'static str, User),
    Delete(&'static str, User),
    /// The data changes behind the cache's back (a background job), as a
    /// write by this user on this path would change it, without a flush.
    Job(&'static str, User),
    FlushPrefix(&'static str),
    FlushTag(&'static str),
    /// The reviews origin answers 503 (`true`) or recovers.
    Outage(bool),
    /// From now on, a read takes this many milliseconds at the origin (on
    /// tokio's paused clock, which moves meanwhile; not on the manual
    /// clock of the overlapping runs, nor on `/items/{id}`).
    Slow(u64),
    /// Milliseconds.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let user = || prop_oneof![Just(User::Anon), Just(User::Alice), Just(User::Bob)];
    let target = move || (prop::sample::select(&PATHS[..]), user());
    let step = prop_oneof![
        4 => (1u64..=16).prop_map(|k| k * 250),
        1 => Just(1u64),
        1 => Just(999u64),
    ];
    prop_oneof![
        8 => target().prop_map(|(p, u)| Op::Get(p, u)),
        3 => target().prop_map(|(p, u)| Op::Head(p, u)),
        2 => target().prop_map(|(p, u)| Op::Put(p, u)),
        1 => target().prop_map(|(p, u)| Op::Delete(p, u)),
        1 => target().prop_map(|(p, u)| Op::Job(p, u)),
        1 => prop::sample::select(&PREFIXES[..]).prop_map(Op::FlushPrefix),
        1 => prop::sample::select(&TAGS[..]).prop_map(Op::FlushTag),
        1 => any::<bool>().prop_map(Op::Outage),
        1 => prop_oneof![Just(0u64), Just(300), Just(1_500), Just(2_500)].prop_map(Op::Slow),
        4 => step.prop_map(Op::Advance),
    ]
}

fn max_ops() -> usize {
    std::env::var("MODEL_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// A program run one request at a time.
#[derive(Clone)]
struct Program(Vec<Op>);

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {i:>3}: {op:?}")?;
        }
        Ok(())
    }
}

/// How many times a handler yields before and after it touches the data.
type Yields = (u8, u8);

/// A program run in groups of up to `width` steps sent at once (a time
/// step runs alone, between groups); each request's handler yields to the
/// other tasks as many times as `yields` says for its step, before and
/// after it touches the data.
#[derive(Clone)]
struct Overlapping {
    ops: Vec<(Op, Yields)>,
    width: usize,
}

impl Overlapping {
    /// The groups, each a list of (step, op); time steps alone.
    fn groups(&self) -> Vec<Vec<(usize, Op, Yields)>> {
        let mut groups = Vec::new();
        let mut group = Vec::new();
        for (i, (op, yields)) in self.ops.iter().enumerate() {
            if matches!(op, Op::Advance(_)) {
                if !group.is_empty() {
                    groups.push(std::mem::take(&mut group));
                }
                groups.push(vec![(i, op.clone(), (0, 0))]);
                continue;
            }
            group.push((i, op.clone(), *yields));
            if group.len() == self.width {
                groups.push(std::mem::take(&mut group));
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
        groups
    }
}

impl fmt::Debug for Overlapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  (groups of up to {} at once)", self.width)?;
        for (g, group) in self.groups().iter().enumerate() {
            for (n, (i, op, yields)) in group.iter().enumerate() {
                let mark = if n == 0 {
                    format!("g{g}")
                } else {
                    String::new()
                };
                let yields = match op {
                    Op::Get(..) | Op::Head(..) | Op::Put(..) | Op::Delete(..) => {
                        format!(" (yields {}, {})", yields.0, yields.1)
                    }
                    _ => String::new(),
                };
                writeln!(f, "  {mark:>4} {i:>3}: {op:?}{yields}")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What a step did.

/// What the origin said it read, from `x-seen` (or a body).
#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    path: String,
    user: String,
    v: u64,
    at: u64,
    seq: u64,
}

fn stamp(s: &str) -> Option<Stamp> {
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
fn kind(cache_status: &str) -> String {
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
fn from_cache(kind: &str) -> bool {
    matches!(
        kind,
        "hit" | "stale-while-revalidate" | "stale-if-error" | "revalidated" | "collapsed"
    )
}

/// A read, as its client saw it.
#[derive(Debug)]
struct Read {
    step: usize,
    path: &'static str,
    user: User,
    head: bool,
    start: u64,
    /// The time when it was answered.
    now_ms: u64,
    status: u16,
    kind: String,
    stamp: Stamp,
    age: Option<u64>,
}

impl Read {
    fn who(&self) -> String {
        let m = if self.head { "HEAD" } else { "GET" };
        format!("step {} ({m} {} as {:?})", self.step, self.path, self.user)
    }
}

/// An acknowledged write or a finished flush: the versions every later
/// read of these keys must reach, and what it invalidated.
#[derive(Debug)]
struct Ack {
    step: usize,
    start: u64,
    end: u64,
    floors: Vec<(DataKey, u64)>,
    flushes: Vec<Flush>,
}

enum Done {
    Read(Read),
    Ack(Ack),
    Other,
}

/// Runs one step (not a time step) through the router or the cache.
async fn perform(
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

// ---------------------------------------------------------------------------
// The promises, checked on every read against what was acknowledged.

fn check_read(r: &Read, acks: &[Ack]) -> Result<(), String> {
    let who = r.who();
    if r.kind.starts_with("unknown") {
        return Err(format!(
            "{who}: a Cache-Status the layer never writes: {}",
            r.kind
        ));
    }
    // 1. Never another client's response.
    if r.stamp.user != r.user.name() || r.stamp.path != r.path {
        return Err(format!(
            "{who}: another client's response ({}): {:?}",
            r.kind, r.stamp
        ));
    }
    let key = data_key(r.path, r.user);
    for a in acks.iter().filter(|a| a.end < r.start) {
        // 2. Never older than an acknowledged write (or a finished flush)
        // that covers it.
        for (k, v) in &a.floors {
            if *k == key && r.stamp.v < *v {
                return Err(format!(
                    "{who}: answered version {} ({}), older than version {v} acknowledged \
                     at step {} before this read began: {:?}",
                    r.stamp.v, r.kind, a.step, r.stamp
                ));
            }
        }
        // 3. The race rule: an origin read made before an invalidation
        // began is never served once it has ended.
        if r.stamp.seq < a.start && a.flushes.iter().any(|f| f.covers(r.path)) {
            return Err(format!(
                "{who}: answered ({}) a read made before the invalidation of step {} \
                 ({:?}) began, after it ended: {:?}",
                r.kind, a.step, a.flushes, r.stamp
            ));
        }
    }
    // 4. Never past TTL plus grace. (A revalidated answer is the origin's
    // word in this very exchange: it answers its request however old.)
    if from_cache(&r.kind) && r.age.is_none() {
        return Err(format!("{who}: served ({}) without an Age", r.kind));
    }
    if from_cache(&r.kind) && r.kind != "revalidated" {
        let spec = spec(r.path);
        let ttl = spec.ttl_ms.unwrap_or_else(|| dash_max_age_ms(r.stamp.v));
        let bound = match r.kind.as_str() {
            "stale-while-revalidate" => ttl + spec.swr_ms,
            "stale-if-error" => ttl + spec.sie_ms,
            _ => ttl,
        };
        let age = r.now_ms.saturating_sub(r.stamp.at);
        if age >= bound {
            return Err(format!(
                "{who}: served ({}) {age} ms after its origin read, past its TTL plus grace \
                 ({bound} ms): {:?}",
                r.kind, r.stamp
            ));
        }
        if let Some(a) = r.age.filter(|a| a * 1000 >= bound) {
            return Err(format!(
                "{who}: served ({}) with Age {a}, past its TTL plus grace ({bound} ms)",
                r.kind
            ));
        }
    }
    Ok(())
}

/// The statistics agree with the origin calls: every read that reached a
/// handler was a bypass, a miss that did not take another's response, or
/// a background refresh; every write a method bypass.
fn check_stats(stats: &Stats, reads: u64, writes: u64) -> Result<(), String> {
    let t = &stats.totals;
    let method = t.bypasses.get("method").copied().unwrap_or(0);
    let expected = t.misses - t.collapsed + stats.refreshes + (t.bypassed() - method);
    if reads != expected || writes != method {
        return Err(format!(
            "the statistics disagree with the origin: {reads} reads and {writes} writes \
             reached the handlers, the statistics account for {expected} reads (misses {} - \
             collapsed {} + refreshes {} + bypassed reads) and {method} writes: {stats:?}",
            t.misses, t.collapsed, stats.refreshes
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The reference model, for one request at a time on the paused clock.

/// A stored entry, as the model predicts it.
#[derive(Debug, Clone)]
struct Entry {
    path: &'static str,
    version: u64,
    /// When its origin read happened (and its read began).
    at: u64,
    born: u64,
    fresh_until: u64,
    swr_until: u64,
    sie_until: u64,
    keep_until: u64,
    /// It carries the origin's `ETag`: revalidated when stale.
    validator: bool,
}

/// Per route: what the statistics must say.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    hits: u64,
    stale: u64,
    misses: u64,
    stores: u64,
    stale_dropped: u64,
    bypasses: BTreeMap<&'static str, u64>,
    not_stored: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn of(c: &Counts) -> Tally {
        Tally {
            hits: c.hits,
            stale: c.stale,
            misses: c.misses,
            stores: c.stores,
            stale_dropped: c.stale_dropped,
            bypasses: c.bypasses.clone(),
            not_stored: c.not_stored.clone(),
        }
    }
}

/// The answer the model expects.
#[derive(Debug, PartialEq)]
struct Expect {
    kind: String,
    v: u64,
    at: u64,
    status: u16,
}

#[derive(Default)]
struct Model {
    now: u64,
    /// The invalidation clock, and the last record of each target.
    generation: u64,
    records: HashMap<Flush, Record>,
    /// The longest life of an entry stored so far: records older than
    /// this are pruned (they can no longer cover a live entry).
    horizon: u64,
    entries: BTreeMap<(&'static str, Option<User>), Entry>,
    tally: BTreeMap<&'static str, Tally>,
    reads: u64,
    writes: u64,
    refreshes: u64,
    revalidations: u64,
    revalidated: u64,
    outage: bool,
    /// What a read takes at the origin (`Op::Slow`).
    delay: u64,
}

/// The last invalidation of one target.
#[derive(Debug)]
struct Record {
    generation: u64,
    at: u64,
    /// Dropped from the index (past the horizon when the index was last
    /// pruned): it still says whether an entry is valid here, since an
    /// entry it covers is past all its windows by then; it only decides
    /// whether dropping the entry is counted.
    pruned: bool,
}

impl Model {
    fn flush(&mut self, flushes: &[Flush]) {
        self.generation += 1;
        for f in flushes {
            let record = Record {
                generation: self.generation,
                at: self.now,
                pruned: false,
            };
            self.records.insert(f.clone(), record);
        }
        self.prune();
    }

    /// The index is pruned when a flush is recorded and when an entry is
    /// stored.
    fn prune(&mut self) {
        for r in self.records.values_mut() {
            r.pruned |= r.at + self.horizon < self.now;
        }
    }

    fn store(&mut self, key: (&'static str, Option<User>), entry: Entry) {
        self.horizon = self.horizon.max(entry.keep_until - entry.at);
        self.entries.insert(key, entry);
        self.prune();
    }

    /// The records, pruned or not, that flush an entry.
    fn flushing<'a>(&'a self, e: &'a Entry) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .iter()
            .filter(move |(f, r)| r.generation > e.born && f.covers(e.path))
            .map(|(_, r)| r)
    }

    /// The entry an origin read of `version` begun `at` makes (its age
    /// counts from there: the origin's delay is in its age on arrival).
    fn entry(&self, path: &'static str, version: u64, at: u64) -> Entry {
        let s = spec(path);
        let (ttl, keep) = match s.ttl_ms {
            Some(ttl) => (ttl, s.swr_ms.max(s.sie_ms)),
            None => (dash_max_age_ms(version), DASH_KEEP),
        };
        let fresh_until = at + ttl;
        Entry {
            path,
            version,
            at,
            born: self.generation,
            fresh_until,
            swr_until: fresh_until + s.swr_ms,
            sie_until: fresh_until + s.sie_ms,
            keep_until: fresh_until + keep,
            validator: s.ttl_ms.is_none(),
        }
    }

    /// Applies one step; for a read, the answer it must get.
    fn step(&mut self, op: &Op, db: &Db) -> Option<Expect> {
        match *op {
            Op::Get(path, user) => Some(self.read(path, user, false, db)),
            Op::Head(path, user) => Some(self.read(path, user, true, db)),
            Op::Put(path, _) | Op::Delete(path, _) => {
                self.writes += 1;
                let tally = self.tally.entry(spec(path).pattern).or_default();
                *tally.bypasses.entry("method").or_default() += 1;
                // Flushed when the head arrives, and again as the body ends.
                self.flush(&write_flushes(path));
                self.flush(&write_flushes(path));
                None
            }
            Op::FlushPrefix(p) => {
                self.flush(&[Flush::Prefix(p.into())]);
                None
            }
            Op::FlushTag(t) => {
                self.flush(&[Flush::Tag(t.into())]);
                None
            }
            Op::Outage(on) => {
                self.outage = on;
                None
            }
            Op::Slow(by) => {
                self.delay = by;
                None
            }
            Op::Advance(by) => {
                self.now += by;
                None
            }
            Op::Job(..) => None,
        }
    }

    fn read(&mut self, path: &'static str, user: User, head: bool, db: &Db) -> Expect {
        let s = spec(path);
        let version = db.get(data_key(path, user));
        let failing = path == REVIEWS && self.outage;
        let origin_status = if failing { 503 } else { 200 };
        // The read's start; an origin call ends `delay` later.
        let now = self.now;
        let delay = if swr_route(path) { 0 } else { self.delay };
        let answer = |kind: &str, v: u64, at: u64, status: u16| Expect {
            kind: kind.to_owned(),
            v,
            at,
            status,
        };
        let bypass = match (s.scoped, user) {
            (true, User::Anon) => Some("no-scope"),
            (false, User::Alice | User::Bob) => Some("authorization"),
            _ => None,
        };
        if let Some(reason) = bypass {
            self.reads += 1;
            self.now += delay;
            let tally = self.tally.entry(s.pattern).or_default();
            *tally.bypasses.entry(reason).or_default() += 1;
            return answer(&format!("bypass:{reason}"), version, now, origin_status);
        }
        let key = (path, s.scoped.then_some(user));
        // The lookup: a flushed entry is dropped (and counted), one past
        // all its windows dropped.
        let mut dropped = false;
        let found = match self.entries.get(&key) {
            Some(e) if self.flushing(e).next().is_some() => {
                // Counted when the index still holds a record of the
                // flush; else the entry is past its windows, and goes as
                // an expired one.
                dropped = self.flushing(e).any(|r| !r.pruned);
                None
            }
            Some(e) if now >= e.keep_until => None,
            found => found.cloned(),
        };
        if found.is_none() {
            self.entries.remove(&key);
        }
        let mut tally = self.tally.remove(s.pattern).unwrap_or_default();
        if dropped {
            tally.stale_dropped += 1;
        }
        let expect = match found {
            Some(e) if now < e.fresh_until => {
                tally.hits += 1;
                answer("hit", e.version, e.at, 200)
            }
            Some(e) if now < e.swr_until => {
                tally.stale += 1;
                if !head {
                    // One background refresh, stored.
                    self.refreshes += 1;
                    self.reads += 1;
                    tally.stores += 1;
                    self.store(key, self.entry(path, version, now));
                }
                answer("stale-while-revalidate", e.version, e.at, 200)
            }
            stale => {
                tally.misses += 1;
                self.reads += 1;
                self.now += delay;
                match stale {
                    Some(e) if !head && e.validator => {
                        self.revalidations += 1;
                        tally.stores += 1;
                        self.store(key, self.entry(path, version, now));
                        if e.version == version {
                            // 304: the entry freshened, the client answered
                            // from it.
                            self.revalidated += 1;
                            tally.hits += 1;
                            answer("revalidated", version, now, 200)
                        } else {
                            answer("stored", version, now, 200)
                        }
                    }
                    // Judged when the origin's failure arrives.
                    Some(e) if failing && self.now < e.sie_until => {
                        tally.stale += 1;
                        answer("stale-if-error", e.version, e.at, 200)
                    }
                    _ if head => {
                        *tally.not_stored.entry("head").or_default() += 1;
                        answer("miss:head", version, now, origin_status)
                    }
                    _ if failing => {
                        *tally.not_stored.entry("status").or_default() += 1;
                        answer("miss:status", version, now, 503)
                    }
                    _ => {
                        tally.stores += 1;
                        self.store(key, self.entry(path, version, now));
                        answer("stored", version, now, 200)
                    }
                }
            }
        };
        self.tally.insert(s.pattern, tally);
        expect
    }

    /// The statistics and origin calls agree with the model's.
    fn agrees(&self, stats: &Stats, app: &App) -> Result<(), String> {
        for pattern in PATTERNS {
            let got = stats.routes.get(pattern).map(Tally::of).unwrap_or_default();
            let want = self.tally.get(pattern).cloned().unwrap_or_default();
            if got != want {
                return Err(format!(
                    "the statistics of {pattern} are\n    {got:?}\n  the model's\n    {want:?}"
                ));
            }
        }
        let t = &stats.totals;
        let got = [
            ("entries", stats.entries),
            ("refreshes", stats.refreshes),
            ("revalidations", stats.revalidations),
            ("revalidated", stats.revalidated),
            ("coalesced", t.coalesced),
            ("collapsed", t.collapsed),
            ("not_modified", t.not_modified),
            ("rejected_inserts", t.rejected_inserts),
            ("origin reads", app.reads.load(SeqCst)),
            ("origin writes", app.writes.load(SeqCst)),
        ];
        let want = [
            self.entries.len() as u64,
            self.refreshes,
            self.revalidations,
            self.revalidated,
            0,
            0,
            0,
            0,
            self.reads,
            self.writes,
        ];
        for ((name, got), want) in got.into_iter().zip(want) {
            if got != want {
                return Err(format!("{name}: {got}, the model's {want}"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The runners.

/// Lets spawned work (a background refresh) finish: on a current-thread
/// runtime it runs while this task yields.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// Runs a program one request at a time on tokio's paused clock, checking
/// the promises and the model after every step.
fn run_sequential(program: &[Op]) -> Result<Vec<String>, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(sequential(program))
}

async fn sequential(program: &[Op]) -> Result<Vec<String>, String> {
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

/// Runs a program in overlapping groups on a multi-thread runtime, the
/// cache on a manual clock moved between groups.
async fn overlapping(program: Overlapping) -> Result<(), String> {
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
