//! What a handler sees: the request, and a context to answer, push, route, close, set timers, use
//! storage and wait for work done off the shard — plus the messages that context puts on the mesh.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use lattice_proto::{error_code, pb, LatticeMessage};
use lattice_runtime::time::TimerError;
use lattice_runtime::ShardCx;
use lattice_storage::StorageHandle;
use lattice_wire::compress::BodyCompressor;
use lattice_wire::frame::{self, FLAG_COMPRESSED, HEADER_LEN};
use lattice_wire::{CloseReason, SessionId};

use super::timers::TimerTable;
use crate::center::ids::{Id, IdError, IdGen};
use crate::center::IdMetrics;
use crate::metrics::AppMetrics;
use lattice_runtime::time::Calendar;

/// A client request as a handler receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Req<T> {
    /// The session that sent it (any shard).
    pub session: SessionId,
    /// The frame's request id (echoed in the reply).
    pub request_id: u32,
    /// The frame's opcode.
    pub opcode: u16,
    /// The decoded message.
    pub msg: T,
}

/// A continuation: runs on the component that asked for it, with the component as `Any`.
pub type Continuation = Box<dyn FnOnce(&mut dyn Any, &mut Ctx<'_>) + Send>;

/// Messages between shards (and from a shard to itself).
pub enum ShardMsg {
    /// A client request routed to the shard its component names.
    Request {
        /// Service index.
        service: u16,
        /// Component index within the service.
        comp: u16,
        /// The request.
        req: Req<lattice_proto::AnyMessage>,
    },
    /// A component-to-component message.
    Internal {
        /// Service index.
        service: u16,
        /// The payload, downcast by the receiving component.
        payload: Box<dyn Any + Send>,
    },
    /// A session closed on some shard: components drop what they keep for it.
    SessionClosed(SessionId),
    /// A `Resume` whose socket is handed to the shard that owns the session (delivered with the
    /// socket, to the gate, never to components).
    Resume(crate::resume::ResumeRequest),
    /// Work done off the shard finished ([`Ctx::then`]): continue on the component that waited.
    Continue {
        /// Service index.
        service: u16,
        /// Component index within the service.
        comp: u16,
        /// What to run.
        f: Continuation,
    },
    /// A frame for a proxy session of this shard (a client of another node): goes back over its
    /// link (`cluster::link::serve`). Never dropped.
    ProxyDeliver(SessionId, ProxyOut),
    /// What arrived over node links for client sessions of this shard (a gate node).
    LinkInbound(Vec<crate::cluster::link::inbox::Inbound>),
    /// Node `.0` opened a new link session (`.1`): its older link sessions on every shard end,
    /// with their proxies (a logic node).
    LinkReplaced(String, SessionId),
}

/// Where a request is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The shard that received it.
    Local,
    /// The shard `hash % shards`.
    Hash(u64),
    /// The next shard (`(this + 1) % shards`): always crosses the mesh when there are ≥ 2 shards.
    Next,
}

impl Route {
    /// The shard index for a request received on shard `here` of `shards`.
    pub fn shard(self, here: usize, shards: usize) -> usize {
        match self {
            Route::Local => here,
            Route::Hash(h) => (h % shards as u64) as usize,
            Route::Next => (here + 1) % shards,
        }
    }
}

/// Per-shard encoder state: the compressor, the largest frame, scratch buffers for bodies.
pub struct Encoder {
    pub(crate) compressor: BodyCompressor,
    max_frame: usize,
    body: Vec<u8>,
    packed: Vec<u8>,
    /// Frames for proxy sessions (clients of another node, `cluster::link::serve`), taken by the
    /// application after each call into the host and sent back over their link.
    pub(crate) proxied: Vec<(SessionId, ProxyOut)>,
}

/// What a component sent to a proxy session (see `Encoder::proxied`).
#[derive(Debug)]
pub enum ProxyOut {
    /// A frame for the client.
    Frame(Vec<u8>),
    /// Close the client's session with this reason.
    Close(String),
}

