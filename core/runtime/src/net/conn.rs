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
use std::sync::Arc;
use std::task::{Context, Poll};

use lattice_wire::{CloseReason, StackConfig};
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::table::SessionCell;
use crate::telemetry::metrics::ShardMetrics;

/// What a connection task needs from the shard that owns it.
pub(crate) trait ConnHost: 'static {
    /// Registers a session for a new connection from `peer` on a listener with protocol stack
    /// `stack` (over TLS when `tls`); `None` refuses it (draining).
    fn open(
        &self,
        peer: SocketAddr,
        stack: &Arc<StackConfig>,
        tls: bool,
    ) -> Option<Rc<SessionCell>>;
    /// Runs `input` (just read; layers may transform it in place; ciphertext on a TLS session)
    /// through the session and the application. An empty `input` runs input the session holds
    /// (pipelined HTTP requests).
    fn input(&self, cell: &Rc<SessionCell>, input: &mut [u8]);
    /// Hands the application the reply frame an HTTP request was waiting for.
    fn rpc_reply(&self, cell: &Rc<SessionCell>);
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

/// Takes ownership of an accepted socket: registers the session (over TLS when its listener has
/// TLS) and spawns its task.
pub(crate) fn adopt<H: ConnHost>(
    host: &Rc<H>,
    stream: TcpStream,
    stack: &Arc<StackConfig>,
    tls: bool,
) {
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
    let Some(cell) = host.open(peer, stack, tls) else {
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

impl<H: ConnHost> Conn<H> {
    /// Reads and drops what the peer already sent (bounded: `reads_per_poll` reads). Closing a
    /// socket with unread input makes the kernel send a reset, which can destroy what was just
    /// written (the answer to a bad request, a close frame) before the peer reads it.
    fn discard_input(&mut self, cx: &mut Context<'_>) {
        let host = self.host.clone();
        let mut buf = host.read_buf().borrow_mut();
        for _ in 0..host.reads_per_poll() {
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                _ => break,
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
            // Work the session holds without new bytes: a reply an HTTP request waited for,
            // requests pipelined behind an answered one.
            let (reply, pending) = {
                let s = this.cell.session.borrow();
                (s.has_rpc_reply(), s.has_pending_input())
            };
            if reply {
                this.host.rpc_reply(&this.cell);
            }
            if pending {
                this.host.input(&this.cell, &mut []);
            }
            let closing = this.cell.session.borrow().close_reason().cloned();
            if let Some(reason) = closing {
                // Best effort: flush what the socket takes now (e.g. an error frame, an HTTP
                // status, a WebSocket close frame), then close.
                if reason != CloseReason::SendBufferOverflow {
                    let _ = this.write_out(cx);
                }
                if !matches!(reason, CloseReason::Io(_)) {
                    this.discard_input(cx);
                }
                return Poll::Ready(reason);
            }
            if let Err(reason) = this.write_out(cx) {
                return Poll::Ready(reason);
            }
            if this.host.draining() {
                break;
            }
            if !this.cell.session.borrow().wants_input() {
                // An HTTP request waits for its answer: read nothing more until it is sent (TCP
                // holds a pipelining client back). The answer wakes the task.
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
                    host.input(&this.cell, &mut buf[..n]);
                }
            }
        }
        this.cell.set_waker(cx.waker().clone());
        Poll::Pending
    }
}
