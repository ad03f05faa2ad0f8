//! What the in-process hit benches share: polling a service that never
//! waits, without a runtime, and the 1 KiB origin they put a cache in
//! front of.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_response_cache::{Cache, CacheLayer, CacheService};

/// A waker that does nothing: every future polled here is ready at once.
pub struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// Polls `future` once; the paths measured here never wait.
pub fn poll_now<F: Future>(cx: &mut Context<'_>, future: F) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("future not ready on its first poll: the path is not synchronous"),
    }
}

/// One request through a clone of `service`, the way hyper and axum call
/// a tower service.
#[inline]
pub fn one<S, B>(cx: &mut Context<'_>, service: &S, req: Request<B>) -> S::Response
where
    S: Service<Request<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    poll_now(cx, service.clone().oneshot(req)).expect("the service does not fail")
}

pub const BODY_LEN: usize = 1024;
pub static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];

/// The path every hit asks for.
pub const HIT_PATH: &str = "/items/1?a=1";

/// The origin's answer: `body` as JSON.
pub fn origin_response(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn request(path: &str) -> Request<()> {
    // A `Host`, as every HTTP/1.1 request has: the layer keys it.
    Request::get(path)
        .header(http::header::HOST, "127.0.0.1:3000")
        .body(())
        .expect("a valid request")
}

/// The bare origin both benches measure against: the 1 KiB body, at once.
pub fn bare() -> impl Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(origin_response(Bytes::from_static(&BODY)))
    })
}

/// `origin` behind a fresh cache keeping every GET for an hour.
pub fn cached<S>(origin: S) -> (Cache, CacheService<S>) {
    cached_in(origin, Cache::builder().build())
}

/// The same in a cache with the lean header profile.
#[allow(dead_code)]
pub fn cached_lean<S>(origin: S) -> (Cache, CacheService<S>) {
    cached_in(origin, Cache::builder().lean_headers().build())
}

fn cached_in<S>(origin: S, cache: Cache) -> (Cache, CacheService<S>) {
    let layer = CacheLayer::new(&cache).ttl(Duration::from_secs(3600));
    (cache, layer.layer(origin))
}
