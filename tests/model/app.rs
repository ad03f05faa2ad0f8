//! The system under test: a versioned database, the handlers that read
//! and write it, and the router with both layers in front of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tower::ServiceBuilder;
use tower_response_cache::{
    Cache, CacheLayer, CacheTags, InvalidateOn, ManualClock, RoutePolicy, Target,
};

use crate::world::{
    changes, dash_max_age_ms, data_key, data_keys, item_id, swr_route, DataKey, User, DASH,
    ITEM_SWR, ITEM_TTL, LIST_TTL, PATHS, REVIEWS, REVIEWS_SIE, REVIEWS_TTL,
};

/// Versions per data key, each the number of the last write that changed
/// it (writes may land out of order: a version only goes up).
pub struct Db {
    pub versions: HashMap<DataKey, AtomicU64>,
    pub last_write: AtomicU64,
}

impl Db {
    pub fn new() -> Self {
        Db {
            versions: data_keys()
                .into_iter()
                .map(|k| (k, AtomicU64::new(0)))
                .collect(),
            last_write: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: DataKey) -> u64 {
        self.versions[&key].load(SeqCst)
    }

    /// Changes `keys`; returns the write's number.
    pub fn write(&self, keys: &[DataKey]) -> u64 {
        let w = self.last_write.fetch_add(1, SeqCst) + 1;
        for key in keys {
            self.versions[key].fetch_max(w, SeqCst);
        }
        w
    }
}

/// Milliseconds since the program began, on the clock the cache follows.
#[derive(Clone)]
pub enum TestClock {
    Tokio(tokio::time::Instant),
    Manual(ManualClock, u64),
}

impl TestClock {
    pub fn now_ms(&self) -> u64 {
        match self {
            TestClock::Tokio(start) => start.elapsed().as_millis() as u64,
            TestClock::Manual(clock, base) => clock.now_ms() - base,
        }
    }
}

/// The handlers' state, shared with the test.
#[derive(Clone)]
pub struct App {
    pub db: Arc<Db>,
    pub clock: TestClock,
    /// One sequence for request starts and ends (taken by the test) and
    /// origin reads (taken by the handlers).
    pub seq: Arc<AtomicU64>,
    pub reads: Arc<AtomicU64>,
    pub writes: Arc<AtomicU64>,
    pub outage: Arc<AtomicBool>,
    /// Milliseconds a read takes at the origin (see `Op::Slow`).
    pub delay: Arc<AtomicU64>,
}

impl App {
    pub fn new(clock: TestClock) -> Self {
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

    pub fn tick(&self) -> u64 {
        self.seq.fetch_add(1, SeqCst)
    }
}

pub fn known(path: &str) -> &'static str {
    PATHS
        .into_iter()
        .find(|p| *p == path)
        .unwrap_or_else(|| panic!("not a path of the model: {path}"))
}

/// Lets other tasks run in the middle of a handler, before it touches
/// the data (`0`) or after (`1`), as many times as the request's
/// `x-yield: <before>,<after>` says (the overlapping runs vary it).
pub async fn jitter(headers: &HeaderMap, when: usize) {
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
pub async fn origin_read(State(app): State<App>, uri: Uri, headers: HeaderMap) -> Response {
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
pub async fn origin_write(
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

pub fn scope(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The router under test.
pub fn stack(cache: &Cache, app: App) -> Router {
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
