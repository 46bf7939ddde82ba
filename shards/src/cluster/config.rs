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
    /// Bound of one link's requests sent and not answered yet.
    pub link_max_unanswered: usize,
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
    /// Keep-alive period, ms.
    pub link_keepalive_ms: u64,
    /// Silence after which a link drops its socket and reconnects, ms.
    pub link_timeout_ms: u64,
    /// Proxy sessions (gates' clients) one shard of a logic node holds over all its links.
    pub link_max_proxies: usize,
    /// Shared secret a link's opening side sends and its accepting side checks; empty = none.
    pub link_secret: String,
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

/// A node name (empty = derived later): no `/` (it is a key in etcd), no whitespace or control
/// characters, at most 128 bytes.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.len() > 128
        || name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} must have at most 128 bytes and no '/', spaces or control characters"
        ));
    }
    Ok(())
}

impl ClusterConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.roles()?;
        if let Err(e) = check_node_name(&self.node_id) {
            return Err(("cluster.node_id", e));
        }
        self.peers()?;
        for (key, v) in [
            ("cluster.link_queue_frames", self.link_queue_frames as u64),
            (
                "cluster.link_max_unanswered",
                self.link_max_unanswered as u64,
            ),
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
            ("cluster.link_timeout_ms", self.link_timeout_ms),
            ("cluster.link_max_proxies", self.link_max_proxies as u64),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !self.link_secret.is_empty()
            && (self.link_secret.len() < 16
                || self.link_secret.len() > 256
                || self.link_secret.chars().any(|c| c.is_control()))
        {
            return Err((
                "cluster.link_secret",
                "must be 16 to 256 bytes without control characters (or empty: no secret)".into(),
            ));
        }
        if self.link_timeout_ms <= self.link_keepalive_ms {
            return Err((
                "cluster.link_timeout_ms",
                "must be above cluster.link_keepalive_ms (the peer answers once per keep-alive)"
                    .into(),
            ));
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
            if out.iter().any(|n: &NodeInfo| n.node_id == p.node_id) {
                return Err((
                    "cluster.static_peers",
                    format!("peer {} is listed twice", p.node_id),
                ));
            }
            if !self.node_id.trim().is_empty() && p.node_id == self.node_id.trim() {
                return Err((
                    "cluster.static_peers",
                    format!("peer {} is this node (cluster.node_id)", p.node_id),
                ));
            }
            if p.internal_addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
            {
                return Err((
                    "cluster.static_peers",
                    format!(
                        "peer {}: internal_addr {} is an unspecified address; give the address this node connects to",
                        p.node_id, p.internal_addr
                    ),
                ));
            }
            let port_ok = p
                .internal_addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0)
                });
            if let Err(e) = check_node_name(&p.node_id) {
                return Err(("cluster.static_peers", format!("peer node_id {e}")));
            }
            if p.internal_addr.parse::<std::net::SocketAddr>().is_err() && !port_ok {
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(args: &[(&str, &str)]) -> Result<Config, String> {
        Config::load(
            None,
            vec![],
            args.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_one_process_with_every_role() {
        let c = load(&[]).unwrap().cluster;
        assert_eq!(c.roles().unwrap().len(), 3);
        assert!(!c.routes_remotely());
        assert!(c.peers().unwrap().is_empty());
    }

    #[test]
    fn roles_and_peers_are_checked_and_errors_name_the_key() {
        let c = load(&[
            ("cluster.roles", r#"["gate"]"#),
            (
                "cluster.static_peers",
                r#"[{ node_id = "l1", roles = ["logic", "logic"], internal_addr = "10.0.0.2:7200" }]"#,
            ),
        ])
        .unwrap()
        .cluster;
        assert!(c.routes_remotely());
        let p = c.peers().unwrap();
        assert_eq!(p[0].roles, vec![crate::cluster::members::Role::Logic]);
        for (args, want) in [
            (
                vec![("cluster.roles", r#"["gate", "king"]"#)],
                "`cluster.roles`",
            ),
            (vec![("cluster.roles", "[]")], "`cluster.roles`"),
            (
                vec![(
                    "cluster.static_peers",
                    r#"[{ node_id = "", roles = ["logic"], internal_addr = "a:1" }]"#,
                )],
                "`cluster.static_peers`",
            ),
            (
                vec![(
                    "cluster.static_peers",
                    r#"[{ node_id = "x", roles = ["logic"], internal_addr = "nowhere" }]"#,
                )],
                "`cluster.static_peers`",
            ),
            (
                vec![(
                    "cluster.static_peers",
                    r#"[{ node_id = "x", roles = ["logic"], internal_addr = "a:1" }, { node_id = "x", roles = ["logic"], internal_addr = "b:1" }]"#,
                )],
                "listed twice",
            ),
            (
                vec![
                    ("cluster.node_id", "x"),
                    (
                        "cluster.static_peers",
                        r#"[{ node_id = "x", roles = ["logic"], internal_addr = "a:1" }]"#,
                    ),
                ],
                "is this node",
            ),
            (
                vec![(
                    "cluster.static_peers",
                    r#"[{ node_id = "x", roles = ["logic"], internal_addr = "0.0.0.0:7200" }]"#,
                )],
                "unspecified",
            ),
            (
                vec![(
                    "cluster.static_peers",
                    r#"[{ node_id = "x", roles = ["logic"], internal_addr = "nohost:99999" }]"#,
                )],
                "`cluster.static_peers`",
            ),
            (vec![("cluster.node_id", "x/y")], "`cluster.node_id`"),
            (vec![("cluster.node_id", "x y")], "`cluster.node_id`"),
            (
                vec![
                    ("cluster.link_timeout_ms", "500"),
                    ("cluster.link_keepalive_ms", "500"),
                ],
                "`cluster.link_timeout_ms`",
            ),
            (
                vec![("cluster.link_queue_frames", "0")],
                "`cluster.link_queue_frames`",
            ),
            (
                vec![("cluster.link_max_unanswered", "0")],
                "`cluster.link_max_unanswered`",
            ),
            (
                vec![("cluster.link_secret", "too-short")],
                "`cluster.link_secret`",
            ),
            (
                vec![("cluster.link_secret", "sixteen-bytes-and\u{7}bell")],
                "`cluster.link_secret`",
            ),
        ] {
            let e = load(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
