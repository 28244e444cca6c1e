//! Where a room lives: its owner node (rendezvous hashing over the live nodes) and
//! its home worker on each node (a fixed hash over the workers).

use std::hash::BuildHasher;

use super::rendezvous;

/// The cluster as one worker sees it: the nodes, which of them are reachable, and
/// how many workers this node has. A single node is a cluster of one.
#[derive(Debug, Clone)]
pub struct Topology {
    /// This node's index in `seeds`.
    me: usize,
    /// Rendezvous seed of every node, sorted by node id (this one included).
    seeds: Vec<u64>,
    /// Bit `i` set: node `i` is reachable (this node always is).
    live: u64,
    /// Workers on this node.
    workers: usize,
    /// This node is leaving (draining): it owns nothing while another node is live.
    leaving: bool,
}

impl Topology {
    /// A single node with `workers` workers.
    pub fn single(workers: usize) -> Self {
        Self::cluster(0, vec![0], workers)
    }

    /// Node `me` of the nodes with these rendezvous `seeds` (at most 64), alone
    /// until links come up.
    pub fn cluster(me: usize, seeds: Vec<u64>, workers: usize) -> Self {
        assert!(seeds.len() <= 64 && me < seeds.len() && workers > 0);
        Self {
            me,
            seeds,
            live: 1 << me,
            workers,
            leaving: false,
        }
    }

    /// This node's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Nodes in the cluster.
    pub fn nodes(&self) -> usize {
        self.seeds.len()
    }

    /// Workers on this node.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Mark node `peer` reachable or not.
    pub fn set_live(&mut self, peer: usize, up: bool) {
        if peer == self.me || peer >= self.seeds.len() {
            return;
        }
        if up {
            self.live |= 1 << peer;
        } else {
            self.live &= !(1 << peer);
        }
    }

    /// This node is leaving the cluster (draining): from now on it owns a room only
    /// when no other node is live, so every room goes to the node that owns it
    /// once this one is gone.
    pub fn set_leaving(&mut self) {
        self.leaving = true;
    }

    /// Whether this node is leaving.
    pub fn leaving(&self) -> bool {
        self.leaving
    }

    /// Whether node `i` is reachable now.
    pub fn is_live(&self, i: usize) -> bool {
        i < 64 && self.live & (1 << i) != 0
    }

    /// The owner of `room` among the live nodes.
    pub fn owner(&self, room: &str) -> usize {
        let others = self.live & !(1 << self.me);
        let live = if self.leaving && others != 0 {
            others
        } else {
            self.live
        };
        rendezvous::owner(room, &self.seeds, live)
    }

    /// The node that would own `room` if this one were lost: the next in
    /// rendezvous order among the live peers (`None`: no peer is live).
    pub fn standby(&self, room: &str) -> Option<usize> {
        let peers = self.peers();
        (peers != 0).then(|| rendezvous::owner(room, &self.seeds, peers))
    }

    /// How many nodes make a majority of the cluster's node list.
    pub fn majority(&self) -> usize {
        self.seeds.len() / 2 + 1
    }

    /// The live peer nodes (bit `i`: node `i`).
    pub fn peers(&self) -> u64 {
        self.live & !(1 << self.me)
    }

    /// The peer node that owns `room`, or `None` when this node does.
    pub fn remote_owner(&self, room: &str) -> Option<usize> {
        let o = self.owner(room);
        (o != self.me).then_some(o)
    }

    /// The worker of this node that is home to `room`.
    pub fn home(&self, room: &str) -> usize {
        home_worker(room, self.workers)
    }
}

/// A fixed hasher (not randomised per process) so every worker agrees on homes.
#[derive(Clone, Copy, Default)]
struct Fixed;

impl BuildHasher for Fixed {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

/// The worker that is home to `room` on a node with `workers` workers: on the
/// room's owner node it sequences the room; elsewhere it talks to the owner for the
/// node's other workers.
pub fn home_worker(room: &str, workers: usize) -> usize {
    (Fixed.hash_one(room) % workers as u64) as usize
}

/// The conflation tag of a message: the same for the same room and key, never 0.
pub fn conflation_tag(room: &str, key: Option<&str>) -> u64 {
    Fixed.hash_one((room, key)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_stable_and_spread() {
        assert_eq!(home_worker("chat:1", 4), home_worker("chat:1", 4));
        let mut seen = [0; 4];
        for i in 0..1000 {
            seen[home_worker(&format!("room{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[test]
    fn a_node_alone_owns_everything_and_shares_once_linked() {
        let seeds: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|n| rendezvous::seed(n))
            .collect();
        let mut t = Topology::cluster(1, seeds, 2);
        assert!((0..50).all(|i| t.remote_owner(&format!("r{i}")).is_none()));
        t.set_live(0, true);
        t.set_live(2, true);
        let owners: std::collections::HashSet<usize> =
            (0..50).map(|i| t.owner(&format!("r{i}"))).collect();
        assert_eq!(owners.len(), 3);
        t.set_live(1, false); // this node cannot be marked down
        assert!(t.is_live(1));
        let mine: Vec<String> = (0..50)
            .map(|i| format!("r{i}"))
            .filter(|r| t.owner(r) == 1)
            .collect();
        assert!(!mine.is_empty());
        // Leaving, it owns nothing another node can own, and the others keep theirs.
        let before: Vec<usize> = (0..50).map(|i| t.owner(&format!("r{i}"))).collect();
        t.set_leaving();
        for (i, was) in before.iter().enumerate() {
            let now = t.owner(&format!("r{i}"));
            assert_ne!(now, 1);
            if *was != 1 {
                assert_eq!(now, *was, "a room not owned by the leaving node stays put");
            }
        }
        t.set_live(0, false);
        t.set_live(2, false);
        assert!(
            (0..50).all(|i| t.owner(&format!("r{i}")) == 1),
            "alone, it owns all"
        );
    }

    #[test]
    fn tags_are_never_zero_and_differ_by_key() {
        assert_ne!(conflation_tag("r", None), 0);
        assert_ne!(
            conflation_tag("r", Some("a")),
            conflation_tag("r", Some("b"))
        );
    }
}
