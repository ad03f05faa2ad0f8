//! Two instances of one API sharing a cache in Redis: a write on one of
//! them flushes the other.
//!
//! ```text
//! cargo run --example redis_fleet --features redis
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example redis_fleet --features redis
//! ```
//!
//! Without `REDIS_URL`, the example starts its own `redis-server` (from
//! your PATH; `apt-get install redis-server` on Debian) on a free port and
//! stops it at the end. It then serves the same router twice, on two
//! ports, each instance with its own `Cache` on the shared `RedisStore`,
//! and walks through: a miss on A, a hit on B from A's entry, a write on
//! A, B's next read fresh. It exits non-zero if a step surprised it.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower_response_cache::store::RedisStore;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn};

/// How long the pretend database takes to answer a read.
const DB_LATENCY: Duration = Duration::from_millis(40);

/// The pretend database both instances read: a price per product, raised
/// by each `PUT`.
#[derive(Clone, Default)]
struct Db {
    price_rise: Arc<AtomicU32>,
}

async fn show_product(State(db): State<Db>, Path(id): Path<u32>) -> String {
    tokio::time::sleep(DB_LATENCY).await;
    let cents = 1000 + id * 100 + db.price_rise.load(Ordering::SeqCst);
    format!("{{\"id\":{id},\"price_cents\":{cents}}}")
}

async fn update_product(State(db): State<Db>) -> StatusCode {
    db.price_rise.fetch_add(50, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// One instance: its own `Cache`, on the shared Redis store.
fn instance(redis_url: &str, db: &Db) -> Result<Router, String> {
    let store = RedisStore::builder(redis_url)
        .namespace("fleet-demo")
        .build()
        .map_err(|e| e.to_string())?;
    let cache = Cache::builder().store(store).build();
    Ok(Router::new()
        .route("/products/{id}", get(show_product).put(update_product))
        .with_state(db.clone())
        .layer(
            ServiceBuilder::new()
                // A 2xx PUT flushes the product on every instance before it
                // answers.
                .layer(InvalidateOn::new(&cache))
                .layer(CacheLayer::new(&cache).ttl(Duration::from_secs(60))),
        ))
}

/// A `redis-server` of our own, stopped on drop.
struct OwnRedis(Child);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Result<(String, OwnRedis), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}): install it, or set REDIS_URL"))?;
    let guard = OwnRedis(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err("redis-server did not start within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("redis://127.0.0.1:{port}/"), guard))
}

async fn serve(app: Router) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// One step of the tour: which instance, what request, what to expect.
struct Step {
    on: usize,
    method: &'static str,
    path: &'static str,
    expect: &'static str,
    note: &'static str,
}

const TOUR: &[Step] = &[
    Step {
        on: 0,
        method: "GET",
        path: "/products/7",
        expect: "fwd=miss; stored",
        note: "first read, on A: the database answers; the entry goes to Redis",
    },
    Step {
        on: 1,
        method: "GET",
        path: "/products/7",
        expect: "hit",
        note: "same read, on B: answered from A's entry in Redis",
    },
    Step {
        on: 0,
        method: "PUT",
        path: "/products/7",
        expect: "",
        note: "a write on A: the flush is in Redis before A answers",
    },
    Step {
        on: 1,
        method: "GET",
        path: "/products/7",
        expect: "fwd=miss; stored",
        note: "the next read, on B, is fresh: the new price",
    },
    Step {
        on: 0,
        method: "GET",
        path: "/products/7",
        expect: "hit",
        note: "and A now reads B's new entry",
    },
];

async fn run() -> Result<(), String> {
    let (url, _own) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, guard) = start_redis()?;
            (url, Some(guard))
        }
    };
    println!("Redis: {url}\n");
    let db = Db::default();
    let a = serve(instance(&url, &db)?).await?;
    let b = serve(instance(&url, &db)?).await?;
    let addrs = [a, b];
    println!("instance A: http://{a}\ninstance B: http://{b}\n");

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut surprises = 0;
    println!(
        "{:<3} {:<4} {:<14} {:>6} {:>8}  {:<34} note",
        "on", "", "path", "status", "ms", "cache-status"
    );
    for step in TOUR {
        let req = http::Request::builder()
            .method(step.method)
            .uri(format!("http://{}{}", addrs[step.on], step.path))
            // The name a load balancer in front of the fleet would forward,
            // the same whichever instance answers: keys hold the host.
            .header(http::header::HOST, "catalogue.example")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let cache_status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .replace("tower-response-cache; ", "");
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let ok = if step.expect.is_empty() {
            status.is_success()
        } else if step.expect == "hit" {
            cache_status.starts_with("hit")
        } else {
            cache_status.contains(step.expect)
        };
        if !ok {
            surprises += 1;
        }
        println!(
            "{:<3} {:<4} {:<14} {:>6} {:>8.1}  {:<34} {}{}",
            ["A", "B"][step.on],
            step.method,
            step.path,
            status.as_u16(),
            ms,
            cache_status,
            step.note,
            if ok { "" } else { "   <-- unexpected" }
        );
        if !body.is_empty() {
            println!("{:>35}{}", "", String::from_utf8_lossy(&body));
        }
        // Entries are written to Redis in the background as the body ends:
        // give the write a moment before the next instance reads.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if surprises > 0 {
        return Err(format!("{surprises} step(s) did not go as expected"));
    }
    println!("\nEvery step went as expected.");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis_fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
