//! Rooms that change owner without starting over (see docs/design/room-handoff.md).
//!
//! When a worker's view of the cluster gives one of its rooms to another node (a
//! node came back, or this one is leaving), it *hands the room off*: epoch, latest
//! seq, the newest of its history and its idempotency keys go to the next owner in
//! one [`PeerMsg::Handoff`], and the room is gone from here the moment it is sent,
//! so exactly one node goes on stamping the epoch. Its subscribers, here and on
//! other nodes, subscribe again from their cursors (`hub::local::rehome`) and the
//! new owner answers `recovered` in the same epoch: nobody re-syncs.
//!
//! The race is that a subscription or a publish can reach the new owner before the
//! handoff does (a third node's view moved first, and links are not ordered with
//! each other). So a node *waits* before it starts a room it does not have:
//!
//! - after a peer's link came up, until each of the peer's workers said
//!   `HandoffDone` (they send it after the rooms they hand over, on the same link);
//! - after a peer said `Leaving`, until each of its workers' `HandoffDone`;
//! - at start, for every peer, until its `HandoffDone` or `mesh.join_timeout_ms`;
//! - when a peer sends a request for a room this node's own view gives to another
//!   node, until this node's view changes (the link event is most likely on its way).
//!
//! Waiting inputs are *parked* (`hub::park`) in arrival order (later inputs for the same room wait
//! behind them) and replayed when a reason to wait ends; none waits longer than
//! `mesh.dead_after_ms` (`moved_grace_ms`), after which it is handled as if nothing
//! were coming (a lost handoff costs a new epoch, as a crash does).
//!
//! The node that gave a room away answers late requests for it: a subscription with
//! `Moved` (the asker waits for its own view), a publish by relaying it to the new
//! owner, which answers the asker directly (`via`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Hub;
use super::id::Ms;
use super::msg::{Handoff, PeerMsg};
use super::park::Parked;
use super::replicate::Standby;
use super::ring::EvictCounts;
use super::room::{OwnedRoom, WorkerSet};
use crate::protocol::Epoch;
use crate::store::record::Kind;

/// A peer's handoffs this worker waits for: which of its workers said they are done.
#[derive(Debug)]
struct Await {
    done: WorkerSet,
    /// The peer's workers (0 until the first `HandoffDone` says).
    workers: usize,
    /// Stop waiting then.
    until: Ms,
}

impl Await {
    fn new(until: Ms) -> Self {
        Self {
            done: WorkerSet::default(),
            workers: 0,
            until,
        }
    }
}

/// A worker's handoff state.
#[derive(Debug, Default)]
pub(super) struct Handoffs {
    /// By peer: `[after its link came up, after it said Leaving]`.
    awaiting: Vec<[Option<Await>; 2]>,
    /// Peers that said `Leaving` in their current session (bit per node).
    pub(super) leaving: u64,
    /// Held inputs with when they stop waiting, in arrival order (so by deadline).
    pub(super) parked: VecDeque<(Ms, Parked)>,
    /// Rooms with held inputs, and from where (a [`source_bit`](super::park::source_bit) per source): a
    /// later input from the same source waits behind them.
    pub(super) parked_rooms: HashMap<Arc<str>, u64>,
    /// Rooms this worker handed off: room → (to node, remembered until).
    pub(super) handed: HashMap<Arc<str>, (usize, Ms)>,
    /// The deadline of the held input being replayed.
    pub(super) replaying: Option<Ms>,
}

