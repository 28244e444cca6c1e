//! A deterministic simulation of a cluster: N nodes × W workers of real [`Hub`]
//! code in one thread, driven by one seed.
//!
//! The seed drives everything: the simulated clock, the order in which queued mail
//! and peer messages are delivered (every worker-to-worker pair and every link is
//! FIFO, as the real inboxes and TCP links are; across them, anything goes), link
//! cuts (each direction delivers a random prefix of what was in flight, the rest is
//! lost, then both sides hear the link went down) and heals, partitions, node crashes
//! (all state lost; in odd seeds a node keeps its history log, `sim::disk`, as
//! `rooms.data_dir` does, and a restart reads it back with the real recovery code)
//! and restarts, and clients that connect, subscribe (resuming
//! from their last cursor), publish, ask for presence, unsubscribe, disconnect and
//! reconnect elsewhere, and repeat publishes with their idempotency key.
//!
//! Checked on every frame a client receives:
//! - within a room's epoch no seq is ever assigned to two messages (a ledger of
//!   every `(room, epoch, seq)` seen by any client or publish answer);
//! - every subscriber gets a gapless, duplicate-free, in-order run of the owner's
//!   sequence after its `subscribed`, or is told (another `subscribed`, a close);
//! - `recovered: true` only for the cursor's own epoch;
//! - every `msg` names its publisher's user in `from` (absent for anonymous ones);
//! - a message is stamped at most once in an epoch, however often its publisher
//!   repeats it with the same idempotency key.
//!
//! In one seed in eleven (with more than one node) the world has *planned moves
//! only*: nodes drain and start again one at a time, each move done before the next,
//! with enough history for any move, and time passes only when nothing is in flight
//! (no wait runs out early). There, a live subscription must never be told to
//! re-sync: rooms change owner by handoff (`hub::handoff`).
//!
//! Rooms keep copies on standbys (`hub::replica`) in three seeds in four, as
//! `mesh.replicate` does. In another seed in eleven (with three nodes or more) the
//! world has *crashes only*: one node at a time is killed with whatever its clients
//! sent still in flight, and started again once the standbys took over; there too
//! a live subscription must never be told to re-sync (its acknowledged messages
//! are on the standby, which continues the epoch).
//!
//! Checked whenever the cluster is brought to rest (links healed, nodes up, every
//! queue empty, time advanced past leases and the replay window):
//! - each room with subscribers has exactly one owner, the rendezvous choice;
//! - every subscriber is at the owner's latest seq in the owner's epoch (nothing
//!   lost without a word);
//! - interest is exact: the owner registers exactly the workers and nodes that have
//!   subscribers (a node with none receives nothing), and mirrors exist exactly where
//!   subscribers are;
//! - rosters equal the identified live connections;
//! - nothing grows without bound: no room state, mirror, user entry or owned room
//!   outlives its reason;
//! - with standbys, every owned room's copy is on the node its view names, up to
//!   date, no message is held, and no copy is kept that no owner stands behind.
//!
//! `RINGWAY_SIM_SEEDS=N` runs N seeds (default a few, to keep `cargo test` fast);
//! `RINGWAY_SIM_SEED=S` replays one. A failure prints the seed and the command that
//! replays it; every seed that ever failed is kept in [`REGRESSIONS`].

/// Print a step of the world when `RINGWAY_SIM_TRACE` is set.
macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.trace {
            eprintln!("[{:>6} ms] {}", $w.now, format!($($arg)*));
        }
    };
}

mod client;
mod disk;
mod faults;
mod rest;
mod world;

use world::{Outcome, World};

