//! [`FlushBody`]: a successful write's response body, which flushes again
//! before the client can hold the whole response.
//!
//! A handler may commit while its body streams (an import that reports its
//! progress). A read that began between the flush on the response head and
//! that commit would store pre-write data after the only flush; so the
//! write's targets are flushed once more before its last byte is handed on
//! (the last data frame of a body of known length, its trailers, or its
//! end), and when the body is dropped before its end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::flush::{Flush, RemoteFlush};

pin_project! {
    /// The response body of [`InvalidateService`](super::InvalidateService):
    /// the inner body, passed through as it arrives; for a successful write
    /// whose body was still to come, its targets are flushed again before
    /// the body's end reaches the client.
    pub struct FlushBody<B: Body> {
        // `None` for the empty body of a strict write's 503.
        #[pin]
        inner: Option<B>,
        again: Again,
        // Bytes still to come, for a body of known length.
        remaining: Option<u64>,
        // A second flush on a network store, and the frame it holds back.
        pending: Option<RemoteFlush>,
        held: Option<Option<Result<Frame<B::Data>, B::Error>>>,
    }
}

/// The second flush, owed until the body ends; a body dropped before its
/// end fires it without waiting.
struct Again(Option<Box<Flush>>);

impl Drop for Again {
    fn drop(&mut self) {
        if let Some(flush) = self.0.take() {
            flush.fire_again_detached();
        }
    }
}

impl<B: Body> FlushBody<B> {
    /// A body with nothing owed.
    pub(crate) fn plain(inner: B) -> Self {
        Self::new(inner, None)
    }

    /// A body that flushes `flush`'s targets again before its end.
    pub(crate) fn again(inner: B, flush: Box<Flush>) -> Self {
        Self::new(inner, Some(flush))
    }

    /// No body at all (a strict write whose flush failed).
    pub(crate) fn empty() -> Self {
        Self {
            inner: None,
            again: Again(None),
            remaining: None,
            pending: None,
            held: None,
        }
    }

    fn new(inner: B, flush: Option<Box<Flush>>) -> Self {
        let remaining = inner.size_hint().exact();
        Self {
            inner: Some(inner),
            again: Again(flush),
            remaining,
            pending: None,
            held: None,
        }
    }
}

impl<B: Body> std::fmt::Debug for FlushBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushBody")
            .field("flush_owed", &self.again.0.is_some())
            .finish()
    }
}

impl<B: Body> Body for FlushBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(pending) = this.pending {
            ready!(pending.as_mut().poll(cx));
            *this.pending = None;
            return Poll::Ready(this.held.take().expect("a frame is held"));
        }
        let Some(mut inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(inner.as_mut().poll_frame(cx));
        if this.again.0.is_none() {
            return Poll::Ready(frame);
        }
        let last = match &frame {
            // The end, trailers (the last frame), or an error.
            None | Some(Err(_)) => true,
            Some(Ok(f)) => match f.data_ref() {
                None => true,
                Some(data) => {
                    let len = bytes::Buf::remaining(data) as u64;
                    if let Some(left) = this.remaining {
                        *left = left.saturating_sub(len);
                    }
                    *this.remaining == Some(0) || inner.is_end_stream()
                }
            },
        };
        if !last {
            return Poll::Ready(frame);
        }
        let flush = this.again.0.take().expect("checked above");
        match flush.fire_again() {
            None => Poll::Ready(frame),
            Some(mut remote) => {
                if remote.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(frame);
                }
                *this.pending = Some(remote);
                *this.held = Some(frame);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not ended while a flush is owed or under way: the end is where
        // it is recorded.
        self.again.0.is_none()
            && self.pending.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
