use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::FlushBody;
use super::flush::{Flush, RemoteFlush};

pin_project! {
    /// The response future of [`InvalidateService`](super::InvalidateService).
    pub struct ResponseFuture<F: Future> {
        #[pin]
        future: F,
        flush: Option<Box<Flush>>,
        // A flush on a network store, and the response it holds back.
        pending: Option<RemoteFlush>,
        held: Option<F::Output>,
        // The flush owed again when the held response's body ends.
        again: Option<Box<Flush>>,
        // Whether a write whose flush failed is answered 503.
        strict: bool,
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn new(future: F, flush: Option<Box<Flush>>) -> Self {
        Self {
            future,
            flush,
            pending: None,
            held: None,
            again: None,
            strict: false,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<FlushBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(pending) = this.pending {
            let recorded = ready!(pending.as_mut().poll(cx));
            *this.pending = None;
            let result = this.held.take().expect("polled after completion");
            let again = this.again.take();
            if !recorded && *this.strict {
                return Poll::Ready(result.map(|_| refused()));
            }
            return Poll::Ready(wrap(result, again));
        }
        let result = ready!(this.future.poll(cx));
        let Some(mut flush) = this.flush.take() else {
            return Poll::Ready(wrap(result, None));
        };
        let response = match &result {
            Ok(response) if (flush.rules.when)(response.status()) => response,
            _ => return Poll::Ready(wrap(result, None)),
        };
        flush.resolve(response.headers());
        *this.strict = flush.rules.strict;
        let pending = flush.fire();
        // A body still to come may be written while it streams: flush
        // again before its end reaches the client.
        let again = (!response.body().is_end_stream()).then_some(flush);
        if let Some(mut pending) = pending {
            match pending.as_mut().poll(cx) {
                Poll::Pending => {
                    *this.pending = Some(pending);
                    *this.held = Some(result);
                    *this.again = again;
                    return Poll::Pending;
                }
                Poll::Ready(false) if *this.strict => {
                    return Poll::Ready(result.map(|_| refused()));
                }
                Poll::Ready(_) => {}
            }
        }
        Poll::Ready(wrap(result, again))
    }
}

/// What a strict write whose flush the store did not record is answered:
/// a 503 saying to try again, its own response dropped.
fn refused<B: Body>() -> Response<FlushBody<B>> {
    let mut response = Response::new(FlushBody::empty());
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

/// The response with its body wrapped, owing `again` when it ends.
fn wrap<B: Body, E>(
    result: Result<Response<B>, E>,
    again: Option<Box<Flush>>,
) -> Result<Response<FlushBody<B>>, E> {
    result.map(|response| match again {
        Some(flush) => response.map(|body| FlushBody::again(body, flush)),
        None => response.map(FlushBody::plain),
    })
}
