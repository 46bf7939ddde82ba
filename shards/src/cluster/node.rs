//! This node in a cluster: its name and roles, the live-node view, and (on a gate without the
//! logic role) its links to the logic nodes and the shards' inboxes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_runtime::telemetry::prom::{Kind, Writer};

use super::config::ClusterConfig;
use super::link::client::{self, LinkHandle, LinkWire};
use super::link::inbox::Inbox;
use super::members::{Members, NodeInfo, Role};
use super::rendezvous;

/// The links a gate has opened, in the order they were opened (append-only: an index names the
/// same link for the life of the process).
pub type Links = Arc<Vec<Arc<LinkHandle>>>;

/// What every shard shares about the cluster.
pub struct ClusterNode {
    /// This node's name.
    pub me: String,
    /// This node's roles.
    pub roles: Vec<Role>,
    /// The live-node view (written by discovery: etcd, or `cluster.static_peers`).
    pub members: Arc<Members>,
    /// Links to logic nodes (a gate without the logic role; empty otherwise), replaced whole
    /// when one is added; readers keep a snapshot and compare [`ClusterNode::links_generation`].
    links: Mutex<Links>,
    links_generation: AtomicU64,
    /// Per shard: frames received over links for its client sessions.
    pub inboxes: Arc<Vec<Arc<Inbox>>>,
    cfg: ClusterConfig,
    wire: LinkWire,
    stop: AtomicBool,
}

/// Why the cluster part could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A `[cluster]` value is wrong.
    #[error("`{0}`: {1}")]
    Config(&'static str, String),
}

/// How often the link manager looks at the view's generation.
const WATCH_EVERY: Duration = Duration::from_millis(100);

