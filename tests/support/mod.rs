//! Helpers shared by the integration tests: real axum routers, real hyper
//! servers on 127.0.0.1, and counted origins.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// What a test saw of one response.
#[derive(Debug)]
pub struct Seen {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends a request through a router in process.
pub async fn send(app: &Router, req: Request<Body>) -> Seen {
    seen(app.clone().oneshot(req).await.unwrap()).await
}

/// Reads a whole response, as a client does.
async fn seen<B>(res: http::Response<B>) -> Seen
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Seen {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn read(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn get_with(uri: &str, name: &str, value: &str) -> Request<Body> {
    Request::get(uri)
        .header(name, value)
        .body(Body::empty())
        .unwrap()
}

pub fn method(m: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(m)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

/// A counter of origin calls.
#[derive(Clone, Default)]
pub struct Hits(pub Arc<AtomicUsize>);

impl Hits {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The bound on every wait on an event in the tests: generous, so that a
/// busy machine only makes a test slower, never failing.
pub const BOUND: Duration = Duration::from_secs(30);

/// A gate that origin handlers wait at until the test opens it, so that a
/// test decides when an origin call ends instead of sleeping for it.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Gate {
    /// Lets every waiting and later caller of [`pass`](Self::pass) through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Waits until the gate is open (at most [`BOUND`]).
    pub async fn pass(&self) {
        let mut open = self.0.subscribe();
        tokio::time::timeout(BOUND, open.wait_for(|open| *open))
            .await
            .expect("the test never opened the gate")
            .expect("the gate's sender lives in the gate");
    }
}

/// Waits until `done()` holds, checking every millisecond: bounded in
/// checks and in time ([`BOUND`]); panics naming `what` past the bound.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    for _ in 0..BOUND.as_millis() {
        if done() {
            return;
        }
        if start.elapsed() > BOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(done(), "{what}: not reached within {BOUND:?}");
}

/// Awaits `future`, at most [`BOUND`]; panics naming `what` past it.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {BOUND:?}"))
}

/// A tiny database whose data is a version number bumped by each write,
/// with its reads counted (the state of the catalogue routes).
#[derive(Clone, Default)]
pub struct Db {
    pub version: Arc<std::sync::atomic::AtomicU64>,
    pub reads: Hits,
}

/// A read: counted, answering `v<version>`.
pub async fn db_read(axum::extract::State(db): axum::extract::State<Db>) -> String {
    db.reads.bump();
    format!("v{}", db.version.load(Ordering::SeqCst))
}

/// A write: bumps the version.
pub async fn db_write(axum::extract::State(db): axum::extract::State<Db>) -> StatusCode {
    db.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// Serves a router on a free 127.0.0.1 port with a real hyper server.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A request over the network, with optional headers.
pub async fn fetch(
    client: &Client,
    addr: SocketAddr,
    m: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Seen {
    let mut req = Request::builder()
        .method(m)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    seen(res).await
}
