//! The standby's side of replicated rooms (`hub::replicate` is the owner's), and
//! the elections that keep a seq from being stamped twice in an epoch.
//!
//! A standby keeps a *copy* of each room it stands by for: the position, the
//! history (the same bounds as the owner's) and the idempotency keys, from the
//! owner's `Seed` and every `Replicate` after it, each acknowledged with a
//! cumulative `Replicated`. When its view loses the owner (not one that said it is
//! leaving: that one hands the room over) and gives the room to this node, the
//! standby asks to continue the epoch.
//!
//! # Terms
//!
//! Every owner of a replicated epoch holds a *term*, and releases a message only
//! once its standby for that term has it. A node may start a new term (an owner
//! changing standby, a standby whose owner was lost, a node that adopted the room)
//! only by winning an election: a majority of the cluster's node list (itself
//! included) must grant it. A node grants a term for a room's epoch only:
//!
//! - if its own view gives the room to the asker (else it answers "ask again"),
//! - if it granted no later term, nor this term to another node,
//! - if it does not own that epoch itself, nor keeps a copy of a later term or
//!   with more messages than the asker has;
//!
//! and from then on it takes no message of an earlier term for that epoch. So two
//! nodes cannot both win a term (majorities overlap), and an owner whose standby
//! granted a later term cannot release another message (the standby's acks
//! stop): the winner, which is the standby or heard from it, has every message the
//! old owner released. A standby that starts an election stops taking the owner's
//! messages at once (it grants itself).
//!
//! What follows:
//! - the owner lost: its standby wins (it and one more node make a majority of
//!   three) and continues the epoch; its subscribers resume from their cursors;
//! - the standby lost: the owner wins the next term with the next standby;
//! - both lost, or a node cut off from most of the cluster: no election is won, so
//!   the room starts a new epoch where it is used next (its subscribers re-sync);
//! - a partition: only the side with a majority continues an epoch; an owner on
//!   the other side gives its rooms up.
//!
//! Requests about a room whose standby is being promoted wait (`hub::park`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::Hub;
use super::id::Ms;
use super::msg::{Handoff, PeerMsg};
use super::replicate::Standby;
use super::ring::{EvictCounts, ReplayRing};

/// A standby's copy of one room.
#[derive(Debug)]
struct Copy {
    /// The owner that sends it.
    owner: usize,
    epoch: u64,
    term: u64,
    /// The latest seq held.
    seq: u64,
    ring: ReplayRing,
    /// Idempotency keys stamped in the epoch: `(scoped key, seq, stamped at)`,
    /// oldest first.
    keys: VecDeque<(String, u64, Ms)>,
    /// Users last announced present (from the seed).
    announced: Vec<String>,
}

/// A term this worker granted for a room's epoch.
#[derive(Debug, Clone, Copy)]
struct Grant {
    epoch: u64,
    term: u64,
    to: usize,
    /// Forgotten then (long after any election that asked has ended).
    until: Ms,
}

/// An election this worker runs for a room.
#[derive(Debug)]
struct Election {
    epoch: u64,
    term: u64,
    seq: u64,
    /// Nodes that granted it, and that refused it for good.
    granted: u64,
    refused: u64,
    /// Lost if not won by then.
    until: Ms,
    /// For a copy whose owner was lost (else for a room this worker owns).
    promote: bool,
}

/// A worker's copies, grants and elections.
#[derive(Debug, Default)]
pub(super) struct Replicas {
    copies: HashMap<Arc<str>, Copy>,
    grants: HashMap<Arc<str>, Grant>,
    elections: HashMap<Arc<str>, Election>,
    /// Bytes of history in the copies.
    bytes: usize,
    /// Acknowledgements not yet sent, cumulative: `(owner, room)` → `(epoch,
    /// term, seq)` (see [`Hub::flush_acks`]).
    acks: HashMap<(usize, Arc<str>), (u64, u64, u64)>,
}

