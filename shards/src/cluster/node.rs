//! This node in a cluster: its name and roles, the live-node view, and (on a gate without the
//! logic role) its links to the logic nodes and the shards' inboxes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lattice_runtime::telemetry::prom::{Kind, Writer};

use super::config::ClusterConfig;
use super::link::client::{self, LinkHandle};
use super::link::inbox::Inbox;
use super::members::{Members, NodeInfo, Role};
use super::rendezvous;

/// What every shard shares about the cluster.
pub struct ClusterNode {
    /// This node's name.
    pub me: String,
    /// This node's roles.
    pub roles: Vec<Role>,
    /// The live-node view (written by discovery: etcd, or `cluster.static_peers`).
    pub members: Arc<Members>,
    /// Links to logic nodes, by node id (a gate without the logic role; empty otherwise).
    pub links: BTreeMap<String, Arc<LinkHandle>>,
    /// Per shard: frames received over links for its client sessions.
    pub inboxes: Arc<Vec<Arc<Inbox>>>,
}

/// Why the cluster part could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A `[cluster]` value is wrong.
    #[error("`{0}`: {1}")]
    Config(&'static str, String),
}

impl ClusterNode {
    /// Sets up this node for `shards` shards: publishes `cluster.static_peers` into `members`
    /// (when no discovery writes it) and, on a routing gate, opens a link to every logic node.
    ///
    /// Links are opened for the logic nodes known at start; a logic node that appears later in
    /// the view is not linked until a restart (discovery that adds nodes needs a link manager
    /// that watches [`Members::generation`]).
    pub fn start(
        cfg: &ClusterConfig,
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
        let mut links = BTreeMap::new();
        if cfg.routes_remotely() {
            let (_, view) = members.view();
            for n in view.with_role(Role::Logic) {
                if n.node_id == me {
                    continue;
                }
                let h = client::start(
                    me.clone(),
                    n.node_id.clone(),
                    n.internal_addr.clone(),
                    cfg,
                    inboxes.clone(),
                );
                links.insert(n.node_id.clone(), h);
            }
            if links.is_empty() {
                tracing::warn!("gate without logic nodes: every routed request gets NODE_UNAVAILABLE until one is configured");
            }
        }
        tracing::info!(node = %me, roles = ?roles, links = links.len(), "cluster node");
        Ok(Arc::new(ClusterNode {
            me,
            roles,
            members,
            links,
            inboxes,
        }))
    }

    /// True when this node routes its clients' requests over links.
    pub fn routes_remotely(&self) -> bool {
        self.roles.contains(&Role::Gate) && !self.roles.contains(&Role::Logic)
    }

    /// The link to the live logic node that owns `key` and its index in [`ClusterNode::links`]:
    /// rendezvous hashing over the logic nodes of the view whose link is not dead. `None` when
    /// there is none. Cost: a view read (an `Arc` clone when it changed) and a hash per node.
    pub fn owner(&self, key: u64) -> Option<(usize, &Arc<LinkHandle>)> {
        let (_, view) = self.members.view();
        let live: Vec<&NodeInfo> = view
            .with_role(Role::Logic)
            .filter(|n| self.links.get(&n.node_id).is_some_and(|l| !l.is_dead()))
            .collect();
        let n = rendezvous::owner(key, live)?;
        self.links
            .iter()
            .enumerate()
            .find(|(_, (id, _))| **id == n.node_id)
            .map(|(i, (_, l))| (i, l))
    }

    /// Stops the links' threads.
    pub fn stop(&self) {
        for l in self.links.values() {
            l.stop();
        }
    }

    /// Prometheus families of the links' counters (one sample per peer).
    pub fn render(&self, w: &mut Writer<'_>) {
        if self.links.is_empty() {
            return;
        }
        type Get = fn(&LinkHandle) -> u64;
        let series: [(&str, Kind, &str, Get); 8] = [
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
        ];
        for (name, kind, help, get) in series {
            w.family(name, kind, help);
            for l in self.links.values() {
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
