//! The server side: one axum app with every route, in a process of its own.
//!
//! `serve` mode serves the load routes; `fill <cache>` mode serves
//! `/fill/{n}` behind one cache, for the memory figure. Either way the
//! process prints `LISTENING <port>` once it accepts connections, and exits
//! when its stdin closes, so that it never outlives the run.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, get_service, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use tower::{BoxError, ServiceBuilder};
use tower_http_cache::backend::memory::InMemoryBackend;

/// The body sizes, as path suffixes and lengths.
pub const SIZES: [(&str, usize); 2] = [("1k", 1024), ("64k", 64 * 1024)];

/// How long `origin` waits before answering.
pub const ORIGIN_DELAY: Duration = Duration::from_millis(5);

/// TTL given to every cache: far longer than the run.
const TTL: Duration = Duration::from_secs(3600);

/// What sits in front of a route's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Static bytes, no wait, no cache.
    Plain,
    /// The slow handler, uncached.
    Origin,
    /// The slow handler behind this crate's `CacheLayer`.
    Ours,
    /// The same with the lean header profile (`CacheBuilder::lean_headers`).
    OursLean,
    /// Behind `axum-response-cache`.
    AxumResponseCache,
    /// Behind `tower-http-cache`.
    TowerHttpCache,
    /// Diagnostic: `plain` plus the headers a hit of ours carries (`etag`,
    /// `age`, `cache-status`), to tell what the extra header bytes cost
    /// from what the cache's own work costs.
    PlainHitHeaders,
}

impl Kind {
    /// Every route of the comparison, `plain` first.
    pub const ALL: [Kind; 6] = [
        Kind::Plain,
        Kind::Origin,
        Kind::Ours,
        Kind::OursLean,
        Kind::AxumResponseCache,
        Kind::TowerHttpCache,
    ];

    /// The route's path segment, also its name on the command line.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Origin => "origin",
            Kind::Ours => "ours",
            Kind::OursLean => "ours-lean",
            Kind::AxumResponseCache => "axum-response-cache",
            Kind::TowerHttpCache => "tower-http-cache",
            Kind::PlainHitHeaders => "plain-hit-headers",
        }
    }

    /// Whether a cache answers this route.
    pub fn cached(self) -> bool {
        matches!(
            self,
            Kind::Ours | Kind::OursLean | Kind::AxumResponseCache | Kind::TowerHttpCache
        )
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.path() == s)
    }
}

/// A route's origin call counter.
type Counter = Arc<AtomicU64>;

/// Origin call counters, by route path, served at `/_calls`.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, Counter)>>>);

impl Calls {
    fn counter(&self, name: &str) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), counter.clone()));
        counter
    }

    fn render(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, n)| format!("{name} {}\n", n.load(Relaxed)))
            .collect()
    }
}

/// A JSON body of exactly `len` bytes that lives as long as the process,
/// so that handlers return it without copying or counting references.
///
/// JSON, because that is what an API server caches, and because
/// `tower-http-cache` by default declines to store some binary types
/// (`application/octet-stream` among them).
fn static_body(len: usize) -> &'static [u8] {
    let (open, close) = (&b"{\"data\":\""[..], &b"\"}"[..]);
    let filler = b"tower-response-cache load benchmark 0123456789 abcdefghij ";
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(open);
    let room = len.saturating_sub(open.len() + close.len());
    bytes.extend(filler.iter().copied().cycle().take(room));
    bytes.extend_from_slice(close);
    assert_eq!(bytes.len(), len, "body of {len} bytes");
    Box::leak(bytes.into_boxed_slice())
}

/// What a handler answers with.
#[derive(Debug, Clone, Copy)]
struct Payload {
    bytes: &'static [u8],
    /// Each response gets its own copy of the bytes, as a handler that
    /// serialises its answer does; otherwise all share the static bytes.
    fresh: bool,
}

impl Payload {
    fn body(self) -> Bytes {
        if self.fresh {
            Bytes::copy_from_slice(self.bytes)
        } else {
            Bytes::from_static(self.bytes)
        }
    }
}

/// The response every handler gives: the body, typed as JSON.
fn json(body: Payload) -> ([(HeaderName, HeaderValue); 1], Bytes) {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body.body(),
    )
}

const JSON: &str = "application/json";

/// Headers of the same length as those of a hit of ours.
const HIT_ETAG: &str = "\"8accfb659a9212fd2ae382788a1cccc8\"";
const HIT_STATUS: &str = "tower-response-cache; hit; ttl=3599";

/// The application handler: counts the call, waits `delay`, returns the
/// body.
fn handler(body: Payload, delay: Duration, calls: Counter) -> MethodRouter {
    get(move || {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Relaxed);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            json(body)
        }
    })
}

/// The same handler as a plain tower service whose response body is
/// `Sync`, which `tower-http-cache` requires of what it wraps (axum's own
/// `Body` is not `Sync`).
fn sync_body_origin(
    body: Payload,
    delay: Duration,
    calls: Arc<AtomicU64>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |_req: Request<Body>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Relaxed);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut response = Response::new(Full::new(body.body()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            Ok::<_, Infallible>(response)
        }
    })
}

