use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, Response, Uri};
use pin_project_lite::pin_project;

use super::layer::FlushRules;
use super::Target;
use crate::cache::Cache;

/// What a mutation will flush if it succeeds.
pub(crate) struct Flush {
    pub(crate) cache: Cache,
    pub(crate) rules: Arc<FlushRules>,
    /// The rule that matched, if any.
    pub(crate) rule: Option<Arc<str>>,
    pub(crate) targets: Vec<Target>,
    /// The request's authority, for judging `Location` same-origin (only
    /// when no rule matched).
    pub(crate) authority: Option<String>,
}

/// A flush on a network store, awaited before the write's response is
/// released (so the writer's next read, on any instance, sees it).
type RemoteFlush = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Flush {
    fn run(mut self, headers: &HeaderMap) -> Option<RemoteFlush> {
        if self.rule.is_none() {
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(path) = headers
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| same_origin_path(v, self.authority.as_deref()))
                {
                    self.targets.push(Target::Prefix(path));
                }
            }
        }
        tracing::info!(
            targets = ?self.targets,
            rule = self.rule.as_deref().unwrap_or("(own path)"),
            "a successful write flushes the cache"
        );
        if self.cache.shared.backend.memory().is_none() {
            let Flush { cache, targets, .. } = self;
            return Some(Box::pin(async move {
                // A failure is counted, traced and retried in the background.
                let _ = cache.flush_by(&targets, "InvalidateOn").await;
            }));
        }
        self.cache.invalidate_by(&self.targets, "InvalidateOn");
        None
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

pin_project! {
    /// The response future of [`InvalidateService`](super::InvalidateService).
    pub struct ResponseFuture<F: Future> {
        #[pin]
        future: F,
        flush: Option<Box<Flush>>,
        // A flush on a network store, and the response it holds back.
        pending: Option<RemoteFlush>,
        held: Option<F::Output>,
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn new(future: F, flush: Option<Box<Flush>>) -> Self {
        Self {
            future,
            flush,
            pending: None,
            held: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(pending) = this.pending {
            ready!(pending.as_mut().poll(cx));
            *this.pending = None;
            return Poll::Ready(this.held.take().expect("polled after completion"));
        }
        let result = ready!(this.future.poll(cx));
        if let (Some(flush), Ok(response)) = (this.flush.take(), &result) {
            if (flush.rules.when)(response.status()) {
                if let Some(mut pending) = flush.run(response.headers()) {
                    if pending.as_mut().poll(cx).is_pending() {
                        *this.pending = Some(pending);
                        *this.held = Some(result);
                        return Poll::Pending;
                    }
                }
            }
        }
        Poll::Ready(result)
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