impl Handoffs {
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            awaiting: (0..nodes).map(|_| [None, None]).collect(),
            ..Self::default()
        }
    }

    pub(super) fn awaiting_any(&self) -> bool {
        self.awaiting.iter().flatten().any(Option::is_some)
    }

    /// When something here is due: a wait that ends, a held input that stops waiting.
    pub(super) fn next_deadline(&self) -> Option<Ms> {
        let wait = self
            .awaiting
            .iter()
            .flatten()
            .flatten()
            .map(|a| a.until)
            .min();
        let parked = self.parked.front().map(|(t, _)| *t);
        wait.into_iter().chain(parked).min()
    }

    /// When the last wait for a peer's handoffs ends.
    pub(super) fn wait_deadline(&self) -> Option<Ms> {
        self.awaiting
            .iter()
            .flatten()
            .flatten()
            .map(|a| a.until)
            .max()
    }

    /// Inputs held now.
    pub(super) fn parked(&self) -> usize {
        self.parked.len()
    }
}

impl Hub {
    /// The node starts: wait for every peer's handoffs (see the module docs) for at
    /// most `join_ms`.
    pub(super) fn start_waiting(&mut self, now: Ms) {
        let me = self.node();
        for (p, slots) in self.handoffs.awaiting.iter_mut().enumerate() {
            if p != me {
                slots[0] = Some(Await::new(now + self.cfg.join_ms));
            }
        }
    }