impl Replicas {
    /// When an election runs out (until then, it asks again every tick).
    pub(super) fn next_deadline(&self) -> Option<Ms> {
        self.elections.values().map(|e| e.until).min()
    }

    /// Whether `room`'s standby here is being promoted (requests about it wait).
    pub(super) fn promoting(&self, room: &str) -> bool {
        !self.elections.is_empty() && self.elections.get(room).is_some_and(|e| e.promote)
    }

    pub(super) fn copy_of(&self, room: &str) -> Option<(usize, u64, u64, u64)> {
        self.copies
            .get(room)
            .map(|c| (c.owner, c.epoch, c.term, c.seq))
    }

    pub(super) fn copies_held(&self) -> impl Iterator<Item = (&str, (usize, u64, u64, u64))> {
        self.copies
            .iter()
            .map(|(r, c)| (&**r, (c.owner, c.epoch, c.term, c.seq)))
    }

    /// Elections running.
    pub(super) fn elections(&self) -> usize {
        self.elections.len()
    }

    /// Copies kept, and the bytes of their history (gauges).
    pub(super) fn gauges(&self) -> (usize, usize) {
        (self.copies.len(), self.bytes)
    }
}

impl Hub {
    /// Whether this worker may take a copy of `room`'s `epoch` in `term` from node
    /// `from`, or grant `from` that term.
    fn may_take(&self, room: &str, epoch: u64, term: u64, from: usize) -> bool {
        let granted_other = self.repl.grants.get(room).is_some_and(|g| {
            g.epoch == epoch && (g.term > term || (g.term == term && g.to != from))
        });
        let owned = self
            .owned
            .get(room)
            .is_some_and(|r| r.position().0.0 == epoch);
        let later_copy = self
            .repl
            .copies
            .get(room)
            .is_some_and(|c| c.epoch == epoch && c.term > term);
        !(granted_other || owned || later_copy)
    }

    fn grant(&mut self, room: &str, epoch: u64, term: u64, to: usize, now: Ms) {
        let until = now + 4 * self.cfg.moved_grace_ms;
        let grant = Grant {
            epoch,
            term,
            to,
            until,
        };
        match self.repl.grants.get_mut(room) {
            Some(g) => *g = grant,
            None => {
                self.repl.grants.insert(Arc::from(room), grant);
            }
        }
    }

    /// `Seed` from node `from`: keep a copy of the room as it is there.
    pub(super) fn on_seed(&mut self, from: usize, h: Handoff, now: Ms) {
        let ok = self.may_take(&h.room, h.epoch, h.term, from);
        let reply = PeerMsg::Replicated {
            room: h.room.clone(),
            epoch: h.epoch,
            term: h.term,
            seq: h.seq,
            ok,
        };
        if ok {
            self.grant(&h.room, h.epoch, h.term, from, now);
            let mut ring = ReplayRing::new(
                self.cfg.replay_messages,
                self.cfg.replay_ms,
                self.cfg.replay_bytes,
            );
            let mut evicted = EvictCounts::default();
            for (seq, age, frame) in h.messages {
                ring.push(seq, now.saturating_sub(age), frame, &mut evicted);
            }
            let keys = h
                .keys
                .into_iter()
                .map(|(k, s, age)| (k, s, now.saturating_sub(age)))
                .collect::<Vec<_>>();
            let mut keys: Vec<_> = keys;
            keys.sort_by_key(|k| k.2);
            let copy = Copy {
                owner: from,
                epoch: h.epoch,
                term: h.term,
                seq: h.seq,
                ring,
                keys: keys.into(),
                announced: h.announced,
            };
            self.repl.bytes += copy.ring.bytes();
            if let Some(old) = self.repl.copies.insert(Arc::from(h.room.as_str()), copy) {
                self.repl.bytes -= old.ring.bytes();
                if (old.owner, old.epoch) != (from, h.epoch) {
                    // A copy of another epoch of the room (views disagreed for a
                    // while, and two nodes ran it): its owner is told it has no
                    // standby here any more, or it would go on counting on one
                    // (and seed no other).
                    let gone = PeerMsg::Replicated {
                        room: h.room,
                        epoch: old.epoch,
                        term: old.term,
                        seq: old.seq,
                        ok: false,
                    };
                    self.send_peer(old.owner, gone);
                }
            }
        }
        self.send_peer(from, reply);
    }

