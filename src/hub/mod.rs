//! Rooms, sans-IO: the owner's state (seq, epoch, replay ring, interested workers)
//! and the rules for resume. The worker (`runtime::worker`) moves messages between
//! owners and subscribers; this module decides what they contain.
//!
//! Ownership: on a single node, a room's owner is worker `hash(room) % workers`
//! ([`home_worker`]). Only the owner assigns seqs, so a room has one total order no
//! matter which worker its publishers are on.

pub mod presence;
pub mod rendezvous;
pub mod ring;
pub mod room;

use std::hash::BuildHasher;

/// A fixed hasher (not randomised per process) so every worker agrees on owners.
#[derive(Clone, Copy, Default)]
struct Fixed;

impl BuildHasher for Fixed {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

/// The worker that owns `room` on a node with `workers` workers.
pub fn home_worker(room: &str, workers: usize) -> usize {
    (Fixed.hash_one(room) % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_and_spread() {
        assert_eq!(home_worker("chat:1", 4), home_worker("chat:1", 4));
        let mut seen = [0; 4];
        for i in 0..1000 {
            seen[home_worker(&format!("room{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }
}
