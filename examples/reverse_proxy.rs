//! A caching reverse proxy: every request goes to one upstream HTTP/1.1
//! server through hyper-util's client, behind `InvalidateOn` and
//! `CacheLayer`.
//!
//! ```text
//! cargo run --release --example reverse_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000
//! ```
//!
//! The cache is the crate's shared-cache mode (freshness from each
//! response, revalidation, the requests' own directives), reading
//! `CDN-Cache-Control` (RFC 9213) before `Cache-Control`; `InvalidateOn`
//! flushes what a write changed. `docs/conformance.md` scores this
//! example against the public RFC 9111 test suite.
//!
//! What the proxy does on the way:
//!
//! - every method, path, query and header is forwarded, and bodies stream
//!   both ways (nothing is buffered but what the cache keeps a copy of);
//! - the connection-specific fields of RFC 9110, section 7.6.1
//!   (`Connection` and the fields it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`), and the
//!   proxy authentication fields, which are meant for one hop, are removed
//!   in both directions (so upgrades such as WebSocket are not proxied,
//!   and the upstream is not asked for trailers); `Trailer` is end to end
//!   (RFC 9110, section 6.6.2) and kept;
//! - `Host` is the client's, so that the upstream sees the name it was
//!   asked for (virtual hosts, absolute links, same-origin `Location`s)
//!   and the cache, which keys on the host, keys on the name the upstream
//!   answered; a request without one gets the upstream's authority;
//! - `Via` is added to each request (a gateway must, RFC 9110, 7.6.3);
//! - an unreachable upstream is answered `502 Bad Gateway` (a body it
//!   cuts short is cut short for the client too).
//!
//! Set `RUST_LOG=tower_response_cache=debug` to see each cache decision.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy};

const USAGE: &str = "\
A caching reverse proxy in front of one HTTP/1.1 upstream.

usage: reverse_proxy [--listen ADDR] [--upstream URL]

  --listen ADDR    address to serve on (default 127.0.0.1:8080)
  --upstream URL   http://host:port of the upstream (default http://127.0.0.1:8000)
  --help           this text
";

/// Removed from every request and response, besides the fields that
/// `Connection` names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

type ClientError = hyper_util::client::legacy::Error;

struct Args {
    listen: SocketAddr,
    /// Where requests go, over `http`.
    upstream: Authority,
}

/// The arguments, `Ok(None)` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut upstream = "http://127.0.0.1:8000".to_owned();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => &mut listen,
            "--upstream" => &mut upstream,
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = args.next().ok_or(format!("{arg} needs a value"))?;
    }
    let listen = listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))?;
    let uri: Uri = upstream
        .parse()
        .map_err(|e| format!("--upstream {upstream:?}: {e}"))?;
    let upstream = match (uri.scheme(), uri.authority(), uri.path()) {
        (Some(scheme), Some(authority), "/" | "") if *scheme == Scheme::HTTP => authority.clone(),
        _ => {
            return Err(format!(
                "--upstream {upstream:?}: expected http://host:port"
            ))
        }
    };
    Ok(Some(Args { listen, upstream }))
}

/// Removes the fields of one connection: those `Connection` names, then
/// the fixed list.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sends one request upstream and returns its answer; an error when the
/// upstream cannot be reached or drops the connection.
async fn forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, ClientError> {
    let via = match req.version() {
        Version::HTTP_10 => "1.0 tower-response-cache",
        _ => "1.1 tower-response-cache",
    };
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut()
        .append(header::VIA, HeaderValue::from_static(via));
    let mut target = req.uri().clone().into_parts();
    target.scheme = Some(Scheme::HTTP);
    target.authority = Some(upstream);
    if target.path_and_query.is_none() {
        target.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(target).expect("a scheme, an authority and a path");
    *req.version_mut() = Version::HTTP_11;
    let mut res = client.request(req).await?;
    strip_hop_by_hop(res.headers_mut());
    Ok(res)
}

/// The upstream's answer, or a short `502 Bad Gateway` of the proxy's own
/// when there is none (never an error). Made outside the cache, so that
/// the cache sees an unreachable upstream as an error (a stale entry may
/// answer it), not as a 502 of the upstream's.
fn or_bad_gateway<B>(
    result: Result<Response<B>, ClientError>,
) -> Result<Response<Either<B, Full<Bytes>>>, ClientError> {
    let e = match result {
        Ok(res) => return Ok(res.map(Either::Left)),
        Err(e) => e,
    };
    eprintln!("upstream: {e:?}");
    let body = Full::new(Bytes::from_static(b"upstream unreachable\n"));
    let mut res = Response::new(Either::Right(body));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Accepts connections forever, serving each through the layers.
async fn serve(listener: TcpListener, args: Args) {
    let cache = Cache::builder().max_bytes(64 << 20).build();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    // Idle upstream connections are closed here before the upstream's own
    // keep-alive timeout (5 s in Node and Apache httpd) closes them: a
    // request sent on a connection as the upstream closes it would fail.
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(4))
        .build(connector);
    // `shared_cache()` with this policy in place of its own: the same
    // freshness from the response, and the targeted field read first.
    let shared = RoutePolicy::shared_cache().targeted_field("cdn-cache-control");
    let service = ServiceBuilder::new()
        .map_result(or_bad_gateway)
        // A non-error answer to any method but GET, HEAD, OPTIONS and
        // TRACE flushes its URI and same-origin Location and
        // Content-Location (RFC 9111, section 4.4).
        .layer(InvalidateOn::new(&cache))
        .layer(CacheLayer::new(&cache).shared_cache().policy(shared))
        .service_fn(move |req: Request<Incoming>| {
            let (client, upstream) = (client.clone(), args.upstream.clone());
            async move { forward(&client, upstream, req).await }
        });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("reverse_proxy: {e}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "proxying http://{} -> http://{}; Ctrl-C to stop",
        args.listen, args.upstream
    );
    tokio::select! {
        () = serve(listener, args) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
