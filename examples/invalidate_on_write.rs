//! A small catalogue API kept fresh by its own writes.
//!
//! - `GET /products` (list) and `GET /products/{id}` (item) are cached;
//! - `GET /dashboard` is cached and tagged `order.created`;
//! - `PUT /products/{id}` flushes the item and the list;
//! - `POST /orders` flushes every read tagged `order.created` (tags as events).
//!
//! ```sh
//! cargo run --example invalidate_on_write            # serves on 127.0.0.1:3004
//! cargo run --example invalidate_on_write -- --once  # a scripted tour, then exits
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tower::{ServiceBuilder, ServiceExt};
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy, Target};

#[derive(Clone, Default)]
struct Db {
    prices: Arc<Mutex<BTreeMap<u32, u32>>>,
    orders: Arc<Mutex<u32>>,
}

/// A slow read, as from a real database.
async fn slow() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

async fn list(State(db): State<Db>) -> String {
    slow().await;
    let prices = db.prices.lock().unwrap();
    prices.iter().map(|(id, p)| format!("#{id}={p} ")).collect()
}

async fn item(State(db): State<Db>, Path(id): Path<u32>) -> Result<String, StatusCode> {
    slow().await;
    let prices = db.prices.lock().unwrap();
    prices
        .get(&id)
        .map(|p| format!("#{id} costs {p}"))
        .ok_or(StatusCode::NOT_FOUND)
}

async fn update(State(db): State<Db>, Path(id): Path<u32>, price: String) -> StatusCode {
    match price.trim().parse() {
        Ok(p) => {
            db.prices.lock().unwrap().insert(id, p);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn dashboard(State(db): State<Db>) -> String {
    slow().await;
    format!("{} orders so far", db.orders.lock().unwrap())
}

async fn order(State(db): State<Db>) -> StatusCode {
    *db.orders.lock().unwrap() += 1;
    StatusCode::CREATED
}

fn app(cache: &Cache) -> Router {
    let db = Db::default();
    db.prices.lock().unwrap().extend([(1, 10), (2, 20)]);
    Router::new()
        .route("/products", get(list))
        .route("/products/{id}", get(item).put(update))
        .route("/dashboard", get(dashboard))
        .route("/orders", post(order))
        .with_state(db)
        .layer(
            ServiceBuilder::new()
                .layer(
                    InvalidateOn::new(cache)
                        // `/products` covers the list and every item under it;
                        // naming the item too documents the intent.
                        .rule("/products/{id}", ["/products/{id}", "/products"])
                        .rule("/orders", [Target::tag("order.created")]),
                )
                .layer(
                    CacheLayer::new(cache)
                        .route("/products", Duration::from_secs(60))
                        .route("/products/{id}", Duration::from_secs(300))
                        .route(
                            "/dashboard",
                            RoutePolicy::ttl(Duration::from_secs(30)).tags(["order.created"]),
                        ),
                ),
        )
}

async fn step(app: &Router, method: &str, uri: &str, body: &str) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let start = Instant::now();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let cache_status = res
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    println!(
        "{method:<6} {uri:<16} {:<4} {:<52} {:>6.1} ms  {}",
        status.as_u16(),
        cache_status,
        start.elapsed().as_secs_f64() * 1000.0,
        String::from_utf8_lossy(&bytes).trim()
    );
}

#[tokio::main]
async fn main() {
    let cache = Cache::builder().build();
    let app = app(&cache);
    if std::env::args().any(|a| a == "--once") {
        step(&app, "GET", "/products", "").await;
        step(&app, "GET", "/products/1", "").await;
        step(&app, "GET", "/products", "").await;
        step(&app, "PUT", "/products/1", "15").await;
        step(&app, "GET", "/products/1", "").await;
        step(&app, "GET", "/products", "").await;
        step(&app, "GET", "/dashboard", "").await;
        step(&app, "GET", "/dashboard", "").await;
        step(&app, "POST", "/orders", "").await;
        step(&app, "GET", "/dashboard", "").await;
        step(&app, "PUT", "/products/2", "not a price").await;
        step(&app, "GET", "/products", "").await;
        let stats = cache.stats();
        println!(
            "\n{} hits, {} misses, {} invalidations",
            stats.totals.hits, stats.totals.misses, stats.invalidations
        );
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3004")
        .await
        .expect("port 3004 is free");
    println!(
        "catalogue on http://127.0.0.1:3004 (try: curl -X PUT -d 15 localhost:3004/products/1)"
    );
    axum::serve(listener, app).await.unwrap();
}
