//! What the memory store reports it holds (`stats().bytes`, the entries'
//! weights) against what the heap holds, measured with a counting global
//! allocator, for responses of several shapes; and what the coalescing
//! table holds per slot.
//!
//! A test binary of its own, with one test: the allocator counts every
//! allocation of the process, so nothing else may run beside it.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer, CacheTags, RoutePolicy};

use counting_alloc::live;

const MAX_BYTES: u64 = 4 << 20;

/// One shape of response: the headers the handler sends (names built at
/// run time where the shape says so), its tags, the request headers sent.
#[derive(Clone, Copy)]
enum Shape {
    /// `Content-Type`, `Cache-Control`, `Last-Modified`, a 1 KiB body.
    Standard,
    /// 32 headers whose names are made at run time (`x-field-00`, ...).
    CustomNames,
    /// Four standard headers with values of 2 KiB each.
    LongValues,
    /// 32 tags from the handler, 2 from the route.
    ManyTags,
    /// `Vary` on a custom request header and a standard one: each path
    /// stores a variant and a marker.
    Vary,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Standard => "standard headers, 1 KiB body",
            Shape::CustomNames => "32 run-time header names",
            Shape::LongValues => "4 values of 2 KiB",
            Shape::ManyTags => "34 tags",
            Shape::Vary => "Vary marker + variant",
        }
    }

    fn response(self, n: u64) -> Response<Body> {
        let mut response = Response::new(Body::from(vec![b'x'; 256]));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            Shape::Standard => {
                *response.body_mut() = Body::from(vec![b'x'; 1024]);
                let headers = response.headers_mut();
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=60"),
                );
                headers.insert(
                    header::LAST_MODIFIED,
                    HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT"),
                );
            }
            Shape::CustomNames => {
                for i in 0..32 {
                    let name = HeaderName::from_bytes(format!("x-field-{i:02}").as_bytes());
                    let value = HeaderValue::from_str(&format!("v{n}-{i}"));
                    headers.insert(name.unwrap(), value.unwrap());
                }
            }
            Shape::LongValues => {
                for name in [
                    header::LINK,
                    header::CONTENT_SECURITY_POLICY,
                    header::CONTENT_DISPOSITION,
                    header::WARNING,
                ] {
                    let value = format!("{n:08}{}", "v".repeat(2040));
                    headers.insert(name, HeaderValue::from_str(&value).unwrap());
                }
            }
            Shape::ManyTags => {
                let tags = (0..32)
                    .map(|i| format!("tenant-{}-group-{i}", n % 7))
                    .collect();
                response.extensions_mut().insert(CacheTags(tags));
            }
            Shape::Vary => {
                headers.insert(
                    header::VARY,
                    HeaderValue::from_static("x-tenant, accept-language"),
                );
            }
        }
        response
    }

    fn request(self, n: u64) -> Request<Body> {
        let mut request = Request::get(format!("/items/{n}"));
        if let Shape::Vary = self {
            request = request
                .header("x-tenant", "acme")
                .header("accept-language", "en");
        }
        request.body(Body::empty()).unwrap()
    }
}

fn app(cache: &Cache, shape: Shape) -> Router {
    Router::new()
        .route(
            "/items/{n}",
            get(
                move |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                    shape.response(n)
                },
            ),
        )
        .layer(CacheLayer::new(cache).route(
            "/items/{n}",
            RoutePolicy::ttl(Duration::from_secs(3600)).tags(["items", "catalogue"]),
        ))
}

async fn get_whole(app: &Router, request: Request<Body>) {
    let response = app.clone().oneshot(request).await.unwrap();
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

/// Fills a fresh cache of `MAX_BYTES` with responses of one shape, past
/// its capacity, and returns what the heap holds for it and what the
/// cache reports it holds.
async fn fill(shape: Shape) -> (isize, u64, u64, u64) {
    let before = live();
    let cache = Cache::builder().max_bytes(MAX_BYTES).build();
    let app = app(&cache, shape);
    let mut n = 0;
    while cache.stats().evictions < 200 {
        get_whole(&app, shape.request(n)).await;
        n += 1;
        assert!(n < 100_000, "{}: never filled", shape.name());
    }
    // Every entry is read once (a hit clones what it sends).
    for i in n.saturating_sub(200)..n {
        get_whole(&app, shape.request(i)).await;
    }
    let held = live() - before;
    let stats = cache.stats();
    (held, stats.bytes, stats.entries, stats.evictions)
}

/// Starts `n` requests on `/hang/{i}`, which never answer, and returns
/// what the heap holds while they wait.
fn hang(n: usize, coalesce: bool) -> (isize, u64) {
    let builder = Cache::builder();
    let builder = if coalesce {
        builder
    } else {
        builder.coalesce_timeout(Duration::ZERO)
    };
    let cache = builder.build();
    let app = Router::new()
        .route("/hang/{id}", get(std::future::pending::<&'static str>))
        .layer(CacheLayer::new(&cache).route("/hang/{id}", Duration::from_secs(60)));
    type Waiting = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>>>>;
    let mut waiting: Vec<Waiting> = Vec::with_capacity(n);
    let mut cx = Context::from_waker(Waker::noop());
    // Keys as long as the table ever keeps: 200 bytes.
    let uri = |i: usize| format!("/hang/{i:0>194}");
    let before = live();
    for i in 0..n {
        let mut future: Waiting = Box::pin(
            app.clone()
                .oneshot(Request::get(uri(i)).body(Body::empty()).unwrap()),
        );
        assert!(future.as_mut().poll(&mut cx).is_pending());
        waiting.push(future);
    }
    let held = live() - before;
    let flights = cache.stats().flights;
    drop(waiting);
    (held, flights)
}

#[tokio::test(flavor = "current_thread")]
async fn weight_follows_the_heap_for_every_shape_and_flights_stay_small() {
    // Warm-up: what is allocated once per process (statics, the runtime's
    // first timers, tracing's callsites) is not any cache's.
    fill(Shape::Standard).await;
    fill(Shape::Vary).await;

    let mut report = Vec::new();
    let mut worst: f64 = 0.0;
    for shape in [
        Shape::Standard,
        Shape::CustomNames,
        Shape::LongValues,
        Shape::ManyTags,
        Shape::Vary,
    ] {
        let (held, bytes, entries, evictions) = fill(shape).await;
        let ratio = held as f64 / bytes as f64;
        worst = worst.max((ratio - 1.0).abs());
        report.push(format!(
            "{:<28} heap {:>8} B, weighed {:>8} B ({ratio:.3}); {entries} entries, {:.0} B heap and \
             {:.0} B weighed each; {evictions} evicted",
            shape.name(),
            held,
            bytes,
            held as f64 / entries as f64,
            bytes as f64 / entries as f64,
        ));
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(
        worst <= 0.05,
        "the weight strays more than 5% from the heap:\n{report}"
    );

    // The coalescing table, per slot: the same requests waiting, with and
    // without coalescing.
    const N: usize = 2000;
    let (with, flights) = hang(N, true);
    let (without, none) = hang(N, false);
    assert_eq!((flights, none), (N as u64, 0));
    let per_slot = (with - without) as f64 / N as f64;
    println!("coalescing table: {per_slot:.0} B per slot under way (200-byte keys)");
    assert!(
        per_slot <= 700.0,
        "a slot holds {per_slot:.0} B, more than documented"
    );
}
