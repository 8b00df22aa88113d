//! The transport edge: what bounds a peer before it has proved anything.
//!
//! - [`DeadlineBody`]: a request body must arrive whole within a deadline
//!   counted from its headers (not per chunk, so a trickle cannot stretch it).
//! - [`read_body`]: reads a body after the route checked its caller, within a
//!   size limit, mapping each failure to its status.
//! - [`Pending`]: the connections not yet answered or upgraded. Past a cap,
//!   the oldest is closed to make room, so peers that stall hold a bounded
//!   number of files and new clients (and `/healthz`) still get in.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Sleep;

/// A request body that fails once `deadline` passed before its end.
pub struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `inner`, which must end within `timeout` from now.
    pub fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

/// What every request goes through first: its body gets a deadline
/// ([`DeadlineBody`]), and a request that continues an Engine.IO session
/// (its query names a `sid`: a polling request or the upgrade to WebSocket)
/// releases its connection's [`Admission`]. That session is already counted
/// by the connection that opened it, until it authenticates or ends, and
/// the connections of an authenticated session must not be evicted.
pub fn on_request(req: axum::extract::Request, body_timeout: Duration) -> axum::extract::Request {
    let continues_session = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")));
    if continues_session {
        if let Some(admission) = req.extensions().get::<Arc<Admission>>() {
            admission.release();
        }
    }
    // A request with no body (a GET, the WebSocket upgrade) needs no timer.
    if req.body().is_end_stream() {
        return req;
    }
    req.map(|b| Body::new(DeadlineBody::new(b, body_timeout)))
}

/// The error of a body whose deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within its deadline")]
pub struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It did not arrive within [`crate::Config::body_timeout`].
    #[error("the request body did not arrive in time")]
    TimedOut,
    /// It is larger than the route accepts.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The connection failed while reading it.
    #[error("the request body could not be read")]
    Broken,
}

impl BodyError {
    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Broken => StatusCode::BAD_REQUEST,
        }
    }

    /// The error code of the answer's body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TimedOut => "request_timeout",
            Self::TooLarge(_) => "payload_too_large",
            Self::Broken => "invalid_payload",
        }
    }
}

/// Reads `body` whole, refusing more than `limit` bytes. Call it only after
/// the caller was authenticated: nothing is read before.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<BodyTimedOut>() {
                return BodyError::TimedOut;
            }
            if err.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge(limit);
            }
            source = err.source();
        }
        BodyError::Broken
    })
}

/// The connections of [`crate::serve`] whose peer has not authenticated yet
/// (from accept until a Socket.IO CONNECT with a valid token, or until they
/// close), oldest first, each with the sender that evicts it.
#[derive(Debug)]
pub struct Pending {
    cap: usize,
    inner: Mutex<PendingInner>,
}

#[derive(Debug, Default)]
struct PendingInner {
    next: u64,
    open: BTreeMap<u64, oneshot::Sender<()>>,
    evicted: u64,
}

/// One tracked connection. [`Admission::release`] (on authentication) or
/// dropping the last clone (the connection and its Socket.IO session are
/// gone) untracks it. `serve` puts it in every request's extensions, so the
/// Socket.IO session, which keeps its first request, holds it too.
#[derive(Debug)]
pub struct Admission {
    id: u64,
    pending: Arc<Pending>,
}

impl Admission {
    /// The peer authenticated: it no longer counts against the cap.
    pub fn release(&self) {
        self.pending.done(self.id);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.pending.done(self.id);
    }
}

impl Pending {
    /// A tracker keeping at most `cap` connections (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    /// The cap in force.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Tracks a new connection; at the cap, evicts the oldest first. The
    /// receiver resolves `Ok` when this connection is evicted in turn (and
    /// `Err` once it was released or closed).
    pub fn admit(self: &Arc<Self>) -> (Arc<Admission>, oneshot::Receiver<()>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.open.len() >= self.cap {
            if let Some((_, evict)) = inner.open.pop_first() {
                let _ = evict.send(());
                inner.evicted += 1;
            }
        }
        let id = inner.next;
        inner.next += 1;
        let (tx, rx) = oneshot::channel();
        inner.open.insert(id, tx);
        let admission = Admission {
            id,
            pending: self.clone(),
        };
        (Arc::new(admission), rx)
    }

    fn done(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.open.remove(&id);
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections evicted so far.
    pub fn evicted(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).evicted
    }
}

