//! The `[cluster]` section: this node's name and roles, the static peer list (used when no
//! discovery service is configured) and the bounds of node links.

use super::members::{NodeInfo, Role};

/// One entry of `cluster.static_peers`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    /// The peer's `cluster.node_id`.
    pub node_id: String,
    /// Its roles (`gate`, `logic`, `center`).
    pub roles: Vec<String>,
    /// Its `internal` listener, `host:port`.
    pub internal_addr: String,
}

/// `[cluster]` section (documented in deploy/lattice.toml).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name; empty = the host name.
    pub node_id: String,
    /// This node's roles.
    pub roles: Vec<String>,
    /// Live nodes without discovery.
    pub static_peers: Vec<StaticPeer>,
    /// Bound of one link's outgoing queue.
    pub link_queue_frames: usize,
    /// Bound of one link's unacknowledged frames.
    pub link_unacked_frames: usize,
    /// Bound of one shard's inbox of frames received from links.
    pub link_inbox_frames: usize,
    /// How long a down link keeps its node in routing, ms.
    pub link_down_grace_ms: u64,
    /// Wait between connection attempts, ms.
    pub link_retry_ms: u64,
    /// Connect and handshake timeout, ms.
    pub link_connect_timeout_ms: u64,
    /// Keep-alive `Ack` period, ms.
    pub link_keepalive_ms: u64,
}

fn parse_roles(key: &'static str, names: &[String]) -> Result<Vec<Role>, (&'static str, String)> {
    let mut roles = Vec::with_capacity(names.len());
    for n in names {
        match Role::parse(n) {
            Some(r) => roles.push(r),
            None => {
                return Err((
                    key,
                    format!("unknown role {n:?} (expected gate, logic or center)"),
                ))
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err((key, "at least one role".into()));
    }
    Ok(roles)
}

impl ClusterConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.roles()?;
        self.peers()?;
        for (key, v) in [
            ("cluster.link_queue_frames", self.link_queue_frames as u64),
            (
                "cluster.link_unacked_frames",
                self.link_unacked_frames as u64,
            ),
            ("cluster.link_inbox_frames", self.link_inbox_frames as u64),
            ("cluster.link_retry_ms", self.link_retry_ms),
            (
                "cluster.link_connect_timeout_ms",
                self.link_connect_timeout_ms,
            ),
            ("cluster.link_keepalive_ms", self.link_keepalive_ms),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// This node's roles, sorted.
    pub fn roles(&self) -> Result<Vec<Role>, (&'static str, String)> {
        parse_roles("cluster.roles", &self.roles)
    }

    /// True when this node routes its clients' requests to other nodes: it is a gate without the
    /// logic role. (With both, or all three, it serves everything itself.)
    pub fn routes_remotely(&self) -> bool {
        self.roles()
            .map(|r| r.contains(&Role::Gate) && !r.contains(&Role::Logic))
            .unwrap_or(false)
    }

    /// `cluster.static_peers` as nodes.
    pub fn peers(&self) -> Result<Vec<NodeInfo>, (&'static str, String)> {
        let mut out = Vec::with_capacity(self.static_peers.len());
        for p in &self.static_peers {
            if p.node_id.is_empty() {
                return Err(("cluster.static_peers", "a peer without node_id".into()));
            }
            if p.internal_addr.parse::<std::net::SocketAddr>().is_err()
                && !p.internal_addr.contains(':')
            {
                return Err((
                    "cluster.static_peers",
                    format!(
                        "peer {}: internal_addr {:?} is not host:port",
                        p.node_id, p.internal_addr
                    ),
                ));
            }
            out.push(NodeInfo {
                node_id: p.node_id.clone(),
                roles: parse_roles("cluster.static_peers", &p.roles)?,
                internal_addr: p.internal_addr.clone(),
            });
        }
        Ok(out)
    }

    /// The node name: `node_id`, or the host name when empty.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    }
}
