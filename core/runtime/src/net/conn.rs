//! The connection task: one per socket, moving bytes between the socket and the [`Session`] it is
//! bound to.
//!
//! Reads are readiness-then-read into the shard's shared read buffer (monoio's poll-io mode), so a
//! session that waits for input holds no buffer of its own; the session keeps bytes only for an
//! incomplete frame. Writes drain the session's bounded outbound queue whenever the socket takes
//! them. The task knows nothing of frames' meaning: it hands input to its [`ConnHost`] (the shard),
//! which runs the session state machine and the application.
//!
//! A task serves one [`Binding`] of its session. When the session is rebound to a newer socket
//! (a resume) or detaches, the binding is no longer current: the task stops at its next poll
//! without touching the session ([`Ended::Stale`]) and its socket is closed. When its own session
//! asks for the socket to go elsewhere (the socket carried a `Resume`), the task stops and hands
//! the socket back ([`Ended::HandOver`]).
//!
//! [`Session`]: lattice_wire::Session

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use lattice_wire::{Binding, CloseReason, StackConfig};
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::table::SessionCell;
use crate::telemetry::metrics::ShardMetrics;

/// Why a connection task stopped.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The session is closing (its queued output was flushed as far as the socket took it).
    Closing(CloseReason),
    /// The peer closed the socket (read returned 0).
    PeerClosed,
    /// A socket error.
    Failed(String),
    /// A resumable session's client does not read ([`lattice_wire::Session::send_overflowed`]).
    Overflowed,
    /// The task's binding is not the session's any more: the session was not touched.
    Stale,
    /// The session's socket goes to another session (it carried a `Resume`).
    HandOver,
}

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
    /// Runs `input` (just read by the socket of `binding`; layers may transform it in place;
    /// ciphertext on a TLS session) through the session and the application. An empty `input`
    /// runs input the session holds (pipelined HTTP requests).
    fn input(&self, cell: &Rc<SessionCell>, binding: Binding, input: &mut [u8]);
    /// Hands the application the reply frame an HTTP request was waiting for.
    fn rpc_reply(&self, cell: &Rc<SessionCell>);
    /// The task of `binding` stopped; the host decides what becomes of the session and of the
    /// socket (closed when dropped, or handed over).
    fn ended(
        self: &Rc<Self>,
        cell: &Rc<SessionCell>,
        binding: Binding,
        end: Ended,
        stream: TcpStreamPoll,
    );
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
    /// The session is closing and its socket does not take the rest of its output now: true while
    /// the task may wait for it (`session.close_linger_ms` from the first call; a timer wakes the
    /// task when it passes).
    fn may_linger(&self, cell: &Rc<SessionCell>) -> bool;
}

/// Registers a std socket with this shard's driver in poll-io mode.
pub(crate) fn register(stream: TcpStream) -> Result<TcpStreamPoll, String> {
    monoio::net::TcpStream::from_std(stream)
        .map_err(|e| e.to_string())
        .and_then(|s| s.into_poll_io().map_err(|e| e.to_string()))
}

/// How many reads of the shard's read buffer [`discard_unread`] does at most.
const DISCARD_READS: usize = 4;

/// Reads and drops input that arrived and was never read (at most [`DISCARD_READS`] reads of
/// `buf`, without waiting) so that closing the socket right after ends the stream with a FIN:
/// Linux answers the close of a socket with unread input with a reset, which can destroy the
/// server's last frames before the client reads them (a `Hello` sent during the shutdown drain,
/// when sessions read nothing, was answered with a reset instead of an end of stream).
pub(crate) fn discard_unread(stream: &TcpStreamPoll, buf: &mut [u8]) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    for _ in 0..DISCARD_READS {
        // SAFETY: `fd` is the open socket `stream` owns (borrowed for this call) and `buf` is
        // writable memory of `buf.len()` bytes; MSG_DONTWAIT makes the call return at once.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 || (n as usize) < buf.len() {
            break;
        }
    }
}

/// Takes a socket back from this shard's driver (deregistered, not closed) so another shard can
/// adopt it.
pub(crate) fn into_std(stream: TcpStreamPoll) -> Result<TcpStream, String> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let comp = stream
        .try_into_comp_io()
        .map_err(|(e, _)| format!("cannot leave poll-io mode: {e}"))?;
    // `into_raw_fd` deregisters the descriptor from this thread's driver and gives up ownership
    // without closing it.
    let fd = comp.into_raw_fd();
    // SAFETY: `fd` is an open TCP socket that nothing else owns: monoio released it just above
    // (deregistered, not closed) and we hand its only owner to the std type, which closes it on
    // drop. A dup would avoid this block but cost two system calls and a descriptor per handover.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Takes ownership of an accepted socket: registers the session (over TLS when its listener has
