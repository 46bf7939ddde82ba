//! A seeded, deterministic simulation of resumable sessions: no sockets, no clock.
//!
//! Each schedule runs one client (written from docs/PROTOCOL.md, "Resume") against the real
//! [`Session`] driven the way the runtime drives it, over simulated sockets: byte pipes with a
//! bounded buffer that deliver in arbitrary chunks and can be cut at any byte. Random schedules
//! mix requests and server pushes with cuts, late noticing of cuts on either side, idle timeouts
//! racing quick reconnects, duplicate reconnects while the old socket still works, stale sockets
//! whose late reads, writes and ends reach the server after a rebind, `Resumed` answers lost with
//! their socket, evictions from small replay buffers, and timers fired late or early.
//!
//! Invariants, checked during and at the end of every schedule:
//! - **server → client**: within one session, the client gets the application's frames exactly
//!   once and in order; a gap is allowed only where the client was told to resynchronise
//!   (`Resumed.resync`) or the session was lost (its `Resume` rejected because the session had
//!   closed); after the schedule quiesces, everything sent since then has arrived;
//! - **client → server**: within one session the application handles the client's requests
//!   exactly once and in order, and after quiescing all of them;
//! - a `Resume` from the client is never rejected while its session is open (no bad token, no
//!   bad seq), and a session only closes by its resume window passing (or, never in these
//!   schedules, a protocol error, which fails the run);
//! - a stale socket's read, write or end changes nothing in the session;
//! - the replay buffer stays within its bounds.
//!
//! `LATTICE_SIM_SCHEDULES` (default 10,000) and `LATTICE_SIM_SEED` (first seed, default 1) set
//! the run; a failure names its seed, and `LATTICE_SIM_SEED=<seed> LATTICE_SIM_SCHEDULES=1`
//! replays it.

use std::collections::VecDeque;
use std::time::Duration;

use lattice_wire::frame::{encode_into, encode_seq_into, Decoder, FrameHeader};
use lattice_wire::{
    Binding, Input, MonoTime, ResumeLimits, Session, SessionId, SessionLimits, SessionRates,
    SocketEnd, ACK_OPCODE, RESUMED_OPCODE, RESUME_OPCODE, TOKEN_LEN,
};

const REQ: u16 = 100;
const REPLY: u16 = 101;
const PUSH: u16 = 102;
const REJECT: u16 = 103;
const MS: u64 = 1_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn token(&mut self) -> [u8; TOKEN_LEN] {
        let mut t = [0; TOKEN_LEN];
        for b in t.iter_mut() {
            *b = self.next() as u8;
        }
        t
    }
}

/// One direction of a socket.
#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    /// The writer closed it: the reader gets what is buffered, then EOF.
    fin: bool,
}

/// A simulated TCP connection.
struct Socket {
    c2s: Pipe,
    s2c: Pipe,
    /// Cut by the network: buffered bytes are gone, writes vanish, nothing more arrives.
    cut: bool,
    /// The server's binding for it, once bound: (incarnation of its session, binding). A socket
    /// serves one session; a binding of an earlier session means nothing to a later one.
    binding: Option<(u32, Binding)>,
    /// The server is done with it (closed or noticed it dead).
    server_done: bool,
    /// The client is done with it.
    client_done: bool,
    /// The server's decoder before the socket is bound (it waits for `Resume`).
    pre: Decoder,
    /// The client's decoder.
    client_dec: Decoder,
}

impl Socket {
    fn new(max_frame: u32) -> Socket {
        Socket {
            c2s: Pipe::default(),
            s2c: Pipe::default(),
            cut: false,
            binding: None,
            server_done: false,
            client_done: false,
            pre: Decoder::new(max_frame),
            client_dec: Decoder::new(max_frame),
        }
    }
}

/// What the client saw, in order; each names its incarnation (the client's count of sessions).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// An application frame: (incarnation, app id).
    Frame(u32, u64),
    /// `Resumed` with resync: frames sent before it may be missing.
    Resync(u32),
    /// The session was lost (its `Resume` rejected); a new one starts.
    Lost(u32),
}

