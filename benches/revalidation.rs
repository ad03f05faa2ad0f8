//! What revalidation saves the origin.
//!
//! One route with freshness from the response (`max-age=1`) answers a
//! 64 KiB body; its entry expires before every read. With an `ETag`, each
//! expired entry is revalidated: the origin answers `304` and sends no
//! body. Without one, each read fetches the whole body again. The origin
//! counts the body bytes it sends; the run prints both totals, the bytes
//! saved, and the time per read of each (in process, on a manual clock, so
//! the time is the layer's and the origin's work, not a network's).
//!
//! ```text
//! cargo bench --bench revalidation
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer, ManualClock, RoutePolicy};

const BODY: usize = 64 << 10;
const READS: u64 = 2_000;

/// Reads `/doc` `READS` times, each after its entry expired; the origin's
/// body bytes and the time per read.
async fn run(with_etag: bool) -> (u64, u64, Duration) {
    let sent = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let (s, c) = (sent.clone(), calls.clone());
    let body = Arc::new(vec![b'x'; BODY]);
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .clock(clock.clone())
        .max_body_bytes(BODY * 2)
        .build();
    let app = Router::new()
        .route(
            "/doc",
            get(move |headers: HeaderMap| {
                let (s, c, body) = (s.clone(), c.clone(), body.clone());
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    let mut res = Response::builder().header("cache-control", "max-age=1");
                    if with_etag {
                        res = res.header("etag", "\"doc-1\"");
                        if headers
                            .get("if-none-match")
                            .is_some_and(|v| v == "\"doc-1\"")
                        {
                            return res
                                .status(StatusCode::NOT_MODIFIED)
                                .body(Body::empty())
                                .unwrap();
                        }
                    }
                    s.fetch_add(body.len() as u64, Ordering::Relaxed);
                    res.body(Body::from(body.as_ref().clone())).unwrap()
                }
            }),
        )
        .layer(CacheLayer::new(&cache).route("/doc", RoutePolicy::from_headers()));
    let start = Instant::now();
    for _ in 0..READS {
        clock.advance(Duration::from_secs(2));
        let req = Request::get("/doc").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), BODY, "every client gets the whole body");
    }
    let per_read = start.elapsed() / READS as u32;
    assert_eq!(
        calls.load(Ordering::Relaxed),
        READS,
        "one origin call per expired read"
    );
    (
        sent.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed),
        per_read,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (full, _, full_time) = runtime.block_on(run(false));
    let (revalidated, _, reval_time) = runtime.block_on(run(true));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("{READS} reads of a 64 KiB response, each after its entry expired:");
    println!(
        "  without a validator: origin sent {:8.1} MiB of body, {:6.1} µs per read",
        mib(full),
        full_time.as_secs_f64() * 1e6
    );
    println!(
        "  revalidated (304):   origin sent {:8.1} MiB of body, {:6.1} µs per read",
        mib(revalidated),
        reval_time.as_secs_f64() * 1e6
    );
    println!(
        "  saved: {:.1} MiB of origin body ({:.0}%)",
        mib(full - revalidated),
        100.0 * (full - revalidated) as f64 / full as f64
    );
}
