//! The logic service: accounts and player profiles, icons, and the demo components echo
//! (`Ping` → `Pong`) and chat rooms.

pub mod account;
pub mod chat;
pub mod echo;
pub mod icons;

crate::service!(LOGIC, "logic", include_str!("logic.toml"));

use std::hash::{DefaultHasher, Hash, Hasher};

/// Stable hash of a routing key: the same value on every shard and every run.
pub fn route_hash<T: Hash + ?Sized>(key: &T) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}
