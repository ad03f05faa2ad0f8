//! The admin router (`Cache::admin_router`, feature `axum`), driven as a
//! real router on a current-thread runtime built once.
//!
//! Input: a first byte choosing the request, then
//! - 0: the body of `POST /invalidate`;
//! - 1: the query of `GET /entries`;
//! - 2: nothing (`GET /stats`).
//!
//! Checks: every answer is a 200 or a 400 with a JSON body (a 400 says
//! why in `error`), never a panic or another status; a flush is accepted
//! only when a model of the request (an object of `prefixes`, each
//! beginning with `/`, non-empty `tags` and `all`, naming something)
//! accepts it, is echoed back and gets a new generation; every flush the
//! model accepts is accepted; a page of entries is at most 1000 long and
//! its `total` and `next_offset` agree with it.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;
use tower_response_cache::{Cache, CacheLayer, ManualClock};

struct World {
    rt: tokio::runtime::Runtime,
    admin: axum::Router,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let cache = Cache::builder().clock(ManualClock::new()).build();
    // A few entries, for `/entries` to list.
    let layer = CacheLayer::new(&cache).ttl(Duration::from_secs(60));
    let origin = tower::service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let service = tower::Layer::layer(&layer, origin);
    rt.block_on(async {
        for uri in [
            "/products",
            "/products/42",
            "/products/42/reviews?page=2",
            "/a%20b",
            "/",
        ] {
            let req = Request::get(uri).body(Empty::new()).expect("a request");
            let res = service
                .clone()
                .oneshot(req)
                .await
                .expect("the origin never fails");
            res.into_body().collect().await.expect("a whole body");
        }
    });
    World {
        rt,
        admin: cache.admin_router(),
    }
});

/// The last generation a flush was given.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn send(world: &World, req: Request<Body>) -> (StatusCode, Value) {
    world.rt.block_on(async {
        let res = world.admin.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body:?}"));
        (status, json)
    })
}

/// Whether the model accepts a flush request.
fn valid_flush(v: &Value) -> bool {
    let Some(fields) = v.as_object() else {
        return false;
    };
    let mut names_something = false;
    for (name, value) in fields {
        let ok = match name.as_str() {
            "prefixes" => value.as_array().is_some_and(|a| {
                names_something |= !a.is_empty();
                a.iter()
                    .all(|p| p.as_str().is_some_and(|p| p.starts_with('/')))
            }),
            "tags" => value.as_array().is_some_and(|a| {
                names_something |= !a.is_empty();
                a.iter().all(|t| t.as_str().is_some_and(|t| !t.is_empty()))
            }),
            "all" => value
                .as_bool()
                .inspect(|&all| names_something |= all)
                .is_some(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    names_something
}

fn check_error(status: StatusCode, json: &Value, what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {json}");
    assert!(json["error"].is_string(), "{what}: {json}");
}

fn flush(world: &World, body: &[u8]) {
    let req = Request::post("/invalidate")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, json) = send(world, req);
    let input: Option<Value> = serde_json::from_slice(body).ok();
    let what = String::from_utf8_lossy(body);
    if status != StatusCode::OK {
        check_error(status, &json, &what);
        if let Some(v) = input.filter(valid_flush) {
            // Accepted in the model: its plain spelling must be accepted.
            let plain = serde_json::to_vec(&v).expect("a value serialises");
            let req = Request::post("/invalidate")
                .body(Body::from(plain))
                .expect("a request");
            let (status, json) = send(world, req);
            assert_eq!(status, StatusCode::OK, "{v} refused: {json}");
        }
        return;
    }
    let input = input.unwrap_or_else(|| panic!("{what:?} accepted, though not JSON"));
    assert!(valid_flush(&input), "{input} accepted: {json}");
    for field in ["prefixes", "tags", "all"] {
        let default = if field == "all" {
            Value::Bool(false)
        } else {
            Value::Array(Vec::new())
        };
        let sent = input.get(field).unwrap_or(&default);
        assert_eq!(&json["flushed"][field], sent, "{input} echoed as {json}");
    }
    let generation = json["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("{json}"));
    let last = GENERATION.swap(generation, Ordering::Relaxed);
    assert!(generation > last, "generation {generation} after {last}");
}

fn entries(world: &World, query: &[u8]) {
    let mut target = b"/entries?".to_vec();
    target.extend_from_slice(query);
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let req = Request::get(uri).body(Body::empty()).expect("a request");
    let (status, json) = send(world, req);
    let what = String::from_utf8_lossy(query);
    if status != StatusCode::OK {
        check_error(status, &json, &what);
        return;
    }
    let page = json["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    let total = json["total"].as_u64().unwrap_or_else(|| panic!("{json}"));
    assert!(page.len() <= 1000, "{what}: {} entries", page.len());
    assert!(page.len() as u64 <= total, "{what}: {json}");
    match &json["next_offset"] {
        Value::Null => {}
        next => {
            let next = next.as_u64().unwrap_or_else(|| panic!("{json}"));
            assert!(next < total && next >= page.len() as u64, "{what}: {json}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => flush(world, rest),
        1 => entries(world, rest),
        _ => {
            let req = Request::get("/stats")
                .body(Body::empty())
                .expect("a request");
            let (status, json) = send(world, req);
            assert_eq!(status, StatusCode::OK, "{json}");
            assert!(json["totals"].is_object(), "{json}");
        }
    }
});
