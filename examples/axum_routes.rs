//! Per-route TTLs in axum, both ways:
//!
//! - one `CacheLayer` on the router, with a `route` rule per pattern
//!   (`/products`, `/products/{id}`); paths no rule names pass through;
//! - a `CacheLayer` with a plain `ttl` on a single route, through
//!   `route_layer` (`/config`), which only runs when that route matched.
//!
//! ```text
//! cargo run --example axum_routes            # serve on 127.0.0.1:3001
//! cargo run --example axum_routes -- --once  # a few requests against itself, then exit
//! ```

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_response_cache::{Cache, CacheLayer, RoutePolicy};

const ADDR: &str = "127.0.0.1:3001";

fn app(cache: &Cache) -> Router {
    Router::new()
        .route("/products", get(|| async { "all products" }))
        .route(
            "/products/{id}",
            get(|Path(id): Path<u32>| async move { format!("product {id}") }),
        )
        // This route carries its own layer: a TTL for whatever it sees.
        .route(
            "/config",
            get(|| async { "feature_x = true" })
                .route_layer(CacheLayer::new(cache).ttl(Duration::from_secs(600))),
        )
        // Not named by any rule: never cached.
        .route("/health", get(|| async { "ok" }))
        // One layer for the router, a rule per pattern.
        .layer(
            CacheLayer::new(cache)
                .route("/products", Duration::from_secs(60))
                .route(
                    "/products/{id}",
                    RoutePolicy::ttl(Duration::from_secs(300)).tags(["products"]),
                ),
        )
}

/// Requests a few paths twice each and prints what the cache said.
async fn self_check() -> Result<(), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for path in ["/products", "/products/7", "/config", "/health"] {
        for _ in 0..2 {
            let uri = format!("http://{ADDR}{path}")
                .parse()
                .map_err(|e| format!("{path}: {e}"))?;
            let response = client.get(uri).await.map_err(|e| format!("{path}: {e}"))?;
            let status = response.status();
            let cache_status: Vec<String> = response
                .headers()
                .get_all("cache-status")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{path}: {e}"))?
                .to_bytes();
            println!(
                "GET {path:<14} {} {:<18} cache-status: {}",
                status.as_u16(),
                format!("{:?}", String::from_utf8_lossy(&body)),
                cache_status.join(", "),
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let once = std::env::args().skip(1).any(|a| a == "--once");
    let listener = match tokio::net::TcpListener::bind(ADDR).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {ADDR}: {e} (is something else using the port?)");
            return ExitCode::FAILURE;
        }
    };
    let cache = Cache::builder().build();
    let router = app(&cache);

    if !once {
        println!("serving on http://{ADDR}: /products, /products/{{id}}, /config, /health; Ctrl-C to stop");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        return match axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server error: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let result = self_check().await;
    server.abort();
    let stats = cache.stats();
    println!(
        "stats: {} hits, {} misses, {} stored, bypasses {:?}",
        stats.totals.hits, stats.totals.misses, stats.totals.stores, stats.totals.bypasses
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("self-check failed: {e}");
            ExitCode::FAILURE
        }
    }
}