    /// `Replicate` from node `from`: one more message for a copy.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_replicate(
        &mut self,
        from: usize,
        (room, epoch, term, seq): (String, u64, u64, u64),
        frame: Bytes,
        key: Option<String>,
        now: Ms,
    ) {
        let fenced = self
            .repl
            .grants
            .get(room.as_str())
            .is_some_and(|g| g.epoch == epoch && g.term > term);
        let (window, cap) = (self.cfg.idempotency_window_ms, self.cfg.idempotency_keys);
        let mut ok = false;
        let mut at = seq;
        if let Some(c) = self.repl.copies.get_mut(room.as_str())
            && c.owner == from
            && c.epoch == epoch
            && c.term == term
            && !fenced
            && seq <= c.seq + 1
        {
            ok = true;
            if seq == c.seq + 1 {
                let before = c.ring.bytes();
                let mut evicted = EvictCounts::default();
                c.ring.push(seq, now, frame, &mut evicted);
                c.seq = seq;
                if let Some(k) = key {
                    c.keys.push_back((k, seq, now));
                }
                while c
                    .keys
                    .front()
                    .is_some_and(|k| k.2 + window <= now || c.keys.len() > cap)
                {
                    c.keys.pop_front();
                }
                self.repl.bytes = self.repl.bytes + c.ring.bytes() - before;
            }
            at = c.seq;
        }
        if ok
            && let Some(name) = self
                .repl
                .copies
                .get_key_value(room.as_str())
                .map(|(k, _)| k.clone())
        {
            // Acknowledged when the caller flushes (a batch of messages, one ack).
            self.repl.acks.insert((from, name), (epoch, term, at));
            return;
        }
        self.send_peer(
            from,
            PeerMsg::Replicated {
                room,
                epoch,
                term,
                seq: at,
                ok,
            },
        );
    }

    /// Send the acknowledgements this worker owes as a standby (one per room, for
    /// everything received so far). Call after a batch of inputs, before the
    /// worker writes its links: until then the owners hold those messages.
    pub fn flush_acks(&mut self) {
        if self.repl.acks.is_empty() {
            return;
        }
        let mut acks: Vec<_> = self.repl.acks.drain().collect();
        acks.sort_unstable();
        for ((owner, room), (epoch, term, seq)) in acks {
            let msg = PeerMsg::Replicated {
                room: room.to_string(),
                epoch,
                term,
                seq,
                ok: true,
            };
            self.send_peer(owner, msg);
        }
    }

    /// Acknowledgements waiting for [`Hub::flush_acks`].
    pub fn acks_owed(&self) -> usize {
        self.repl.acks.len()
    }

    /// `Unseed` from node `from`: forget the copy it sent.
    pub(super) fn on_unseed(&mut self, from: usize, room: &str, epoch: u64) {
        if self
            .repl
            .copies
            .get(room)
            .is_some_and(|c| c.owner == from && c.epoch == epoch)
        {
            self.drop_copy(room);
        }
    }

    fn drop_copy(&mut self, room: &str) {
        if let Some(c) = self.repl.copies.remove(room) {
            self.repl.bytes -= c.ring.bytes();
        }
    }

    /// `Vote` from node `from`: grant it the term, or not.
    pub(super) fn on_vote(
        &mut self,
        from: usize,
        (room, epoch, term, seq): (String, u64, u64, u64),
        now: Ms,
    ) {
        let retry = self.topo.owner(&room) != from;
        let more = self
            .repl
            .copies
            .get(room.as_str())
            .is_some_and(|c| c.epoch == epoch && (c.term >= term || c.seq > seq));
        let granted = !retry && !more && self.may_take(&room, epoch, term, from);
        if granted {
            self.grant(&room, epoch, term, from, now);
            // The copy of an older term is dropped, not just fenced by the grant
            // (which is forgotten in time): its owner's messages are refused for
            // good, and the new term's owner seeds its own standby.
            if self
                .repl
                .copies
                .get(room.as_str())
                .is_some_and(|c| c.epoch == epoch && c.term < term)
            {
                self.drop_copy(&room);
            }
        }
        self.send_peer(
            from,
            PeerMsg::Voted {
                room,
                epoch,
                term,
                granted,
                retry,
            },
        );
    }

    /// Ask every live peer for `term` of `room`'s `epoch` (this worker holds it up
    /// to `seq`): for a copy whose owner was lost (`promote`), or for a room this
    /// worker owns.
    pub(super) fn elect(
        &mut self,
        room: &Arc<str>,
        (epoch, term, seq): (u64, u64, u64),
        promote: bool,
        now: Ms,
    ) {
        let me = self.node();
        self.grant(room, epoch, term, me, now);
        self.stats.elections += 1;
        let election = Election {
            epoch,
            term,
            seq,
            granted: 0,
            refused: 0,
            until: now + self.cfg.moved_grace_ms,
            promote,
        };
        self.repl.elections.insert(room.clone(), election);
        self.ask_votes(room);
    }

    /// Send `Vote` to the live peers that have not answered for good.
    fn ask_votes(&mut self, room: &Arc<str>) {
        let Some(e) = self.repl.elections.get(&**room) else {
            return;
        };
        let peers = self.topo.peers() & !e.granted & !e.refused;
        if peers == 0 {
            return;
        }
        let vote = PeerMsg::Vote {
            room: room.to_string(),
            epoch: e.epoch,
            term: e.term,
            seq: e.seq,
        };
        self.out.peers.push_back((peers, vote));
    }

    /// `Voted` from node `from`.
    pub(super) fn on_voted(
        &mut self,
        from: usize,
        (room, epoch, term): (&str, u64, u64),
        granted: bool,
        retry: bool,
        now: Ms,
    ) {
        let Some((name, e)) = self.repl.elections.get_key_value(room) else {
            return;
        };
        if (e.epoch, e.term) != (epoch, term) {
            return;
        }
        let name = name.clone();
        if let Some(e) = self.repl.elections.get_mut(room) {
            if granted {
                e.granted |= 1 << from;
            } else if !retry {
                e.refused |= 1 << from;
            }
        }
        self.count_votes(&name, now);
    }

    /// End `room`'s election if it is won, or can no longer be.
    fn count_votes(&mut self, room: &Arc<str>, now: Ms) {
        let Some(e) = self.repl.elections.get(&**room) else {
            return;
        };
        let majority = self.topo.majority();
        let nodes = self.topo.nodes();
        let granted = 1 + e.granted.count_ones() as usize;
        let refused = e.refused.count_ones() as usize;
        if granted >= majority {
            self.end_election(room, true, now);
        } else if nodes - refused < majority || e.until <= now {
            self.end_election(room, false, now);
        }
    }

    fn end_election(&mut self, room: &Arc<str>, won: bool, now: Ms) {
        let Some(e) = self.repl.elections.remove(&**room) else {
            return;
        };
        if !won {
            self.stats.elections_lost += 1;
        }
        if e.promote {
            self.promoted(room, e.term, won, now);
        } else {
            self.kept(room, e.term, won, now);
        }
        self.release(now);
    }

    /// Time passed: elections ask again, or end.
    pub(super) fn tick_elections(&mut self, now: Ms) {
        if !self.repl.grants.is_empty() {
            self.repl.grants.retain(|_, g| g.until > now);
        }
        if self.repl.elections.is_empty() {
            return;
        }
        let mut rooms: Vec<Arc<str>> = self.repl.elections.keys().cloned().collect();
        rooms.sort_unstable();
        for room in rooms {
            self.count_votes(&room, now);
            self.ask_votes(&room);
        }
    }

    /// The view changed: a copy whose owner is lost (and not leaving: that one
    /// hands its rooms over) is promoted where this node's view now gives the room
    /// to this node, and dropped elsewhere. A promotion whose owner is back is
    /// called off.
    pub(super) fn check_copies(&mut self, now: Ms) {
        if self.repl.copies.is_empty() {
            return;
        }
        let mut rooms: Vec<Arc<str>> = self.repl.copies.keys().cloned().collect();
        rooms.sort_unstable();
        let me = self.node();
        for room in rooms {
            let Some(c) = self.repl.copies.get(&room) else {
                continue;
            };
            let (owner, epoch, term, seq) = (c.owner, c.epoch, c.term, c.seq);
            let promoting = self.repl.promoting(&room);
            if self.topo.is_live(owner) {
                if promoting {
                    // The owner is back. It chose another standby while this node
                    // was away (or gives the room up), and seeds this one again
                    // if it wants it: the copy is stale.
                    self.repl.elections.remove(&room);
                    self.drop_copy(&room);
                    self.release(now);
                }
                continue;
            }
            if promoting || self.handoffs.leaving & (1 << owner) != 0 {
                continue;
            }
            if self.owned.contains_key(&room) {
                // This worker has the room live already (the views disagreed for
                // a while): its own copy goes on.
                self.drop_copy(&room);
                continue;
            }
            if self.topo.owner(&room) == me && !self.topo.leaving() {
                self.elect(&room, (epoch, term + 1, seq), true, now);
            } else {
                self.drop_copy(&room);
            }
        }
    }

    /// The election to promote the copy of `room` ended: on a win the room is this
    /// worker's in the won `term`, same epoch, from the copy's seq; otherwise the
    /// copy is dropped (the room starts a new epoch where it is used next).
    fn promoted(&mut self, room: &Arc<str>, term: u64, won: bool, now: Ms) {
        let Some(c) = self.repl.copies.remove(&**room) else {
            return;
        };
        self.repl.bytes -= c.ring.bytes();
        if !won || self.owned.contains_key(&**room) {
            // Lost; or a live copy of the room came here meanwhile (a handoff of
            // another epoch), which goes on.
            return;
        }
        self.stats.promotions += 1;
        let messages: Vec<(u64, Ms, Bytes)> = c
            .ring
            .newest(usize::MAX)
            .into_iter()
            .map(|(s, at, frame)| (s, now.saturating_sub(at), frame))
            .collect();
        let h = Handoff {
            room: room.to_string(),
            epoch: c.epoch,
            seq: c.seq,
            messages,
            keys: c
                .keys
                .into_iter()
                .filter(|k| k.1 <= c.seq)
                .map(|(k, s, at)| (k, s, now.saturating_sub(at)))
                .collect(),
            announced: c.announced,
            from_log: false,
            term,
            answers: Vec::new(),
        };
        self.install(c.owner, h, Standby::in_term(term), now);
        self.kept(room, term, true, now);
    }

    /// Stop the election this worker runs for owned `room` (it goes elsewhere);
    /// returns the term it asked for.
    pub(super) fn call_off_election(&mut self, room: &str) -> Option<u64> {
        if self.repl.elections.get(room).is_none_or(|e| e.promote) {
            return None;
        }
        self.repl.elections.remove(room).map(|e| e.term)
    }

    /// A live copy of `room` is taking over here: a promotion of this worker's
    /// copy (of another epoch) is called off, and the copy dropped.
    pub(super) fn call_off_promotion(&mut self, room: &str) {
        if self.repl.promoting(room) {
            self.repl.elections.remove(room);
            self.drop_copy(room);
        }
    }

    /// A handoff of `room`'s `epoch` arrived: a copy of that epoch here is
    /// superseded (a copy of another epoch stays: its owner stands behind it).
    pub(super) fn forget_copy(&mut self, room: &str, epoch: u64) {
        if self.repl.copies.get(room).is_some_and(|c| c.epoch == epoch) {
            self.drop_copy(room);
        }
    }
}
