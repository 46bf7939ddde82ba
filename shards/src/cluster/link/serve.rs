//! The accepting side of node links, on a logic node's shards.
//!
//! A link arrives on the `internal` listener as a sequenced session (resume on) whose first frame
//! after `Welcome` is `LinkHello` (a `no_client` opcode, so the gate refuses it from a client
//! session). A `LinkRequest` runs through the service host like a client's request, on behalf of a
//! **proxy session**: a [`SessionId`] of the link session's shard with [`PROXY_BIT`] set in its
//! slot, one per (link, client session of the gate). Components keep proxy ids like any session
//! (room members, logged-in sessions); what they send to one is caught by the encoder
//! ([`crate::service::Encoder`]) and comes here, to go back over the link as `LinkDeliver`. The
//! proxy ends (every shard hears `SessionClosed`) when the gate says its client session closed or
//! when the link session itself closes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use lattice_proto::{error_code, pb, AnyMessage};
use lattice_runtime::telemetry::log::or_none;
use lattice_runtime::telemetry::warn_limit::WarnLimiter;
use lattice_runtime::ShardCx;
use lattice_wire::{FrameHeader, SessionId};

use crate::host::ServiceHost;
use crate::metrics::AppMetrics;
use crate::service::{Encoder, ProxyOut, ShardMsg};
use lattice_proto::LatticeMessage as _;
use prost::Message as _;

/// Marks a proxy session id (the slot's top bit: real slots never reach it).
pub const PROXY_BIT: u32 = 1 << 31;

/// True when `s` is a proxy for a client session of another node.
pub fn is_proxy(s: SessionId) -> bool {
    s.slot() & PROXY_BIT != 0
}

thread_local! {
    /// The client addresses of this shard's proxy sessions (each shard is one thread; a proxy's
    /// own shard is where components ask for its address: `Login` is handled there first).
    static PEERS: RefCell<HashMap<SessionId, SocketAddr>> = RefCell::new(HashMap::new());
}

/// The client address of proxy `p`, as its gate saw it; `None` when unknown or when asked on
/// another shard than the proxy's.
pub fn proxy_peer(p: SessionId) -> Option<SocketAddr> {
    PEERS.with(|m| m.borrow().get(&p).copied())
}

#[derive(Default)]
struct Slot {
    generation: u32,
    used: Option<(SessionId, u64)>,
}

/// One shard's links and proxy sessions.
pub struct LinkServe {
    me: String,
    /// Link sessions of this shard and the node at the other end.
    links: HashMap<SessionId, String>,
    by_origin: HashMap<(SessionId, u64), SessionId>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// `cluster.link_max_proxies`.
    max_proxies: usize,
    /// `cluster.link_secret`: a `LinkHello` must bring it (empty: not checked).
    secret: String,
    /// Refused links are logged at most `log.warn_burst` per window.
    warns: WarnLimiter,
    born: Instant,
}

impl LinkServe {
    /// The accepting side for node `me`, holding at most `max_proxies` proxy sessions, taking
    /// links that bring `secret` (any when empty).
    pub fn new(me: String, max_proxies: usize, secret: String) -> LinkServe {
        LinkServe {
            me,
            links: HashMap::new(),
            by_origin: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            max_proxies,
            secret,
            warns: WarnLimiter::from_defaults(),
            born: Instant::now(),
        }
    }

    /// Ends this shard's link sessions of `node` other than `newer` (with their proxies).
    pub fn replaced(&mut self, cx: &ShardCx<ShardMsg>, node: &str, newer: SessionId) {
        let old: Vec<SessionId> = self
            .links
            .iter()
            .filter(|(s, n)| n.as_str() == node && **s != newer)
            .map(|(s, _)| *s)
            .collect();
        for s in old {
            // A restarted node's old socket is usually gone by now; one still connected is most
            // likely a second process under the same name (nothing checks names without etcd).
            if cx.inspect_session(s, |x| x.is_attached()).unwrap_or(false) {
                let now_ms = self.born.elapsed().as_millis() as u64;
                self.warns.warn("link_replaced_live", now_ms, || {
                    tracing::warn!(session = %s, peer = %node, older = %or_none(cx.peer(s)), newer = %or_none(cx.peer(newer)), "link session replaced while still connected: two nodes may share the name cluster.node_id = {node}");
                });
            }
            tracing::info!(session = %s, peer = %node, "link session replaced by a newer one of the same node: it ends with its proxies");
            cx.close(
                s,
                lattice_wire::CloseReason::App("replaced by a newer link of the same node".into()),
            );
        }
    }

