//! The opening side of one node link, on its own threads: a writer that owns the connection
//! (connect, handshake, resend, then frames from the shards) and, per socket, a reader that
//! applies acknowledgements and hands frames for client sessions to the shards' inboxes.
//!
//! Blocking sockets on dedicated threads keep the shards free of a second kind of connection (the
//! runtime only accepts); a gate has one link per logic node, so two threads per peer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_proto::{error_code, pb, AnyMessage, LatticeMessage};
use lattice_runtime::telemetry::warn_limit::WarnLimiter;
use lattice_wire::compress::CompressConfig;
use lattice_wire::frame::{self, Decoder, FrameHeader};
use lattice_wire::SessionId;
use prost::Message as _;

use super::inbox::{Inbound, Inbox};
use super::pending::Pending;
use super::queue::Queue;
use super::seq::{LinkSeq, Resumption};
use crate::cluster::config::ClusterConfig;

/// What the shards hand to a link.
#[derive(Debug)]
pub enum Out {
    /// A client request for the peer's services.
    Request {
        /// The client's session on this node.
        origin: SessionId,
        /// Its request id.
        request_id: u32,
        /// Its opcode.
        opcode: u16,
        /// Its body, decompressed.
        body: Vec<u8>,
        /// The client's address, when known.
        peer: Option<std::net::SocketAddr>,
    },
}

/// Why a link refused a request (the client is answered `BUSY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `cluster.link_queue_frames` requests wait in the link's queue.
    QueueFull,
    /// `cluster.link_max_unanswered` requests wait for their answers.
    Unanswered,
}

/// Counters of one link (read by the metrics renderer).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Requests refused because the link's queue was full (`BUSY` to the client).
    pub queue_full_total: AtomicU64,
    /// Requests refused because `cluster.link_max_unanswered` requests sent over the link wait
    /// for their answers (`BUSY` to the client).
    pub unanswered_full_total: AtomicU64,
    /// Frames written (first sends).
    pub sent_total: AtomicU64,
    /// Frames written again after a resume.
    pub resent_total: AtomicU64,
    /// Frames received for client sessions.
    pub received_total: AtomicU64,
    /// Sockets opened (the first included).
    pub connects_total: AtomicU64,
    /// Requests answered `NODE_UNAVAILABLE` (the peer lost them or stayed away past the grace).
    pub failed_total: AtomicU64,
    /// Attempts to bring the link up that failed (connect, handshake or name check).
    pub attempt_failures_total: AtomicU64,
    /// `Error` frames the peer sent about frames of this link (not for a client).
    pub peer_errors_total: AtomicU64,
    /// Frames from the peer that did not decode (skipped).
    pub undecodable_total: AtomicU64,
}

/// Failed link attempts are logged at `WARN` at most once per this interval per link (with how
/// many were not logged); the others at `DEBUG`.
const ATTEMPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// The shards' side of a link.
pub struct LinkHandle {
    /// The peer's node id.
    pub node_id: String,
    /// Where the peer listens: what the live-node view says now (a node back at a new address
    /// is reached there at the next attempt).
    addr: Mutex<String>,
    queue: Queue<Out>,
    /// Session-closed notices: never dropped (bounded by the sessions that closed).
    closes: Mutex<Vec<u64>>,
    up: AtomicBool,
    dead: AtomicBool,
    stop: AtomicBool,
    /// The writer thread ended (after `stop`: its last words are written).
    finished: AtomicBool,
    /// Requests sent and not answered yet.
    pending: Pending,
    /// Answers the reader has taken out of `pending` and not yet put in a shard's inbox (0 or 1).
    delivering: AtomicUsize,
    /// `cluster.link_max_unanswered`: the bound of `pending`.
    max_unanswered: usize,
    /// Counters.
    pub counters: LinkCounters,
}

