use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::miss::PendingStore;
use crate::cache::stats::Reason;

pin_project! {
    /// The body of a response that went through [`CacheService`](super::CacheService):
    /// the stored bytes of a hit, or the inner body, passed through as it
    /// arrives (and copied, when the response is being stored).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        // The body of a HEAD answered from an entry: nothing to send, and
        // no size of its own, so that what stands outside the cache (a
        // compression layer) judges it by its `Content-Length`, the full
        // representation's, as it judges a GET's body.
        Head,
        Inner {
            #[pin]
            inner: B,
            tee: Option<Box<Tee>>,
        },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Stored { data: None },
        }
    }

    /// The body of a HEAD answered from an entry.
    pub(crate) fn head() -> Self {
        Self { kind: Kind::Head }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            kind: Kind::Inner { inner, tee: None },
        }
    }

    pub(crate) fn tee(inner: B, pending: Box<PendingStore>, limit: usize) -> Self {
        let tee = Tee {
            pending: Some(pending),
            buf: Vec::new(),
            len: 0,
            limit,
        };
        Self {
            kind: Kind::Inner {
                inner,
                tee: Some(Box::new(tee)),
            },
        }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Stored { data } => f
                .debug_struct("CacheBody::Stored")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Head => f.debug_struct("CacheBody::Head").finish(),
            Kind::Inner { tee, .. } => f
                .debug_struct("CacheBody::Inner")
                .field("copying", &tee.is_some())
                .finish(),
        }
    }
}

/// The copy of a body on its way to the store.
pub(crate) struct Tee {
    pending: Option<Box<PendingStore>>,
    buf: Vec<Bytes>,
    len: usize,
    limit: usize,
}

impl Tee {
    fn push(&mut self, chunk: &Bytes) -> bool {
        if self.len + chunk.len() > self.limit {
            self.abandon(Reason::TooLarge);
            return false;
        }
        self.len += chunk.len();
        if !chunk.is_empty() {
            self.buf.push(chunk.clone());
        }
        true
    }

    fn abandon(&mut self, reason: Reason) {
        if let Some(pending) = self.pending.take() {
            pending.not_stored(reason);
        }
        self.buf.clear();
    }

    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            // One owned buffer of exactly the body's size: the entry must
            // not keep the connection's or the handler's buffers alive.
            let body = match self.buf.len() {
                0 => Bytes::new(),
                _ => {
                    let mut out = BytesMut::with_capacity(self.len);
                    for chunk in self.buf.drain(..) {
                        out.extend_from_slice(&chunk);
                    }
                    out.freeze()
                }
            };
            pending.store(body);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // The body was dropped before its end (the client went away).
        self.abandon(Reason::Incomplete);
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Head => Poll::Ready(None),
            KindProj::Inner { mut inner, tee } => {
                let frame = ready!(inner.as_mut().poll_frame(cx));
                if let Some(t) = tee.as_mut() {
                    match &frame {
                        Some(Ok(f)) => match f.data_ref() {
                            Some(chunk) => {
                                if !t.push(chunk) {
                                    *tee = None;
                                } else if inner.is_end_stream() {
                                    // hyper stops polling once a body says
                                    // it has ended: store now.
                                    t.finish();
                                    *tee = None;
                                }
                            }
                            None => {
                                t.abandon(Reason::Trailers);
                                *tee = None;
                            }
                        },
                        Some(Err(_)) => {
                            t.abandon(Reason::BodyError);
                            *tee = None;
                        }
                        None => {
                            t.finish();
                            *tee = None;
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Head => false,
            Kind::Inner { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Head => SizeHint::default(),
            Kind::Inner { inner, .. } => inner.size_hint(),
        }
    }
}