impl ClusterNode {
    /// Sets up this node for `shards` shards: publishes `cluster.static_peers` into `members`
    /// when `publish_static` (no discovery writes it) and, on a routing gate, opens a link to
    /// every logic node of the view, then watches the view (a thread polling
    /// [`Members::generation`] every 100 ms) to open links to logic nodes that appear later.
    /// A node that leaves the view keeps its link (it reconnects if the node comes back); routing
    /// only ever considers the nodes of the current view.
    pub fn start(
        cfg: &ClusterConfig,
        wire: LinkWire,
        shards: usize,
        members: Arc<Members>,
        publish_static: bool,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let roles = cfg.roles().map_err(|(k, e)| ClusterError::Config(k, e))?;
        let me = cfg.node_name();
        if publish_static {
            let peers = cfg.peers().map_err(|(k, e)| ClusterError::Config(k, e))?;
            members.set(peers);
        }
        let inboxes: Arc<Vec<Arc<Inbox>>> = Arc::new(
            (0..shards)
                .map(|_| Inbox::new(cfg.link_inbox_frames))
                .collect(),
        );
        let node = Arc::new(ClusterNode {
            me,
            roles,
            members,
            links: Mutex::new(Arc::new(Vec::new())),
            links_generation: AtomicU64::new(0),
            inboxes,
            cfg: cfg.clone(),
            wire,
            stop: AtomicBool::new(false),
        });
        if node.routes_remotely() {
            let mut seen = node.members.generation();
            node.sync_links();
            if node.links().1.is_empty() {
                // At start the view from etcd is usually still loading: not a warning.
                tracing::info!("gate without logic nodes so far (the live view may still be loading): routed requests get NODE_UNAVAILABLE until one is live");
            }
            let n = node.clone();
            let watcher = std::thread::Builder::new()
                .name("cluster-links".into())
                .spawn(move || {
                    let mut again = false;
                    while !n.stop.load(Ordering::Acquire) {
                        std::thread::sleep(WATCH_EVERY);
                        let g = n.members.generation();
                        if g != seen || again {
                            seen = g;
                            again = n.sync_links();
                        }
                    }
                });
            if let Err(e) = watcher {
                tracing::error!(error = %e, "cannot start the link manager: links are opened for the nodes known at start only");
            }
        }
        tracing::info!(node = %node.me, roles = %node.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","), links = node.links().1.len(), "cluster node");
        Ok(node)
    }

    /// Opens a link to each logic node of the view that has none, and closes the link of a node
    /// that left the view once that link is given up (down past `cluster.link_down_grace_ms`): its
    /// thread ends and its place in the list is taken by the next new node's link (sessions
    /// remember links by their place, so the list never shrinks; it holds at most as many links
    /// as there were logic nodes at once). Returns true while a node that left the view still has
    /// a link not given up: the caller looks again later.
    fn sync_links(&self) -> bool {
        let (_, view) = self.members.view();
        let mut cur = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Arc<LinkHandle>> = cur.as_ref().clone();
        let mut changed = false;
        let mut again = false;
        let in_view = |id: &str| view.with_role(Role::Logic).any(|n| n.node_id == id);
        for l in next
            .iter()
            .filter(|l| !l.is_stopped() && !in_view(&l.node_id))
        {
            if l.is_dead() {
                tracing::info!(peer = %l.node_id, "a logic node left the view and its link is given up: link closed");
                l.stop();
                changed = true;
            } else {
                again = true;
            }
        }
        for n in view.with_role(Role::Logic) {
            if n.node_id == self.me {
                continue;
            }
            if let Some(l) = next
                .iter()
                .find(|l| l.node_id == n.node_id && !l.is_stopped())
            {
                // The node came back elsewhere (a restarted pod with a new address).
                if !n.internal_addr.is_empty() && l.set_addr(&n.internal_addr) {
                    tracing::info!(peer = %n.node_id, addr = %n.internal_addr, "a linked node has a new address: the link reconnects there");
                }
                continue;
            }
            if n.internal_addr.is_empty() {
                // Registered without an internal listener: nothing to link to, so never routed to.
                tracing::warn!(peer = %n.node_id, "a logic node without an internal listener: no link, not routed to");
                continue;
            }
            tracing::info!(peer = %n.node_id, addr = %n.internal_addr, "opening a link");
            let link = client::start(
                self.me.clone(),
                n.node_id.clone(),
                n.internal_addr.clone(),
                &self.cfg,
                self.wire,
                self.inboxes.clone(),
            );
            match next.iter().position(|l| l.is_stopped()) {
                Some(i) => next[i] = link,
                None => next.push(link),
            }
            changed = true;
        }
        if changed {
            *cur = Arc::new(next);
            self.links_generation.fetch_add(1, Ordering::Release);
        }
        again
    }

    /// The largest request body a gate forwards: its `LinkRequest` (the body, the client's
    /// session id, request id, opcode and address, ≤ 96 bytes more with the frame's header) must
    /// fit what the logic node reads on a link. Only a compressed client frame that inflates past
    /// `net.max_frame` can be larger.
    pub fn max_forward_body(&self) -> usize {
        self.wire.max_frame as usize + crate::service::ctx::LINK_FRAME_OVERHEAD - 96
    }

    /// `cluster.link_max_proxies`.
    pub fn max_proxies(&self) -> usize {
        self.cfg.link_max_proxies
    }

    /// `cluster.link_secret` (empty: none).
    pub fn link_secret(&self) -> &str {
        &self.cfg.link_secret
    }

    /// Bumped whenever a link is added or closed.
    pub fn links_generation(&self) -> u64 {
        self.links_generation.load(Ordering::Acquire)
    }

    /// The links opened so far and the generation of that list.
    pub fn links(&self) -> (u64, Links) {
        let cur = self.links.lock().unwrap_or_else(|p| p.into_inner());
        (self.links_generation(), cur.clone())
    }

    /// True when this node routes its clients' requests over links.
    pub fn routes_remotely(&self) -> bool {
        self.roles.contains(&Role::Gate) && !self.roles.contains(&Role::Logic)
    }

    /// Among `links`, the one to the live logic node that owns `key`, with its index: rendezvous
    /// hashing over the logic nodes of the view whose link is not given up. `None` when there is
    /// none. Cost: a view read (a lock and an `Arc` clone) and a hash per node.
    pub fn owner<'a>(&self, links: &'a Links, key: u64) -> Option<(usize, &'a Arc<LinkHandle>)> {
        let (_, view) = self.members.view();
        let link_of = |id: &str| {
            links
                .iter()
                .position(|l| l.node_id == id && !l.is_stopped())
        };
        let live: Vec<&NodeInfo> = view
            .with_role(Role::Logic)
            .filter(|n| link_of(&n.node_id).is_some_and(|i| !links[i].is_dead()))
            .collect();
        let n = rendezvous::owner(key, live)?;
        let i = link_of(&n.node_id)?;
        Some((i, &links[i]))
    }

    /// Stops the link manager and the links' threads.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let (_, links) = self.links();
        for l in links.iter() {
            l.stop();
        }
        // Their last words (the session-closed notices of the drained clients) are written
        // before the process ends: wait for the writers, at most 3 s.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while links.iter().any(|l| !l.finished()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Prometheus families of the links' counters (one sample per peer).
    pub fn render(&self, w: &mut Writer<'_>) {
        let (_, links) = self.links();
        if links.is_empty() {
            return;
        }
        type Get = fn(&LinkHandle) -> u64;
        let series: [(&str, Kind, &str, Get); 12] = [
            (
                "lattice_link_up",
                Kind::Gauge,
                "1 while the link to the node is connected",
                |l| l.is_up() as u64,
            ),
            (
                "lattice_link_dead",
                Kind::Gauge,
                "1 while the node is out of routing (link down past cluster.link_down_grace_ms)",
                |l| l.is_dead() as u64,
            ),
            (
                "lattice_link_queue_full_total",
                Kind::Counter,
                "requests answered BUSY because the link's queue was full",
                |l| l.counters.queue_full_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_unanswered_full_total",
                Kind::Counter,
                "requests answered BUSY because cluster.link_max_unanswered requests sent over the link waited for answers",
                |l| l.counters.unanswered_full_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_sent_total",
                Kind::Counter,
                "requests sent over the link (first sends)",
                |l| l.counters.sent_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_resent_total",
                Kind::Counter,
                "frames resent after a link resumed",
                |l| l.counters.resent_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_received_total",
                Kind::Counter,
                "frames received over the link for client sessions",
                |l| l.counters.received_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_connects_total",
                Kind::Counter,
                "sockets the link opened",
                |l| l.counters.connects_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_failed_total",
                Kind::Counter,
                "requests answered NODE_UNAVAILABLE",
                |l| l.counters.failed_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_attempt_failures_total",
                Kind::Counter,
                "attempts to bring the link up that failed (connect, handshake, name check)",
                |l| l.counters.attempt_failures_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_peer_errors_total",
                Kind::Counter,
                "Error frames the peer sent about this link's own frames",
                |l| l.counters.peer_errors_total.load(Ordering::Relaxed),
            ),
            (
                "lattice_link_undecodable_total",
                Kind::Counter,
                "frames from the peer that did not decode (skipped)",
                |l| l.counters.undecodable_total.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in series {
            w.family(name, kind, help);
            for l in links.iter().filter(|l| !l.is_stopped()) {
                w.sample(name, &[("peer", &l.node_id)], get(l));
            }
        }
        let full: u64 = self
            .inboxes
            .iter()
            .map(|i| i.full_total.load(Ordering::Relaxed))
            .sum();
        w.single(
            "lattice_link_inbox_full_total",
            Kind::Counter,
            "times a link thread waited for a full shard inbox",
            full,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn cfg(roles: &[&str]) -> ClusterConfig {
        let mut c = crate::config::Config::load(None, vec![], vec![])
            .unwrap()
            .cluster;
        c.node_id = "gate-1".into();
        c.roles = roles.iter().map(|r| r.to_string()).collect();
        c
    }

    fn wire() -> LinkWire {
        LinkWire {
            max_frame: 1 << 20,
            compress: Default::default(),
        }
    }

    fn logic(id: &str, addr: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            roles: vec![Role::Logic],
            internal_addr: addr.into(),
        }
    }

    #[test]
    fn a_gate_opens_links_to_logic_nodes_that_join_the_view_later() {
        // Nothing listens on these: the links keep retrying, which is all this test needs.
        let members = Arc::new(Members::new());
        members.set(vec![logic("logic-a", "127.0.0.1:9")]);
        let node = ClusterNode::start(&cfg(&["gate"]), wire(), 2, members.clone(), false).unwrap();
        let (g0, links) = node.links();
        assert_eq!(links.len(), 1);
        assert_eq!(node.owner(&links, 7).unwrap().1.node_id, "logic-a");
        members.set(vec![
            logic("logic-a", "127.0.0.1:9"),
            logic("logic-b", "127.0.0.1:9"),
            NodeInfo {
                node_id: "gate-2".into(),
                roles: vec![Role::Gate],
                internal_addr: "127.0.0.1:9".into(),
            },
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.links_generation() == g0 {
            assert!(Instant::now() < deadline, "no link opened to logic-b");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, links) = node.links();
        let ids: Vec<&str> = links.iter().map(|l| l.node_id.as_str()).collect();
        assert_eq!(ids, ["logic-a", "logic-b"], "appended, gates not linked");
        // Both own keys; a node gone from the view owns none.
        let owners: std::collections::HashSet<usize> = (0..200u64)
            .filter_map(|k| node.owner(&links, k).map(|o| o.0))
            .collect();
        assert_eq!(owners.len(), 2);
        members.set(vec![logic("logic-b", "127.0.0.1:9")]);
        assert!((0..200u64).all(|k| node.owner(&links, k).unwrap().1.node_id == "logic-b"));
        // A node back at another address (a restarted pod): its link goes there, at the same
        // index (the links' order is what sessions remember).
        members.set(vec![
            logic("logic-a", "127.0.0.2:9"),
            logic("logic-b", "127.0.0.1:9"),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while links[0].addr() != "127.0.0.2:9" {
            assert!(
                Instant::now() < deadline,
                "logic-a's link kept its old address"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(node.links().1.len(), 2);
        node.stop();
    }

    #[test]
    fn the_link_of_a_node_that_left_is_closed_once_given_up_and_its_place_reused() {
        // Nothing listens on these: the links stay down and are given up after the grace.
        let members = Arc::new(Members::new());
        members.set(vec![
            logic("logic-a", "127.0.0.1:9"),
            logic("logic-b", "127.0.0.1:9"),
        ]);
        let mut c = cfg(&["gate"]);
        c.link_down_grace_ms = 200;
        c.link_retry_ms = 20;
        let node = ClusterNode::start(&c, wire(), 1, members.clone(), false).unwrap();
        let (g0, links) = node.links();
        let a = links[0].clone();
        members.set(vec![logic("logic-b", "127.0.0.1:9")]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.links_generation() == g0 {
            assert!(Instant::now() < deadline, "logic-a's link never closed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(a.is_stopped() && a.is_dead());
        while !a.finished() {
            assert!(
                Instant::now() < deadline,
                "logic-a's link thread still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!links[1].is_stopped(), "logic-b is in the view: kept");
        let mut text = String::new();
        node.render(&mut Writer::new(&mut text));
        assert!(!text.contains("peer=\"logic-a\""), "{text}");
        assert!(text.contains("peer=\"logic-b\""), "{text}");
        // A new node takes the closed link's place; a node that comes back gets a new link.
        let g1 = node.links_generation();
        members.set(vec![
            logic("logic-b", "127.0.0.1:9"),
            logic("logic-c", "127.0.0.1:9"),
        ]);
        while node.links_generation() == g1 {
            assert!(Instant::now() < deadline, "no link to logic-c");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ids: Vec<String> = node.links().1.iter().map(|l| l.node_id.clone()).collect();
        assert_eq!(ids, ["logic-c", "logic-b"]);
        let g2 = node.links_generation();
        members.set(vec![
            logic("logic-a", "127.0.0.1:9"),
            logic("logic-b", "127.0.0.1:9"),
            logic("logic-c", "127.0.0.1:9"),
        ]);
        while node.links_generation() == g2 {
            assert!(Instant::now() < deadline, "no link to logic-a again");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, links) = node.links();
        let ids: Vec<&str> = links.iter().map(|l| l.node_id.as_str()).collect();
        assert_eq!(ids, ["logic-c", "logic-b", "logic-a"]);
        assert!(links.iter().all(|l| !l.is_stopped()));
        node.stop();
    }

    #[test]
    fn nodes_with_the_logic_role_open_no_links() {
        let members = Arc::new(Members::new());
        members.set(vec![logic("logic-a", "127.0.0.1:9")]);
        for roles in [
            &["gate", "logic", "center"][..],
            &["logic"],
            &["gate", "logic"],
        ] {
            let node = ClusterNode::start(&cfg(roles), wire(), 1, members.clone(), false).unwrap();
            assert!(!node.routes_remotely());
            assert!(node.links().1.is_empty(), "{roles:?}");
        }
    }
}
