//! What this node registers in etcd, from its configuration. One small function so the cluster
//! configuration (roles, node name) can take over where it exists.

use lattice_wire::stack::SessionType;

use crate::cluster::members::{NodeInfo, Role};
use crate::config::Config;

/// This node as the cluster sees it: named by `center.node` (else the host name), every role
/// (all in one process), and the address of its first listener of session type `internal`
/// (empty when it has none).
pub fn node_info(cfg: &Config) -> NodeInfo {
    let internal_addr = cfg
        .listener_specs
        .iter()
        .find(|l| l.stack.session_type == SessionType::Internal)
        .map(|l| l.addr.clone())
        .unwrap_or_default();
    NodeInfo {
        node_id: cfg.center.node_name(),
        roles: vec![Role::Gate, Role::Logic, Role::Center],
        internal_addr,
    }
}
