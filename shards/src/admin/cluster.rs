//! `GET /admin/cluster`: the live-node view this node routes by (docs/ADMIN-API.md,
//! docs/CLUSTER.md). Reads [`Members`] only (no etcd request on the admin thread).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lattice_runtime::telemetry::admin::Routes;
use serde_json::{json, Value};

use super::json::ok;
use crate::cluster::etcd::EtcdStats;
use crate::cluster::members::Members;

/// What the route shows: the view, this node's name, and the etcd counters when etcd is on.
#[derive(Clone)]
pub struct ClusterCx {
    /// The live-node view.
    pub members: Arc<Members>,
    /// This node's `node_id`.
    pub node_id: String,
    /// etcd membership counters; `None` without `[etcd]`.
    pub etcd: Option<Arc<EtcdStats>>,
}

/// Registers `GET /admin/cluster` (behind the `/admin/` token guard). Without a cluster it
/// answers `{"etcd": false, "nodes": []}`.
pub(super) fn register(r: &mut Routes, cx: Option<ClusterCx>) {
    r.add(
        "GET",
        "/admin/cluster",
        Box::new(move |_| ok(render(cx.as_ref()))),
    );
}

fn render(cx: Option<&ClusterCx>) -> Value {
    let Some(cx) = cx else {
        return json!({ "etcd": false, "node_id": null, "generation": 0, "nodes": [] });
    };
    let (generation, view) = cx.members.view();
    let nodes: Vec<Value> = view
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "roles": n.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "internal_addr": n.internal_addr,
            })
        })
        .collect();
    let registered = cx
        .etcd
        .as_ref()
        .map(|s| s.registered.load(Ordering::Relaxed) == 1);
    json!({
        "etcd": cx.etcd.is_some(),
        "node_id": cx.node_id,
        "registered": registered,
        "generation": generation,
        "nodes": nodes,
    })
}
