//! A tour of the response cache: an axum server whose handlers act like a
//! slow database, and a client that walks through what the cache does.
//!
//! ```text
//! cargo run --example demo            # tour, then serve on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example demo -- --once  # tour, then exit (non-zero if a step surprised us)
//! ```
//!
//! Every step prints the request, the status, the `cache-status` header the
//! cache wrote, how long the round trip took, and what to notice. Then the
//! cache's own statistics. Set `RUST_LOG=tower_response_cache=debug` to see
//! each cache decision as it is made.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceBuilder;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy};

/// The pretend database's one writable fact: a price rise, in cents, that
/// `PUT /products/{id}` applies to every product.
static PRICE_RISE: AtomicU32 = AtomicU32::new(0);

const ADDR: &str = "127.0.0.1:3000";

/// How long the pretend database takes to answer.
const DB_LATENCY: Duration = Duration::from_millis(40);

/// The TTL of `/clock`, short enough to watch it expire.
const CLOCK_TTL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The application
// ---------------------------------------------------------------------------

/// The router: four read routes, each cached by one `CacheLayer` with its
/// own rule, and a write that flushes what it changes.
fn app(cache: &Cache) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{id}", get(show_product).put(update_product))
        .route("/me", get(me))
        .route("/clock", get(clock))
        .layer(
            ServiceBuilder::new()
                // A 2xx PUT flushes the item and the list before it answers.
                .layer(
                    InvalidateOn::new(cache)
                        .rule("/products/{id}", ["/products/{id}", "/products"]),
                )
                .layer(cache_rules(cache)),
        )
}

fn cache_rules(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache)
        // The list: one entry per distinct query (pairs sorted).
        .route(
            "/products",
            RoutePolicy::ttl(Duration::from_secs(60))
                .tags(["products"])
                .ignore_query_params(["utm_*"]),
        )
        // One product: campaign parameters do not split the entry.
        .route(
            "/products/{id}",
            RoutePolicy::ttl(Duration::from_secs(300))
                .tags(["products"])
                .ignore_query_params(["utm_*"]),
        )
        // Per user: requests with `Authorization` are cached only
        // because the key is scoped by the user they authenticate.
        .route(
            "/me",
            RoutePolicy::ttl(Duration::from_secs(30)).scope(user_of),
        )
        .route("/clock", CLOCK_TTL)
}

/// The user a request authenticates as: the bearer token stands in for a
/// verified identity here. A real application would check the token (or
/// the session) and return the user id it belongs to.
fn user_of(parts: &Parts) -> Option<String> {
    bearer(&parts.headers).map(str::to_owned)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .filter(|token| !token.is_empty())
}

/// A pretend database round trip.
async fn slow_db() {
    tokio::time::sleep(DB_LATENCY).await;
}

fn json(body: String) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], body)
}

