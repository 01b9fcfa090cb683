//! What the accept loop needs to know about each connection: whether it is idle (so it can give
//! way when the connection limit is reached) and how to close it without losing an early answer.
//!
//! * Idle shedding: every connection holds one of `max_connections` permits. Connections that
//!   sit open without sending anything would otherwise keep a fresh client waiting for a full
//!   header timeout per batch; when the accept loop finds no permit free it raises
//!   [`Pressure`], and every connection that has no request in flight and has not received a
//!   byte since its last answer (for at least [`IDLE_GRACE`]) closes itself.
//! * Lingering close: the daemon may answer before reading a request body (413 from
//!   `Content-Length`). Closing the socket at once would make the client's body write fail with
//!   a broken pipe before it reads the answer, so a closed connection's socket is drained (up to
//!   [`LINGER_TIME`] and [`LINGER_BYTES`], at most [`MAX_LINGERING`] sockets at once) first.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// How long a connection must have been idle before pressure closes it: a client that just
/// connected is about to send its request.
pub const IDLE_GRACE: Duration = Duration::from_millis(20);
/// How long a closed connection's socket is drained at most.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How many bytes a closed connection's socket is drained at most.
pub const LINGER_BYTES: u64 = 64 << 20;
/// How many sockets may linger at once; beyond that they close at once.
pub const MAX_LINGERING: usize = 256;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Raised by the accept loop while it waits for a free connection permit.
#[derive(Clone)]
pub struct Pressure(watch::Sender<u64>);

impl Pressure {
    pub fn new() -> Self {
        Self(watch::channel(0).0)
    }

    /// Asks idle connections to close.
    pub fn raise(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Whether a connection is busy, shared by its stream, its service and its task.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// A byte arrived since the last answer finished (a new request is being read).
    reading: AtomicBool,
    /// Milliseconds after `started` at which the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True when the connection may be closed without cutting a request short.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.reading.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.idle_since_ms.load(Ordering::Acquire))
                >= IDLE_GRACE.as_millis() as u64
    }

    /// Marks a request in flight until the returned guard (held by its answer's body) drops.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// A request in flight; dropped when its answer has been written (or abandoned).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Release);
        activity.reading.store(false, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wraps an answer's body so the request counts as in flight until it is fully written.
pub fn track_body(body: Body, in_flight: InFlight) -> Body {
    Body::new(TrackedBody {
        inner: body,
        _in_flight: in_flight,
    })
}

struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The accepted socket, noting reads in [`Activity`] and lingering when dropped.
pub struct TrackedStream<S: Stream> {
    inner: Option<S>,
    activity: Arc<Activity>,
}

/// What an accepted connection is: a Unix or a TCP stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

impl<S: Stream> TrackedStream<S> {
    pub fn new(stream: S, activity: Arc<Activity>) -> Self {
        Self {
            inner: Some(stream),
            activity,
        }
    }

    fn stream(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<S: Stream> AsyncRead for TrackedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let stream = match self.stream() {
            Ok(stream) => stream,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let result = Pin::new(stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reading.store(true, Ordering::Release);
        }
        result
    }
}

impl<S: Stream> AsyncWrite for TrackedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, data),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl<S: Stream> Drop for TrackedStream<S> {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER_TIME, drain(stream)).await;
            LINGERING.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads and discards until the client closes its side or [`LINGER_BYTES`] have been read.
/// Our side is shut for writing first, so the client sees the end of the answer.
async fn drain<S: Stream>(mut stream: S) {
    use tokio::io::AsyncWriteExt as _;
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    while total < LINGER_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
}
