//! A small HTTP/1.1 client on hyper: keep-alive connections to one
//! server, for checks and for filling caches with many distinct entries.

use std::io;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Conn {
    /// Connects to `127.0.0.1:port`. Call from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// When the connection or the handshake fails.
    pub async fn open(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: format!("127.0.0.1:{port}"),
        })
    }

    /// GETs `path` and reads the whole response.
    ///
    /// # Errors
    ///
    /// When the request fails or the connection breaks.
    pub async fn get(&mut self, path: &str) -> io::Result<Reply> {
        self.sender.ready().await.map_err(io::Error::other)?;
        let request = Request::get(path)
            .header(http::header::HOST, &self.host)
            .body(Empty::new())
            .map_err(io::Error::other)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A current-thread tokio runtime for the client side.
///
/// # Errors
///
/// When the runtime cannot be built.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// GETs `path(i)` for every `i` below `count`, each once, over `conns`
/// (keep-alive connections opened beforehand, so that opening them is not
/// part of what is measured), one request in flight per connection:
/// request `i` goes to connection `i % conns.len()`. `check` sees every
/// reply. Returns how many requests were made.
///
/// # Errors
///
/// When a request fails, or `check` rejects a reply.
pub async fn drive_on<F>(
    conns: Vec<Conn>,
    count: usize,
    path: impl Fn(usize) -> String + Clone + Send + 'static,
    check: F,
) -> io::Result<usize>
where
    F: Fn(&str, &Reply) -> io::Result<()> + Clone + Send + 'static,
{
    let n = conns.len().max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let path = path.clone();
        let check = check.clone();
        tasks.spawn(async move {
            let mut done = 0usize;
            let mut i = c;
            while i < count {
                let p = path(i);
                let reply = conn.get(&p).await?;
                check(&p, &reply)?;
                done += 1;
                i += n;
            }
            Ok::<_, io::Error>(done)
        });
    }
    let mut total = 0;
    while let Some(result) = tasks.join_next().await {
        total += result.map_err(io::Error::other)??;
    }
    Ok(total)
}