    /// Proxy sessions alive on this shard.
    pub fn proxies(&self) -> usize {
        self.by_origin.len()
    }

    /// Handles a link frame from `session` (an `internal` session); returns false when `msg` is
    /// not a link message.
    pub fn frame(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        host: &mut ServiceHost,
        session: SessionId,
        h: FrameHeader,
        msg: &AnyMessage,
    ) -> bool {
        match msg {
            AnyMessage::LinkHello(hello) => {
                if self.links.contains_key(&session) {
                    // Each would tell every shard again that this node's older links are gone.
                    refuse(
                        cx,
                        host,
                        session,
                        h,
                        "LinkHello was sent on this session already",
                    );
                    return true;
                }
                let sequenced = cx
                    .inspect_session(session, |s| s.is_resumable())
                    .unwrap_or(false);
                if !sequenced {
                    host.encoder().send(
                        cx,
                        session,
                        h.request_id,
                        &pb::Error {
                            code: error_code::NOT_ALLOWED,
                            message: "a link needs resume (Hello with resume = true)".into(),
                            opcode: u32::from(h.opcode),
                        },
                    );
                    return true;
                }
                if !self.secret.is_empty() && !same_secret(&hello.secret, &self.secret) {
                    AppMetrics::add(&host.m().link_secret_refused_total, 1);
                    let now_ms = self.born.elapsed().as_millis() as u64;
                    self.warns.warn("link_secret", now_ms, || {
                        tracing::warn!(%session, peer = %hello.node_id, addr = %or_none(cx.peer(session)), "link refused: wrong cluster.link_secret");
                    });
                    refuse(cx, host, session, h, "wrong cluster.link_secret");
                    cx.close(
                        session,
                        lattice_wire::CloseReason::App("wrong cluster.link_secret".into()),
                    );
                    return true;
                }
                tracing::info!(%session, peer = %hello.node_id, "link accepted");
                self.links.insert(session, hello.node_id.clone());
                // A node has one link session: an older one (its gate gave it up, or resumed it
                // with frames lost) would keep its proxies in rooms until its resume window.
                for shard in 0..cx.shards {
                    cx.send(
                        shard,
                        ShardMsg::LinkReplaced(hello.node_id.clone(), session),
                    );
                }
                host.encoder().send(
                    cx,
                    session,
                    h.request_id,
                    &pb::LinkWelcome {
                        node_id: self.me.clone(),
                    },
                );
                true
            }
            AnyMessage::LinkRequest(r) => {
                if !self.links.contains_key(&session) {
                    refuse(cx, host, session, h, "send LinkHello first");
                    return true;
                }
                let opcode = r.opcode as u16;
                let info = match lattice_proto::info(opcode) {
                    Some(i) if !i.no_client && u32::from(opcode) == r.opcode => i,
                    _ => {
                        refuse(cx, host, session, h, "not a client request");
                        return true;
                    }
                };
                let Some(proxy) = self.proxy(cx, session, r.origin) else {
                    AppMetrics::add(&host.m().link_proxies_refused_total, 1);
                    let f = lattice_wire::frame::encode(
                        pb::Error::OPCODE,
                        0,
                        r.request_id,
                        &pb::Error {
                            code: error_code::BUSY,
                            message: "too many clients on this logic node (cluster.link_max_proxies); retry later".into(),
                            opcode: r.opcode,
                        }
                        .encode_to_vec(),
                    );
                    let m = pb::LinkDeliver {
                        origin: r.origin,
                        frame: f,
                        close: String::new(),
                    };
                    host.encoder().send_link(cx, session, &m);
                    return true;
                };
                // The client's address as its gate saw it. A peer that is not `ip:port` is
                // refused (a request that needs it, `Login`, would otherwise go unanswered);
                // none given counts as the unspecified address.
                let peer = if r.peer.is_empty() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    match r.peer.parse::<SocketAddr>() {
                        Ok(a) => a,
                        Err(_) => {
                            host.encoder().send(
                                cx,
                                proxy,
                                r.request_id,
                                &pb::Error {
                                    code: error_code::BAD_REQUEST,
                                    message: "LinkRequest.peer is not ip:port".into(),
                                    opcode: r.opcode,
                                },
                            );
                            return true;
                        }
                    }
                };
                PEERS.with(|m| m.borrow_mut().insert(proxy, peer));
                let header = FrameHeader::new(0, opcode, 0, r.request_id);
                match lattice_proto::decode(opcode, &r.body) {
                    Ok(inner) => host.request(cx, proxy, header, info, inner),
                    Err(e) => {
                        host.encoder().send(
                            cx,
                            proxy,
                            r.request_id,
                            &pb::Error {
                                code: e.error_code(),
                                message: e.to_string(),
                                opcode: r.opcode,
                            },
                        );
                    }
                }
                true
            }
            AnyMessage::LinkSessionClosed(c) => {
                if let Some(p) = self.by_origin.remove(&(session, c.origin)) {
                    self.release(cx, p);
                }
                true
            }
            _ => false,
        }
    }

    /// The proxy session of `origin` on `link`, made when new; `None` at `cluster.link_max_proxies`.
    fn proxy(&mut self, cx: &ShardCx<ShardMsg>, link: SessionId, origin: u64) -> Option<SessionId> {
        if let Some(p) = self.by_origin.get(&(link, origin)) {
            return Some(*p);
        }
        if self.by_origin.len() >= self.max_proxies {
            return None;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let e = &mut self.slots[slot as usize];
        e.used = Some((link, origin));
        let p = SessionId::new(cx.id, slot | PROXY_BIT, e.generation);
        self.by_origin.insert((link, origin), p);
        Some(p)
    }

    fn release(&mut self, cx: &ShardCx<ShardMsg>, p: SessionId) {
        PEERS.with(|m| m.borrow_mut().remove(&p));
        let slot = (p.slot() & !PROXY_BIT) as usize;
        if let Some(e) = self.slots.get_mut(slot) {
            e.used = None;
            e.generation = e.generation.wrapping_add(1) & 0x00ff_ffff;
            self.free.push(slot as u32);
        }
        for shard in 0..cx.shards {
            cx.send(shard, ShardMsg::SessionClosed(p));
        }
    }

    /// What a component sent to proxy `p` (of this shard): back over its link.
    pub fn deliver(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        p: SessionId,
        out: ProxyOut,
    ) {
        let slot = (p.slot() & !PROXY_BIT) as usize;
        let Some(Slot {
            generation,
            used: Some((link, origin)),
        }) = self.slots.get(slot)
        else {
            return;
        };
        if *generation != p.generation() {
            return;
        }
        let m = match out {
            ProxyOut::Frame(frame) => pb::LinkDeliver {
                origin: *origin,
                frame,
                close: String::new(),
            },
            ProxyOut::Close(why) => pb::LinkDeliver {
                origin: *origin,
                frame: Vec::new(),
                close: if why.is_empty() { "closed".into() } else { why },
            },
        };
        if !enc.send_link(cx, *link, &m) {
            tracing::error!(%p, "frame for a proxy session larger than net.max_frame; not sent");
        }
    }

    /// A session of this shard closed: when it was a link, its proxies end.
    pub fn closed(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId) {
        let Some(peer) = self.links.remove(&session) else {
            return;
        };
        let gone: Vec<_> = self
            .by_origin
            .iter()
            .filter(|((l, _), _)| *l == session)
            .map(|(k, p)| (*k, *p))
            .collect();
        tracing::warn!(%session, %peer, proxies = gone.len(), "link session closed: its proxy sessions end");
        for (k, p) in gone {
            self.by_origin.remove(&k);
            self.release(cx, p);
        }
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same_secret(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn refuse(
    cx: &ShardCx<ShardMsg>,
    host: &mut ServiceHost,
    session: SessionId,
    h: FrameHeader,
    why: &str,
) {
    host.encoder().send(
        cx,
        session,
        h.request_id,
        &pb::Error {
            code: error_code::NOT_ALLOWED,
            message: why.into(),
            opcode: u32::from(h.opcode),
        },
    );
}
