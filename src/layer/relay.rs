//! Read-ahead for a coalesced miss: the leader's response body is read
//! from the origin by a task of its own, at the origin's pace, into the
//! entry being stored and a queue its client reads from at its own pace.
//! Waiters wait for the entry, so they never wait for a slow client; the
//! client still gets every frame, in order, and the origin's error if its
//! body fails.
//!
//! Bounded: while the body is being copied for the store, the queue holds
//! the same chunks as the copy (shared `Bytes`, at most the body limit);
//! once the copy is given up (over the limit, trailers), the task reads at
//! most [`WINDOW`] bytes ahead of the client. A client that goes away
//! leaves the task to finish the entry for the waiters, for at most the
//! coalescing timeout; the queue is dropped at once.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::Tee;

/// How far the task reads ahead of its client once nothing is stored.
pub(crate) const WINDOW: usize = 64 * 1024;

/// The origin body's error, its type erased (so that the client's side
/// needs no bound on the body type); [`CacheBody`](super::CacheBody), which
/// knows the type, takes it back.
pub(crate) type AnyError = Box<dyn Any + Send>;

struct Queue {
    frames: VecDeque<Result<Frame<Bytes>, AnyError>>,
    /// Data bytes in `frames`.
    bytes: usize,
    /// The origin's body has ended (or failed): nothing more will come.
    ended: bool,
    /// The client's body was dropped.
    gone: bool,
    /// Whether the body is still copied for the store.
    storing: bool,
    client: Option<Waker>,
    task: Option<Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    gone: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's side: the frames the task has read, in order.
pub(crate) struct Relayed {
    shared: Arc<Shared>,
    /// The origin body's size hint, less what the client has read.
    hint: SizeHint,
}

/// Starts the task that reads `inner` into `tee` and the queue, and
/// returns the client's side; `Err` gives both back when there is no
/// runtime to run the task on.
pub(crate) fn start<B>(inner: B, tee: Box<Tee>, linger: Duration) -> Result<Relayed, (B, Box<Tee>)>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Err((inner, tee));
    };
    let hint = inner.size_hint();
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            ended: false,
            gone: false,
            storing: true,
            client: None,
            task: None,
        }),
        gone: tokio::sync::Notify::new(),
    });
    let mut pump = Pump {
        inner: Box::pin(inner),
        tee: Some(tee),
        shared: shared.clone(),
    };
    // What the origin has ready is read now, before the head goes out, so
    // that the server writes the head and the first frames together: a
    // head flushed alone, then a small body from another task, is the
    // pattern Nagle's algorithm holds back for the client's delayed ACK
    // (about 40 ms per miss on a keep-alive connection without
    // TCP_NODELAY). A body that is all ready needs no task at all.
    if pump
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
    {
        return Ok(Relayed { shared, hint });
    }
    let task = shared.clone();
    runtime.spawn(async move {
        let linger = std::pin::pin!(async {
            task.gone.notified().await;
            tokio::time::sleep(linger).await;
        });
        let mut linger = linger;
        // Whichever ends first: the body, or the client's absence.
        std::future::poll_fn(|cx| match pump.poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => linger.as_mut().poll(cx),
        })
        .await;
    });
    Ok(Relayed { shared, hint })
}

/// The task's state: the origin's body and the copy for the store.
struct Pump<B> {
    inner: Pin<Box<B>>,
    tee: Option<Box<Tee>>,
    shared: Arc<Shared>,
}

impl<B> Pump<B>
where
    B: Body<Data = Bytes>,
    B::Error: Send + 'static,
{
    /// Reads frames until the body ends, the client is gone with nothing
    /// left to store, or the client is a window behind.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            {
                let mut queue = self.shared.lock();
                queue.storing = self.tee.is_some();
                if queue.gone && self.tee.is_none() {
                    return Poll::Ready(());
                }
                if self.tee.is_none() && queue.bytes >= WINDOW {
                    queue.task = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            let frame = match self.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let ended = match &frame {
                Some(Ok(f)) => match (f.data_ref(), self.tee.as_mut()) {
                    (Some(chunk), Some(tee)) => {
                        if !tee.push(chunk) {
                            self.tee = None;
                            false
                        } else if self.inner.is_end_stream() {
                            // Stored now: the body says it has ended.
                            tee.finish();
                            self.tee = None;
                            true
                        } else {
                            false
                        }
                    }
                    (Some(_), None) => self.inner.is_end_stream(),
                    (None, tee) => {
                        if let Some(tee) = tee {
                            tee.abandon(crate::cache::stats::Reason::Trailers);
                        }
                        self.tee = None;
                        self.inner.is_end_stream()
                    }
                },
                Some(Err(_)) => {
                    if let Some(tee) = self.tee.as_mut() {
                        tee.abandon(crate::cache::stats::Reason::BodyError);
                    }
                    self.tee = None;
                    true
                }
                None => {
                    if let Some(tee) = self.tee.as_mut() {
                        tee.finish();
                    }
                    self.tee = None;
                    true
                }
            };
            let mut queue = self.shared.lock();
            if let Some(frame) = frame {
                let frame = frame.map_err(|e| Box::new(e) as AnyError);
                if !queue.gone {
                    if let Ok(data) = &frame {
                        queue.bytes += data.data_ref().map_or(0, Bytes::len);
                    }
                    queue.frames.push_back(frame);
                }
            }
            queue.ended |= ended;
            if let Some(client) = queue.client.take() {
                client.wake();
            }
            if ended {
                return Poll::Ready(());
            }
        }
    }
}

impl Relayed {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AnyError>>> {
        let mut queue = self.shared.lock();
        match queue.frames.pop_front() {
            Some(frame) => {
                if let Ok(data) = &frame {
                    let n = data.data_ref().map_or(0, Bytes::len);
                    queue.bytes -= n;
                    self.hint = less(&self.hint, n as u64);
                }
                if !queue.storing && queue.bytes < WINDOW {
                    if let Some(task) = queue.task.take() {
                        task.wake();
                    }
                }
                Poll::Ready(Some(frame))
            }
            None if queue.ended => Poll::Ready(None),
            None => {
                queue.client = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        let queue = self.shared.lock();
        queue.ended && queue.frames.is_empty()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// A size hint less `n` bytes read.
fn less(hint: &SizeHint, n: u64) -> SizeHint {
    let mut out = SizeHint::new();
    out.set_lower(hint.lower().saturating_sub(n));
    if let Some(upper) = hint.upper() {
        out.set_upper(upper.saturating_sub(n));
    }
    out
}

impl Drop for Relayed {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.gone = true;
        queue.frames.clear();
        queue.bytes = 0;
        if let Some(task) = queue.task.take() {
            task.wake();
        }
        drop(queue);
        self.shared.gone.notify_one();
    }
}