struct Server {
    incarnation: u32,
    session: Session,
    /// App ids sent (accepted by the session) this incarnation, in order.
    sent: Vec<u64>,
    /// Request numbers handled this incarnation, in order.
    handled: Vec<u64>,
    next_app_id: u64,
    limits: SessionLimits,
}

struct Client {
    incarnation: u32,
    session_id: u64,
    token: [u8; TOKEN_LEN],
    sock: usize,
    awaiting_resumed: bool,
    last_recv: u32,
    last_sent: u32,
    acked_sent: u32,
    unacked: Vec<(u32, Vec<u8>)>,
    next_req: u64,
    ack_due: Option<u64>,
    seen: Vec<Seen>,
    /// Request numbers sent this incarnation.
    requested: Vec<u64>,
    /// The attempt number of the last `Resume`.
    attempt: u32,
    /// Resends every unacknowledged frame after a resume, not only those the server lacks.
    lazy: bool,
}

struct Sim {
    rng: Rng,
    /// `LATTICE_SIM_TRACE=1`: print every event (for replaying one seed).
    trace: bool,
    now: u64,
    sockets: Vec<Socket>,
    server: Server,
    client: Client,
    max_frame: u32,
    pipe_cap: usize,
    /// Per finished incarnation: (app ids sent, requests handled, requests sent).
    history: Vec<(Vec<u64>, Vec<u64>, Vec<u64>)>,
    stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    resumes: u64,
    resyncs: u64,
    lost: u64,
    stale_events: u64,
    duplicates: u64,
    cuts: u64,
    idle_detaches: u64,
    /// Resume attempts refused on sockets the client had given up.
    stale_attempts: u64,
}

