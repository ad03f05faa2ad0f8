use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, Response, Uri};
use pin_project_lite::pin_project;

use super::layer::Rules;
use super::Target;
use crate::cache::Cache;

/// What a mutation will flush if it succeeds.
pub(crate) struct Flush {
    pub(crate) cache: Cache,
    pub(crate) rules: Arc<Rules>,
    /// The rule that matched, if any.
    pub(crate) rule: Option<Arc<str>>,
    pub(crate) targets: Vec<Target>,
    /// The request's authority, for judging `Location` same-origin (only
    /// when no rule matched).
    pub(crate) authority: Option<String>,
}

impl Flush {
    fn run(mut self, headers: &HeaderMap) {
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
        self.cache.invalidate_by(&self.targets, "InvalidateOn");
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
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        flush: Option<Box<Flush>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, flush: Option<Box<Flush>>) -> Self {
        Self { future, flush }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        if let (Some(flush), Ok(response)) = (this.flush.take(), &result) {
            if (flush.rules.when)(response.status()) {
                flush.run(response.headers());
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
