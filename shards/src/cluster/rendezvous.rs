//! Rendezvous (highest random weight) hashing: which live node owns a key.
//!
//! Each node gets the score `hash(key, node_id)`; the highest wins. When a node leaves, only the
//! keys it owned move (each to its own second choice, spread over the others); when it comes
//! back it takes exactly those keys again. Cost: one hash per candidate node.

use super::members::NodeInfo;

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of the node name: stable across processes and versions (not `std`'s `DefaultHasher`,
/// whose output may change between Rust releases: nodes of two builds must agree).
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The score of `node` for `key`.
pub fn score(key: u64, node: &str) -> u64 {
    mix(key ^ mix(name_hash(node)))
}

/// The node among `nodes` that owns `key` (highest score; ties broken by name), or `None` when
/// `nodes` is empty.
pub fn owner<'a>(key: u64, nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Option<&'a NodeInfo> {
    nodes.into_iter().max_by(|a, b| {
        score(key, &a.node_id)
            .cmp(&score(key, &b.node_id))
            .then_with(|| b.node_id.cmp(&a.node_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::members::Role;

    fn n(id: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            roles: vec![Role::Logic],
            internal_addr: String::new(),
        }
    }

    #[test]
    fn spreads_and_moves_only_the_leavers_keys() {
        let all = [n("logic-a"), n("logic-b"), n("logic-c")];
        let mut count = [0usize; 3];
        let mut before = Vec::new();
        for k in 0..3000u64 {
            let o = owner(k, &all).unwrap();
            let i = all.iter().position(|x| x.node_id == o.node_id).unwrap();
            count[i] += 1;
            before.push(i);
        }
        // Each of three nodes gets a fair share (expected 1000 each; 3000 draws).
        for c in count {
            assert!((800..1200).contains(&c), "{count:?}");
        }
        // b leaves: a's and c's keys stay, b's go to the others.
        let two = [n("logic-a"), n("logic-c")];
        for (k, was) in before.iter().enumerate() {
            let o = owner(k as u64, &two).unwrap();
            if *was != 1 {
                assert_eq!(o.node_id, all[*was].node_id, "key {k} moved");
            }
        }
        // b comes back: every key returns to its first owner.
        for (k, was) in before.iter().enumerate() {
            assert_eq!(owner(k as u64, &all).unwrap().node_id, all[*was].node_id);
        }
        assert!(owner(1, &[]).is_none());
    }

    #[test]
    fn scores_are_stable_across_builds() {
        // A fixed value: nodes of different builds must pick the same owner.
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
