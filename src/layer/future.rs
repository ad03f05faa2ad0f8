use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::service::Miss;
use super::CacheBody;
use crate::cache::stats::Reason;
use crate::headers;

/// What to do with the inner service's response.
pub(crate) enum Plan {
    /// The cache was not consulted: pass the response through, saying why.
    Bypass(Reason),
    /// A miss: store the response if it may be stored.
    Miss(Box<Miss>),
}

pin_project! {
    /// The response future of [`CacheService`](super::CacheService): a hit
    /// answered at once, or the inner service's future.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Ready { response: Option<Response<CacheBody<B>>> },
        Forward {
            #[pin]
            future: F,
            plan: Option<Plan>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn forward(future: F, plan: Plan) -> Self {
        Self {
            state: State::Forward {
                future,
                plan: Some(plan),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes>,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            StateProj::Forward { future, plan } => {
                let result = ready!(future.poll(cx));
                let plan = plan.take().expect("polled after completion");
                let mut response = match result {
                    Ok(response) => response,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                Poll::Ready(Ok(match plan {
                    Plan::Bypass(reason) => {
                        strip_extensions(&mut response);
                        add_status(&mut response, "bypass", Some(reason), false);
                        response.map(CacheBody::passthrough)
                    }
                    Plan::Miss(miss) => finish_miss(miss, response),
                }))
            }
        }
    }
}

fn strip_extensions<B>(response: &mut Response<B>) {
    let ext = response.extensions_mut();
    ext.remove::<crate::policy::CacheTtl>();
    ext.remove::<crate::policy::CacheTags>();
    ext.remove::<crate::policy::NoStore>();
}

fn add_status<B>(
    response: &mut Response<B>,
    fwd: &'static str,
    reason: Option<Reason>,
    stored: bool,
) {
    response.headers_mut().append(
        headers::CACHE_STATUS.clone(),
        headers::forwarded(fwd, reason.map(Reason::as_str), stored),
    );
}

fn finish_miss<B>(miss: Box<Miss>, mut response: Response<B>) -> Response<CacheBody<B>>
where
    B: http_body::Body<Data = bytes::Bytes>,
{
    let limit = miss.cache.shared.max_body_bytes;
    match miss.decide(&mut response) {
        Ok(pending) => {
            add_status(&mut response, "miss", None, true);
            let (parts, body) = response.into_parts();
            if body.is_end_stream() {
                // Nothing will be polled: store the empty body now.
                pending.store(bytes::Bytes::new());
                return Response::from_parts(parts, CacheBody::passthrough(body));
            }
            Response::from_parts(parts, CacheBody::tee(body, pending, limit))
        }
        Err((miss, reason)) => {
            let shared = &miss.cache.shared;
            shared.totals.reason(reason);
            miss.route.stats.reason(reason);
            tracing::debug!(key = %miss.key.full, reason = reason.as_str(), "response not stored");
            add_status(&mut response, "miss", Some(reason), false);
            response.map(CacheBody::passthrough)
        }
    }
}
