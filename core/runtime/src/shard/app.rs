//! The application a shard runs, as the runtime sees it.

use lattice_wire::http::{Request, Response};
use lattice_wire::{CloseReason, Frame, FrameHeader, Limited, RpcReply, SessionId};

use super::cx::ShardCx;

/// The application a shard runs: the roles (gate, services, …) composed by the server. One instance
/// per shard, created on the shard's thread; it is never shared, so it needs no locks.
///
/// Callbacks must not block. A panic inside `on_frame` is caught by the runtime (per read, not per
/// frame) and closes the session being served; an application that wants to answer the client
/// catches handler panics itself.
pub trait ShardApp: 'static {
    /// Messages the application sends between shards (and to itself, see [`ShardCx::send`]).
    type Msg: Send + 'static;

    /// The shard's loop is starting (called once, before any other callback).
    fn on_start(&mut self, _cx: &ShardCx<Self::Msg>) {}

    /// A session opened on this shard.
    fn on_open(&mut self, _cx: &ShardCx<Self::Msg>, _session: SessionId) {}

    /// A complete frame arrived from one of this shard's sessions.
    fn on_frame(&mut self, cx: &ShardCx<Self::Msg>, session: SessionId, frame: Frame<'_>);

    /// A frame from `session` passed one of its rate limits and was not handed to
    /// [`ShardApp::on_frame`]; `header` is its header (request id, opcode). Answer it (the
    /// protocol says `Error{RATE_LIMITED}`). When the limit's policy closes the session, the
    /// runtime closes it after this call. Default: nothing is answered.
    fn on_rate_limited(
        &mut self,
        _cx: &ShardCx<Self::Msg>,
        _session: SessionId,
        _header: FrameHeader,
        _which: Limited,
    ) {
    }

    /// A socket handed over by another shard ([`ShardCx::hand_over`]) now belongs to `session`,
    /// a new session of this shard, with the message the other shard gave. Default: close it.
    fn on_handover(&mut self, cx: &ShardCx<Self::Msg>, session: SessionId, _msg: Self::Msg) {
        cx.close(
            session,
            CloseReason::App("socket handover not supported".into()),
        );
    }

    /// An HTTP request from one of this shard's sessions (an `http` listener). Answer it with
    /// [`ShardCx::respond`], now or later (no further request of that connection is read until
    /// then). The default answers `404`.
    fn on_http(&mut self, cx: &ShardCx<Self::Msg>, session: SessionId, _req: Request) {
        cx.respond(session, &Response::text(404, "not found\n"));
    }

    /// The reply frame an HTTP request was relayed for (`Session::expect_reply`) arrived: turn it
    /// into the request's response with [`ShardCx::respond`]. The default answers `500`.
    fn on_rpc_reply(&mut self, cx: &ShardCx<Self::Msg>, session: SessionId, _reply: RpcReply) {
        cx.respond(session, &Response::text(500, "no handler for replies\n"));
    }

    /// A message from another shard (or from this one through [`ShardCx::send`]).
    fn on_message(&mut self, cx: &ShardCx<Self::Msg>, msg: Self::Msg);

    /// Runs queued work, at most `budget` items. Returns true if work remains. The loop calls it
    /// once every pass, after that pass's [`ShardApp::on_message`] calls, so work queued by a
    /// message during a pass ([`ShardCx::in_pass`]) needs no [`ShardCx::notify`].
    fn run_queued(&mut self, _cx: &ShardCx<Self::Msg>, _budget: usize) -> bool {
        false
    }

    /// A timer set with [`ShardCx::timer_after`] or [`ShardCx::timer_every`] fired.
    fn on_timer(&mut self, _cx: &ShardCx<Self::Msg>, _token: u64) {}

    /// A session of this shard closed (already removed from the table).
    fn on_close(&mut self, _cx: &ShardCx<Self::Msg>, _session: SessionId, _reason: &CloseReason) {}

    /// Shutdown began (called once per shard before draining).
    fn on_shutdown(&mut self, _cx: &ShardCx<Self::Msg>) {}

    /// The drain is over: every session of the shard is closed and the loop ends after this.
    fn on_stopped(&mut self, _cx: &ShardCx<Self::Msg>) {}

    /// True while the application waits for answers from outside the shards (a peer node, a
    /// worker pool it does not reach through [`ShardCx::spawn_then`]): the drain waits for it,
    /// bounded by `shutdown.drain_timeout_ms`.
    fn has_pending_work(&self, _cx: &ShardCx<Self::Msg>) -> bool {
        false
    }
}