/// TLS) and spawns its task.
pub(crate) fn adopt<H: ConnHost>(
    host: &Rc<H>,
    stream: TcpStream,
    stack: &Arc<StackConfig>,
    tls: bool,
) -> Option<Rc<SessionCell>> {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "accepted socket already gone");
            host.not_adopted();
            return None;
        }
    };
    let poll_stream = match register(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot register accepted socket");
            host.not_adopted();
            return None;
        }
    };
    let Some(cell) = host.open(peer, stack, tls) else {
        host.not_adopted();
        return None;
    };
    let binding = cell.session.borrow().binding();
    spawn(host, cell.clone(), binding, poll_stream);
    Some(cell)
}

/// Spawns the task that serves `cell`'s binding `binding` with `stream`.
pub(crate) fn spawn<H: ConnHost>(
    host: &Rc<H>,
    cell: Rc<SessionCell>,
    binding: Binding,
    stream: TcpStreamPoll,
) {
    let mut conn = Conn {
        host: host.clone(),
        stream: Some(stream),
        cell,
        binding,
        half_closed: false,
    };
    monoio::spawn(async move {
        let end = (&mut conn).await;
        let Some(stream) = conn.stream.take() else {
            return;
        };
        conn.host.ended(&conn.cell, conn.binding, end, stream);
    });
}

struct Conn<H: ConnHost> {
    host: Rc<H>,
    /// Always `Some` while the task runs; taken when it ends.
    stream: Option<TcpStreamPoll>,
    cell: Rc<SessionCell>,
    binding: Binding,
    /// The session is closing and its output went out: the socket was shut down for writing
    /// (FIN after the last byte) and the task drains the peer's input until it closes its side.
    half_closed: bool,
}

enum Written {
    Drained,
    Blocked,
}

impl<H: ConnHost> Conn<H> {
    fn write_out(&mut self, cx: &mut Context<'_>) -> Result<Written, Ended> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Written::Drained);
        };
        loop {
            let mut s = self.cell.session.borrow_mut();
            let out = s.transmit(self.binding);
            if out.is_empty() {
                return Ok(Written::Drained);
            }
            match Pin::new(&mut *stream).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => return Err(Ended::Failed("socket wrote 0 bytes".into())),
                Poll::Ready(Ok(n)) => {
                    s.transmitted(self.binding, n);
                    ShardMetrics::add(&self.host.metrics().bytes_out_total, n as u64);
                }
                Poll::Ready(Err(e)) => return Err(Ended::Failed(e.to_string())),
                Poll::Pending => return Ok(Written::Blocked),
            }
        }
    }
}

impl<H: ConnHost> Conn<H> {
    /// A lingering close, once the closing session's output is out: shuts the socket down for
    /// writing (the peer reads everything, then end of stream), then reads and drops what the
    /// peer still sends until it closes its side, for as long as the session may linger
    /// (`session.close_linger_ms`; not while the server shuts down). Closing a socket with unread
    /// input makes the kernel send a reset instead, and a peer that is still writing then fails
    /// its write and may drop what it had not read yet: the answer, the close frame. Returns true
    /// while the task should wait for more input (its waker is registered).
    fn drain_before_close(&mut self, cx: &mut Context<'_>) -> bool {
        let host = self.host.clone();
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        if !self.half_closed {
            self.half_closed = true;
            if let Poll::Ready(Err(_)) = Pin::new(&mut *stream).poll_shutdown(cx) {
                return false;
            }
        }
        let mut buf = host.read_buf().borrow_mut();
        for _ in 0..host.reads_per_poll() {
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                // End of stream or an error: the peer is done.
                Poll::Ready(_) => return false,
                Poll::Pending => return !host.draining() && host.may_linger(&self.cell),
            }
        }
        // Still sending after a pass: come back once other sessions ran, while lingering lasts.
        if !host.draining() && host.may_linger(&self.cell) {
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }
}