    /// Give `rooms` to their next owners: `(room, to)`. Each leaves this worker
    /// now; its subscribers here subscribe again (to the new owner), and the nodes
    /// it served are told it moved (they subscribe again when their view agrees).
    pub(super) fn hand_off(&mut self, rooms: Vec<(Arc<str>, usize)>, now: Ms) {
        if rooms.is_empty() {
            return;
        }
        let mut keys = self.dedup.take_rooms(rooms.iter().map(|(r, _)| &**r));
        let mut evicted = EvictCounts::default();
        let until = now + self.cfg.moved_grace_ms;
        // History bytes put on the way to each node in this burst.
        let mut sent: HashMap<usize, usize> = HashMap::new();
        for (room, to) in rooms {
            // What waits for the standby goes with the room: the next owner answers.
            let answers = self.hand_over_held(&room);
            let Some(mut r) = self.owned.remove(&room) else {
                continue;
            };
            if let Some(standby) = r.standby.node().filter(|&s| s != to) {
                let epoch = r.position().0.0;
                self.unseed(vec![(room.clone(), epoch, standby)]);
            }
            self.history_bytes -= r.history_bytes();
            let (epoch, seq) = r.position();
            // Live subscribers are at the latest seq and need no history; only a
            // client that resumes from behind does. Past the burst's budget a room
            // goes without it.
            let spent = sent.entry(to).or_default();
            let room_for = self
                .cfg
                .peer_replay_bytes
                .min(self.cfg.handoff_bytes.saturating_sub(*spent));
            let messages: Vec<(u64, Ms, bytes::Bytes)> = r
                .newest(room_for, now, &mut evicted)
                .into_iter()
                .map(|(s, at, frame)| (s, now.saturating_sub(at), frame))
                .collect();
            *spent += messages.iter().map(|m| m.2.len()).sum::<usize>();
            let keys = keys
                .remove(&*room)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, e, _, _)| *e == epoch)
                .map(|(k, _, s, at)| (k, s, now.saturating_sub(at)))
                .collect();
            if self.cfg.durable {
                self.out.stored.push_back(super::Stamped {
                    room: room.clone(),
                    epoch: epoch.0,
                    seq,
                    frame: bytes::Bytes::new(),
                    key: None,
                    age: 0,
                    kind: Kind::Gone,
                });
            }
            // A term this worker asked for may be granted somewhere: the next
            // owner asks for a later one.
            let term = self.call_off_election(&room).unwrap_or(r.standby.term());
            self.send_peer(
                to,
                PeerMsg::Handoff(Box::new(Handoff {
                    room: room.to_string(),
                    epoch: epoch.0,
                    seq,
                    messages,
                    keys,
                    announced: r.roster.announced(),
                    from_log: r.is_from_log(),
                    term,
                    answers,
                })),
            );
            self.handoffs.handed.insert(room.clone(), (to, until));
            self.stats.owner_moves += 1;
            self.stats.handoffs_out += 1;
            let workers: Vec<usize> = r.interested().collect();
            for w in workers {
                self.rehome_on(w, &room, now);
            }
            let peers = r.peer_mask() & !(1 << to);
            if peers != 0 {
                self.out.peers.push_back((
                    peers,
                    PeerMsg::Moved {
                        room: room.to_string(),
                    },
                ));
            }
        }
        self.stats.evicted(&evicted);
    }

    /// A room handed over by node `from`: go on with it here, unless this worker
    /// already has it live (its own epoch is out there then; the handoff loses).
    pub(super) fn adopt(&mut self, from: usize, mut h: Handoff, now: Ms) {
        // Whatever becomes of it, a copy of this epoch kept here as a standby has
        // nobody behind it now.
        self.forget_copy(&h.room, h.epoch);
        if h.from_log && h.term > 0 && self.replicating() {
            // A replicated epoch read back from the sender's log: a standby may
            // have gone on with it since (see `hub::replicate::ensure_standby`).
            self.stats.handoffs_refused += 1;
            return;
        }
        if h.from_log && self.handoffs.handed.contains_key(h.room.as_str()) {
            // A copy the sender read back from its log crossed this node's live one
            // on its way there: the live one wins.
            self.stats.handoffs_refused += 1;
            return;
        }
        if let Some(r) = self.owned.get(h.room.as_str()) {
            if h.from_log || !r.is_from_log() {
                self.stats.handoffs_refused += 1;
                return;
            }
            // An older copy read back from this node's log: the handoff is newer
            // (and so are its keys: the log's may name seqs the handoff gave to
            // other messages).
            if let Some(old) = self.owned.remove(h.room.as_str()) {
                self.history_bytes -= old.history_bytes();
                self.dedup.take_rooms([h.room.as_str()]);
                self.call_off_election(&h.room);
            }
        }
        let name: Arc<str> = Arc::from(h.room.as_str());
        let term = h.term;
        let answers = std::mem::take(&mut h.answers);
        self.install(from, h, Standby::in_term(term), now);
        self.owe_answers(&name, from, answers);
        self.log_term(&name);
        // A replicated epoch goes on here under the next term, once won.
        self.ensure_standby(&name, now);
        self.release(now);
    }

    /// Make `h` a room this worker owns, with replication state `standby`, taken
    /// over from node `from`; its subscribers here and the mirror that listened
    /// elsewhere follow it.
    pub(super) fn install(&mut self, from: usize, h: Handoff, standby: Standby, now: Ms) {
        let Handoff {
            room,
            epoch,
            seq,
            messages,
            keys,
            announced,
            ..
        } = h;
        self.forget_copy(&room, epoch);
        // A promotion of a copy of another epoch loses to the live room handed
        // here (its election would be overwritten by this room's own).
        self.call_off_promotion(&room);
        let name: Arc<str> = Arc::from(room);
        let mut evicted = EvictCounts::default();
        let owned = OwnedRoom::restored(
            (Epoch(epoch), seq),
            (
                self.cfg.replay_messages,
                self.cfg.replay_ms,
                self.cfg.replay_bytes,
            ),
            messages
                .iter()
                .map(|(s, age, frame)| (*s, now.saturating_sub(*age), frame.clone())),
            now + self.cfg.replay_ms,
            &mut evicted,
        );
        let mut owned = owned;
        owned.standby = standby;
        if !announced.is_empty() {
            owned.roster.inherit(announced, now);
            if self.cfg.tracks_presence(&name) {
                self.presence_dirty.push(name.clone());
            }
        }
        self.owned.insert(name.clone(), owned);
        self.account_history(&name, 0, false, &evicted);
        let mut keys = keys;
        keys.sort_by_key(|k| std::cmp::Reverse(k.2)); // oldest first
        for (key, s, age) in &keys {
            self.dedup
                .restore(&name, key, Epoch(epoch), *s, now.saturating_sub(*age));
        }
        if self.cfg.durable {
            self.store_adopted(&name, (epoch, seq), &messages, &keys);
        }
        self.handoffs.handed.remove(&name);
        self.stats.handoffs_in += 1;
        // This node's subscribers listened through the sender: they subscribe
        // again, here now.
        if let Some(mirror) = self.mirrors.remove(&name) {
            self.stats.owner_moves += 1;
            if mirror.owner != from && self.topo.is_live(mirror.owner) {
                // It subscribed with a third node: withdraw from there.
                self.send_peer(
                    mirror.owner,
                    PeerMsg::Leave {
                        room: name.to_string(),
                        who: None,
                        node_left: true,
                    },
                );
            }
            for w in mirror.workers.iter() {
                self.rehome_on(w, &name, now);
            }
        }
        // The sender's view gave it here; if this node's view gives it to another
        // node, it goes on there (as at any link event that moves an owned room).
        // Not straight back, unless this node is leaving (it keeps nothing, and it
        // told the sender so ahead of this on the link): otherwise the two views
        // disagree about the sender, and the next link event settles it.
        let leaving = self.topo.leaving();
        if let Some(next) = self
            .topo
            .remote_owner(&name)
            .filter(|&n| n != from || leaving)
        {
            self.hand_off(vec![(name, next)], now);
        }
    }

    /// Write an adopted room to the log as the sender had it: its position, its
    /// keys, its messages (with their ages).
    fn store_adopted(
        &mut self,
        room: &Arc<str>,
        (epoch, seq): (u64, u64),
        messages: &[(u64, Ms, bytes::Bytes)],
        keys: &[(String, u64, Ms)],
    ) {
        let stamped = |seq, frame, key, age| super::Stamped {
            room: room.clone(),
            epoch,
            seq,
            frame,
            key,
            age,
            kind: Kind::Message,
        };
        self.out
            .stored
            .push_back(stamped(seq, bytes::Bytes::new(), None, 0));
        for (key, s, age) in keys {
            self.out
                .stored
                .push_back(stamped(*s, bytes::Bytes::new(), Some(key.clone()), *age));
        }
        for (s, age, frame) in messages {
            self.out
                .stored
                .push_back(stamped(*s, frame.clone(), None, *age));
        }
    }

    /// This worker's node leaves the cluster (it drains): tell every peer, hand
    /// every room to its next owner, say so. Local subscribers follow their rooms;
    /// requests for rooms that left are relayed or answered `Moved`.
    pub(super) fn leave_cluster(&mut self, now: Ms) {
        if self.topo.leaving() {
            return;
        }
        self.topo.set_leaving();
        let peers = self.topo.peers();
        if peers == 0 {
            return; // alone: there is nobody to hand rooms to
        }
        let workers = self.topo.workers() as u16;
        self.out
            .peers
            .push_back((peers, PeerMsg::Leaving { workers }));
        let mut rooms: Vec<(Arc<str>, usize)> = self
            .owned
            .keys()
            .filter_map(|room| Some((room.clone(), self.topo.remote_owner(room)?)))
            .collect();
        rooms.sort_unstable();
        self.hand_off(rooms, now);
        self.out.peers.push_back((
            peers,
            PeerMsg::HandoffDone {
                worker: self.id as u16,
                workers,
                leaving: true,
            },
        ));
    }

    /// Node `peer` said it is leaving: it is out of this worker's view (its rooms'
    /// next owners wait for its handoffs), though its messages still come.
    pub(super) fn on_leaving(&mut self, peer: usize, workers: u16, now: Ms) {
        if self.handoffs.leaving & (1 << peer) != 0 || !self.topo.is_live(peer) {
            return;
        }
        self.handoffs.leaving |= 1 << peer;
        let mut wait = Await::new(now + self.cfg.moved_grace_ms);
        wait.workers = usize::from(workers);
        self.handoffs.awaiting[peer][1] = Some(wait);
        // Its subscribers stay until it closes them (they leave one by one), so
        // its interest and roster entries stay too.
        self.topo.set_live(peer, false);
        self.view_changed(now);
    }

    /// A worker of node `peer` handed over everything it had to (after the link came
    /// up, or after `Leaving`).
    pub(super) fn on_handoff_done(
        &mut self,
        peer: usize,
        worker: u16,
        workers: u16,
        leaving: bool,
        now: Ms,
    ) {
        let slot = &mut self.handoffs.awaiting[peer][usize::from(leaving)];
        if let Some(wait) = slot {
            wait.workers = usize::from(workers);
            wait.done.set(usize::from(worker), true);
            if wait.done.len() >= wait.workers {
                *slot = None;
                self.release(now);
            }
        }
    }

    /// Handoff bookkeeping for a link event: a link that comes up is waited on;
    /// one that goes down ends every wait on it, its held requests (the peer sends
    /// them again when it is back), and what was handed to it.
    pub(super) fn handoff_link(&mut self, peer: usize, up: bool, now: Ms) {
        self.handoffs.leaving &= !(1 << peer);
        self.handoffs.awaiting[peer] =
            [up.then(|| Await::new(now + self.cfg.moved_grace_ms)), None];
        if !up {
            self.drop_parked(|p| matches!(p, Parked::Peer { peer: from, .. } if *from == peer));
            self.handoffs.handed.retain(|_, (to, _)| *to != peer);
        }
    }

    /// Time passed: waits that ran out end, held inputs past their deadline are
    /// handled, old handoff records are forgotten.
    pub(super) fn expire_handoffs(&mut self, now: Ms) {
        let mut ended = false;
        for slot in self.handoffs.awaiting.iter_mut().flatten() {
            if slot.as_ref().is_some_and(|a| a.until <= now) {
                *slot = None;
                self.stats.handoff_waits_expired += 1;
                ended = true;
            }
        }
        if !self.handoffs.handed.is_empty() {
            self.handoffs.handed.retain(|_, (_, until)| *until > now);
        }
        if ended || self.handoffs.parked.front().is_some_and(|(t, _)| *t <= now) {
            self.release(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{A, Net, seeds};
    use super::super::{HubConfig, rendezvous};
    use super::*;

    fn net() -> Net {
        Net::new(HubConfig::for_tests())
    }

    /// A room node 1 owns while all are up, and node 2 owns without node 1.
    fn room() -> String {
        (0..)
            .map(|i| format!("r{i}"))
            .find(|r| {
                rendezvous::owner(r, &seeds(), 0b111) == 1
                    && rendezvous::owner(r, &seeds(), 0b101) == 2
            })
            .unwrap()
    }

    #[test]
    fn a_subscription_that_outruns_the_handoff_waits_for_it_and_nobody_resyncs() {
        let room = room();
        let mut net = net();
        net.subscribe(0, A, &room, None);
        for i in 1..=3 {
            net.publish(1, &room, i, None, None);
            net.deliver_all();
        }
        let seen = |net: &Net| -> Vec<String> {
            net.frames
                .iter()
                .filter(|(n, k, _)| (*n, *k) == (0, A))
                .map(|f| f.2.clone())
                .collect()
        };
        let before = seen(&net);
        assert_eq!(before.len(), 4, "subscribed and three messages: {before:?}");
        // Node 1 drains. Node 0 hears first and subscribes at node 2, which gets
        // that before node 1's handoff (another link).
        net.hubs[1].handle_drain(20);
        net.pump(1);
        while net.in_flight(1, 0) > 0 {
            net.deliver(1, 0);
        }
        assert_eq!(net.in_flight(0, 2), 1, "node 0 subscribes at node 2");
        net.deliver(0, 2);
        assert_eq!(net.hubs[2].parked(), 1, "it waits for the handoff");
        assert_eq!(net.in_flight(2, 0), 0, "nothing answered yet");
        net.deliver_all();
        assert_eq!(net.hubs[2].parked(), 0);
        let owned = net.hubs[2].owned_room(&room).expect("node 2 owns it now");
        assert_eq!(owned.position(), (Epoch(101), 3), "node 1's epoch and seq");
        // A publish through node 0 is stamped by node 2, next in the same epoch;
        // the subscriber was never told anything moved.
        net.publish(0, &room, 4, None, None);
        net.deliver_all();
        let after = &seen(&net)[before.len()..];
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after[0].contains("\"seq\":4"), "{after:?}");
        assert!(net.hubs[1].owned_room(&room).is_none());
    }

    #[test]
    fn a_subscription_withdrawn_while_it_waits_is_dropped_not_replayed() {
        let room = room();
        let mut net = net();
        net.subscribe(0, A, &room, Some("u"));
        net.publish(1, &room, 1, None, None);
        net.deliver_all();
        // As above: node 2 holds node 0's subscription until node 1's handoff.
        net.hubs[1].handle_drain(20);
        net.pump(1);
        while net.in_flight(1, 0) > 0 {
            net.deliver(1, 0);
        }
        net.deliver(0, 2);
        assert_eq!(net.hubs[2].parked(), 1);
        // The connection goes before the handoff comes: its withdrawal cancels the
        // held subscription rather than wait behind it (a subscription may wait
        // longer than the withdrawal would, and would then subscribe a connection
        // that is gone).
        let name: std::sync::Arc<str> = room.as_str().into();
        net.hubs[0].handle_leave(A, &name, true, 30);
        net.pump(0);
        net.deliver(0, 2);
        assert_eq!(net.hubs[2].parked(), 0, "nothing left waiting");
        net.deliver_all();
        let owned = net.hubs[2].owned_room(&room).expect("node 2 owns it now");
        assert_eq!(owned.peer_mask(), 0, "no node is sent the room's messages");
        assert!(net.hubs[2].roster_json(&room).contains("\"users\":[]"));
    }

    #[test]
    fn a_link_that_comes_back_during_a_drain_does_not_bring_rooms_back() {
        let room = room();
        let mut net = net();
        net.subscribe(0, A, &room, None);
        net.publish(1, &room, 1, None, None);
        net.deliver_all();
        net.hubs[1].handle_drain(20);
        net.pump(1);
        net.deliver_all();
        assert!(net.hubs[2].owned_room(&room).is_some());
        // Node 1 is still draining when its link to node 2 drops and comes back:
        // node 2 must not count on it again, or the room would go back and forth.
        net.flap(1, 2, 2);
        assert!(net.hubs[2].owned_room(&room).is_some(), "node 2 keeps it");
        assert!(net.hubs[1].owned_room(&room).is_none());
        // Node 2 saw the link come up before node 1 said again that it is leaving,
        // so the room may go there and back once; `deliver_all` returning at all
        // says it did not go on.
        assert!(net.hubs[2].stats().handoffs_out <= 1);
        // And node 2 knows again that node 1 is leaving: no later link event
        // moves the room there.
        assert!(
            !net.hubs[2].topology().is_live(1),
            "node 1 is out of node 2's view"
        );
        net.publish(0, &room, 2, None, None);
        net.deliver_all();
        // If it did, node 0 heard `Moved` from node 2 while its own view still
        // named node 2: its mirror waits out the grace, then resumes from its
        // cursor, silently.
        let grace = HubConfig::for_tests().moved_grace_ms;
        net.hubs[0].handle_tick(40 + grace);
        net.pump(0);
        net.deliver_all();
        let a: Vec<&String> = net
            .frames
            .iter()
            .filter(|(n, k, _)| (*n, *k) == (0, A))
            .map(|f| &f.2)
            .collect();
        assert_eq!(
            a.len(),
            3,
            "subscribed, seq 1, seq 2 and nothing else: {a:?}"
        );
        assert!(a[2].contains("\"seq\":2"), "{a:?}");
    }
}
