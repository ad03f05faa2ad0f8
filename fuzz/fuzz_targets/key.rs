//! The key builder end to end: two GETs through a real `CacheLayer`, the
//! first stored, the second answered from it or not.
//!
//! Input: two blocks separated by a `--` line, each a request target (the
//! URI line) and header lines (`Host: ...`, any other).
//!
//! Checks: the first request, after a flush of everything, is answered by
//! the origin; the second is answered from the first's entry only when a
//! model of the key (the path, the query's kept pairs sorted stably, the
//! host in normal form) says they are one request, and never when it
//! carries credentials or asks what no stored response may answer; when
//! the model says they are one plain request and the first was stored,
//! the second is a hit (the fast path and the general path agree on the
//! key).
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use libfuzzer_sys::fuzz_target;
use tower::{Service, ServiceExt};
use tower_response_cache::fuzzing::{is_canonical_path, normal_host, well_formed};
use tower_response_cache::{Cache, CacheLayer, CacheService, ManualClock, RoutePolicy};
use tower_response_cache_fuzz::{blocks, header_line, lines};

/// Query parameters the fallback policy drops from keys.
const IGNORED_EXACT: &[&str] = &["fbclid"];
const IGNORED_PREFIX: &[&str] = &["utm_"];
/// The one path whose rule ignores nothing.
const PLAIN_PATH: &str = "/plain";

type Origin = tower::util::ServiceFn<
    fn(Request<Empty<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

struct World {
    rt: tokio::runtime::Runtime,
    cache: Cache,
    service: CacheService<Origin>,
}

/// What the origin answers: the request as it saw it, so that a hit shows
/// whose response it is.
fn describe(req: &Request<Empty<Bytes>>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.as_bytes().to_vec());
    format!("{} {:?}", req.uri(), host)
}

fn origin(
    req: Request<Empty<Bytes>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from(describe(&req))))))
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let cache = Cache::builder()
        .max_bytes(16 << 20)
        .clock(ManualClock::new())
        .build();
    let layer = CacheLayer::new(&cache)
        .policy(RoutePolicy::ttl(Duration::from_secs(60)).ignore_query_params(["utm_*", "fbclid"]))
        .route(PLAIN_PATH, Duration::from_secs(60));
    let origin: Origin = tower::service_fn(origin as fn(_) -> _);
    let service = tower::Layer::layer(&layer, origin);
    World { rt, cache, service }
});

/// The key a request should have, by the model, or `None` when it is not
/// keyed at all.
#[derive(Debug, PartialEq, Eq)]
struct ModelKey {
    path: String,
    query: Vec<String>,
    host: Option<String>,
}

fn model_key(req: &Request<Empty<Bytes>>) -> Option<ModelKey> {
    let uri = req.uri();
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    if !well_formed(path) || !well_formed(query) || !is_canonical_path(path) {
        return None;
    }
    let ignoring = path != PLAIN_PATH;
    let ignored = |name: &str| {
        ignoring
            && (IGNORED_EXACT.contains(&name) || IGNORED_PREFIX.iter().any(|p| name.starts_with(p)))
    };
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (p.split('=').next().unwrap_or(p), p))
        .filter(|(name, _)| !ignored(name))
        .collect();
    pairs.sort_by_key(|&(name, _)| name);
    let host = match uri.authority() {
        Some(a) => Some(a.as_str()),
        None => match req.headers().get(header::HOST) {
            Some(h) => Some(h.to_str().ok()?),
            None => None,
        },
    };
    let host = match host {
        Some(h) => Some(normal_host(h)?),
        None => None,
    };
    Some(ModelKey {
        path: path.to_owned(),
        query: pairs.iter().map(|&(_, p)| p.to_owned()).collect(),
        host,
    })
}

/// Headers that make a stored response unfit to answer (credentials, an
/// upgrade, a body, preconditions for the origin).
const NEVER_FROM_STORE: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// A request with no header but `Host` and a few that change nothing
/// about caching.
fn plain(req: &Request<Empty<Bytes>>) -> bool {
    req.headers()
        .keys()
        .all(|n| n == header::HOST || n == header::ACCEPT || n == header::USER_AGENT)
}

fn request(block: &[u8]) -> Option<Request<Empty<Bytes>>> {
    let mut lines = lines(block);
    let uri = Uri::try_from(lines.next()?).ok()?;
    let mut req = Request::get(uri).body(Empty::new()).ok()?;
    for (name, value) in lines.filter_map(header_line) {
        req.headers_mut().append(name, value);
    }
    Some(req)
}

struct Answer {
    status: StatusCode,
    cache_status: String,
    body: Bytes,
}

fn send(world: &World, req: Request<Empty<Bytes>>) -> Answer {
    world.rt.block_on(async {
        let mut service = world.service.clone();
        let res = service
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("the origin never fails");
        let status = res.status();
        let cache_status = res
            .headers()
            .get("cache-status")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes();
        Answer {
            status,
            cache_status,
            body,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = blocks(data);
    let (Some(first), Some(second)) = (parts.first(), parts.get(1)) else {
        return;
    };
    let (Some(r1), Some(r2)) = (request(first), request(second)) else {
        return;
    };
    let world = &*WORLD;
    world.cache.invalidate_all();
    let (d1, d2) = (describe(&r1), describe(&r2));
    let (k1, k2) = (model_key(&r1), model_key(&r2));
    let (plain1, plain2) = (plain(&r1), plain(&r2));
    let refused2 = NEVER_FROM_STORE
        .iter()
        .any(|n| r2.headers().contains_key(n));
    let conditional2 = r2.headers().contains_key(header::IF_NONE_MATCH)
        || r2.headers().contains_key(header::IF_MODIFIED_SINCE);

    let a1 = send(world, r1);
    assert_eq!(a1.status, StatusCode::OK, "{d1}: {}", a1.cache_status);
    assert_eq!(
        a1.body,
        d1.as_bytes(),
        "{d1} after a flush: {}",
        a1.cache_status
    );
    if a1.cache_status.contains("stored") {
        assert!(k1.is_some(), "{d1} stored, though the model keys it not");
    }

    let a2 = send(world, r2);
    let hit = a2.cache_status.contains("; hit");
    if hit {
        assert!(
            k2.is_some() && k1 == k2,
            "{d2} answered with {d1}'s entry: {k1:?} vs {k2:?}"
        );
        assert!(!refused2, "{d2} answered from the store");
    }
    match a2.status {
        StatusCode::NOT_MODIFIED => {
            assert!(hit && conditional2, "{d2}: 304, {}", a2.cache_status);
            assert!(a2.body.is_empty());
        }
        StatusCode::OK => {
            let want = if hit { &d1 } else { &d2 };
            assert_eq!(
                a2.body,
                want.as_bytes(),
                "{d2} after {d1}: {}",
                a2.cache_status
            );
        }
        other => panic!("{d2}: status {other} ({})", a2.cache_status),
    }
    if a1.cache_status.contains("stored") && plain1 && plain2 && k1.is_some() && k1 == k2 {
        assert!(hit, "{d2} missed {d1}'s entry: {}", a2.cache_status);
    }
});