fn app_frame(op: u16, id: u64, extra: u64) -> Vec<u8> {
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&extra.to_le_bytes());
    let mut f = Vec::new();
    encode_into(&mut f, op, 0, 0, &body);
    f
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace {
            eprintln!("[{:>8.3} ms] {}", $sim.now as f64 / 1e6, format!($($arg)*));
        }
    };
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let max_frame = 256;
        let limits = SessionLimits {
            max_frame,
            send_buffer_limit: 1 << 20,
            internal_send_buffer_limit: 1 << 20,
            idle_timeout: Some(Duration::from_millis(20 + rng.below(60))),
            hello_timeout: None,
            resume: ResumeLimits {
                window: Duration::from_millis(30 + rng.below(300)),
                max_frames: 1 + rng.below(40) as usize,
                max_bytes: 64 + rng.below(2000) as usize,
                ack_delay: Duration::from_millis(1 + rng.below(15)),
            },
            rates: SessionRates::UNLIMITED,
        };
        let pipe_cap = 24 + rng.below(400) as usize;
        let lazy = rng.chance(30);
        let mut sim = Sim {
            trace: std::env::var("LATTICE_SIM_TRACE").is_ok(),
            now: 1_000 * MS,
            sockets: Vec::new(),
            server: Server {
                incarnation: 0,
                session: Session::new(SessionId::new(0, 0, 0), limits, MonoTime(0)),
                sent: Vec::new(),
                handled: Vec::new(),
                next_app_id: 1,
                limits,
            },
            client: Client {
                incarnation: 0,
                session_id: 0,
                token: [0; TOKEN_LEN],
                sock: 0,
                awaiting_resumed: false,
                last_recv: 0,
                last_sent: 0,
                acked_sent: 0,
                unacked: Vec::new(),
                next_req: 1,
                ack_due: None,
                seen: Vec::new(),
                requested: Vec::new(),
                attempt: 0,
                lazy: false,
            },
            rng,
            max_frame,
            pipe_cap,
            history: Vec::new(),
            stats: Stats::default(),
        };
        sim.client.lazy = lazy;
        sim.new_session();
        sim
    }

    /// `Hello`/`Welcome` as one step: a new session bound to a new socket, the client knows it.
    fn new_session(&mut self) {
        let inc = self.server.incarnation + 1;
        let token = self.rng.token();
        let id = SessionId::new(0, inc, 0);
        let mut s = Session::new(id, self.server.limits, MonoTime(self.now));
        s.hello_accepted(MonoTime(self.now));
        s.enable_resume(token);
        let old = std::mem::replace(&mut self.server.session, s);
        if inc > 1 {
            assert!(old.is_closing(), "a new session only replaces a closed one");
            self.history.push((
                std::mem::take(&mut self.server.sent),
                std::mem::take(&mut self.server.handled),
                std::mem::take(&mut self.client.requested),
            ));
        }
        self.server.incarnation = inc;
        let mut sock = Socket::new(self.max_frame);
        sock.binding = Some((inc, self.server.session.binding()));
        self.sockets.push(sock);
        let c = &mut self.client;
        c.incarnation = inc;
        c.session_id = id.as_u64();
        c.token = token;
        c.sock = self.sockets.len() - 1;
        c.awaiting_resumed = false;
        c.last_recv = 0;
        c.last_sent = 0;
        c.acked_sent = 0;
        c.unacked.clear();
        c.next_req = 1;
        c.ack_due = None;
        c.attempt = 0;
    }

    fn t(&self) -> MonoTime {
        MonoTime(self.now)
    }

    // ---- network ----

    fn write(&mut self, sock: usize, to_server: bool, bytes: &[u8]) -> usize {
        let cap = self.pipe_cap;
        let s = &mut self.sockets[sock];
        if s.cut {
            return bytes.len(); // the kernel took it; the network lost it
        }
        let p = if to_server { &mut s.c2s } else { &mut s.s2c };
        if p.fin {
            return bytes.len();
        }
        let n = bytes.len().min(cap.saturating_sub(p.buf.len()));
        p.buf.extend(&bytes[..n]);
        n
    }

    /// Some bytes of a pipe: `None` at EOF, `Some(empty)` when nothing is there now.
    fn read(&mut self, sock: usize, to_server: bool, max: usize) -> Option<Vec<u8>> {
        let s = &mut self.sockets[sock];
        if s.cut {
            return Some(Vec::new());
        }
        let p = if to_server { &mut s.c2s } else { &mut s.s2c };
        if p.buf.is_empty() {
            return if p.fin { None } else { Some(Vec::new()) };
        }
        let n = max.min(p.buf.len());
        Some(p.buf.drain(..n).collect())
    }

    fn cut(&mut self, sock: usize) {
        trace!(self, "cut socket {sock}");
        let s = &mut self.sockets[sock];
        if !s.cut {
            s.cut = true;
            s.c2s.buf.clear();
            s.s2c.buf.clear();
            self.stats.cuts += 1;
        }
    }

    // ---- server (the runtime's part) ----

    /// Stale-call guard: a call on a binding that is not current must change nothing.
    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
    ) -> (
        Option<(u64, u64, u64)>,
        usize,
        (usize, usize),
        bool,
        MonoTime,
    ) {
        let s = &self.server.session;
        (
            s.seqs(),
            s.unsent(),
            s.replay_held(),
            s.is_closing(),
            s.last_seen(),
        )
    }

    fn server_read(&mut self, sock: usize) {
        if self.sockets[sock].server_done {
            return;
        }
        let max = 1 + self.rng.below(300) as usize;
        let Some(bytes) = self.read(sock, true, max) else {
            return self.server_socket_ended(sock);
        };
        if bytes.is_empty() {
            return;
        }
        let mut input = &bytes[..];
        if self.sockets[sock].binding.is_none() {
            // Unbound: its first frame must be Resume.
            let frame = match self.sockets[sock].pre.next(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => panic!("client sent a bad frame on a new socket: {e}"),
            };
            let f = frame.frame();
            assert_eq!(
                f.header.opcode, RESUME_OPCODE,
                "first frame of a new socket"
            );
            let body = f.body.to_vec();
            drop(frame);
            if !self.server_resume(sock, &body) {
                return;
            }
        }
        let (inc, b) = self.sockets[sock].binding.expect("bound");
        if inc != self.server.incarnation {
            // Its session is gone (the runtime removed it and closed its socket).
            return self.server_close(sock);
        }
        if !self.server.session.is_current(b) {
            // A late read on a fenced socket: ignored, and the runtime closes it.
            self.stats.stale_events += 1;
            let before = self.snapshot();
            let mut i = input;
            assert!(matches!(
                self.server.session.receive(b, self.t(), &mut i),
                Ok(None)
            ));
            assert_eq!(before, self.snapshot(), "a stale read changed the session");
            return self.server_close(sock);
        }
        let now = self.t();
        loop {
            let item = self.server.session.receive(b, now, &mut input);
            match item {
                Ok(Some(Input::Frame(f))) => {
                    let f = f.frame();
                    assert_eq!(f.header.opcode, REQ, "only requests reach the application");
                    let req = u64_at(f.body, 0);
                    assert_eq!(
                        req,
                        self.server.handled.len() as u64 + 1,
                        "requests reach the application once each, in order"
                    );
                    self.server.handled.push(req);
                    let rid = f.header.request_id;
                    self.app_send(REPLY, req, rid);
                }
                Ok(Some(Input::Duplicate(..))) => self.stats.duplicates += 1,
                Ok(Some(Input::Ack(_))) => {}
                Ok(Some(Input::RateLimited(..))) => panic!("no rate limit in the simulation"),
                Ok(Some(Input::Request(_))) => panic!("a binary session gives no HTTP request"),
                Ok(None) => break,
                Err(e) => panic!("the honest client broke the protocol: {e}"),
            }
        }
    }

    /// The server got `Resume` on an unbound socket. Returns true when bound.
    fn server_resume(&mut self, sock: usize, body: &[u8]) -> bool {
        let sid = u64_at(body, 0);
        let last = u32::from_le_bytes(body[8..12].try_into().unwrap());
        let attempt = u32::from_le_bytes(body[12..16].try_into().unwrap());
        let token = &body[16..16 + TOKEN_LEN];
        let next = self.rng.token();
        let now = self.t();
        let session_alive = !self.server.session.is_closing();
        let result = if sid != self.server.session.id().as_u64() {
            None
        } else {
            Some(
                self.server
                    .session
                    .resume(now, token, last, attempt, next, |r, out| {
                        let mut body = vec![r.resync as u8];
                        body.extend_from_slice(&r.received.to_le_bytes());
                        body.extend_from_slice(&r.sent.to_le_bytes());
                        body.extend_from_slice(&next);
                        encode_into(out, RESUMED_OPCODE, 0, 0, &body);
                    }),
            )
        };
        match result {
            Some(Ok(r)) => {
                trace!(self, "resume on socket {sock} accepted: {r:?}");
                self.sockets[sock].binding = Some((self.server.incarnation, r.binding));
                self.stats.resumes += 1;
                true
            }
            other => {
                if let Some(Err(e)) = &other {
                    // Only an attempt the client gave up on may be refused while the session
                    // is open (it arrived after a newer one, with a stale attempt number or a
                    // token spent since).
                    if self.sockets[sock].client_done {
                        self.stats.stale_attempts += 1;
                    } else {
                        assert!(
                            !session_alive,
                            "a Resume for an open session was refused: {e}"
                        );
                    }
                }
                let mut f = Vec::new();
                encode_into(&mut f, REJECT, 0, 0, &[]);
                self.write(sock, false, &f);
                self.server_close(sock);
                false
            }
        }
    }

    fn server_close(&mut self, sock: usize) {
        let s = &mut self.sockets[sock];
        s.server_done = true;
        s.s2c.fin = true;
    }

    /// The server learns its socket ended (EOF, or a reset after a cut).
    fn server_socket_ended(&mut self, sock: usize) {
        let s = &self.sockets[sock];
        if s.server_done {
            return;
        }
        let Some((inc, b)) = s.binding else {
            return self.server_close(sock);
        };
        if inc != self.server.incarnation {
            return self.server_close(sock);
        }
        let current = self.server.session.is_current(b);
        let before = self.snapshot();
        trace!(self, "server sees socket {sock} end (current {current})");
        let end = if self.rng.chance(50) {
            self.server.session.peer_closed(b, self.t())
        } else {
            self.server
                .session
                .socket_failed(b, self.t(), "reset".into())
        };
        if current {
            assert_eq!(end, SocketEnd::Detached, "a resumable session detaches");
        } else {
            self.stats.stale_events += 1;
            if !before.3 {
                assert_eq!(end, SocketEnd::Stale);
            }
            assert_eq!(before, self.snapshot(), "a stale end changed the session");
        }
        self.server_close(sock);
    }

    /// The runtime writes what the current socket takes; a fenced socket is closed.
    fn server_write(&mut self, sock: usize) {
        let Some((inc, b)) = self.sockets[sock].binding else {
            return;
        };
        if self.sockets[sock].server_done {
            return;
        }
        if inc != self.server.incarnation {
            return self.server_close(sock);
        }
        if !self.server.session.is_current(b) {
            self.stats.stale_events += 1;
            let before = self.snapshot();
            assert!(self.server.session.transmit(b).is_empty());
            self.server.session.transmitted(b, 3);
            assert_eq!(before, self.snapshot(), "a stale write changed the session");
            return self.server_close(sock);
        }
        let out = self.server.session.transmit(b).to_vec();
        if out.is_empty() {
            return;
        }
        // The socket takes part of it (a short write), or all.
        let k = 1 + self.rng.below(out.len() as u64) as usize;
        let n = self.write(sock, false, &out[..k]);
        trace!(
            self,
            "server writes {n} of {} bytes to socket {sock}: {:02x?}",
            out.len(),
            &out[..n.min(40)]
        );
        self.server.session.transmitted(b, n);
    }

    /// The wheel fires the session's deadline (`due`: only once it passed, as the runtime does;
    /// otherwise at any time, which must change nothing before the deadline).
    fn server_timer(&mut self, due_only: bool) {
        let Some(due) = self.server.session.poll_timeout() else {
            return;
        };
        if due_only && self.t() < due {
            return;
        }
        let at = self.t();
        let was_attached = self.server.session.is_attached();
        let before = self.snapshot();
        trace!(self, "timer fires (due {due:?})");
        self.server.session.handle_timeout(at);
        if at < due {
            assert_eq!(
                before,
                self.snapshot(),
                "an early timer changed the session"
            );
        }
        if was_attached && !self.server.session.is_attached() {
            self.stats.idle_detaches += 1;
        }
        if let Some(r) = self.server.session.close_reason() {
            assert!(
                matches!(r, lattice_wire::CloseReason::ResumeExpired(_)),
                "closed for {r}"
            );
        }
    }

    fn app_send(&mut self, op: u16, extra: u64, rid: u32) {
        if self.server.session.is_closing() {
            return;
        }
        let id = self.server.next_app_id;
        let mut f = app_frame(op, id, extra);
        f[8..12].copy_from_slice(&rid.to_le_bytes());
        let r = self.server.session.send(&f);
        trace!(self, "app sends {op} id {id}: {r:?}");
        r.expect("the send buffer is large");
        self.server.next_app_id += 1;
        self.server.sent.push(id);
        let (_, bytes) = self.server.session.replay_held();
        let max = self.server.limits.resume.max_bytes;
        assert!(
            bytes <= max + self.server.session.unsent() + f.len() + 8,
            "replay holds {bytes} > {max} + unsent"
        );
    }

    // ---- client ----

    fn client_write(&mut self, bytes: &[u8]) {
        // The client's side buffers what it sends without a bound (the server reads it in
        // random chunks); the server's side is bounded by `pipe_cap`.
        let s = &mut self.sockets[self.client.sock];
        if !s.cut && !s.c2s.fin {
            s.c2s.buf.extend(bytes);
        }
    }

    fn client_request(&mut self) {
        let c = &mut self.client;
        if c.awaiting_resumed || self.sockets[c.sock].client_done {
            return;
        }
        c.last_sent += 1;
        let req = c.next_req;
        c.next_req += 1;
        c.requested.push(req);
        let mut f = Vec::new();
        encode_seq_into(
            &mut f,
            REQ,
            0,
            req as u32,
            c.last_sent,
            c.last_recv,
            &req.to_le_bytes(),
        );
        c.unacked.push((c.last_sent, f.clone()));
        c.acked_sent = c.last_recv;
        c.ack_due = None;
        self.client_write(&f);
    }

    fn client_ack(&mut self) {
        let c = &mut self.client;
        if c.awaiting_resumed || self.sockets[c.sock].client_done {
            return;
        }
        if c.ack_due.is_some_and(|d| self.now >= d) && c.last_recv != c.acked_sent {
            let mut f = Vec::new();
            encode_seq_into(&mut f, ACK_OPCODE, 0, 0, 0, c.last_recv, &[]);
            c.acked_sent = c.last_recv;
            c.ack_due = None;
            self.client_write(&f);
        }
    }

    fn client_read(&mut self) {
        let sock = self.client.sock;
        if self.sockets[sock].client_done {
            return;
        }
        let max = 1 + self.rng.below(300) as usize;
        let Some(bytes) = self.read(sock, false, max) else {
            // EOF: the server closed it.
            return self.client_reconnect();
        };
        trace!(
            self,
            "client reads {} bytes from socket {sock}: {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(40)]
        );
        let mut input = &bytes[..];
        loop {
            let frame = match self.sockets[sock].client_dec.next(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("server sent a bad frame: {e}"),
            };
            let f = frame.frame();
            let h = f.header;
            let body = f.body.to_vec();
            drop(frame);
            if !self.client_frame(h, &body) {
                break;
            }
        }
    }

    /// One frame from the server. Returns false when the socket is done.
    fn client_frame(&mut self, h: FrameHeader, body: &[u8]) -> bool {
        let c = &mut self.client;
        if c.awaiting_resumed {
            assert!(!h.sequenced(), "the answer to Resume goes out plain");
            match h.opcode {
                RESUMED_OPCODE => {
                    let resync = body[0] == 1;
                    let received = u32::from_le_bytes(body[1..5].try_into().unwrap());
                    let sent = u32::from_le_bytes(body[5..9].try_into().unwrap());
                    c.token.copy_from_slice(&body[9..9 + TOKEN_LEN]);
                    c.awaiting_resumed = false;
                    if resync {
                        c.last_recv = sent;
                        c.seen.push(Seen::Resync(c.incarnation));
                        self.stats.resyncs += 1;
                    }
                    // A careful client resends what the server did not get; a lazy one resends
                    // everything unacknowledged (the server drops the duplicates).
                    if !c.lazy {
                        c.unacked.retain(|(s, _)| *s > received);
                    }
                    let resend: Vec<Vec<u8>> = c.unacked.iter().map(|u| u.1.clone()).collect();
                    for f in resend {
                        self.client_write(&f);
                    }
                    true
                }
                REJECT => {
                    let inc = c.incarnation;
                    c.seen.push(Seen::Lost(inc));
                    self.stats.lost += 1;
                    assert!(
                        self.server.session.is_closing(),
                        "a Resume was rejected while the session is open"
                    );
                    self.sockets[self.client.sock].client_done = true;
                    self.new_session();
                    false
                }
                op => panic!("unexpected plain frame {op} before Resumed"),
            }
        } else {
            assert!(
                h.sequenced(),
                "every frame after Welcome carries SEQ: {h:?}"
            );
            c.unacked.retain(|(s, _)| *s > h.ack);
            if h.opcode == ACK_OPCODE {
                assert_eq!(h.seq, 0);
                return true;
            }
            assert_eq!(
                h.seq,
                c.last_recv.wrapping_add(1),
                "server frames arrive in order without gaps or duplicates"
            );
            c.last_recv = h.seq;
            if c.ack_due.is_none() {
                c.ack_due = Some(self.now + 5 * MS);
            }
            assert!(h.opcode == REPLY || h.opcode == PUSH, "opcode {}", h.opcode);
            c.seen.push(Seen::Frame(c.incarnation, u64_at(body, 0)));
            true
        }
    }

    /// Opens a new socket and sends `Resume` (the old one is dropped: closed, or left to the
    /// network when `abandon`).
    fn client_reconnect(&mut self) {
        let old = self.client.sock;
        trace!(
            self,
            "client reconnects (socket {old} -> {})",
            self.sockets.len()
        );
        self.sockets[old].client_done = true;
        self.sockets[old].c2s.fin = true;
        self.sockets.push(Socket::new(self.max_frame));
        let c = &mut self.client;
        c.sock = self.sockets.len() - 1;
        c.awaiting_resumed = true;
        c.ack_due = None;
        c.attempt += 1;
        let mut body = c.session_id.to_le_bytes().to_vec();
        body.extend_from_slice(&c.last_recv.to_le_bytes());
        body.extend_from_slice(&c.attempt.to_le_bytes());
        body.extend_from_slice(&c.token);
        let mut f = Vec::new();
        encode_into(&mut f, RESUME_OPCODE, 0, 0, &body);
        self.client_write(&f);
    }

    // ---- the schedule ----

    fn live_sockets(&self) -> Vec<usize> {
        (0..self.sockets.len())
            .filter(|&i| !(self.sockets[i].server_done && self.sockets[i].client_done))
            .collect()
    }

    fn step(&mut self, faults: bool) {
        self.now += self.rng.below(3 * MS);
        let socks = self.live_sockets();
        let pick = |rng: &mut Rng| socks[rng.below(socks.len() as u64) as usize];
        match self.rng.below(100) {
            0..=14 => self.client_request(),
            15..=24 => {
                let n = self.rng.below(4);
                for _ in 0..n {
                    self.app_send(PUSH, 0, 0);
                }
            }
            25..=44 if !socks.is_empty() => {
                let s = pick(&mut self.rng);
                self.server_read(s);
            }
            45..=59 if !socks.is_empty() => {
                let s = pick(&mut self.rng);
                self.server_write(s);
            }
            60..=74 => self.client_read(),
            75..=79 => self.client_ack(),
            80..=84 => self.server_timer(true),
            85 => self.server_timer(false),
            86..=88 if faults => {
                // A cut somewhere: the current socket mostly.
                let s = if self.rng.chance(70) {
                    self.client.sock
                } else if !socks.is_empty() {
                    pick(&mut self.rng)
                } else {
                    return;
                };
                self.cut(s);
            }
            89..=91 if faults && !socks.is_empty() => {
                // The server notices a cut (or an old socket's end) late.
                let s = pick(&mut self.rng);
                if self.sockets[s].cut || self.sockets[s].c2s.fin {
                    self.server_socket_ended(s);
                }
            }
            // The client notices its socket was cut and reconnects.
            92..=94 if faults && self.sockets[self.client.sock].cut => self.client_reconnect(),
            95 if faults => {
                // A duplicate reconnect: the old socket still works; the client leaves it.
                self.client_reconnect();
            }
            96..=97 if faults => {
                // A long pause: idle timeouts and resume windows come due.
                self.now += self.rng.below(150 * MS);
            }
            _ => {}
        }
    }

    /// No more faults: run until everything sent has arrived both ways.
    fn quiesce(&mut self) {
        for round in 0..20_000 {
            if self.done() {
                return;
            }
            self.now += MS / 4;
            if self.sockets[self.client.sock].cut {
                self.client_reconnect();
            }
            for s in self.live_sockets() {
                if self.sockets[s].cut {
                    self.server_socket_ended(s);
                }
                self.server_read(s);
                self.server_write(s);
            }
            self.client_read();
            self.client_ack();
            self.server_timer(true);
            if round % 50 == 49 {
                // Nothing to ack for a while: a request keeps traffic going both ways.
                self.client_request();
            }
        }
        panic!("did not quiesce: {:?}", self.summary());
    }

    fn done(&self) -> bool {
        let c = &self.client;
        if c.awaiting_resumed || self.server.session.is_closing() {
            return false;
        }
        let got: Vec<u64> = c
            .seen
            .iter()
            .filter_map(|s| match s {
                Seen::Frame(i, id) if *i == c.incarnation => Some(*id),
                _ => None,
            })
            .collect();
        got.last() == self.server.sent.last() && self.server.handled.len() == c.requested.len()
    }

    fn summary(&self) -> String {
        format!(
            "incarnation {}, sent {}, handled {}/{}, seen {}, stats {:?}",
            self.server.incarnation,
            self.server.sent.len(),
            self.server.handled.len(),
            self.client.requested.len(),
            self.client.seen.len(),
            self.stats
        )
    }

    /// The invariants over the whole run.
    fn check(&self) {
        let mut all = self.history.clone();
        all.push((
            self.server.sent.clone(),
            self.server.handled.clone(),
            self.client.requested.clone(),
        ));
        let last = all.len() as u32;
        for (k, (sent, handled, requested)) in all.iter().enumerate() {
            let inc = k as u32 + 1;
            // Client → server: exactly once, in order; all of them in the session that lives.
            assert!(
                handled.len() <= requested.len()
                    && handled.iter().zip(requested).all(|(h, r)| h == r),
                "incarnation {inc}: requests handled {handled:?} vs sent {requested:?}"
            );
            if inc == last {
                assert_eq!(handled.len(), requested.len(), "all requests handled");
            }
            // Server → client: in order, each once; a gap only right after a resync.
            let mut expect = 0usize; // index into `sent` of the next frame due
            let mut gap_allowed = false;
            for s in &self.client.seen {
                match *s {
                    Seen::Frame(i, id) if i == inc => {
                        let at = sent
                            .iter()
                            .position(|x| *x == id)
                            .unwrap_or_else(|| panic!("incarnation {inc}: app id {id} never sent"));
                        if gap_allowed {
                            assert!(at >= expect, "incarnation {inc}: {id} again after a resync");
                        } else {
                            assert_eq!(
                                at,
                                expect,
                                "incarnation {inc}: got app id {id}, expected {:?}",
                                sent.get(expect)
                            );
                        }
                        expect = at + 1;
                        gap_allowed = false;
                    }
                    Seen::Resync(i) if i == inc => gap_allowed = true,
                    _ => {}
                }
            }
            if inc == last {
                assert_eq!(
                    expect,
                    sent.len(),
                    "incarnation {inc}: everything sent arrived"
                );
            } else {
                assert!(
                    self.client.seen.contains(&Seen::Lost(inc)),
                    "incarnation {inc} ended without the client being told"
                );
            }
        }
    }
}