impl LinkHandle {
    /// True while requests sent over this link wait for their answers (not after the link was
    /// given up: those were answered `NODE_UNAVAILABLE`), or wait in its queue, or an answer is
    /// on its way to a shard's inbox. Read in the order things move: the writer moves a request
    /// from the queue to `pending` under the queue's lock; the reader counts an answer in
    /// `delivering` before it takes the request out of `pending` and until the answer is in the
    /// inbox, which the shard checks next
    /// ([`Forwarder::awaiting_replies`](crate::cluster::forward::Forwarder::awaiting_replies)). So
    /// an answer is always seen in one place.
    pub fn awaiting_replies(&self) -> bool {
        !self.is_dead()
            && (!self.queue.is_empty()
                || !self.pending.is_empty()
                || self.delivering.load(Ordering::SeqCst) > 0)
    }

    /// True while the link is connected and handshaken.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// True when the link has been down past `cluster.link_down_grace_ms`: route elsewhere.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Queues a request; gives it back, with the bound that refused it (counted), when the
    /// link's queue is full or `cluster.link_max_unanswered` requests wait for their answers
    /// (queued, or sent and not answered yet).
    pub fn try_send(&self, out: Out) -> Result<(), (Out, Refused)> {
        // Read under the queue's lock, where the writer moves a request from one count to the other.
        self.queue
            .try_push_within(out, |queued| {
                queued + self.pending.len() < self.max_unanswered
            })
            .map_err(|(out, full)| {
                let (counter, why) = if full {
                    (&self.counters.queue_full_total, Refused::QueueFull)
                } else {
                    (&self.counters.unanswered_full_total, Refused::Unanswered)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                (out, why)
            })
    }

    /// Tells the peer a client session ended (never dropped).
    pub fn session_closed(&self, origin: SessionId) {
        self.closes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(origin.as_u64());
    }

    /// The peer's address.
    pub fn addr(&self) -> String {
        self.addr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The peer is at `addr` now; returns true when that changed (the next attempt goes there).
    pub fn set_addr(&self, addr: &str) -> bool {
        let mut a = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        if *a == addr {
            return false;
        }
        *a = addr.to_owned();
        true
    }

    /// Asks the link's threads to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// True once [`LinkHandle::stop`] was called (the node stops, or the link was closed for a
    /// node that left the view).
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// True once the writer thread ended.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// What a link accepts from its peer: the largest frame (`net.max_frame`: a logic node never sends
/// more) and the inflation cap of compressed bodies (`[compress]`), as for client sessions.
#[derive(Debug, Clone, Copy)]
pub struct LinkWire {
    /// Largest frame body read from the peer, bytes.
    pub max_frame: u32,
    /// `[compress]`: `max_inflated` bounds a compressed body once inflated.
    pub compress: CompressConfig,
}

/// Starts the link to `node_id` at `addr`; frames for client sessions go to `inboxes[shard]`.
pub fn start(
    me: String,
    node_id: String,
    addr: String,
    cfg: &ClusterConfig,
    wire: LinkWire,
    inboxes: Arc<Vec<Arc<Inbox>>>,
) -> Arc<LinkHandle> {
    let h = Arc::new(LinkHandle {
        node_id,
        addr: Mutex::new(addr),
        queue: Queue::new(cfg.link_queue_frames),
        closes: Mutex::new(Vec::new()),
        up: AtomicBool::new(false),
        dead: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        pending: Pending::default(),
        delivering: AtomicUsize::new(0),
        max_unanswered: cfg.link_max_unanswered,
        counters: LinkCounters::default(),
    });
    let w = Writer {
        me,
        h: h.clone(),
        seq: Arc::new(Mutex::new(LinkSeq::new(cfg.link_unacked_frames))),
        inboxes,
        cfg: cfg.clone(),
        wire,
        down_since: None,
        last_attempt_warn: None,
        unlogged_attempts: 0,
    };
    let name = format!("link-{}", h.node_id);
    if let Err(e) = std::thread::Builder::new().name(name).spawn(move || {
        let h = w.h.clone();
        w.run();
        h.finished.store(true, Ordering::Release);
    }) {
        tracing::error!(error = %e, "cannot start a link thread; the node stays unreachable");
    }
    h
}

struct Writer {
    me: String,
    h: Arc<LinkHandle>,
    seq: Arc<Mutex<LinkSeq>>,
    inboxes: Arc<Vec<Arc<Inbox>>>,
    cfg: ClusterConfig,
    wire: LinkWire,
    down_since: Option<Instant>,
    /// When a failed attempt was last logged at `WARN`, and how many were not since.
    last_attempt_warn: Option<Instant>,
    unlogged_attempts: u64,
}

/// Why a socket ended.
type LinkResult = Result<(), String>;

fn lock(s: &Mutex<LinkSeq>) -> std::sync::MutexGuard<'_, LinkSeq> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one frame of the handshake before `deadline` (the whole handshake's: a peer that trickles
/// bytes cannot stretch it). Bytes read past it (the replay that follows `Resumed`) stay in
/// `pending` for the reader.
fn read_plain(
    s: &mut TcpStream,
    dec: &mut Decoder,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(FrameHeader, Vec<u8>), String> {
    const TIMED_OUT: &str =
        "timed out waiting for the peer's handshake answer (cluster.link_connect_timeout_ms)";
    let mut buf = [0u8; 4096];
    loop {
        let mut input: &[u8] = pending;
        let before = input.len();
        let got = dec.next(&mut input).map_err(|e| {
            format!("the peer does not speak Lattice's binary frames ({e}): is the address its internal listener?")
        })?;
        let out = got.map(|f| {
            let fr = f.frame();
            (fr.header, fr.body.to_vec())
        });
        let consumed = before - input.len();
        pending.drain(..consumed);
        if let Some(out) = out {
            return Ok(out);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TIMED_OUT.into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = s.read(&mut buf).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                TIMED_OUT.to_string()
            } else {
                format!("handshake read: {e}")
            }
        })?;
        if n == 0 {
            return Err("peer closed during the handshake".into());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A message for a log line, cut at 200 bytes: an `Error` as its code's name and its message
/// (`Error NOT_ALLOWED: wrong cluster.link_secret`), any other message as its name.
fn describe(opcode: u16, m: &AnyMessage) -> String {
    let mut t = match m {
        AnyMessage::Error(e) => format!(
            "Error {}: {}",
            lattice_proto::error_code::ALL
                .iter()
                .find(|(c, _)| *c == e.code)
                .map_or_else(|| e.code.to_string(), |(_, n)| (*n).to_string()),
            e.message
        ),
        _ => lattice_proto::info(opcode)
            .map_or_else(|| format!("opcode {opcode}"), |i| i.name.to_string()),
    };
    if t.len() > 200 {
        let mut cut = 200;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push('…');
    }
    t
}

/// An `Error{NODE_UNAVAILABLE}` frame answering a request.
fn unavailable(request_id: u32, opcode: u16) -> Vec<u8> {
    let e = pb::Error {
        code: error_code::NODE_UNAVAILABLE,
        message: "logic node unavailable; retry (log in again if you were logged in)".into(),
        opcode: u32::from(opcode),
    };
    frame::encode(pb::Error::OPCODE, 0, request_id, &e.encode_to_vec())
}

impl Writer {
    fn stopping(&self) -> bool {
        self.h.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        let retry = Duration::from_millis(self.cfg.link_retry_ms);
        let grace = Duration::from_millis(self.cfg.link_down_grace_ms);
        while !self.stopping() {
            let r = self.connect_and_serve();
            let was_up = self.h.up.swap(false, Ordering::AcqRel);
            if self.stopping() {
                // The node stops: no reconnect, so no "reconnecting" line either.
                if let Err(e) = &r {
                    tracing::debug!(peer = %self.h.node_id, error = %e, "link ended while the node stops");
                }
                break;
            }
            if let Err(e) = &r {
                if was_up {
                    tracing::warn!(peer = %self.h.node_id, error = %e, "link down; reconnecting");
                } else {
                    self.h
                        .counters
                        .attempt_failures_total
                        .fetch_add(1, Ordering::Relaxed);
                    if self
                        .last_attempt_warn
                        .is_none_or(|t| t.elapsed() >= ATTEMPT_WARN_EVERY)
                    {
                        tracing::warn!(peer = %self.h.node_id, addr = %self.h.addr(), error = %e, unlogged = self.unlogged_attempts, "link attempt failed; retrying every cluster.link_retry_ms (further failures logged at most every 10 s)");
                        self.last_attempt_warn = Some(Instant::now());
                        self.unlogged_attempts = 0;
                    } else {
                        self.unlogged_attempts += 1;
                        tracing::debug!(peer = %self.h.node_id, error = %e, "link attempt failed");
                    }
                }
            }
            let since = *self.down_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= grace && !self.h.is_dead() {
                tracing::warn!(peer = %self.h.node_id, grace_ms = self.cfg.link_down_grace_ms, "link down past the grace: node taken out of routing, its waiting requests answered NODE_UNAVAILABLE");
                lock(&self.seq).forget();
                // Answered before the link counts as dead: a dead link awaits nothing, and a
                // stopping gate would close sessions whose answers were still to be queued.
                self.fail_pending();
                self.h.dead.store(true, Ordering::Release);
            }
            if self.h.is_dead() {
                self.answer_queued();
                self.h
                    .closes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
            std::thread::sleep(retry);
        }
        if self.h.is_dead() {
            // Closed for a node that left the view: a request a shard queued just before it saw
            // the link given up is answered too.
            self.answer_queued();
        }
    }

    /// Nothing waits for a dead node: what reached the queue meanwhile is answered.
    fn answer_queued(&self) {
        while let Some(o) = self.h.queue.try_pop(|_| {}) {
            let Out::Request {
                origin,
                request_id,
                opcode,
                ..
            } = o;
            self.answer_unavailable(origin, request_id, opcode);
        }
    }

    fn answer_unavailable(&self, origin: SessionId, request_id: u32, opcode: u16) {
        self.h.counters.failed_total.fetch_add(1, Ordering::Relaxed);
        if let Some(ib) = self.inboxes.get(origin.shard()) {
            ib.push(
                Inbound::Frame(origin, unavailable(request_id, opcode)),
                || self.stopping(),
            );
        }
    }

    /// The peer will not answer what it was sent: every pending request is answered
    /// `NODE_UNAVAILABLE`.
    fn fail_pending(&self) {
        self.h.pending.drain_with(|origin, request_id, opcode| {
            self.answer_unavailable(SessionId::from_u64(origin), request_id, opcode)
        });
    }

    /// How long one attempt's connect and handshake may block: `cluster.link_connect_timeout_ms`,
    /// cut to what is left of the grace while the link is down and not yet given up, so a peer
    /// that accepts connections but never answers (frozen) is given up on time.
    fn attempt_timeout(&self) -> Duration {
        let full = Duration::from_millis(self.cfg.link_connect_timeout_ms);
        match self.down_since {
            Some(since) if !self.h.is_dead() => {
                let grace = Duration::from_millis(self.cfg.link_down_grace_ms);
                full.min(grace.saturating_sub(since.elapsed()))
                    .max(Duration::from_millis(1))
            }
            _ => full,
        }
    }

    fn connect(&self) -> Result<TcpStream, String> {
        let timeout = self.attempt_timeout();
        let at = self.h.addr();
        let addr = at
            .to_socket_addrs()
            .map_err(|e| format!("resolve {at}: {e}"))?
            .next()
            .ok_or_else(|| format!("{at} resolves to nothing"))?;
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout.max(Duration::from_secs(5))))
            .map_err(|e| e.to_string())?;
        self.h
            .counters
            .connects_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Resumes the session, or starts one (Hello, LinkHello). Returns the frames to resend.
    fn handshake(
        &self,
        s: &mut TcpStream,
        dec: &mut Decoder,
        pending: &mut Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let deadline = Instant::now() + self.attempt_timeout();
        let resume = lock(&self.seq).resume();
        if let Some(r) = resume {
            s.write_all(&r).map_err(|e| e.to_string())?;
            let (h, body) = read_plain(s, dec, pending, deadline)?;
            let msg = lattice_proto::decode(h.opcode, &body).map_err(|e| e.to_string())?;
            match msg {
                AnyMessage::Resumed(r) if r.resync => {
                    // Frames the peer wrote (replies, pushes) were evicted from its replay buffer
                    // and cannot come: go on as if the session were lost, so every waiting
                    // request is answered (NODE_UNAVAILABLE) instead of never.
                    tracing::warn!(peer = %self.h.node_id, "link resumed with resync (frames of the peer were evicted from its replay buffer): its unacknowledged requests are answered NODE_UNAVAILABLE; a new session starts");
                    lock(&self.seq).resumed(None);
                    self.fail_pending();
                    return Err("resumed with frames lost (resync)".into());
                }
                AnyMessage::Resumed(r) => match lock(&self.seq).resumed(Some(&r)) {
                    Resumption::Resend(f) => return Ok(f),
                    Resumption::Lost(_) => unreachable!("a kept session resends"),
                },
                other => {
                    tracing::warn!(peer = %self.h.node_id, answer = %describe(h.opcode, &other), "link session lost by the peer (restarted, or resume window passed): its unacknowledged requests are answered NODE_UNAVAILABLE; a new session starts");
                    lock(&self.seq).resumed(None);
                    self.fail_pending();
                    return Err("resume refused".into());
                }
            }
        }
        s.write_all(&lock(&self.seq).hello())
            .map_err(|e| e.to_string())?;
        let (h, body) = read_plain(s, dec, pending, deadline)?;
        match lattice_proto::decode(h.opcode, &body).map_err(|e| e.to_string())? {
            AnyMessage::Welcome(w) => lock(&self.seq).welcome(&w).map_err(str::to_string)?,
            other => {
                return Err(format!(
                    "expected Welcome, got {}: is the address the peer's internal listener?",
                    describe(h.opcode, &other)
                ))
            }
        }
        let lh = pb::LinkHello {
            node_id: self.me.clone(),
            secret: self.cfg.link_secret.clone(),
        };
        let f = lock(&self.seq).frame(pb::LinkHello::OPCODE, 0, &lh.encode_to_vec());
        s.write_all(&f).map_err(|e| e.to_string())?;
        let (h, body) = read_plain(s, dec, pending, deadline)?;
        lock(&self.seq).received(&h)?;
        let refused = match lattice_proto::decode(h.opcode, &body).map_err(|e| e.to_string())? {
            AnyMessage::LinkWelcome(w) if w.node_id == self.h.node_id => return Ok(Vec::new()),
            AnyMessage::LinkWelcome(w) => {
                let e = format!(
                    "peer at {} is node {:?}, configured as {:?}",
                    self.h.addr(),
                    w.node_id,
                    self.h.node_id
                );
                // Logged by the caller with every failed attempt (rate-limited).
                format!("link refused: not the node it was meant to reach: {e}")
            }
            other => format!(
                "expected LinkWelcome, got {}: is the address the peer's internal listener?",
                describe(h.opcode, &other)
            ),
        };
        // The session the peer granted above must not be resumed by the next attempt: resuming
        // skips LinkHello, so the node's name would go unchecked.
        lock(&self.seq).forget();
        Err(refused)
    }

    fn connect_and_serve(&mut self) -> LinkResult {
        let mut s = self.connect()?;
        // A LinkDeliver carries a whole client frame: a little longer than the largest one.
        let mut dec = Decoder::new(
            self.wire
                .max_frame
                .saturating_add(crate::service::ctx::LINK_FRAME_OVERHEAD as u32),
        );
        let mut pending = Vec::new();
        let resend = self.handshake(&mut s, &mut dec, &mut pending)?;
        let n = resend.len() as u64;
        for f in resend {
            s.write_all(&f).map_err(|e| e.to_string())?;
        }
        self.h.counters.resent_total.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(peer = %self.h.node_id, frames = n, "link resumed; unacknowledged frames resent");
        }
        self.h.up.store(true, Ordering::Release);
        self.h.dead.store(false, Ordering::Release);
        self.down_since = None;
        tracing::info!(peer = %self.h.node_id, "link up");
        s.set_read_timeout(None).map_err(|e| e.to_string())?;
        let rs = s.try_clone().map_err(|e| e.to_string())?;
        let ended = Arc::new(AtomicBool::new(false));
        let base = Instant::now();
        let heard = Arc::new(AtomicU64::new(0));
        let frames_in = Arc::new(AtomicU64::new(0));
        let reader = {
            let r = Reader {
                h: self.h.clone(),
                seq: self.seq.clone(),
                inboxes: self.inboxes.clone(),
                compress: self.wire.compress,
                warns: std::cell::RefCell::new(WarnLimiter::from_defaults()),
                ended: ended.clone(),
                base,
                heard: heard.clone(),
                frames_in: frames_in.clone(),
                answer_delay: std::env::var(ANSWER_DELAY_ENV)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis),
            };
            std::thread::Builder::new()
                .name(format!("link-{}-rx", self.h.node_id))
                .spawn(move || r.run(rs, dec, pending))
                .map_err(|e| e.to_string())?
        };
        let r = self.serve(&mut s, &ended, base, &heard, &frames_in);
        let _ = s.shutdown(Shutdown::Both);
        let _ = reader.join();
        r
    }

    fn serve(
        &mut self,
        s: &mut TcpStream,
        ended: &AtomicBool,
        base: Instant,
        heard: &AtomicU64,
        frames_in: &AtomicU64,
    ) -> LinkResult {
        let keepalive = Duration::from_millis(self.cfg.link_keepalive_ms);
        let silence = self.cfg.link_timeout_ms;
        let tick = keepalive.min(Duration::from_millis(50));
        let mut last_write = Instant::now();
        let mut last_probe = Instant::now();
        let mut acked_in = 0u64;
        let mut out = Vec::new();
        loop {
            if ended.load(Ordering::Acquire) {
                return Err("socket ended".into());
            }
            // A peer that vanished without a word (a cut cable, a partition) leaves the socket
            // open: silence past the timeout drops it, and the reconnect finds out.
            let stopping = self.stopping();
            let quiet =
                (base.elapsed().as_millis() as u64).saturating_sub(heard.load(Ordering::Acquire));
            if quiet > silence && !stopping {
                return Err(format!("nothing heard from the peer for {quiet} ms"));
            }
            out.clear();
            // Frames handled so far: whatever is framed below acknowledges at least these.
            let n_in = frames_in.load(Ordering::Acquire);
            let closes =
                std::mem::take(&mut *self.h.closes.lock().unwrap_or_else(|p| p.into_inner()));
            if !closes.is_empty() {
                // Requests of these sessions still in the queue go nowhere: sent after the close,
                // they would make the peer a proxy session that nothing ends (and answer a
                // client that is gone).
                let gone: std::collections::HashSet<u64> = closes.iter().copied().collect();
                self.h
                    .queue
                    .retain(|Out::Request { origin, .. }| !gone.contains(&origin.as_u64()));
            }
            {
                let mut seq = lock(&self.seq);
                for origin in closes {
                    self.h.pending.closed(origin);
                    let m = pb::LinkSessionClosed { origin };
                    out.extend(seq.frame(pb::LinkSessionClosed::OPCODE, 0, &m.encode_to_vec()));
                }
            }
            if stopping {
                // Last words: the client sessions the drain closed end their proxies on the peer
                // now (they leave rooms), not when the peer's resume window passes. Wait (at most
                // a second, the reader thread still reading) until the peer acknowledged them:
                // closing earlier could reset the connection before it read them.
                if !out.is_empty() {
                    // A Ping behind them: its Pong acknowledges them at once (no ack delay).
                    let p = pb::Ping {
                        payload: Vec::new(),
                    };
                    out.extend(lock(&self.seq).frame(pb::Ping::OPCODE, 0, &p.encode_to_vec()));
                    if s.write_all(&out).is_ok() {
                        let until = Instant::now() + Duration::from_secs(1);
                        while lock(&self.seq).unacked() > 0
                            && Instant::now() < until
                            && !ended.load(Ordering::Acquire)
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
                return Ok(());
            }
            // Take requests only while the peer's acknowledgements leave room (backpressure:
            // the queue fills, and the shards answer BUSY).
            let mut taken = 0;
            while taken < 256 && lock(&self.seq).can_send() {
                // Counted unanswered from the moment it leaves the queue (under its lock): the
                // shards' bound sees it in one of the two.
                let track = |o: &Out| {
                    let Out::Request {
                        origin,
                        request_id,
                        opcode,
                        ..
                    } = o;
                    self.h.pending.sent(origin.as_u64(), *request_id, *opcode);
                };
                let o = if taken == 0 && out.is_empty() {
                    self.h.queue.pop_timeout(tick, track)
                } else {
                    self.h.queue.try_pop(track)
                };
                let Some(o) = o else { break };
                let Out::Request {
                    origin,
                    request_id,
                    opcode,
                    body,
                    peer,
                } = o;
                let m = pb::LinkRequest {
                    origin: origin.as_u64(),
                    request_id,
                    opcode: u32::from(opcode),
                    body,
                    peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                };
                out.extend(lock(&self.seq).frame(pb::LinkRequest::OPCODE, 0, &m.encode_to_vec()));
                taken += 1;
            }
            if !lock(&self.seq).can_send() && out.is_empty() {
                std::thread::sleep(tick.min(Duration::from_millis(5)));
            }
            if last_probe.elapsed() >= keepalive && lock(&self.seq).can_send() {
                // A Ping the peer answers: traffic both ways at least once per keep-alive, so
                // the silence above means the peer is gone (the Pong is not for any client).
                let p = pb::Ping {
                    payload: Vec::new(),
                };
                out.extend(lock(&self.seq).frame(pb::Ping::OPCODE, 0, &p.encode_to_vec()));
                last_probe = Instant::now();
            } else if out.is_empty() {
                // Acknowledge what came in within a tick (the peer keeps every frame until then,
                // for a replay), and at least once per keep-alive.
                if (n_in != acked_in && last_write.elapsed() >= tick)
                    || last_write.elapsed() >= keepalive
                {
                    out.extend(lock(&self.seq).ack_frame());
                }
            }
            if !out.is_empty() {
                acked_in = n_in;
                s.write_all(&out).map_err(|e| format!("write: {e}"))?;
                self.h
                    .counters
                    .sent_total
                    .fetch_add(taken as u64, Ordering::Relaxed);
                last_write = Instant::now();
            }
        }
    }
}

struct Reader {
    h: Arc<LinkHandle>,
    seq: Arc<Mutex<LinkSeq>>,
    inboxes: Arc<Vec<Arc<Inbox>>>,
    compress: CompressConfig,
    /// The peer's errors and undecodable frames are logged at most `log.warn_burst` per window.
    warns: std::cell::RefCell<WarnLimiter>,
    ended: Arc<AtomicBool>,
    /// When the link was connected, and the last time (ms after it) anything was read.
    base: Instant,
    heard: Arc<AtomicU64>,
    /// Sequenced frames handled (the writer acknowledges them promptly).
    frames_in: Arc<AtomicU64>,
    /// `LATTICE_FAULT_LINK_ANSWER_DELAY_MS` (tests): a pause between forgetting an answered
    /// request and queueing its answer for the shard, which widens the window a stopping gate
    /// must not lose answers in.
    answer_delay: Option<Duration>,
}

/// The fault hook of [`Reader::answer_delay`] (docs/OPERATIONS.md, fault injection).
pub const ANSWER_DELAY_ENV: &str = "LATTICE_FAULT_LINK_ANSWER_DELAY_MS";

impl Reader {
    fn run(self, mut s: TcpStream, mut dec: Decoder, pending: Vec<u8>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut inflated = Vec::new();
        let mut z = lattice_wire::compress::BodyCompressor::new(self.compress);
        let mut why = self
            .process(&mut dec, &pending, &mut z, &mut inflated)
            .err();
        while why.is_none() {
            let n = match s.read(&mut buf) {
                Ok(0) => {
                    why = Some("peer closed".to_string());
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    why = Some(format!("read: {e}"));
                    break;
                }
            };
            self.heard
                .store(self.base.elapsed().as_millis() as u64, Ordering::Release);
            why = self
                .process(&mut dec, &buf[..n], &mut z, &mut inflated)
                .err();
        }
        tracing::debug!(peer = %self.h.node_id, why = why.unwrap_or_default(), "link reader ends");
        self.ended.store(true, Ordering::Release);
        let _ = s.shutdown(Shutdown::Both);
    }

    /// Milliseconds since the link connected (the warning limiter's clock).
    fn ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Handles the frames in `data` (and a partial one kept by `dec`).
    fn process(
        &self,
        dec: &mut Decoder,
        data: &[u8],
        z: &mut lattice_wire::compress::BodyCompressor,
        inflated: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut input = data;
        while let Some(f) = dec.next(&mut input).map_err(|e| e.to_string())? {
            let fr = f.frame();
            if !lock(&self.seq).received(&fr.header)? {
                continue;
            }
            self.frames_in.fetch_add(1, Ordering::Release);
            let body = if fr.header.compressed() {
                inflated.clear();
                z.inflate(fr.body, inflated).map_err(|e| e.to_string())?;
                &inflated[..]
            } else {
                fr.body
            };
            match lattice_proto::decode(fr.header.opcode, body) {
                Ok(AnyMessage::LinkDeliver(d)) => {
                    let origin = SessionId::from_u64(d.origin);
                    self.h
                        .counters
                        .received_total
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(ib) = self.inboxes.get(origin.shard()) {
                        let stop = || self.h.stop.load(Ordering::Acquire);
                        if !d.frame.is_empty() {
                            // Counted as delivering from before it leaves `pending` until it is
                            // in the inbox (`LinkHandle::awaiting_replies`). Taken out of
                            // `pending` first: its client may send the next request under the
                            // same id as soon as it has this answer.
                            self.h.delivering.fetch_add(1, Ordering::SeqCst);
                            self.h
                                .pending
                                .answered(d.origin, Pending::request_id(&d.frame));
                            if let Some(d) = self.answer_delay {
                                std::thread::sleep(d);
                            }
                            ib.push(Inbound::Frame(origin, d.frame), stop);
                            self.h.delivering.fetch_sub(1, Ordering::SeqCst);
                        }
                        if !d.close.is_empty() {
                            ib.push(Inbound::Close(origin, d.close), stop);
                        }
                    }
                }
                Ok(AnyMessage::Error(e)) => {
                    let c = &self.h.counters;
                    c.peer_errors_total.fetch_add(1, Ordering::Relaxed);
                    self.warns.borrow_mut().warn("link_peer_error", self.ms(), || {
                        tracing::warn!(peer = %self.h.node_id, code = e.code, message = %e.message, "link: the peer refused a frame")
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    let c = &self.h.counters;
                    c.undecodable_total.fetch_add(1, Ordering::Relaxed);
                    self.warns.borrow_mut().warn("link_undecodable", self.ms(), || {
                        tracing::warn!(peer = %self.h.node_id, error = %e, "link: undecodable frame skipped")
                    });
                }
            }
        }
        Ok(())
    }
}