/// Seeds that once failed, replayed by every run.
/// - 10: a worker sent into a link session it had not yet seen begin (fixed: sends name
///   their session, `mesh::Mesh::send`);
/// - 98: an owner that gave a room up (its own view moved it) did not tell the nodes
///   it served, which kept a dead stream (fixed: `PeerMsg::Moved`);
/// - 177: a subscription sent before a `Moved` arrived left the sender registered
///   (fixed: the node answers `Moved` with `Leave`);
/// - 317: an answer to an earlier subscription of a connection turned a later one
///   live at the wrong seq (fixed: subscription attempts).
/// - 242: a mirror waiting out a `Moved` (its node had not yet seen the move)
///   accepted messages from the room the old owner started again (fixed: a waiting
///   mirror takes nothing from it).
///
/// Found while handoffs were built (`hub::handoff`), each fixed before it landed:
/// - 10: a held subscription was handled after the `Leave` that withdrew it;
/// - 282: a node that adopted a room it had mirrored at a third node stayed
///   registered there;
/// - 76: a room started by a held request whose deadline passed shadowed the
///   mirror its node's view still pointed at;
/// - 792: a subscription went ahead of the same node's earlier, held `Leave`;
/// - 2791: a leaving peer's interest was dropped while its clients were still
///   connected (it withdraws them as they go);
/// - 94 (planned moves only): a room handed to a node that then drained was
///   started afresh before it came back;
/// - 149 (planned): the simulator stopped a draining node before it had handled
///   what reached it;
/// - 435 (planned, with a log): a copy read back from a log crossed the live one
///   and won.
///
/// Found while standbys were built (`hub::replica`), each fixed before it landed:
/// - 942: the app heard of a message before its standby had it (then the owner
///   was lost and its seq went to another message);
/// - 1546 (planned): a room handed over while its owner's election ran; the next
///   owner asked for the same term and was refused;
/// - 711, 755 (crashes, with a log): a restarted owner asked for term 2 of an
///   epoch at term 48 (terms are in the log now);
/// - 1480 (planned): a standby promoted its copy over a room it owned live;
/// - 601 (crashes, with a log): a handoff replaced a copy read back from the log,
///   whose idempotency keys named a seq the handoff gave another message;
/// - 1778 (crashes): a subscription was answered with an epoch only the owner
///   knew (its standby had not acknowledged the seed);
/// - 1904, 134: copies left behind (a refused handoff; a promotion called off by
///   handing over another epoch);
/// - 2999 (with a log): history served from a copy read back from the log, with a
///   message its owner never let through;
/// - 117105 (with a log; found by a review): a node restarted from its log handed a
///   replicated epoch it had lost to a standby on to another node, which went on
///   with it over the standby's seqs (a log copy of a replicated room now goes on
///   only if a live node hands it over);
/// - 43186: a handoff adopted while a promotion of a copy of another epoch of the
///   same room ran; the room's own election replaced the promotion's, whose copy
///   stayed behind (the promotion is called off now, its copy dropped);
/// - 7268: a room's owner gave it up and a new subscriber on a node was answered
///   in the new epoch while the node's other subscribers were live in the old one;
///   they went on, silently, in the new epoch (they follow now, and are told).
const REGRESSIONS: &[u64] = &[
    10, 98, 177, 317, 242, 282, 76, 792, 2791, 94, 149, 435, 942, 1546, 711, 755, 1480, 601, 1778,
    1904, 134, 2999, 117105, 43186, 7268, 18336, 119122, 6105,
];

/// Steps each seed runs.
const STEPS: usize = 3_000;

/// Run seed `seed`; `Err` names the step and the invariant that broke.
pub fn run_seed(seed: u64, steps: usize) -> Result<usize, String> {
    let mut world = World::new(seed);
    for step in 0..steps {
        match world.step() {
            Outcome::Ok => {}
            Outcome::Violation(v) => return Err(format!("step {step}: {v}")),
        }
        if step % 1000 == 999 {
            world
                .settle_and_check()
                .map_err(|v| format!("at rest after step {step}: {v}"))?;
        }
    }
    world
        .settle_and_check()
        .map_err(|v| format!("at rest at the end: {v}"))?;
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    #[test]
    fn sim() {
        let seeds: Vec<u64> = match env("RINGWAY_SIM_SEED") {
            Some(one) => vec![one],
            None => {
                let n = env("RINGWAY_SIM_SEEDS").unwrap_or(8);
                let base = env("RINGWAY_SIM_BASE").unwrap_or(1);
                REGRESSIONS.iter().copied().chain(base..base + n).collect()
            }
        };
        let start = std::time::Instant::now();
        let mut steps = 0;
        for &seed in &seeds {
            match run_seed(seed, STEPS) {
                Ok(n) => steps += n,
                Err(e) => panic!(
                    "sim: seed {seed} failed: {e}\nreplay: RINGWAY_SIM_SEED={seed} cargo test --release --lib sim -- --nocapture"
                ),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "sim: {} seeds, {steps} steps, ok ({:.1} seeds/s)",
            seeds.len(),
            seeds.len() as f64 / secs
        );
    }
}
