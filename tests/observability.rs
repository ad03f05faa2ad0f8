//! Statistics, metrics and the admin router, through real routers.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use support::*;
use tower::ServiceBuilder;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn, RoutePolicy};

const MIN: Duration = Duration::from_secs(60);

/// A scripted run over two routes, with counted origin calls.
async fn scripted(cache: &Cache) -> (Hits, Hits) {
    let (items, users) = (Hits::default(), Hits::default());
    let (i, u) = (items.clone(), users.clone());
    let app = Router::new()
        .route(
            "/items/{id}",
            get(move || {
                i.bump();
                async { "item" }
            })
            .post(|| async { "saved" }),
        )
        .route(
            "/users",
            get(move || {
                u.bump();
                async { "users" }
            }),
        )
        .layer(
            ServiceBuilder::new().layer(InvalidateOn::new(cache)).layer(
                CacheLayer::new(cache)
                    .route("/items/{id}", MIN)
                    .route("/users", RoutePolicy::ttl(MIN)),
            ),
        );
    for id in [1, 2, 1, 1, 3, 2] {
        send(&app, read(&format!("/items/{id}"))).await;
    }
    send(&app, method("POST", "/items/1")).await;
    send(&app, read("/items/1")).await;
    for _ in 0..3 {
        send(&app, read("/users")).await;
    }
    send(&app, get_with("/users", "authorization", "Bearer x")).await;
    (items, users)
}

#[tokio::test]
async fn stats_agree_with_counted_origin_calls() {
    let cache = Cache::builder().build();
    let (items, users) = scripted(&cache).await;
    let stats = cache.stats();
    let item = &stats.routes["/items/{id}"];
    let user = &stats.routes["/users"];
    // Origin GET calls are the misses, plus bypasses that reached the origin.
    assert_eq!(items.get() as u64, item.misses);
    assert_eq!(users.get() as u64, user.misses + user.bypassed());
    assert_eq!((item.hits, item.misses, item.stores), (3, 4, 4));
    assert_eq!((user.hits, user.misses), (2, 1));
    assert_eq!(user.bypasses.get("authorization"), Some(&1));
    assert_eq!(item.stale_dropped, 1, "the POST flushed /items/1");
    assert_eq!(stats.totals.hits, 5);
    assert_eq!(stats.totals.misses, 5);
    assert_eq!(stats.totals.bypasses.get("method"), Some(&1));
    assert_eq!(stats.invalidations, 1);
    assert_eq!(stats.entries, 4);
    assert!((stats.hit_ratio - 0.5).abs() < 1e-9);
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn stats_serialize() {
    let cache = Cache::builder().build();
    scripted(&cache).await;
    let json = serde_json::to_value(cache.stats()).unwrap();
    assert_eq!(json["totals"]["hits"], 5);
    assert_eq!(json["routes"]["/users"]["bypasses"]["authorization"], 1);
}

#[cfg(feature = "metrics")]
#[test]
fn the_metrics_recorder_sees_the_same_numbers() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::builder().build();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            scripted(&cache).await;
            cache.invalidate_tag("t");
            cache.stats();
        })
    });
    let stats = cache.stats();
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let mut labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => continue,
        };
        seen.insert(format!("{}{{{}}}", k.name(), labels.join(",")), v);
    }
    let get = |k: &str| {
        seen.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {seen:#?}"))
    };
    let route = &stats.routes["/items/{id}"];
    assert_eq!(
        get("http_cache_requests_total{outcome=hit,route=/items/{id}}"),
        route.hits as f64
    );
    assert_eq!(
        get("http_cache_requests_total{outcome=miss,route=/items/{id}}"),
        route.misses as f64
    );
    assert_eq!(
        get("http_cache_stores_total{route=/items/{id}}"),
        route.stores as f64
    );
    assert_eq!(
        get("http_cache_requests_total{outcome=hit,route=/users}"),
        stats.routes["/users"].hits as f64
    );
    assert_eq!(
        get("http_cache_bypasses_total{reason=authorization,route=/users}"),
        1.0
    );
    assert_eq!(
        get("http_cache_bypasses_total{reason=method,route=/items/{id}}"),
        1.0
    );
    assert_eq!(get("http_cache_invalidations_total{kind=prefix}"), 1.0);
    assert_eq!(get("http_cache_invalidations_total{kind=tag}"), 1.0);
    assert_eq!(get("http_cache_entries{}"), stats.entries as f64);
    assert_eq!(get("http_cache_bytes{}"), stats.bytes as f64);
}

