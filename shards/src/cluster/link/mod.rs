//! Node links: one sequenced, resumable session of type `internal` per gate–logic node pair.
//!
//! - [`seq`]: the opening side's sequencing without I/O (numbers, acks, resend after `Resume`);
//! - [`client`]: the opening side's threads (a gate opens a link to each logic node);
//! - [`inbox`]: frames received over links, waiting for the shard of their client session;
//! - [`queue`]: a link's bounded outgoing queue;
//! - [`pending`]: requests sent and not answered, answered `NODE_UNAVAILABLE` when a peer is lost;
//! - [`serve`]: the accepting side on a logic node's shards (`LinkHello`, requests on behalf of
//!   the gate's clients as *proxy sessions*, replies and pushes sent back as `LinkDeliver`).

pub mod client;
pub mod inbox;
pub mod pending;
pub mod queue;
pub mod seq;
pub mod serve;
