//! The connection task: one per session, owning the socket and the decoder.
//!
//! Reads are readiness-then-read into the shard's shared read buffer (monoio's poll-io mode), so a
//! session that waits for input holds no buffer of its own; bytes are kept per session only for an
//! incomplete frame. Writes drain the session's bounded send buffer whenever the socket takes them.

use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::Decoder;
use super::session::{CloseReason, SessionShared};
use crate::runtime::shard::{guarded, new_session, ShardApp, ShardState};
use crate::telemetry::metrics::ShardMetrics;

/// Takes ownership of an accepted socket: registers the session and spawns its task.
pub(crate) fn adopt<A: ShardApp>(st: &Rc<ShardState<A>>, stream: TcpStream) {
    let cx = &st.cx;
    // The acceptor counted this socket as open on our shard; undo that if it never becomes a session.
    let signal_open = |_: isize| {
        cx.open_counter().fetch_sub(1, Ordering::Relaxed);
    };
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "accepted socket already gone");
            signal_open(-1);
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
            signal_open(-1);
            return;
        }
    };
    if cx.is_draining() {
        signal_open(-1);
        return;
    }
    let sess = new_session(st, peer);
    sess.last_seen.set(st.clock.borrow_mut().refresh());
    st.arm_idle_timer(&sess);
    let m = cx.m();
    ShardMetrics::add(&m.connections_accepted_total, 1);
    m.sessions_open
        .store(cx.session_count() as u64, Ordering::Relaxed);
    tracing::debug!(session = %sess.id, %peer, "session opened");
    guarded(st, "on_open", |app| app.on_open(cx, sess.id));
    let conn = Conn {
        st: st.clone(),
        stream: poll_stream,
        decoder: Decoder::new(cx.net.max_frame),
        sess,
    };
    monoio::spawn(async move {
        let st = conn.st.clone();
        let sess = conn.sess.clone();
        let reason = conn.await;
        finish(&st, &sess, reason);
    });
}

fn finish<A: ShardApp>(st: &Rc<ShardState<A>>, sess: &Rc<SessionShared>, reason: CloseReason) {
    let cx = &st.cx;
    cx.sessions.borrow_mut().remove(sess.id);
    if let Some(h) = sess.idle_timer.take() {
        st.wheel.borrow_mut().cancel(h);
    }
    cx.open_counter().fetch_sub(1, Ordering::Relaxed);
    let m = cx.m();
    m.sessions_open
        .store(cx.session_count() as u64, Ordering::Relaxed);
    let counter = match reason {
        CloseReason::PeerClosed => &m.sessions_closed_peer_total,
        CloseReason::Protocol(_) => &m.sessions_closed_protocol_total,
        CloseReason::SendBufferOverflow => &m.sessions_closed_send_overflow_total,
        CloseReason::Io(_) => &m.sessions_closed_io_total,
        CloseReason::App(_) => &m.sessions_closed_app_total,
        CloseReason::Shutdown => &m.sessions_closed_shutdown_total,
        CloseReason::IdleTimeout => &m.sessions_closed_idle_total,
    };
    ShardMetrics::add(counter, 1);
    match &reason {
        CloseReason::PeerClosed | CloseReason::Shutdown => {
            tracing::info!(session = %sess.id, peer = %sess.peer, %reason, "session closed")
        }
        _ => tracing::warn!(session = %sess.id, peer = %sess.peer, %reason, "session closed"),
    }
    guarded(st, "on_close", |app| app.on_close(cx, sess.id, &reason));
}

struct Conn<A: ShardApp> {
    st: Rc<ShardState<A>>,
    stream: TcpStreamPoll,
    decoder: Decoder,
    sess: Rc<SessionShared>,
}

enum WriteState {
    Drained,
    Blocked,
}

impl<A: ShardApp> Conn<A> {
    fn write_out(&mut self, cx: &mut Context<'_>) -> Result<WriteState, CloseReason> {
        let mut out = self.sess.out.borrow_mut();
        while out.unsent() > 0 {
            let start = out.written;
            match Pin::new(&mut self.stream).poll_write(cx, &out.bytes[start..]) {
                Poll::Ready(Ok(0)) => return Err(CloseReason::Io("socket wrote 0 bytes".into())),
                Poll::Ready(Ok(n)) => {
                    out.consume(n);
                    ShardMetrics::add(&self.st.cx.m().bytes_out_total, n as u64);
                }
                Poll::Ready(Err(e)) => return Err(CloseReason::Io(e.to_string())),
                Poll::Pending => return Ok(WriteState::Blocked),
            }
        }
        Ok(WriteState::Drained)
    }
}

impl<A: ShardApp> Future for Conn<A> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.get_mut();
        let mut reads = 0;
        // A read that did not fill the buffer drained the socket: reading again at once would
        // almost always be an EAGAIN syscall. Yield first (replies were written above), so other
        // sessions run and more input can arrive.
        let mut short_read = false;
        loop {
            let closing = this.sess.closing.borrow_mut().take();
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
            if this.st.cx.is_draining() {
                break;
            }
            if reads >= this.st.cx.net.reads_per_poll.max(1) || short_read {
                // Fairness: let other sessions run, come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let st = this.st.clone();
            let mut buf = st.read_buf.borrow_mut();
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut this.stream).poll_read(cx, &mut rb) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::Io(e.to_string())),
                Poll::Ready(Ok(())) => {
                    reads += 1;
                    let n = rb.filled().len();
                    short_read = n < rb.capacity();
                    if n == 0 {
                        return Poll::Ready(match this.decoder.finish() {
                            Ok(()) => CloseReason::PeerClosed,
                            Err(e) => CloseReason::Protocol(e.to_string()),
                        });
                    }
                    let m = st.cx.m();
                    ShardMetrics::add(&m.bytes_in_total, n as u64);
                    if st.idle_timeout.is_some() {
                        this.sess.last_seen.set(st.clock.borrow_mut().refresh());
                    }
                    let id = this.sess.id;
                    let sess = &this.sess;
                    let res = guarded(&st, "on_frame", |app| {
                        this.decoder.feed(&buf[..n], |frame| {
                            ShardMetrics::add(&m.frames_in_total, 1);
                            app.on_frame(&st.cx, id, frame);
                            sess.closing.borrow().is_none()
                        })
                    });
                    match res {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Poll::Ready(CloseReason::Protocol(e.to_string())),
                        None => return Poll::Ready(CloseReason::App("internal error".into())),
                    }
                }
            }
        }
        this.sess.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}
