use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Request, Response};
use tower_service::Service;

use super::flush::Flush;
use super::future::ResponseFuture;
use super::layer::FlushRules;
use super::FlushBody;
use super::Target;
use crate::cache::Cache;
use crate::layer::client_uri;

/// The service made by [`InvalidateOn`](super::InvalidateOn). Its error is
/// the inner service's, unchanged; its response is the inner one, with the
/// body wrapped in a [`FlushBody`].
pub struct InvalidateService<S> {
    inner: S,
    cache: Cache,
    rules: Arc<FlushRules>,
}

impl<S: Clone> Clone for InvalidateService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            rules: self.rules.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for InvalidateService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidateService")
            .field("inner", &self.inner)
            .field("rules", &self.rules.patterns)
            .finish()
    }
}

impl<S> InvalidateService<S> {
    pub(crate) fn new(inner: S, cache: Cache, rules: Arc<FlushRules>) -> Self {
        Self {
            inner,
            cache,
            rules,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The prefix a nested router stripped: what the client's path has before
/// the path this layer sees (empty when they are the same).
fn nest_prefix<'a>(client: &'a str, local: &str) -> &'a str {
    if client == local {
        return "";
    }
    if let Some(prefix) = client.strip_suffix(local) {
        return prefix;
    }
    // A nest's own root: `/api` (or `/api/`) seen as `/`.
    if local == "/" {
        return client.trim_end_matches('/');
    }
    ""
}

/// A rule's target path under the nest's prefix.
fn nested(nest: &str, path: String) -> String {
    match (nest, path.as_str()) {
        ("", _) => path,
        (_, "/") => nest.to_owned(),
        _ => format!("{nest}{path}"),
    }
}

/// Fills `{name}` and `{*name}` in a template from the matched parameters.
fn fill(template: &str, params: &matchit::Params<'_, '_>) -> String {
    let mut out = template.to_owned();
    for (name, value) in params.iter() {
        out = out.replace(&format!("{{{name}}}"), value);
        out = out.replace(&format!("{{*{name}}}"), value);
    }
    out
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InvalidateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<FlushBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !self.rules.is_mutation(req.method()) {
            return ResponseFuture::new(self.inner.call(req), None);
        }
        // Rules match the path this layer sees; what is flushed is named
        // as the client sees it (under a nested router's prefix).
        let path = req.uri().path();
        let client_path = client_uri(req.uri(), req.extensions()).path();
        let nest = nest_prefix(client_path, path);
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let own_paths = self.rules.own_paths;
        // The write's own path, always (RFC 9111, section 4.4), unless the
        // layer opted out for its rules; a rule adds its targets.
        let mut targets = vec![Target::Prefix(client_path.to_owned())];
        let rule = match self.rules.router.at(path) {
            Ok(m) => {
                if !own_paths {
                    targets.clear();
                }
                for target in &self.rules.targets[*m.value] {
                    let target = match target {
                        Target::Prefix(p) => Target::Prefix(nested(nest, fill(p, &m.params))),
                        Target::Tag(t) => Target::Tag(fill(t, &m.params)),
                        Target::Key(k) => Target::Key(k.clone()),
                    };
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
                Some(self.rules.patterns[*m.value].clone())
            }
            Err(_) => None,
        };
        let flush = Flush {
            cache: self.cache.clone(),
            rules: self.rules.clone(),
            own_paths: own_paths || rule.is_none(),
            rule,
            targets,
            authority,
        };
        ResponseFuture::new(self.inner.call(req), Some(Box::new(flush)))
    }
}
