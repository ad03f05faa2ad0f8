//! The admin router (feature `axum`): statistics, flushes and a view of the
//! entries, as JSON over HTTP.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::invalidate::target::normalise_prefix;
use crate::invalidate::Target;

/// The most entries one `GET /entries` page lists.
const MAX_PAGE: usize = 1000;

impl Cache {
    /// A router for operators, never mounted by default:
    ///
    /// - `GET /stats`: [`Stats`](crate::Stats) as JSON;
    /// - `POST /invalidate` with `{"prefixes": [..], "tags": [..], "all": false}`
    ///   (any field may be left out; unknown fields and malformed JSON get a
    ///   400): flushes them and answers with what was flushed (a 503 when a
    ///   network store could not record the flush);
    /// - `GET /entries?prefix=/products&limit=100&offset=0`: keys, paths,
    ///   ages, remaining TTLs and sizes, at most 1000 a page (entries of the
    ///   in-memory store; a network store's entries are not listed).
    ///
    /// Mount it behind authorization; for example, with a bearer token:
    ///
    /// ```
    /// use axum::{extract::Request, http::StatusCode, middleware::{self, Next}, response::Response, Router};
    /// use tower_response_cache::Cache;
    ///
    /// async fn operators_only(req: Request, next: Next) -> Result<Response, StatusCode> {
    ///     let token = std::env::var("CACHE_ADMIN_TOKEN").map_err(|_| StatusCode::FORBIDDEN)?;
    ///     let expected = format!("Bearer {token}");
    ///     match req.headers().get("authorization") {
    ///         Some(v) if v.as_bytes() == expected.as_bytes() => Ok(next.run(req).await),
    ///         _ => Err(StatusCode::UNAUTHORIZED),
    ///     }
    /// }
    ///
    /// let cache = Cache::builder().build();
    /// let app: Router = Router::new().nest(
    ///     "/admin/cache",
    ///     cache.admin_router().layer(middleware::from_fn(operators_only)),
    /// );
    /// # let _ = app;
    /// ```
    ///
    /// It fits an app of any state (`S`): nest it into a `Router<AppState>`
    /// as it is.
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn admin_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/stats", get(stats))
            .route("/invalidate", post(invalidate))
            .route("/entries", get(entries))
            .with_state(self.clone())
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn stats(State(cache): State<Cache>) -> Json<crate::Stats> {
    Json(cache.stats())
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Flush {
    prefixes: Vec<String>,
    tags: Vec<String>,
    all: bool,
}

async fn invalidate(State(cache): State<Cache>, body: Bytes) -> Response {
    let flush: Flush = match serde_json::from_slice(&body) {
        Ok(flush) => flush,
        Err(e) => return bad_request(format!("invalid flush request: {e}")),
    };
    if let Some(p) = flush.prefixes.iter().find(|p| !p.starts_with('/')) {
        return bad_request(format!("prefix {p:?} must start with '/'"));
    }
    if let Some(t) = flush.tags.iter().find(|t| t.is_empty()) {
        return bad_request(format!("tag {t:?} must not be empty"));
    }
    if flush.prefixes.is_empty() && flush.tags.is_empty() && !flush.all {
        return bad_request("nothing to flush: name prefixes, tags, or \"all\": true".into());
    }
    let mut targets: Vec<Target> = flush
        .prefixes
        .iter()
        .map(|p| Target::prefix(p.as_str()))
        .collect();
    targets.extend(flush.tags.iter().map(|t| Target::tag(t.as_str())));
    if flush.all {
        targets.push(Target::prefix("/"));
    }
    let generation = match cache.flush_by(&targets, "admin").await {
        Ok(generation) => generation,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": format!("the flush could not be recorded ({e}); it is retried in the background"),
                })),
            )
                .into_response()
        }
    };
    Json(serde_json::json!({ "flushed": flush, "generation": generation })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    prefix: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

#[derive(Debug, Serialize)]
struct EntryView {
    key: String,
    path: String,
    status: u16,
    age_secs: u64,
    ttl_secs: i64,
    bytes: u64,
}

async fn entries(
    State(cache): State<Cache>,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(format!("invalid query: {e}")),
    };
    let prefix = q.prefix.as_deref().map(normalise_prefix).unwrap_or("/");
    let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let now_ms = cache.shared.clock.now_ms();
    let under = |path: &str| {
        prefix == "/"
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    // The entries themselves (a pointer each), not copies of their keys:
    // only the page is copied out.
    let mut matching: Vec<_> = cache
        .shared
        .backend
        .memory()
        .into_iter()
        .flat_map(|memory| memory.entries())
        .filter(|e| e.vary().is_none() && under(e.path()))
        .collect();
    matching.sort_by(|a, b| a.key().cmp(&b.key()));
    let total = matching.len();
    let page: Vec<EntryView> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| EntryView {
            key: e.key().unwrap_or_default().to_owned(),
            path: e.path().to_owned(),
            status: e.status().as_u16(),
            age_secs: now_ms.saturating_sub(e.born_ms()) / 1000,
            ttl_secs: (e.fresh_until_ms() as i64 - now_ms as i64) / 1000,
            bytes: e.weight(),
        })
        .collect();
    drop(matching);
    let next = (offset + page.len() < total).then_some(offset + page.len());
    Json(serde_json::json!({ "entries": page, "total": total, "next_offset": next }))
        .into_response()
}
