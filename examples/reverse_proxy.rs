//! A caching reverse proxy: every request goes to one upstream HTTP/1.1
//! server through hyper-util's client, behind `InvalidateOn` and
//! `CacheLayer`.
//!
//! ```text
//! cargo run --release --example reverse_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000
//! ```
//!
//! What it does on the way:
//!
//! - every method, path, query and header is forwarded, and bodies stream
//!   both ways (nothing is buffered but what the cache keeps a copy of);
//! - the connection-specific fields of RFC 9110, section 7.6.1
//!   (`Connection` and the fields it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`), and the
//!   proxy authentication fields, which are meant for one hop, are removed
//!   in both directions (so upgrades such as WebSocket are not proxied);
//!   `Trailer` is end to end and kept, and `TE: trailers` is sent upstream
//!   when the client accepts trailers;
//! - `Host` is the client's, so that the upstream sees the name it was
//!   asked for (virtual hosts, absolute links, same-origin `Location`s)
//!   and the cache, which keys on the host, keys on the name the upstream
//!   answered; a request without one gets the upstream's authority;
//! - `Via` is added to each request (a gateway must, RFC 9110, 7.6.3);
//! - an unreachable upstream is answered `502 Bad Gateway`, never stored.
//!
//! Set `RUST_LOG=tower_response_cache=debug` to see each cache decision.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
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
use tower::{service_fn, ServiceBuilder};
use tower_response_cache::{Cache, CacheLayer, InvalidateOn};

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

type ProxyBody = Either<Incoming, Full<Bytes>>;

struct Args {
    listen: SocketAddr,
    upstream: Upstream,
}

/// Where requests go: an `http` scheme and an authority, nothing else.
struct Upstream {
    scheme: Scheme,
    authority: Authority,
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
        (Some(scheme), Some(authority), "/" | "") if *scheme == Scheme::HTTP => Upstream {
            scheme: scheme.clone(),
            authority: authority.clone(),
        },
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

/// Whether the client's `TE` accepts trailers.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
}

/// Sends one request upstream and relays its answer.
async fn forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: &Upstream,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let trailers = accepts_trailers(req.headers());
    let via = match req.version() {
        Version::HTTP_10 => "1.0 tower-response-cache",
        _ => "1.1 tower-response-cache",
    };
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.append(header::VIA, HeaderValue::from_static(via));
    let target = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build();
    match target {
        Ok(target) => *req.uri_mut() = target,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("bad request target: {e}\n"),
            )
        }
    }
    *req.version_mut() = Version::HTTP_11;
    match client.request(req).await {
        Ok(mut res) => {
            strip_hop_by_hop(res.headers_mut());
            res.map(Either::Left)
        }
        Err(e) => {
            eprintln!("upstream {}: {e}", upstream.authority);
            answer(StatusCode::BAD_GATEWAY, "upstream unreachable\n".to_owned())
        }
    }
}

/// A short plain-text answer of the proxy's own, never cached.
fn answer(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Accepts connections forever, serving each through the layers.
async fn serve(listener: TcpListener, args: Args) {
    let cache = Cache::builder().max_bytes(64 << 20).build();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let upstream = Arc::new(args.upstream);
    let proxy = service_fn(move |req| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
    });
    let service = ServiceBuilder::new()
        // A non-error answer to any method but GET, HEAD, OPTIONS and
        // TRACE flushes its URI and same-origin Location and
        // Content-Location (RFC 9111, section 4.4).
        .layer(InvalidateOn::new(&cache))
        // Freshness from each response, revalidation, request directives.
        .layer(CacheLayer::new(&cache).shared_cache())
        .service(proxy);
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
        "proxying http://{} -> {}://{}; Ctrl-C to stop",
        args.listen, args.upstream.scheme, args.upstream.authority
    );
    tokio::select! {
        () = serve(listener, args) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
