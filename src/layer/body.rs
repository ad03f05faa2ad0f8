use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::miss::PendingStore;
use super::relay::{self, Relayed};
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
        // A leader's body, read ahead by a task of its own.
        Relayed { relay: Relayed },
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
        Self {
            kind: Kind::Inner {
                inner,
                tee: Some(Tee::new(pending, limit)),
            },
        }
    }

    /// A leader's body: read from the origin by a task of its own (when
    /// there is a runtime to run it on), copied for the store as it comes,
    /// and queued for the client.
    pub(crate) fn read_ahead(
        inner: B,
        pending: Box<PendingStore>,
        limit: usize,
        linger: std::time::Duration,
    ) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Send + 'static,
    {
        let kind = match relay::start(inner, Tee::new(pending, limit), linger) {
            Ok(relay) => Kind::Relayed { relay },
            Err((inner, tee)) => Kind::Inner {
                inner,
                tee: Some(tee),
            },
        };
        Self { kind }
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
            Kind::Relayed { .. } => f.debug_struct("CacheBody::Relayed").finish(),
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
    fn new(pending: Box<PendingStore>, limit: usize) -> Box<Self> {
        Box::new(Tee {
            pending: Some(pending),
            buf: Vec::new(),
            len: 0,
            limit,
        })
    }

    pub(crate) fn push(&mut self, chunk: &Bytes) -> bool {
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

    pub(crate) fn abandon(&mut self, reason: Reason) {
        if let Some(pending) = self.pending.take() {
            pending.not_stored(reason);
        }
        self.buf.clear();
    }

    pub(crate) fn finish(&mut self) {
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
            let _ = pending.store(body);
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
    B::Error: 'static,
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
            KindProj::Relayed { relay } => {
                let frame = ready!(relay.poll_frame(cx));
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| match e.downcast::<B::Error>() {
                        Ok(e) => *e,
                        Err(_) => unreachable!("a relay carries its own body's error"),
                    })
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Head => false,
            Kind::Inner { inner, .. } => inner.is_end_stream(),
            Kind::Relayed { relay } => relay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Head => SizeHint::default(),
            Kind::Inner { inner, .. } => inner.size_hint(),
            Kind::Relayed { relay } => relay.size_hint(),
        }
    }
}

/// The length a response declares for its body: its `Content-Length`
/// (every value the same number), else its body's exact size hint.
/// `Err` when the two disagree or `Content-Length` cannot be read.
pub(crate) fn declared_length<B: http_body::Body>(
    response: &http::Response<B>,
) -> Result<Option<u64>, ()> {
    let mut declared = None;
    for value in response.headers().get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(())?;
        if declared.replace(n).is_some_and(|d| d != n) {
            return Err(());
        }
    }
    let exact = response.body().size_hint().exact();
    match (declared, exact) {
        (Some(d), Some(e)) if d != e => Err(()),
        (Some(d), _) => Ok(Some(d)),
        (None, e) => Ok(e),
    }
}
