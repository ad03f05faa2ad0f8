//! Cache metrics scraped by Prometheus: the `metrics` feature reports
//! through the `metrics` facade, and `metrics-exporter-prometheus` renders
//! them on `/metrics`.
//!
//! ```sh
//! cargo run --example prometheus --features metrics            # serves on 127.0.0.1:3003
//! cargo run --example prometheus --features metrics -- --once  # a few requests, then the scrape
//! ```

use std::time::Duration;

use axum::{routing::get, Router};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer};

#[tokio::main]
async fn main() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other metrics recorder is installed");
    let cache = Cache::builder().build();
    let metrics = handle.clone();
    let app = Router::new()
        .route("/products", get(|| async { "all products" }))
        .route("/products/{id}", get(|| async { "one product" }))
        .layer(
            CacheLayer::new(&cache)
                .route("/products", Duration::from_secs(60))
                .route("/products/{id}", Duration::from_secs(300)),
        )
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        );

    if std::env::args().any(|a| a == "--once") {
        for uri in [
            "/products",
            "/products",
            "/products/1",
            "/products/1",
            "/products/2",
        ] {
            let req = http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
        }
        cache.stats(); // refreshes the entry and byte gauges
        let req = http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let text = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        for line in String::from_utf8_lossy(&text).lines() {
            if line.starts_with("http_cache") {
                println!("{line}");
            }
        }
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3003")
        .await
        .expect("port 3003 is free");
    println!("scrape http://127.0.0.1:3003/metrics");
    axum::serve(listener, app).await.unwrap();
}