async fn list_products(Query(query): Query<HashMap<String, String>>) -> impl IntoResponse {
    slow_db().await;
    let page: u32 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let first = (page - 1) * 3 + 1;
    let items: Vec<String> = (first..first + 3)
        .map(|id| format!(r#"{{"id":{id},"name":"product {id}"}}"#))
        .collect();
    json(format!(
        r#"{{"page":{page},"items":[{}]}}"#,
        items.join(",")
    ))
}

async fn show_product(Path(id): Path<u32>) -> impl IntoResponse {
    slow_db().await;
    json(format!(
        r#"{{"id":{id},"name":"product {id}","price_cents":{}}}"#,
        100 * id + 99 + PRICE_RISE.load(Ordering::SeqCst)
    ))
}

async fn update_product(Path(_id): Path<u32>) -> StatusCode {
    slow_db().await;
    PRICE_RISE.fetch_add(100, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn me(headers: HeaderMap) -> axum::response::Response {
    slow_db().await;
    match bearer(&headers) {
        Some(user) => json(format!(
            r#"{{"user":"{user}","cart_items":{}}}"#,
            user.len()
        ))
        .into_response(),
        None => (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
    }
}

async fn clock() -> impl IntoResponse {
    slow_db().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json(format!(r#"{{"unix_ms":{}}}"#, now.as_millis()))
}

// ---------------------------------------------------------------------------
// The tour
// ---------------------------------------------------------------------------

/// What a request step expects the cache to have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answered from the store.
    Hit,
    /// Forwarded to the handler, and stored.
    Miss,
    /// Forwarded without consulting the cache.
    Bypass,
}

impl Expect {
    fn matches(self, cache_status: &str) -> bool {
        match self {
            Expect::Hit => cache_status.contains("; hit"),
            Expect::Miss => cache_status.contains("fwd=miss"),
            Expect::Bypass => cache_status.contains("fwd=bypass"),
        }
    }
}

/// One step of the tour.
enum Step {
    /// An HTTP request to the server, as `user` when given.
    Request {
        method: Method,
        path: &'static str,
        user: Option<&'static str>,
        expect: Expect,
        /// Text the body must contain, if any.
        body_has: Option<&'static str>,
        note: &'static str,
    },
    /// Let time pass.
    Sleep(Duration, &'static str),
    /// Run code against the cache (a flush from a background job, say).
    Call(&'static str, fn(&Cache)),
}

fn get_(path: &'static str, expect: Expect, note: &'static str) -> Step {
    Step::Request {
        method: Method::GET,
        path,
        user: None,
        expect,
        body_has: None,
        note,
    }
}

fn get_as(
    user: &'static str,
    path: &'static str,
    expect: Expect,
    body_has: &'static str,
    note: &'static str,
) -> Step {
    Step::Request {
        method: Method::GET,
        path,
        user: Some(user),
        expect,
        body_has: Some(body_has),
        note,
    }
}

/// The tour, in order. Append steps here.
fn tour() -> Vec<Step> {
    use Expect::*;
    vec![
        get_(
            "/products?page=1",
            Miss,
            "cold read: the handler runs (~40 ms) and the response is stored",
        ),
        get_(
            "/products?page=1",
            Hit,
            "warm read: answered from memory, the handler does not run",
        ),
        get_("/products?b=2&a=1", Miss, "a new query: its own entry"),
        get_(
            "/products?a=1&b=2",
            Hit,
            "same pairs in another order: same key",
        ),
        get_(
            "/products/42?utm_source=mail",
            Miss,
            "one product, with a campaign parameter",
        ),
        get_(
            "/products/42",
            Hit,
            "utm_* is ignored by the key: same entry",
        ),
        Step::Request {
            method: Method::PUT,
            path: "/products/42",
            user: None,
            expect: Bypass,
            body_has: None,
            note: "a write: on its 204, InvalidateOn flushes /products/42 and /products",
        },
        Step::Request {
            method: Method::GET,
            path: "/products/42",
            user: None,
            expect: Miss,
            body_has: Some(r#""price_cents":4399"#),
            note: "read-your-writes: fresh data from the handler, never the old price",
        },
        get_(
            "/products?a=1&b=2",
            Miss,
            "the list was flushed by the same write",
        ),
        get_as(
            "alice",
            "/me",
            Miss,
            r#""user":"alice""#,
            "alice's profile, cached under her scope",
        ),
        get_as(
            "alice",
            "/me",
            Hit,
            r#""user":"alice""#,
            "alice again: her own entry",
        ),
        get_as(
            "bob",
            "/me",
            Miss,
            r#""user":"bob""#,
            "bob's first read misses: he never sees alice's data",
        ),
        get_as(
            "bob",
            "/me",
            Hit,
            r#""user":"bob""#,
            "bob again: his own entry",
        ),
        get_(
            "/me",
            Bypass,
            "nobody signed in: the scope says no, nothing cached",
        ),
        get_("/clock", Miss, "a route with a 1 s TTL"),
        get_("/clock", Hit, "still fresh"),
        Step::Sleep(
            CLOCK_TTL + Duration::from_millis(100),
            "wait past the 1 s TTL",
        ),
        get_("/clock", Miss, "expired: the handler runs again"),
        Step::Call("cache.invalidate_tag(\"products\")", |cache| {
            cache.invalidate_tag("products")
        }),
        get_(
            "/products?page=1",
            Miss,
            "flushed by tag: read from the handler again",
        ),
        get_("/products/42", Miss, "the same tag covered this route too"),
    ]
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What one request came back with.
struct Outcome {
    status: StatusCode,
    cache_status: String,
    body: String,
    elapsed: Duration,
}

async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: &Method,
    path: &str,
    user: Option<&str>,
) -> Result<Outcome, String> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(format!("http://{addr}{path}"));
    if let Some(user) = user {
        req = req.header(AUTHORIZATION, format!("Bearer {user}"));
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = client
        .request(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?
        .to_bytes();
    let elapsed = started.elapsed();
    let cache_status: Vec<&str> = parts
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Ok(Outcome {
        status: parts.status,
        cache_status: if cache_status.is_empty() {
            "-".to_owned()
        } else {
            cache_status.join(", ")
        },
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed,
    })
}

/// Runs the tour against the server at `addr`; returns how many steps did
/// not go as expected.
async fn run_tour(cache: &Cache, addr: SocketAddr, steps: &[Step]) -> Result<usize, String> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut surprises = 0;
    println!(
        "{:<4} {:<30} {:<6} {:<50} {:>8}  note",
        "", "request", "status", "cache-status", "latency"
    );
    for step in steps {
        match step {
            Step::Request {
                method,
                path,
                user,
                expect,
                body_has,
                note,
            } => {
                let out = send(&client, addr, method, path, *user).await?;
                let target = match user {
                    Some(user) => format!("{path} (as {user})"),
                    None => (*path).to_owned(),
                };
                let mut problems = Vec::new();
                if !expect.matches(&out.cache_status) {
                    problems.push(format!("expected {expect:?}"));
                }
                if let Some(text) = body_has {
                    if !out.body.contains(text) {
                        problems.push(format!("body lacks {text}: {}", out.body));
                    }
                }
                println!(
                    "{:<4} {:<30} {:<6} {:<50} {:>5.1} ms  {note}",
                    method.as_str(),
                    target,
                    out.status.as_u16(),
                    out.cache_status,
                    out.elapsed.as_secs_f64() * 1e3,
                );
                if !problems.is_empty() {
                    surprises += 1;
                    println!("     !! {}", problems.join("; "));
                }
            }
            Step::Sleep(d, note) => {
                println!(
                    "{:<4} {:<30} {:<6} {:<50} {:>8}  {note}",
                    "..",
                    format!("sleep {} ms", d.as_millis()),
                    "",
                    "",
                    ""
                );
                tokio::time::sleep(*d).await;
            }
            Step::Call(what, f) => {
                f(cache);
                println!("{:<4} {:<30}", "fn", what);
            }
        }
    }
    Ok(surprises)
}

fn print_stats(cache: &Cache) {
    let stats = cache.stats();
    let t = &stats.totals;
    println!();
    println!(
        "cache: {} hits, {} misses ({:.0}% hit ratio), {} stored, {} bypassed; {} entries, {} bytes",
        t.hits,
        t.misses,
        t.hit_ratio() * 100.0,
        t.stores,
        t.bypassed(),
        stats.entries,
        stats.bytes,
    );
    println!(
        "{:<16} {:>5} {:>7} {:>7}  bypasses",
        "route", "hits", "misses", "stored"
    );
    for (route, c) in &stats.routes {
        let bypasses: Vec<String> = c
            .bypasses
            .iter()
            .map(|(why, n)| format!("{why}={n}"))
            .collect();
        println!(
            "{:<16} {:>5} {:>7} {:>7}  {}",
            route,
            c.hits,
            c.misses,
            c.stores,
            if bypasses.is_empty() {
                "-".to_owned()
            } else {
                bypasses.join(" ")
            }
        );
    }
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let once = std::env::args().skip(1).any(|a| a == "--once");

    let listener = match tokio::net::TcpListener::bind(ADDR).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {ADDR}: {e}");
            eprintln!(
                "is another server (or another demo) using port 3000? stop it and try again."
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");

    let cache = Cache::builder()
        .max_bytes(16 << 20)
        .max_body_bytes(256 << 10)
        .build();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app(&cache);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    println!(
        "tower-response-cache demo on http://{addr}: handlers take ~{} ms\n",
        DB_LATENCY.as_millis()
    );
    let surprises = match run_tour(&cache, addr, &tour()).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tour failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_stats(&cache);
    if surprises > 0 {
        println!("\n{surprises} step(s) did not go as expected (marked !!)");
    }

    if !once {
        println!("\nserving on http://{addr} (try: curl -i http://{addr}/products?page=2); Ctrl-C to stop");
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot wait for Ctrl-C: {e}");
        }
    }
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("server error: {e}"),
        Err(e) => eprintln!("server task failed: {e}"),
    }
    if once && surprises > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