/// A TCP stream that fails its reads and writes once its connection was
/// evicted from [`Pending`], whatever holds it then (hyper, or the WebSocket
/// task after an upgrade), so the connection closes and its file is freed.
#[derive(Debug)]
pub struct Evictable {
    inner: tokio::net::TcpStream,
    evict: Option<oneshot::Receiver<()>>,
    evicted: bool,
}

impl Evictable {
    /// `inner`, closed when `evict` resolves `Ok`.
    pub fn new(inner: tokio::net::TcpStream, evict: oneshot::Receiver<()>) -> Self {
        Self {
            inner,
            evict: Some(evict),
            evicted: false,
        }
    }

    /// `Err` once evicted; polling also registers the task for the eviction.
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if let Some(evict) = &mut self.evict {
            match Pin::new(evict).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.evict = None;
                    self.evicted = true;
                }
                // Released (authenticated): no longer evictable.
                Poll::Ready(Err(_)) => self.evict = None,
                Poll::Pending => {}
            }
        }
        if self.evicted {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed to make room for newer connections",
            ));
        }
        Ok(())
    }
}

impl tokio::io::AsyncRead for Evictable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Evictable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose first bytes were already read (by the lean front, to see
/// whether the connection was its own): reads give those bytes back first,
/// then the stream's. Writes go straight to the stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, after `first` (bytes already read from it).
    pub fn new(first: Vec<u8>, inner: S) -> Self {
        Self {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The most pending connections the process's open-file limit leaves room
/// for: half of the soft limit, so sockets that did authenticate, Redis and
/// the listener always have files left.
pub fn pending_cap(configured: usize) -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) if soft != rlimit::INFINITY => {
            configured.min(usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1))
        }
        _ => configured,
    }
}

/// Copies the request's URI and header values out of hyper's read buffer.
/// hyper parses them without copying, so a request head that outlives its
/// request (a Socket.IO session keeps its first request's for its whole
/// life) would pin the connection's whole read buffer, 8 KiB per socket,
/// for a few hundred bytes of head.
pub fn detach_head<B>(req: &mut axum::http::Request<B>) {
    for value in req.headers_mut().values_mut() {
        if let Ok(mut copy) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    if let Ok(uri) = axum::http::Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_detached_head_no_longer_holds_the_read_buffer() {
        use axum::body::Bytes;
        use axum::http::{HeaderValue, Request, Uri};
        // What hyper does: the URI and header values are slices of the
        // connection's read buffer.
        let mut buf = b"/socket.io/?EIO=4&transport=websocket https://app.example".to_vec();
        buf.resize(8192, b' ');
        let buf = Bytes::from(buf);
        let uri = Uri::from_maybe_shared(buf.slice(0..37)).unwrap();
        let origin = HeaderValue::from_maybe_shared(buf.slice(38..57)).unwrap();
        let mut req = Request::builder().uri(uri).body(()).unwrap();
        req.headers_mut().insert("origin", origin);
        assert!(!buf.is_unique(), "the head shares the buffer");
        super::detach_head(&mut req);
        assert!(buf.is_unique(), "the head no longer holds the buffer");
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(req.headers()["origin"], "https://app.example");
    }

    use super::*;

    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let p = Arc::new(Pending::new(2));
        let (_a, mut a_evicted) = p.admit();
        let (b, _b_evicted) = p.admit();
        let (_c, mut c_evicted) = p.admit();
        assert_eq!(p.len(), 2);
        assert_eq!(p.evicted(), 1);
        assert!(a_evicted.try_recv().is_ok(), "the oldest goes");
        b.release();
        assert_eq!(p.len(), 1, "an authenticated peer no longer counts");
        drop(b);
        assert_eq!(p.len(), 1);
        assert!(c_evicted.try_recv().is_err(), "the newest stays");
        drop(_c);
        assert!(p.is_empty(), "a closed connection no longer counts");
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_its_deadline() {
        use futures_util::StreamExt;
        let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) });
        let stalled = first.chain(futures_util::stream::pending());
        let body = Body::new(DeadlineBody::new(
            Body::from_stream(stalled),
            Duration::from_millis(50),
        ));
        let err = read_body(body, 1024).await.err();
        assert!(matches!(err, Some(BodyError::TimedOut)), "{err:?}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let body = Body::from(vec![b'x'; 2048]);
        let err = read_body(body, 1024).await.err();
        assert!(matches!(err, Some(BodyError::TooLarge(1024))), "{err:?}");
    }
}