/// How much longer than `net.max_frame` a node link's frame may be (lattice-wire's
/// `INTERNAL_FRAME_SLACK`, what the logic node's internal sessions read): a `LinkDeliver` wraps a
/// client frame (≤ `net.max_frame`) with the client's session id and the field keys and lengths
/// (≤ 17 bytes), in a frame with the sequence extension (20 bytes of header).
pub const LINK_FRAME_OVERHEAD: usize = lattice_wire::session::INTERNAL_FRAME_SLACK as usize;

impl Encoder {
    /// An encoder using `compressor` that never produces a frame above `max_frame` bytes, the
    /// sequence extension a resumable session adds included (so its frames stop 8 bytes short).
    pub fn new(compressor: BodyCompressor, max_frame: u32) -> Self {
        Encoder {
            compressor,
            max_frame: (max_frame as usize).saturating_sub(frame::EXT_LEN),
            body: Vec::new(),
            packed: Vec::new(),
            proxied: Vec::new(),
        }
    }

    /// Encodes `msg` as one frame for `session` and hands it to the runtime. An uncompressed body
    /// is encoded straight into the session's outbound queue when it lives on this shard.
    /// Returns false (and sends nothing) when the frame would exceed `net.max_frame`.
    pub fn send<T: LatticeMessage, M: Send + 'static>(
        &mut self,
        cx: &ShardCx<M>,
        session: SessionId,
        request_id: u32,
        msg: &T,
    ) -> bool {
        self.send_within(cx, session, request_id, msg, self.max_frame)
    }

    /// [`Encoder::send`] for a node link's own frames: a `LinkDeliver` carries a whole client
    /// frame (at most `net.max_frame`), so it may be up to [`LINK_FRAME_OVERHEAD`] bytes longer.
    pub fn send_link<T: LatticeMessage, M: Send + 'static>(
        &mut self,
        cx: &ShardCx<M>,
        session: SessionId,
        msg: &T,
    ) -> bool {
        self.send_within(cx, session, 0, msg, self.max_frame + LINK_FRAME_OVERHEAD)
    }

    #[inline(always)]
    fn send_within<T: LatticeMessage, M: Send + 'static>(
        &mut self,
        cx: &ShardCx<M>,
        session: SessionId,
        request_id: u32,
        msg: &T,
        max_frame: usize,
    ) -> bool {
        if crate::cluster::link::serve::is_proxy(session) {
            return match self.frame(request_id, msg) {
                Some(f) => {
                    self.proxied.push((session, ProxyOut::Frame(f)));
                    true
                }
                None => false,
            };
        }
        let body_len = msg.encoded_len();
        if body_len > self.compressor.config().threshold {
            self.body.clear();
            msg.encode_raw(&mut self.body);
            self.packed.clear();
            let (flags, body) = if self.compressor.compress(&self.body, &mut self.packed) {
                (FLAG_COMPRESSED, &self.packed)
            } else {
                (0, &self.body)
            };
            if HEADER_LEN + body.len() > max_frame {
                return false;
            }
            cx.deliver_with(session, HEADER_LEN + body.len(), |out| {
                frame::encode_into(out, T::OPCODE, flags, request_id, body)
            });
            return true;
        }
        if HEADER_LEN + body_len > max_frame {
            return false;
        }
        cx.deliver_with(session, HEADER_LEN + body_len, |out| {
            frame::encode_header_into(out, T::OPCODE, 0, request_id, body_len);
            msg.encode_raw(out);
        });
        true
    }

    /// Like [`Encoder::send`] for a message whose type is known only at run time (script replies).
    pub fn send_any<M: Send + 'static>(
        &mut self,
        cx: &ShardCx<M>,
        session: SessionId,
        request_id: u32,
        msg: &lattice_proto::AnyMessage,
    ) -> bool {
        self.body.clear();
        msg.encode_body(&mut self.body);
        self.packed.clear();
        let (flags, body) = if self.compressor.compress(&self.body, &mut self.packed) {
            (FLAG_COMPRESSED, &self.packed)
        } else {
            (0, &self.body)
        };
        if HEADER_LEN + body.len() > self.max_frame {
            return false;
        }
        let op = msg.opcode();
        if crate::cluster::link::serve::is_proxy(session) {
            self.proxied.push((
                session,
                ProxyOut::Frame(frame::encode(op, flags, request_id, body)),
            ));
            return true;
        }
        cx.deliver_with(session, HEADER_LEN + body.len(), |out| {
            frame::encode_into(out, op, flags, request_id, body)
        });
        true
    }

    /// Encodes `msg` as a complete frame in a new buffer (compressed above the threshold), for
    /// broadcasts. `None` when it would exceed `net.max_frame`.
    pub fn frame<T: LatticeMessage>(&mut self, request_id: u32, msg: &T) -> Option<Vec<u8>> {
        self.body.clear();
        msg.encode_raw(&mut self.body);
        self.packed.clear();
        let f = if self.compressor.compress(&self.body, &mut self.packed) {
            frame::encode(T::OPCODE, FLAG_COMPRESSED, request_id, &self.packed)
        } else {
            frame::encode(T::OPCODE, 0, request_id, &self.body)
        };
        (f.len() <= self.max_frame).then_some(f)
    }
}

