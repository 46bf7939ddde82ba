//! The live-node view: which nodes are up, their roles and where their `internal` listener is.
//!
//! One writer (the discovery thread: etcd membership, or a static list from the configuration)
//! replaces the whole view with [`Members::set`]; any number of readers (shards routing a user to
//! a logic node, the link manager) take a cheap [`Members::view`] and compare
//! [`Members::generation`] to know when to look again. A view is immutable once published, so a
//! reader never sees a half-updated set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A node's role. All three in one process is the default (no cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Holds client sessions and routes their requests.
    Gate,
    /// Runs the game services (accounts, profiles, chat, …) for the users it owns.
    Logic,
    /// Leases machine ids and other cluster-wide singletons.
    Center,
}

impl Role {
    /// The name used in configuration and in etcd keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gate => "gate",
            Role::Logic => "logic",
            Role::Center => "center",
        }
    }

    /// Parses a configured role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "gate" => Some(Role::Gate),
            "logic" => Some(Role::Logic),
            "center" => Some(Role::Center),
            _ => None,
        }
    }
}

/// One live node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique, stable name of the node (`cluster.node_id`).
    pub node_id: String,
    /// Its roles, sorted, no duplicates.
    pub roles: Vec<Role>,
    /// Address of its `internal` listener (`host:port`) where peers open links.
    pub internal_addr: String,
}

impl NodeInfo {
    /// Whether the node has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// An immutable set of live nodes, sorted by `node_id`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    /// The nodes, sorted by `node_id`, unique.
    pub nodes: Vec<NodeInfo>,
}

impl View {
    /// The live nodes that have `role`, in `node_id` order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(move |n| n.has(role))
    }

    /// The node named `node_id`, when live.
    pub fn get(&self, node_id: &str) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|n| n.node_id.as_str().cmp(node_id))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// The shared live-node view (see the module docs). Cheap to read: a generation load, and a lock
/// held for an `Arc` clone when the generation moved.
#[derive(Debug, Default)]
pub struct Members {
    generation: AtomicU64,
    view: Mutex<Arc<View>>,
}

impl Members {
    /// An empty view (generation 0).
    pub fn new() -> Members {
        Members::default()
    }

    /// Publishes a new view: sorts by `node_id` and keeps the first of any duplicate name. Bumps
    /// the generation only when the set changed, so readers are not woken for nothing.
    pub fn set(&self, mut nodes: Vec<NodeInfo>) {
        for n in &mut nodes {
            n.roles.sort();
            n.roles.dedup();
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes.dedup_by(|b, a| a.node_id == b.node_id);
        let new = View { nodes };
        let mut cur = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if **cur == new {
            return;
        }
        *cur = Arc::new(new);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Bumped at every change of the view; compare with the one of your last [`Members::view`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current view and its generation.
    pub fn view(&self) -> (u64, Arc<View>) {
        let cur = self.view.lock().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::Acquire), Arc::clone(&cur))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, roles: &[Role]) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            roles: roles.to_vec(),
            internal_addr: format!("{id}:7200"),
        }
    }

    #[test]
    fn set_sorts_dedups_and_bumps_only_on_change() {
        let m = Members::new();
        assert_eq!(m.generation(), 0);
        m.set(vec![
            node("b", &[Role::Logic, Role::Gate, Role::Logic]),
            node("a", &[Role::Gate]),
            node("b", &[Role::Center]),
        ]);
        let (g, v) = m.view();
        assert_eq!(g, 1);
        assert_eq!(v.nodes.len(), 2);
        assert_eq!(v.nodes[0].node_id, "a");
        assert_eq!(v.get("b").unwrap().roles, vec![Role::Gate, Role::Logic]);
        assert_eq!(v.with_role(Role::Gate).count(), 2);
        assert_eq!(v.with_role(Role::Logic).count(), 1);
        assert!(v.get("c").is_none());
        // The same set again: no new generation.
        m.set(vec![
            node("a", &[Role::Gate]),
            node("b", &[Role::Gate, Role::Logic]),
        ]);
        assert_eq!(m.generation(), 1);
        m.set(vec![node("a", &[Role::Gate])]);
        assert_eq!(m.generation(), 2);
        assert!(m.view().1.get("b").is_none());
    }

    #[test]
    fn role_names_round_trip() {
        for r in [Role::Gate, Role::Logic, Role::Center] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Gate"), None);
    }
}
