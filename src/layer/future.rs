use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::service::{respond, respond_hit, Miss};
use super::CacheBody;
use crate::cache::stats::{Event, Reason};
use crate::headers;
use crate::store::Entry;

/// What to do with the inner service's response.
pub(crate) enum Plan {
    /// The cache was not consulted: pass the response through, saying why.
    Bypass(Reason),
    /// A miss: store the response if it may be stored.
    Miss(Box<Miss>),
    /// Not this layer's request (no rule): the response as it is.
    Untouched,
}

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

/// Which response a hit's future makes from its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Made {
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
        Hit { entry: Option<Arc<Entry>>, now_ms: u64, head: bool, made: Made },
        Forward {
            #[pin]
            future: F,
            plan: Option<Plan>,
        },
        Waiting { future: BoxFuture<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn hit(entry: Arc<Entry>, now_ms: u64, head: bool, made: Made) -> Self {
        Self {
            state: State::Hit {
                entry: Some(entry),
                now_ms,
                head,
                made,
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
    B: http_body::Body<Data = bytes::Bytes>,
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
                    (Plan::Bypass(reason), Ok(mut response)) => {
                        strip_extensions(&mut response);
                        add_status(&mut response, "bypass", Some(reason), false);
                        Ok(response.map(CacheBody::passthrough))
                    }
                    (Plan::Untouched, Ok(response)) => Ok(response.map(CacheBody::passthrough)),
                    (Plan::Bypass(_) | Plan::Untouched, Err(e)) => Err(e),
                    (Plan::Miss(miss), Ok(response)) => {
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
                    (Plan::Miss(miss), Err(e)) => match usable_stale(&miss) {
                        Some(stale) => Ok(serve_stale(&miss, &stale, None)),
                        None => Err(e),
                    },
                })
            }
        }
    }
}

/// The stale entry of a miss, if its stale-if-error window is still open.
fn usable_stale(miss: &Miss) -> Option<Arc<Entry>> {
    let stale = miss.stale.as_ref()?;
    (miss.cache.shared.clock.now_ms() < stale.grace_until_ms()).then(|| stale.clone())
}

/// Answers an origin failure with a stale entry (stale-if-error). The
/// leader's waiters, if any, go to the origin themselves.
fn serve_stale<B>(miss: &Miss, stale: &Entry, fwd_status: Option<u16>) -> Response<CacheBody<B>> {
    let shared = &miss.cache.shared;
    miss.cache.record(Some(&miss.route.stats), Event::Stale);
    tracing::debug!(key = %miss.key.full, outcome = "stale-if-error", fwd_status, "cache decision");
    let now_ms = shared.clock.now_ms();
    respond(
        stale,
        now_ms,
        miss.head,
        false,
        headers::stale_if_error(fwd_status),
    )
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

pub(crate) fn finish_miss<B>(miss: Box<Miss>, mut response: Response<B>) -> Response<CacheBody<B>>
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
        Err((mut miss, reason)) => {
            let cache = miss.cache.clone();
            cache.record(Some(&miss.route.stats), Event::Reason(reason));
            miss.span.record("reason", reason.as_str());
            tracing::debug!(parent: &miss.span, key = %miss.key.full, reason = reason.as_str(), "response not stored");
            if let Some(flight) = miss.flight.take() {
                cache.end_flight(flight, reason);
            }
            add_status(&mut response, "miss", Some(reason), false);
            response.map(CacheBody::passthrough)
        }
    }
}
