use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::miss::{add_status, finish_miss, serve_stale, usable_stale, Miss};
use super::respond::respond_hit;
use super::revalidate::freshen;
use super::CacheBody;
use crate::cache::stats::Reason;
use crate::store::Entry;

/// What to do with the inner service's response.
pub(crate) enum OnResponse {
    /// The cache was not consulted: pass the response through, saying why
    /// (unless the cache's headers are lean).
    Bypass { reason: Reason, lean: bool },
    /// A miss: store the response if it may be stored.
    Miss(Box<Miss>),
    /// Not this layer's request (no rule): the response as it is.
    Untouched,
}

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

/// Which answer a hit's future makes from its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FromEntry {
    /// The stored response (or its HEAD form), fresh.
    Fresh,
    /// A 304: the request's validators matched.
    NotModified,
    /// The stored response, stale, while one request refreshes it.
    Stale,
}

pin_project! {
    /// The response future of [`CacheService`](super::CacheService): a hit
    /// answered when polled, the inner service's future, or a miss waiting
    /// for another request's origin call on the same key.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        // An answer from an entry, made when polled: the future holds the
        // entry, not the response, so it stays small.
        Hit { entry: Option<Arc<Entry>>, now_ms: u64, head: bool, made: FromEntry },
        Forward {
            #[pin]
            future: F,
            plan: Option<OnResponse>,
        },
        Waiting { future: BoxFuture<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn hit(entry: Arc<Entry>, now_ms: u64, head: bool, made: FromEntry) -> Self {
        Self {
            state: State::Hit {
                entry: Some(entry),
                now_ms,
                head,
                made,
            },
        }
    }

    pub(crate) fn forward(future: F, plan: OnResponse) -> Self {
        Self {
            state: State::Forward {
                future,
                plan: Some(plan),
            },
        }
    }

    pub(crate) fn boxed(
        future: impl Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            state: State::Waiting {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Hit {
                entry,
                now_ms,
                head,
                made,
            } => {
                let entry = entry.take().expect("polled after completion");
                Poll::Ready(Ok(respond_hit(entry, *now_ms, *head, *made)))
            }
            StateProj::Waiting { future } => future.as_mut().poll(cx),
            StateProj::Forward { future, plan } => {
                let result = ready!(future.poll(cx));
                let plan = plan.take().expect("polled after completion");
                Poll::Ready(match (plan, result) {
                    (OnResponse::Bypass { reason, lean }, Ok(mut response)) => {
                        strip_extensions(&mut response);
                        if !lean {
                            add_status(&mut response, "bypass", Some(reason), false);
                        }
                        Ok(response.map(CacheBody::passthrough))
                    }
                    (OnResponse::Untouched, Ok(response)) => {
                        Ok(response.map(CacheBody::passthrough))
                    }
                    (OnResponse::Bypass { .. } | OnResponse::Untouched, Err(e)) => Err(e),
                    (OnResponse::Miss(miss), Ok(response)) => {
                        if miss.revalidating && response.status() == http::StatusCode::NOT_MODIFIED
                        {
                            return Poll::Ready(Ok(freshen(miss, response)));
                        }
                        if response.status().is_server_error() {
                            if let Some(stale) = usable_stale(&miss) {
                                return Poll::Ready(Ok(serve_stale(
                                    &miss,
                                    &stale,
                                    Some(response.status().as_u16()),
                                )));
                            }
                        }
                        Ok(finish_miss(miss, response))
                    }
                    (OnResponse::Miss(miss), Err(e)) => match usable_stale(&miss) {
                        Some(stale) => Ok(serve_stale(&miss, &stale, None)),
                        None => Err(e),
                    },
                })
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
