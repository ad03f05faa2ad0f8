//! The cache in front of a plain hyper 1 server, no framework: a
//! `tower::service_fn` handler behind `CacheLayer`, served with hyper's
//! HTTP/1 connection builder through hyper-util's tokio glue.
//!
//! ```text
//! cargo run --example hyper_server            # serve on 127.0.0.1:3002
//! cargo run --example hyper_server -- --once  # two requests against itself, then exit
//! ```

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, ServiceBuilder};
use tower_response_cache::{Cache, CacheLayer};

const ADDR: &str = "127.0.0.1:3002";

/// The origin: slow enough that a hit shows.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = format!("hello from {}\n", req.uri().path());
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response");
    Ok(response)
}

/// Accepts connections forever, serving each with the cached service.
async fn serve(listener: TcpListener, cache: Cache) {
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(&cache).ttl(Duration::from_secs(30)))
        .service(service_fn(handle));
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
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

/// Two GETs of the same path over one connection, printing `cache-status`.
async fn self_check() -> Result<(), Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(ADDR).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    for _ in 0..2 {
        sender.ready().await?;
        let req = Request::get("/hello?lang=en")
            .header(header::HOST, ADDR)
            .body(Empty::<Bytes>::new())?;
        let started = std::time::Instant::now();
        let response = sender.send_request(req).await?;
        let cache_status = response
            .headers()
            .get("cache-status")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_else(|| "-".to_owned());
        let age = response.headers().get(header::AGE).cloned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET /hello?lang=en  {:>5.1} ms  cache-status: {cache_status}{}  body: {:?}",
            started.elapsed().as_secs_f64() * 1e3,
            age.map(|a| format!(" (age: {})", a.to_str().unwrap_or("?")))
                .unwrap_or_default(),
            String::from_utf8_lossy(&body),
        );
    }
    drop(sender);
    let _ = connection.await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let once = std::env::args().skip(1).any(|a| a == "--once");
    let listener = match TcpListener::bind(ADDR).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {ADDR}: {e} (is something else using the port?)");
            return ExitCode::FAILURE;
        }
    };
    let cache = Cache::builder().build();
    if !once {
        println!("serving on http://{ADDR} (every path cached for 30 s); Ctrl-C to stop");
        tokio::select! {
            () = serve(listener, cache) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return ExitCode::SUCCESS;
    }
    let server = tokio::spawn(serve(listener, cache.clone()));
    let result = self_check().await;
    server.abort();
    match result {
        Ok(()) => {
            let t = cache.stats().totals;
            println!(
                "stats: {} hit(s), {} miss(es), {} stored",
                t.hits, t.misses, t.stores
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("self-check failed: {e}");
            ExitCode::FAILURE
        }
    }
}
