//! `Range` and `If-Range` on a stored response, through a real
//! `CacheLayer`: the entry is stored by a plain GET, then asked for with
//! the fuzzer's headers.
//!
//! Input: two bytes choosing the body's length (up to 2048), one its
//! `ETag` (strong, weak or none), then the second request's header lines
//! (`Range: ...`, `If-Range: ...`, any other).
//!
//! Checks: every answer is the full body (200), exactly the slice its
//! `Content-Range` names (206, within the body), a 416 naming the length,
//! or a 304 to a conditional request; a 206 or 416 only for a `Range`,
//! and a 206 only when any `If-Range` is the entry's strong tag; and, for
//! a lone `Range` that is one byte range as RFC 9110 (section 14.1.1)
//! writes it, exactly the answer that section gives.
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use libfuzzer_sys::fuzz_target;
use tower::{Service, ServiceExt};
use tower_response_cache::{Cache, CacheLayer, CacheService, ManualClock};
use tower_response_cache_fuzz::header_map;

type Origin = tower::util::ServiceFn<
    fn(Request<Empty<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

struct World {
    rt: tokio::runtime::Runtime,
    service: CacheService<Origin>,
}

fn body(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The `ETag` of `/{kind}/{len}`: strong for `s`, weak for `w`, none for
/// any other.
fn etag(kind: &str, len: usize) -> Option<String> {
    match kind {
        "s" => Some(format!("\"s{len}\"")),
        "w" => Some(format!("W/\"w{len}\"")),
        _ => None,
    }
}

/// Answers `/{kind}/{len}` with `len` bytes, ignoring any `Range`.
fn origin(
    req: Request<Empty<Bytes>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let kind = parts.next().unwrap_or("").to_owned();
    let len: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut res = Response::new(Full::new(body(len)));
    if let Some(tag) = etag(&kind, len) {
        res.headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&tag).expect("a tag"));
    }
    std::future::ready(Ok(res))
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let cache = Cache::builder().clock(ManualClock::new()).build();
    let layer = CacheLayer::new(&cache).ttl(Duration::from_secs(3600));
    let origin: Origin = tower::service_fn(origin as fn(_) -> _);
    let service = tower::Layer::layer(&layer, origin);
    World { rt, service }
});

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
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
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
}

/// One byte range as RFC 9110 writes it (`bytes=a-b`, `bytes=a-`,
/// `bytes=-n`, no spaces): `Some(Some((first, last)))` when satisfiable,
/// `Some(None)` when not, `None` for anything else.
fn strict(value: &[u8], len: u64) -> Option<Option<(u64, u64)>> {
    let text = std::str::from_utf8(value).ok()?;
    let (unit, spec) = text.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let number = |s: &str| s.parse::<u128>().unwrap_or(u128::MAX);
    let len = u128::from(len);
    let answer = match (a.is_empty(), b.is_empty()) {
        (true, false) if digits(b) => {
            let n = number(b);
            (n > 0 && len > 0).then(|| (len - n.min(len), len - 1))
        }
        (false, true) if digits(a) => {
            let first = number(a);
            (first < len).then(|| (first, len - 1))
        }
        (false, false) if digits(a) && digits(b) => {
            let (first, last) = (number(a), number(b));
            if first > last {
                return None;
            }
            (first < len).then(|| (first, last.min(len - 1)))
        }
        _ => return None,
    };
    Some(answer.map(|(f, l)| (f as u64, l as u64)))
}

fn content_range(a: &Answer) -> &str {
    a.headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{}: no Content-Range", a.status))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let len = usize::from(u16::from_le_bytes([data[0], data[1]])) % 2049;
    let kind = ["s", "w", "n"][usize::from(data[2]) % 3];
    let path = format!("/{kind}/{len}");
    let headers = header_map(&data[3..]);
    let world = &*WORLD;
    let full = body(len);

    let fill = send(
        world,
        Request::get(&path).body(Empty::new()).expect("a request"),
    );
    assert_eq!((fill.status, &fill.body), (StatusCode::OK, &full), "{path}");

    let mut req = Request::get(&path).body(Empty::new()).expect("a request");
    *req.headers_mut() = headers.clone();
    let a = send(world, req);
    let range = headers.get(header::RANGE);
    let what = format!("{path} {headers:?}");
    match a.status {
        StatusCode::OK => assert_eq!(a.body, full, "{what}"),
        StatusCode::PARTIAL_CONTENT => {
            assert!(range.is_some(), "{what}: 206 with no Range");
            let cr = content_range(&a);
            let (span, total) = cr
                .strip_prefix("bytes ")
                .and_then(|s| s.split_once('/'))
                .unwrap_or_else(|| panic!("{what}: Content-Range {cr}"));
            assert_eq!(total, len.to_string(), "{what}: {cr}");
            let (first, last) = span.split_once('-').expect("first-last");
            let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
            assert!(first <= last && last < len, "{what}: {cr}");
            assert_eq!(a.body, full.slice(first..=last), "{what}: {cr}");
            if let Some(wanted) = headers.get(header::IF_RANGE) {
                let strong = etag(kind, len).filter(|t| t.starts_with('"'));
                assert_eq!(
                    strong.as_deref().map(str::as_bytes),
                    Some(wanted.as_bytes()),
                    "{what}: 206 though If-Range is not the strong tag"
                );
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            assert!(range.is_some(), "{what}: 416 with no Range");
            assert_eq!(content_range(&a), format!("bytes */{len}"), "{what}");
            assert!(a.body.is_empty(), "{what}");
        }
        StatusCode::NOT_MODIFIED => {
            assert!(
                headers.contains_key(header::IF_NONE_MATCH)
                    || headers.contains_key(header::IF_MODIFIED_SINCE),
                "{what}: 304"
            );
            assert!(a.body.is_empty(), "{what}");
        }
        other => panic!("{what}: {other}"),
    }

    // A lone, well-written byte range gets exactly what RFC 9110 says.
    let lone = headers.len() == 1 && headers.get_all(header::RANGE).iter().count() == 1;
    if let (true, Some(value)) = (lone, range) {
        match strict(value.as_bytes(), len as u64) {
            Some(Some((first, last))) => {
                assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{what}");
                assert_eq!(
                    content_range(&a),
                    format!("bytes {first}-{last}/{len}"),
                    "{what}"
                );
            }
            Some(None) => assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE, "{what}"),
            None => {}
        }
    }
});
