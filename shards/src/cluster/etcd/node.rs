//! What this node registers in etcd, from its configuration (`[cluster]` name and roles, the
//! `internal` listener).

use lattice_wire::stack::SessionType;

use crate::cluster::members::{NodeInfo, Role};
use crate::config::Config;

/// This node as the cluster sees it: named by `cluster.node_id`, else `center.node`, else the host
/// name; its roles from `cluster.roles` (all three by default: one process serving everything);
/// and the address of its first listener of session type `internal` as configured (empty when it
/// has none; it must be an address other nodes can reach, not `0.0.0.0`).
pub fn node_info(cfg: &Config) -> NodeInfo {
    let internal_addr = cfg
        .listener_specs
        .iter()
        .find(|l| l.stack.session_type == SessionType::Internal)
        .map(|l| l.addr.clone())
        .unwrap_or_default();
    let node_id = cfg.node_name();
    // Validated at load; the default set if not.
    let roles = cfg
        .cluster
        .roles()
        .unwrap_or_else(|_| vec![Role::Gate, Role::Logic, Role::Center]);
    NodeInfo {
        node_id,
        roles,
        internal_addr,
    }
}
