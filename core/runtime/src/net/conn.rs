//! The connection task: one per session, moving bytes between its socket and its [`Session`].
//!
//! Reads are readiness-then-read into the shard's shared read buffer (monoio's poll-io mode), so a
//! session that waits for input holds no buffer of its own; the session keeps bytes only for an
//! incomplete frame. Writes drain the session's bounded outbound queue whenever the socket takes
//! them. The task knows nothing of frames' meaning: it hands input to its [`ConnHost`] (the shard),
//! which runs the session state machine and the application.
//!
//! [`Session`]: lattice_wire::Session

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use lattice_wire::CloseReason;
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::table::SessionCell;
use crate::telemetry::metrics::ShardMetrics;

/// What a connection task needs from the shard that owns it.
pub(crate) trait ConnHost: 'static {
    /// Registers a session for a new connection from `peer` (over TLS when `tls`); `None` refuses
    /// it (draining).
    fn open(&self, peer: SocketAddr, tls: bool) -> Option<Rc<SessionCell>>;
    /// Runs `input` (just read) through the session and the application.
    fn input(&self, cell: &Rc<SessionCell>, input: &[u8]);
    /// The session ended; the task is gone.
    fn closed(&self, cell: &Rc<SessionCell>, reason: CloseReason);
    /// The shard's read buffer, lent to one task at a time.
    fn read_buf(&self) -> &std::cell::RefCell<Box<[u8]>>;
    /// This shard's counters.
    fn metrics(&self) -> &ShardMetrics;
    /// True once shutdown began: stop reading, keep writing.
    fn draining(&self) -> bool;
    /// Reads one task may do before yielding (`net.reads_per_poll`).
    fn reads_per_poll(&self) -> usize;
    /// The acceptor counted this socket as open on our shard; undo that when it never becomes a
    /// session.
    fn not_adopted(&self);
}

/// Takes ownership of an accepted socket: registers the session (over TLS when it came from the
/// TLS listener) and spawns its task.
pub(crate) fn adopt<H: ConnHost>(host: &Rc<H>, stream: TcpStream, tls: bool) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "accepted socket already gone");
            host.not_adopted();
            return;
        }
    };
    let poll_stream = match monoio::net::TcpStream::from_std(stream)
        .map_err(|e| e.to_string())
        .and_then(|s| s.into_poll_io().map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot register accepted socket");
            host.not_adopted();
            return;
        }
    };
    let Some(cell) = host.open(peer, tls) else {
        host.not_adopted();
        return;
    };
    let conn = Conn {
        host: host.clone(),
        stream: poll_stream,
        cell,
    };
    monoio::spawn(async move {
        let host = conn.host.clone();
        let cell = conn.cell.clone();
        let reason = conn.await;
        host.closed(&cell, reason);
    });
}

struct Conn<H: ConnHost> {
    host: Rc<H>,
    stream: TcpStreamPoll,
    cell: Rc<SessionCell>,
}

enum Written {
    Drained,
    Blocked,
}

impl<H: ConnHost> Conn<H> {
    fn write_out(&mut self, cx: &mut Context<'_>) -> Result<Written, CloseReason> {
        loop {
            let mut s = self.cell.session.borrow_mut();
            let out = s.transmit();
            if out.is_empty() {
                return Ok(Written::Drained);
            }
            match Pin::new(&mut self.stream).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => return Err(CloseReason::Io("socket wrote 0 bytes".into())),
                Poll::Ready(Ok(n)) => {
                    s.transmitted(n);
                    ShardMetrics::add(&self.host.metrics().bytes_out_total, n as u64);
                }
                Poll::Ready(Err(e)) => return Err(CloseReason::Io(e.to_string())),
                Poll::Pending => return Ok(Written::Blocked),
            }
        }
    }
}

impl<H: ConnHost> Future for Conn<H> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.get_mut();
        let mut reads = 0;
        // A read that did not fill the buffer drained the socket: reading again at once would
        // almost always be an EAGAIN syscall. Yield first (replies were written above), so other
        // sessions run and more input can arrive.
        let mut short_read = false;
        loop {
            let closing = this.cell.session.borrow().close_reason().cloned();
            if let Some(reason) = closing {
                // Best effort: flush what the socket takes now (e.g. an error frame), then close.
                if reason != CloseReason::SendBufferOverflow {
                    let _ = this.write_out(cx);
                }
                return Poll::Ready(reason);
            }
            if let Err(reason) = this.write_out(cx) {
                return Poll::Ready(reason);
            }
            if this.host.draining() {
                break;
            }
            if reads >= this.host.reads_per_poll() || short_read {
                // Fairness: let other sessions run, come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let host = this.host.clone();
            let mut buf = host.read_buf().borrow_mut();
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut this.stream).poll_read(cx, &mut rb) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::Io(e.to_string())),
                Poll::Ready(Ok(())) => {
                    reads += 1;
                    let n = rb.filled().len();
                    short_read = n < rb.capacity();
                    if n == 0 {
                        return Poll::Ready(this.cell.session.borrow_mut().peer_closed());
                    }
                    ShardMetrics::add(&host.metrics().bytes_in_total, n as u64);
                    host.input(&this.cell, &buf[..n]);
                }
            }
        }
        this.cell.set_waker(cx.waker().clone());
        Poll::Pending
    }
}
