//! What a write flushes: its targets, resolved once its response head is
//! known, and fired when the head arrives and again when its body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, HeaderMap, Uri};

use super::layer::FlushRules;
use super::Target;
use crate::cache::Cache;

/// Who the flushes are counted and traced for.
const BY: &str = "InvalidateOn";

/// A flush on a network store, awaited before what it guards is released
/// (so the writer's next read, on any instance, sees it); `true` when the
/// store recorded it.
pub(crate) type RemoteFlush = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What a mutation will flush if it succeeds.
pub(crate) struct Flush {
    pub(crate) cache: Cache,
    pub(crate) rules: Arc<FlushRules>,
    /// The rule that matched, if any.
    pub(crate) rule: Option<Arc<str>>,
    pub(crate) targets: Vec<Target>,
    /// Whether the write's own path and its response's same-origin
    /// `Location` and `Content-Location` are flushed (RFC 9111, section
    /// 4.4): always, unless the layer opted out for its rules.
    pub(crate) own_paths: bool,
    /// The request's authority, for judging `Location` same-origin.
    pub(crate) authority: Option<String>,
}

impl Flush {
    /// Adds what the response head names (`Location`, `Content-Location`).
    pub(crate) fn resolve(&mut self, headers: &HeaderMap) {
        if !self.own_paths {
            return;
        }
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(path) = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| same_origin_path(v, self.authority.as_deref()))
            {
                let target = Target::Prefix(path);
                if !self.targets.contains(&target) {
                    self.targets.push(target);
                }
            }
        }
        tracing::info!(
            targets = ?self.targets,
            rule = self.rule.as_deref().unwrap_or("(own path)"),
            "a successful write flushes the cache"
        );
    }

    /// Records the flush: at once in memory (`None`), or as a future to
    /// await on a network store.
    pub(crate) fn fire(&self) -> Option<RemoteFlush> {
        if self.cache.shared.backend.memory().is_some() {
            self.cache.invalidate_by(&self.targets, BY);
            return None;
        }
        let cache = self.cache.clone();
        let targets = self.targets.clone();
        Some(Box::pin(async move {
            // A failure is counted, traced and retried in the background.
            cache.flush_by(&targets, BY).await.is_ok()
        }))
    }

    /// Records the flush once more, as the write's body ends (not counted
    /// as another invalidation).
    pub(crate) fn fire_again(&self) -> Option<RemoteFlush> {
        let again = self.cache.flush_again(&self.targets)?;
        Some(Box::pin(again))
    }

    /// Records the flush without waiting for it (a body dropped before its
    /// end: nobody is left to hold back).
    pub(crate) fn fire_again_detached(&self) {
        if let Some(remote) = self.fire_again() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(remote);
                }
                Err(_) => tracing::error!(
                    targets = ?self.targets,
                    "a flush on a network store needs a tokio runtime; not recorded"
                ),
            }
        }
    }
}

/// The path of a `Location`-style value when it points at this origin: an
/// absolute path, or an absolute URI whose authority is the request's.
fn same_origin_path(value: &str, authority: Option<&str>) -> Option<String> {
    let uri: Uri = value.parse().ok()?;
    match uri.authority() {
        None if value.starts_with('/') => Some(uri.path().to_owned()),
        None => None,
        Some(a) => authority
            .filter(|mine| a.as_str().eq_ignore_ascii_case(mine))
            .map(|_| uri.path().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::same_origin_path;

    #[test]
    fn location_must_be_same_origin() {
        assert_eq!(
            same_origin_path("/products/7", None).as_deref(),
            Some("/products/7")
        );
        assert_eq!(
            same_origin_path("http://api.test/products/7?x=1", Some("api.test")).as_deref(),
            Some("/products/7")
        );
        assert_eq!(
            same_origin_path("http://evil.test/products", Some("api.test")),
            None
        );
        assert_eq!(same_origin_path("http://evil.test/products", None), None);
        assert_eq!(same_origin_path("relative/7", None), None);
    }
}
