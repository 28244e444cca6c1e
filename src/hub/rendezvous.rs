//! Which node owns a room: rendezvous (highest-random-weight) hashing over the live
//! nodes, sans-IO.
//!
//! Every node scores `xxh3(room, seed = xxh3(node id))` for each live node and picks
//! the highest. All nodes with the same view agree without talking; when a node
//! leaves, only its rooms move (each to its own runner-up), and when it returns
//! exactly those rooms move back. xxh3 is specified and stable across versions and
//! platforms, which a cluster of mixed builds needs (std's hasher is not).

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The per-node seed, computed once from the node id.
pub fn seed(node_id: &str) -> u64 {
    xxh3_64(node_id.as_bytes())
}

/// Index (into `seeds`) of the owner of `room` among the nodes whose bit is set in
/// `live`. `live` must have at least one bit set within `seeds`.
pub fn owner(room: &str, seeds: &[u64], live: u64) -> usize {
    let mut best = (0u64, usize::MAX);
    for (i, &s) in seeds.iter().enumerate() {
        if live & (1 << i) == 0 {
            continue;
        }
        let score = xxh3_64_with_seed(room.as_bytes(), s);
        if best.1 == usize::MAX || score > best.0 {
            best = (score, i);
        }
    }
    debug_assert!(best.1 != usize::MAX, "no live node");
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(n: usize) -> Vec<u64> {
        (1..=n).map(|i| seed(&format!("n{i}"))).collect()
    }

    #[test]
    fn spread_is_even_and_stable() {
        let s = seeds(4);
        let mut count = [0; 4];
        for r in 0..4000 {
            count[owner(&format!("room{r}"), &s, 0b1111)] += 1;
        }
        assert!(count.iter().all(|&c| (800..1200).contains(&c)), "{count:?}");
        assert_eq!(owner("chat:1", &s, 0b1111), owner("chat:1", &s, 0b1111));
    }

    #[test]
    fn losing_a_node_moves_only_its_rooms_and_they_come_back() {
        let s = seeds(4);
        for r in 0..2000 {
            let room = format!("room{r}");
            let before = owner(&room, &s, 0b1111);
            let after = owner(&room, &s, 0b1011); // node 2 lost
            if before == 2 {
                assert_ne!(after, 2);
            } else {
                assert_eq!(after, before, "{room} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn known_value_pins_the_hash() {
        // Nodes of different builds must agree: the scoring is xxh3, fixed here.
        assert_eq!(seed("n1"), xxh3_64(b"n1"));
        let s = seeds(3);
        let o = owner("chat:42", &s, 0b111);
        let scores: Vec<u64> = s
            .iter()
            .map(|&x| xxh3_64_with_seed(b"chat:42", x))
            .collect();
        let max = scores.iter().copied().max().unwrap();
        assert_eq!(scores[o], max);
    }
}