#[cfg(feature = "axum")]
mod admin {
    use super::*;

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> Seen {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        send(app, req).await
    }

    fn json(seen: &Seen) -> serde_json::Value {
        serde_json::from_slice(&seen.body).unwrap_or_else(|e| panic!("{e}: {}", seen.text()))
    }

    #[tokio::test]
    async fn admin_router_reports_flushes_and_lists() {
        let cache = Cache::builder().build();
        let hits = Hits::default();
        let h = hits.clone();
        let app = Router::new()
            .route(
                "/products/{id}",
                get(move || {
                    h.bump();
                    async { "product" }
                }),
            )
            .layer(CacheLayer::new(&cache).ttl(MIN))
            .nest("/admin/cache", cache.admin_router());
        let addr = serve(app.clone()).await;
        for id in 0..5 {
            send(&app, read(&format!("/products/{id}"))).await;
        }
        send(&app, read("/products/1")).await;

        // Over a real server too.
        let client = client();
        let stats = fetch(&client, addr, "GET", "/admin/cache/stats", &[]).await;
        assert_eq!(stats.status, StatusCode::OK);
        let stats = json(&stats);
        assert_eq!(stats["totals"]["hits"], 1);
        assert_eq!(stats["entries"], 5);

        let page = json(
            &call(
                &app,
                "GET",
                "/admin/cache/entries?prefix=/products&limit=2",
                "",
            )
            .await,
        );
        assert_eq!(page["total"], 5);
        assert_eq!(page["entries"].as_array().unwrap().len(), 2);
        assert_eq!(page["next_offset"], 2);
        assert_eq!(page["entries"][0]["key"], "/products/0");
        assert!(page["entries"][0]["ttl_secs"].as_i64().unwrap() > 50);
        let last = json(
            &call(
                &app,
                "GET",
                "/admin/cache/entries?prefix=/products&limit=2&offset=4",
                "",
            )
            .await,
        );
        assert_eq!(last["entries"].as_array().unwrap().len(), 1);
        assert!(last["next_offset"].is_null());
        let none = json(&call(&app, "GET", "/admin/cache/entries?prefix=/prod", "").await);
        assert_eq!(none["total"], 0, "prefixes match whole segments");
        let bad = call(&app, "GET", "/admin/cache/entries?limit=lots", "").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        // Bad JSON, unknown fields, bad prefixes: 400 with a message.
        for body in [
            "{",
            "{\"prefix\": [\"/products\"]}",
            "{\"prefixes\": [\"products\"]}",
            "{}",
        ] {
            let r = call(&app, "POST", "/admin/cache/invalidate", body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(json(&r)["error"].as_str().unwrap().len() > 5);
        }
        assert_eq!(cache.stats().invalidations, 0);

        // A flush that the next read proves.
        assert!(send(&app, read("/products/1")).await.is_hit());
        let r = call(
            &app,
            "POST",
            "/admin/cache/invalidate",
            "{\"prefixes\": [\"/products/1\"], \"tags\": [\"x\"]}",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = json(&r);
        assert_eq!(r["flushed"]["prefixes"][0], "/products/1");
        assert_eq!(r["flushed"]["tags"][0], "x");
        let before = hits.get();
        assert!(!send(&app, read("/products/1")).await.is_hit());
        assert_eq!(hits.get(), before + 1);
        assert!(send(&app, read("/products/2")).await.is_hit());
        let r = call(&app, "POST", "/admin/cache/invalidate", "{\"all\": true}").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!send(&app, read("/products/2")).await.is_hit());
    }
}