impl<H: ConnHost> Future for Conn<H> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        let mut reads = 0;
        // A read that did not fill the buffer drained the socket: reading again at once would
        // almost always be an EAGAIN syscall. Yield first (replies were written above), so other
        // sessions run and more input can arrive.
        let mut short_read = false;
        loop {
            let current = this.cell.session.borrow().is_current(this.binding);
            if !current {
                // Rebound to a newer socket, or detached: this socket is done, the session is not.
                return Poll::Ready(Ended::Stale);
            }
            // Work the session holds without new bytes: a reply an HTTP request waited for,
            // then requests pipelined behind it (asked after the reply: answering one is what
            // lets the next be parsed).
            if this.cell.session.borrow().has_rpc_reply() {
                this.host.rpc_reply(&this.cell);
            }
            if this.cell.session.borrow().has_pending_input() {
                this.host.input(&this.cell, this.binding, &mut []);
            }
            let closing = this.cell.session.borrow().close_reason().cloned();
            if let Some(reason) = closing {
                // Flush what is queued (an error answer, the last replies, an HTTP status, a
                // WebSocket close frame) for a bounded time; a session closed for not reading gets
                // nothing more.
                if reason != CloseReason::SendBufferOverflow {
                    if let Ok(Written::Blocked) = this.write_out(cx) {
                        if this.host.may_linger(&this.cell) {
                            this.cell.set_waker(cx.waker().clone());
                            return Poll::Pending;
                        }
                    }
                }
                // Linger on every close but a failed socket: a session closed for not reading
                // (`send buffer overflow`) still has requests unread in the socket, and closing
                // on them would reset the connection and destroy the replies already written.
                let linger = !matches!(reason, CloseReason::Io(_));
                if linger && this.drain_before_close(cx) {
                    this.cell.set_waker(cx.waker().clone());
                    return Poll::Pending;
                }
                return Poll::Ready(Ended::Closing(reason));
            }
            if this.cell.has_handover() {
                return Poll::Ready(Ended::HandOver);
            }
            // The two ways a sequenced session's socket ends while the session goes on (it
            // detaches and keeps its frames for a resume), read under one borrow: its client
            // does not read (its queue passed the bound), or (WebSocket) its peer sent a close
            // frame, which ends the socket as if the peer had closed it.
            let (overflowed, peer_ended) = {
                let s = this.cell.session.borrow();
                (s.send_overflowed(), s.peer_ended())
            };
            if overflowed {
                return Poll::Ready(Ended::Overflowed);
            }
            if peer_ended {
                return Poll::Ready(Ended::PeerClosed);
            }
            let mut pending = this.cell.take_pending_input();
            if !pending.is_empty() {
                this.host.input(&this.cell, this.binding, &mut pending);
                continue;
            }
            if let Err(end) = this.write_out(cx) {
                return Poll::Ready(end);
            }
            if this.cell.session.borrow().is_closing() {
                // Writing the last of its output closed it (an HTTP 408 or a `Connection:
                // close` answer): the close above runs now, not at the next deadline.
                continue;
            }
            if this.cell.session.borrow().has_pending_input() {
                // The response before them is written now: pipelined HTTP requests go on.
                continue;
            }
            if this.host.draining() {
                break;
            }
            if !this.cell.session.borrow().wants_input() {
                // An HTTP request waits for its answer: read nothing more until it is sent (TCP
                // holds a pipelining client back). The answer wakes the task, unless it came
                // while this task ran (a handler on this shard answering a pipelined request
                // taken above): a wake then finds no waker to take, so look before parking.
                if this.cell.session.borrow().has_rpc_reply() {
                    continue;
                }
                break;
            }
            if reads >= this.host.reads_per_poll() || short_read {
                // Fairness: let other sessions run, come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(Ended::Stale);
            };
            let host = this.host.clone();
            let mut buf = host.read_buf().borrow_mut();
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(stream).poll_read(cx, &mut rb) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::Failed(e.to_string())),
                Poll::Ready(Ok(())) => {
                    reads += 1;
                    let n = rb.filled().len();
                    short_read = n < rb.capacity();
                    if n == 0 {
                        return Poll::Ready(Ended::PeerClosed);
                    }
                    ShardMetrics::add(&host.metrics().bytes_in_total, n as u64);
                    host.input(&this.cell, this.binding, &mut buf[..n]);
                }
            }
        }
        this.cell.set_waker(cx.waker().clone());
        Poll::Pending
    }
}