fn run(seed: u64) -> Stats {
    let mut sim = Sim::new(seed);
    let steps = 100 + sim.rng.below(400);
    for _ in 0..steps {
        sim.step(true);
    }
    sim.quiesce();
    sim.check();
    sim.stats
}

#[test]
fn resumable_sessions_deliver_exactly_once_in_order_or_resync() {
    let schedules: u64 = std::env::var("LATTICE_SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let first: u64 = std::env::var("LATTICE_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut total = Stats::default();
    for seed in first..first + schedules {
        let r = std::panic::catch_unwind(|| run(seed));
        let s = match r {
            Ok(s) => s,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "schedule {seed} failed: {msg}\nreplay: LATTICE_SIM_SEED={seed} LATTICE_SIM_SCHEDULES=1 cargo test -p lattice-wire --test resume_sim"
                );
            }
        };
        total.resumes += s.resumes;
        total.resyncs += s.resyncs;
        total.lost += s.lost;
        total.stale_events += s.stale_events;
        total.duplicates += s.duplicates;
        total.cuts += s.cuts;
        total.idle_detaches += s.idle_detaches;
        total.stale_attempts += s.stale_attempts;
    }
    eprintln!("{schedules} schedules: {total:?}");
    // The schedules must reach what they are meant to test, not pass by avoiding it.
    if schedules >= 1000 {
        assert!(total.resumes > schedules, "{total:?}");
        assert!(total.resyncs > 0 && total.lost > 0, "{total:?}");
        assert!(total.stale_events > schedules / 10, "{total:?}");
        assert!(total.duplicates > 0 && total.idle_detaches > 0, "{total:?}");
    }
}
