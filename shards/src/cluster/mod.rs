//! Several nodes (docs/CLUSTER.md): who is alive, and the links between them.
//!
//! - [`members`]: the live-node view every part of a node reads ([`members::Members`]): written by
//!   whatever discovers nodes (etcd membership, or a static list), read by routing and links.
//! - [`etcd`]: membership and machine-id leases in etcd (the discovery thread that writes
//!   [`members::Members`], and the center's lease store when `[etcd]` is configured).
//! - [`config`]: the `[cluster]` section (name, roles, static peers, link bounds).
//! - [`node`]: this node in the cluster (roles, links, inboxes), shared by the shards.
//! - [`rendezvous`]: which live node owns a key.
//! - [`link`]: node links (sequenced, resumable `internal` sessions).
//! - [`forward`]: a gate without the logic role routing requests to logic nodes.
//!
//! With no cluster configured a node is alone and every role runs in its process (the default).

pub mod config;
pub mod etcd;
pub mod forward;
pub mod link;
pub mod members;
pub mod node;
pub mod rendezvous;