/// An application timer, as [`Ctx::timer_after`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId(pub(crate) u64);

/// The handler's view of its shard. Built by the service host for each call.
pub struct Ctx<'a> {
    pub(crate) cx: &'a ShardCx<ShardMsg>,
    pub(crate) enc: &'a mut Encoder,
    pub(crate) timers: &'a mut TimerTable,
    pub(crate) storage: Option<&'a StorageHandle>,
    pub(crate) metrics: &'a AppMetrics,
    pub(crate) ids: &'a mut IdGen,
    pub(crate) id_metrics: &'a IdMetrics,
    pub(crate) calendar: Option<&'a Calendar>,
    /// The component being called: (service, component) indexes.
    pub(crate) me: Option<(u16, u16)>,
}

impl<'a> Ctx<'a> {
    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.cx.id
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.cx.shards
    }

    /// The runtime's context of this shard (sessions, mesh, clock).
    pub fn shard_cx(&self) -> &ShardCx<ShardMsg> {
        self.cx
    }

    /// The peer address of `session` when it lives on this shard (requests are handled on the
    /// session's shard unless their component routes them elsewhere).
    pub fn peer(&self, session: SessionId) -> Option<std::net::SocketAddr> {
        if crate::cluster::link::serve::is_proxy(session) {
            // A client of another node: the address its gate saw, known on the proxy's shard.
            return crate::cluster::link::serve::proxy_peer(session);
        }
        self.cx.peer(session)
    }

    /// Wall-clock now in Unix ms, from the shard's clock (cached per loop pass).
    pub fn now_ms(&self) -> u64 {
        self.cx
            .wall_now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A new unique id from this shard's generator ([`crate::center::ids`]): no lock, no atomic.
    /// Fails with [`IdError::LeaseUnconfirmed`] while the machine-id lease is unconfirmed (answer
    /// the client `IDS_UNAVAILABLE`).
    pub fn next_id(&mut self) -> Result<Id, IdError> {
        let r = self.ids.next(self.now_ms());
        // Plain stores of the generator's own counts (no read-modify-write on the way of an id).
        IdMetrics::set(&self.id_metrics.issued_total, self.ids.issued);
        if self.ids.borrowed > 0 {
            IdMetrics::set(&self.id_metrics.borrowed_total, self.ids.borrowed);
        }
        if r.is_err() {
            IdMetrics::set(&self.id_metrics.refused_total, self.ids.refused);
        }
        r
    }

    /// The game calendar (`[calendar]`), when the server has one (always in `lattice run`).
    pub fn calendar(&self) -> Option<&'a Calendar> {
        self.calendar
    }

    /// The game day now: days since 0001-01-01 of the local date whose reset hour last passed.
    /// Consecutive game days differ by 1. `None` without a calendar.
    pub fn game_day(&self) -> Option<i64> {
        use chrono::Datelike;
        let cal = self.calendar?;
        let now = chrono::DateTime::<chrono::Utc>::from(self.cx.wall_now());
        cal.game_date(now)
            .ok()
            .map(|d| i64::from(d.num_days_from_ce()))
    }

    /// Answers request `request_id` of `session` with `msg`. A reply that would exceed
    /// `net.max_frame` is logged, counted, and replaced by `Error{INTERNAL}`.
    pub fn reply<T: LatticeMessage + std::fmt::Debug>(
        &mut self,
        session: SessionId,
        request_id: u32,
        msg: &T,
    ) {
        log_out::<T>(session, request_id, msg);
        if !self.enc.send(self.cx, session, request_id, msg) {
            AppMetrics::add(&self.metrics.reply_too_large_total, 1);
            tracing::error!(%session, opcode = T::OPCODE, limit = self.cx.net.max_frame.saturating_sub(8), "reply larger than net.max_frame - 8 bytes (the 8 a sequenced session's extension takes); answered INTERNAL instead");
            let e = pb::Error {
                code: error_code::INTERNAL,
                message: "reply too large".into(),
                opcode: 0,
            };
            self.enc.send(self.cx, session, request_id, &e);
        }
    }

    /// Pushes `msg` to `session` (request id 0).
    pub fn push<T: LatticeMessage + std::fmt::Debug>(&mut self, session: SessionId, msg: &T) {
        self.reply(session, 0, msg);
    }

    /// Pushes `msg` to every session in `sessions`, wherever they live (one mesh message per shard).
    pub fn push_many<T: LatticeMessage + std::fmt::Debug>(
        &mut self,
        sessions: &[SessionId],
        msg: &T,
    ) {
        if sessions.is_empty() {
            return;
        }
        match self.enc.frame(0, msg) {
            Some(f) => {
                use crate::cluster::link::serve::is_proxy;
                if sessions.iter().any(|s| is_proxy(*s)) {
                    let (proxies, local): (Vec<SessionId>, Vec<SessionId>) =
                        sessions.iter().partition(|s| is_proxy(**s));
                    for p in proxies {
                        self.enc.proxied.push((p, ProxyOut::Frame(f.clone())));
                    }
                    self.cx.deliver_many(&local, &f);
                } else {
                    self.cx.deliver_many(sessions, &f);
                }
            }
            None => {
                AppMetrics::add(&self.metrics.reply_too_large_total, 1);
                tracing::error!(
                    opcode = T::OPCODE,
                    limit = self.cx.net.max_frame.saturating_sub(8),
                    "broadcast larger than net.max_frame - 8 bytes (the 8 a sequenced session's extension takes); not sent"
                );
            }
        }
    }

    /// Answers a request with an `Error` frame.
    pub fn error(
        &mut self,
        session: SessionId,
        request_id: u32,
        opcode: u16,
        code: u32,
        message: &str,
    ) {
        let e = pb::Error {
            code,
            message: message.to_string(),
            opcode: u32::from(opcode),
        };
        self.reply(session, request_id, &e);
    }

    /// Closes `session` (after flushing what is queued for it) with `reason` logged.
    pub fn close(&mut self, session: SessionId, reason: impl Into<String>) {
        self.close_with(session, reason.into(), false);
    }

    /// [`Ctx::close`], except that a resumable session whose socket is lost keeps what it was
    /// sent (the `Kicked` pushed just before) for one resume, which delivers it and then ends the
    /// session; without a resume it ends at its resume window's end (`ShardCx::close_keeping_replay`).
    pub fn close_keeping_replay(&mut self, session: SessionId, reason: impl Into<String>) {
        self.close_with(session, reason.into(), true);
    }

    fn close_with(&mut self, session: SessionId, reason: String, keep_replay: bool) {
        if crate::cluster::link::serve::is_proxy(session) {
            // A client of another node: its gate holds the socket and closes it (at once).
            self.enc.proxied.push((session, ProxyOut::Close(reason)));
        } else if keep_replay {
            self.cx
                .close_keeping_replay(session, CloseReason::App(reason));
        } else {
            self.cx.close(session, CloseReason::App(reason));
        }
    }

    /// Sends an internal message to service `service`'s components on shard `dst` (never dropped).
    pub fn send_internal(&self, dst: usize, service: u16, payload: Box<dyn Any + Send>) {
        self.cx.send(dst, ShardMsg::Internal { service, payload });
    }

    /// Sends an internal message to the calling component's own service on shard `dst` (this
    /// shard included), where its `on_internal` takes it. Never dropped. Logged and ignored when
    /// called outside a component.
    pub fn send_peer(&self, dst: usize, payload: Box<dyn Any + Send>) {
        match self.me {
            Some((service, _)) => self.send_internal(dst, service, payload),
            None => tracing::error!("Ctx::send_peer called outside a component; ignored"),
        }
    }

    /// The storage engine, when the server has one (always in `lattice run`): mark rows dirty
    /// ([`StorageHandle::mark`]), load and query. Marks return tickets; wait for one with
    /// [`Ctx::then`] before acknowledging a change to a client.
    pub fn storage(&self) -> Option<&'a StorageHandle> {
        self.storage
    }

    /// Waits for `fut` off the handler (it runs as a task on this shard; a storage ticket, a hash
    /// done on a worker), then calls `f` on this same component with its output. The shard never
    /// blocks. `C` must be the calling component's type; a mismatch is logged and `f` is not run.
    pub fn then<C: 'static, T: Send + 'static>(
        &mut self,
        fut: impl Future<Output = T> + 'static,
        f: fn(&mut C, &mut Ctx<'_>, T),
    ) {
        let Some((service, comp)) = self.me else {
            tracing::error!("Ctx::then called outside a component; ignored");
            return;
        };
        self.cx.spawn_then(fut, move |out| ShardMsg::Continue {
            service,
            comp,
            f: Box::new(move |any: &mut dyn Any, ctx: &mut Ctx<'_>| {
                match any.downcast_mut::<C>() {
                    Some(c) => f(c, ctx, out),
                    None => tracing::error!(
                        expected = std::any::type_name::<C>(),
                        "Ctx::then continuation reached another component type; dropped"
                    ),
                }
            }),
        });
    }

    /// Calls this component's [`super::Component::on_timer`] with `token` once, after `delay`
    /// (1 ms resolution, never early). Fails when the shard's wheel is full (counted).
    pub fn timer_after(&mut self, delay: Duration, token: u64) -> Result<TimerId, TimerError> {
        self.timer(delay, token, false)
    }

    /// Calls this component's [`super::Component::on_timer`] with `token` every `period` until
    /// [`Ctx::cancel_timer`].
    pub fn timer_every(&mut self, period: Duration, token: u64) -> Result<TimerId, TimerError> {
        self.timer(period, token, true)
    }

    /// Cancels a timer of this shard. Returns false when it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(self.cx, id)
    }

    fn timer(&mut self, d: Duration, token: u64, periodic: bool) -> Result<TimerId, TimerError> {
        let (service, comp) = self
            .me
            .ok_or(TimerError::InvalidConfig("timers belong to a component"))?;
        self.timers.set(self.cx, d, periodic, service, comp, token)
    }
}

fn log_out<T: LatticeMessage + std::fmt::Debug>(session: SessionId, request_id: u32, msg: &T) {
    if tracing::enabled!(tracing::Level::TRACE) {
        let info = T::info();
        if info.no_log_response {
            tracing::trace!(%session, request_id, opcode = T::OPCODE, msg = info.name, body = "<not logged>", "frame out");
        } else {
            tracing::trace!(%session, request_id, opcode = T::OPCODE, msg = info.name, body = ?msg, "frame out");
        }
    }
}
