//! What a handler sees: the request and a context to answer, push, route and close with.

use std::any::Any;

use lattice_core::net::compress::BodyCompressor;
use lattice_core::net::frame::{self, FLAG_COMPRESSED};
use lattice_core::net::{CloseReason, SessionId};
use lattice_core::runtime::ShardCx;
use lattice_core::telemetry::metrics::ShardMetrics;
use lattice_proto::{pb, LatticeMessage};

use crate::app::AppMsg;

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

/// Per-shard encoder state: the compressor and a scratch buffer for bodies.
pub struct Encoder {
    pub(crate) compressor: BodyCompressor,
    body: Vec<u8>,
    packed: Vec<u8>,
}

impl Encoder {
    /// An encoder using `compressor`.
    pub fn new(compressor: BodyCompressor) -> Self {
        Encoder {
            compressor,
            body: Vec::new(),
            packed: Vec::new(),
        }
    }

    /// Encodes `msg` as a complete frame (compressed when above the threshold).
    pub fn frame<T: LatticeMessage + std::fmt::Debug>(
        &mut self,
        request_id: u32,
        msg: &T,
    ) -> Vec<u8> {
        self.body.clear();
        // Encoding into a Vec cannot fail for lack of space.
        let _ = msg.encode(&mut self.body);
        self.packed.clear();
        if self.compressor.compress(&self.body, &mut self.packed) {
            frame::encode(T::OPCODE, FLAG_COMPRESSED, request_id, &self.packed)
        } else {
            frame::encode(T::OPCODE, 0, request_id, &self.body)
        }
    }
}

/// The handler's view of its shard.
pub struct Ctx<'a> {
    pub(crate) cx: &'a ShardCx<AppMsg>,
    pub(crate) enc: &'a mut Encoder,
}

impl<'a> Ctx<'a> {
    /// A context over `cx` encoding with `enc`.
    pub fn new(cx: &'a ShardCx<AppMsg>, enc: &'a mut Encoder) -> Self {
        Ctx { cx, enc }
    }

    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.cx.id
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.cx.shards
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        self.cx.m()
    }

    /// Answers request `request_id` of `session` with `msg`.
    pub fn reply<T: LatticeMessage + std::fmt::Debug>(
        &mut self,
        session: SessionId,
        request_id: u32,
        msg: &T,
    ) {
        log_out::<T>(session, request_id, msg);
        let f = self.enc.frame(request_id, msg);
        self.cx.deliver(session, f);
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
        let f = self.enc.frame(0, msg);
        self.cx.deliver_many(sessions, &f);
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

    /// Closes `session` (after flushing what is queued for it).
    pub fn close(&self, session: SessionId, reason: impl Into<String>) {
        self.cx.close(session, CloseReason::App(reason.into()));
    }

    /// Sends an internal message to the service's components on shard `dst`.
    pub fn send_internal(&self, dst: usize, service: usize, payload: Box<dyn Any + Send>) {
        self.cx.send(dst, AppMsg::Internal { service, payload });
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
