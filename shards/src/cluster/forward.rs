//! A gate without the logic role: each client request the gate let through goes to the logic node
//! that owns it, over that node's link; frames coming back are delivered to the client sessions.
//!
//! The owner is chosen by rendezvous hashing ([`super::rendezvous`]) of a key over the live logic
//! nodes: the component's own routing key when it routes by hash (a room, an account's owner key),
//! the account's owner key for `Login`, else the node the session logged in on, else the session.

use std::collections::HashMap;
use std::sync::Arc;

use lattice_proto::{error_code, pb, AnyMessage, OpcodeInfo};
use lattice_runtime::ShardCx;
use lattice_wire::{CloseReason, FrameHeader, SessionId};

use super::link::client::{Out, Refused};
use super::link::inbox::Inbound;
use super::node::{ClusterNode, Links};
use crate::service::{Encoder, Route, ShardMsg};

/// What a gate shard remembers of one of its client sessions.
#[derive(Default)]
struct Routed {
    /// The key its requests are routed by once it logged in (its account's owner key).
    sticky: Option<u64>,
    /// The links it sent requests over (bit = index in `ClusterNode::links`; past 64 links,
    /// all of them hear its close).
    links: u64,
}

/// One gate shard's routing to logic nodes.
pub struct Forwarder {
    node: Arc<ClusterNode>,
    /// This shard's snapshot of the node's links and its generation.
    links: (u64, Links),
    sessions: HashMap<SessionId, Routed>,
}

fn session_key(s: SessionId) -> u64 {
    // Spread session ids (consecutive slots) before hashing them against node names.
    s.as_u64().wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Forwarder {
    /// True while a link of this node has requests sent and not answered (or given up), or
    /// answers wait in this shard's inbox. In that order: a link forgets a request only once its
    /// answer is in the inbox (link/pending.rs), so an answer is always seen in one place.
    pub fn awaiting_replies(&self, shard: usize) -> bool {
        self.node.links().1.iter().any(|l| l.awaiting_replies())
            || self
                .node
                .inboxes
                .get(shard)
                .is_some_and(|ib| !ib.is_empty())
    }

    /// Routing for one shard of `node`.
    pub fn new(node: Arc<ClusterNode>) -> Forwarder {
        Forwarder {
            links: node.links(),
            node,
            sessions: HashMap::new(),
        }
    }

    /// Starts waiting for frames from links (call on the shard, in `on_start`; again after each
    /// [`ShardMsg::LinkInbound`]).
    pub fn arm(&self, cx: &ShardCx<ShardMsg>) {
        if let Some(ib) = self.node.inboxes.get(cx.id) {
            cx.spawn_watch(ib.take(), ShardMsg::LinkInbound);
        }
    }

    /// Delivers frames that came over links, and waits for more.
    pub fn inbound(&self, cx: &ShardCx<ShardMsg>, batch: Vec<Inbound>) {
        for item in batch {
            match item {
                Inbound::Frame(s, f) => cx.deliver(s, f),
                Inbound::Close(s, why) => cx.close(s, CloseReason::App(why)),
            }
        }
        self.arm(cx);
    }

    /// The routing key of a request.
    fn key(&mut self, session: SessionId, msg: &AnyMessage, route: Option<Route>) -> u64 {
        match (msg, route) {
            (AnyMessage::Login(l), _) => {
                let k = u64::from(crate::logic::account::owner_key(
                    &l.account.to_ascii_lowercase(),
                ));
                self.sessions.entry(session).or_default().sticky = Some(k);
                k
            }
            (_, Some(Route::Hash(h))) => h,
            _ => self
                .sessions
                .get(&session)
                .and_then(|r| r.sticky)
                .unwrap_or_else(|| session_key(session)),
        }
    }

    /// Sends a request to the logic node that owns it; answers `NODE_UNAVAILABLE` when there is
    /// none, `BUSY` when its link's queue is full.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        h: FrameHeader,
        info: &OpcodeInfo,
        msg: AnyMessage,
        route: Option<Route>,
    ) {
        let key = self.key(session, &msg, route);
        if self.links.0 != self.node.links_generation() {
            self.links = self.node.links();
        }
        let Some((index, link)) = self.node.owner(&self.links.1, key) else {
            error(
                cx,
                enc,
                session,
                h,
                error_code::NODE_UNAVAILABLE,
                "no logic node is live; retry later",
            );
            return;
        };
        let routed = self.sessions.entry(session).or_default();
        routed.links |= 1u64.checked_shl(index as u32).unwrap_or(u64::MAX);
        if matches!(msg, AnyMessage::TokenLogin(_) | AnyMessage::Register(_)) {
            if let Some(Route::Hash(k)) = route {
                routed.sticky = Some(k);
            }
        }
        let mut body = Vec::with_capacity(64);
        msg.encode_body(&mut body);
        if body.len() > self.node.max_forward_body() {
            error(
                cx,
                enc,
                session,
                h,
                error_code::BAD_REQUEST,
                "request too large to forward to a logic node (net.max_frame)",
            );
            return;
        }
        let out = Out::Request {
            origin: session,
            request_id: h.request_id,
            opcode: info.opcode,
            body,
            peer: cx.peer(session),
        };
        if let Err((_, why)) = link.try_send(out) {
            let message = match why {
                Refused::QueueFull => "link to the logic node is full, retry later",
                Refused::Unanswered => {
                    "too many requests unanswered by the logic node (cluster.link_max_unanswered), retry later"
                }
            };
            error(cx, enc, session, h, error_code::BUSY, message);
        }
    }

    /// A client session of this shard closed: the logic nodes it sent requests to forget its
    /// proxies.
    pub fn closed(&mut self, session: SessionId) {
        let Some(r) = self.sessions.remove(&session) else {
            return;
        };
        if self.links.0 != self.node.links_generation() {
            // A closed link's place may hold a new node's link now: the notice goes there and
            // is ignored; the closed link (its thread ended) is let go.
            self.links = self.node.links();
        }
        for (i, l) in self.links.1.iter().enumerate() {
            if i >= 64 || r.links & (1 << i) != 0 {
                l.session_closed(session);
            }
        }
    }
}

fn error(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    session: SessionId,
    h: FrameHeader,
    code: u32,
    message: &str,
) {
    enc.send(
        cx,
        session,
        h.request_id,
        &pb::Error {
            code,
            message: message.into(),
            opcode: u32::from(h.opcode),
        },
    );
}