/// What the routes share: this crate's cache, and the sizes of the peer
/// caches.
struct Caches {
    ours: tower_response_cache::Cache,
    ours_lean: tower_response_cache::Cache,
    tower_http_cache_capacity: u64,
}

fn route(
    kind: Kind,
    body: Payload,
    delay: Duration,
    calls: Arc<AtomicU64>,
    caches: &Caches,
) -> MethodRouter {
    match kind {
        Kind::Plain => get(move || async move { json(body) }),
        Kind::PlainHitHeaders => get(move || async move {
            (
                [
                    (header::ETAG, HeaderValue::from_static(HIT_ETAG)),
                    (header::AGE, HeaderValue::from_static("0")),
                    (
                        HeaderName::from_static("cache-status"),
                        HeaderValue::from_static(HIT_STATUS),
                    ),
                ],
                json(body),
            )
        }),
        Kind::Origin => handler(body, delay, calls),
        Kind::Ours => handler(body, delay, calls)
            .layer(tower_response_cache::CacheLayer::new(&caches.ours).ttl(TTL)),
        Kind::OursLean => handler(body, delay, calls)
            .layer(tower_response_cache::CacheLayer::new(&caches.ours_lean).ttl(TTL)),
        Kind::AxumResponseCache => {
            handler(body, delay, calls).layer(axum_response_cache::CacheLayer::with_lifespan(TTL))
        }
        Kind::TowerHttpCache => {
            let layer = tower_http_cache::CacheLayer::builder(InMemoryBackend::new(
                caches.tower_http_cache_capacity,
            ))
            .ttl(TTL)
            .build();
            let service = ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }))
                .layer(layer)
                .service(sync_body_origin(body, delay, calls));
            get_service(service)
        }
    }
}

/// Binds 127.0.0.1 on a free port, says so, serves `app` until stdin
/// closes. The runtime is tokio's default multi-thread one, which under
/// `taskset` gets one worker per allowed CPU.
fn serve(app: Router) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The parent closes our stdin when it is done, or when it dies.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let mut stdout = std::io::stdout();
        writeln!(stdout, "LISTENING {port}").expect("stdout");
        stdout.flush().expect("stdout");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// `serve` mode: every route at every size.
pub fn serve_load() {
    let calls = Calls::default();
    let caches = Caches {
        ours: tower_response_cache::Cache::builder().build(),
        ours_lean: tower_response_cache::Cache::builder()
            .lean_headers()
            .build(),
        tower_http_cache_capacity: 10_000,
    };
    let mut app = Router::new();
    for (suffix, len) in SIZES {
        let body = Payload {
            bytes: static_body(len),
            fresh: false,
        };
        for kind in Kind::ALL.into_iter().chain([Kind::PlainHitHeaders]) {
            let path = format!("/{}/{suffix}", kind.path());
            let counter = calls.counter(&path);
            app = app.route(&path, route(kind, body, ORIGIN_DELAY, counter, &caches));
        }
    }
    let report = calls.clone();
    app = app.route("/_calls", get(move || async move { report.render() }));
    serve(app);
}

/// `fill <cache>` mode: `/fill/{n}` returns 1 KiB at once, behind `cache`
/// (`none` for no cache), for filling with distinct entries. `/warm` is
/// uncached, `/_calls` counts origin calls, `/_stats` is this crate's
/// entries and weighed bytes.
pub fn serve_fill(cache: Option<&str>) {
    let kind = match cache {
        Some("none") => Kind::Plain,
        Some(name) => match Kind::parse(name) {
            Some(kind) if kind.cached() => kind,
            _ => panic!("fill: unknown cache {name:?}"),
        },
        None => panic!("fill: which cache?"),
    };
    let calls = Calls::default();
    let caches = Caches {
        // Room for far more than the fill, so that nothing is evicted.
        ours: tower_response_cache::Cache::builder()
            .max_bytes(512 << 20)
            .build(),
        ours_lean: tower_response_cache::Cache::builder()
            .max_bytes(512 << 20)
            .lean_headers()
            .build(),
        tower_http_cache_capacity: 1 << 20,
    };
    // A fresh copy per response, so that a cache which keeps the origin's
    // buffer as it is pays for it, as it would behind a real handler.
    let body = Payload {
        bytes: static_body(1024),
        fresh: true,
    };
    let counter = calls.counter("/fill");
    // `plain` has no counter of its own: for the control, use the origin
    // handler without a wait, so that calls are counted all the same.
    let fill = if kind == Kind::Plain {
        handler(body, Duration::ZERO, counter)
    } else {
        route(kind, body, Duration::ZERO, counter, &caches)
    };
    let ours = caches.ours.clone();
    let report = calls.clone();
    let app = Router::new()
        .route("/fill/{n}", fill)
        .route("/warm", get(move || async move { json(body) }))
        .route("/_calls", get(move || async move { report.render() }))
        .route(
            "/_stats",
            get(move || async move {
                let stats = ours.stats();
                format!("entries {}\nbytes {}\n", stats.entries, stats.bytes)
            }),
        );
    serve(app);
}
