//! The owner's side of replicated rooms; `hub::replica` is the standby's side and
//! says how terms fence.
//!
//! In a cluster of three nodes or more (`mesh.replicate`, on by default), each room
//! an owner sequences has a *standby*: the node that would own it if this one were
//! lost (the next in rendezvous order among the live nodes). The owner sends it the
//! room as it is (`Seed`), then every message it stamps (`Replicate`), and *holds*
//! each message (its delivery and its publisher's answer) until the standby's
//! cumulative `Replicated` covers it: one more hop of latency, pipelined, so no loss
//! of throughput. Whatever a subscriber saw or a publisher was told is then on two
//! nodes, and if the owner is lost the standby continues the epoch from its copy.
//!
//! A subscription is answered at the *released* position (the last message let
//! through), so a message held when a subscriber joins reaches it on release, once.
//!
//! A room whose epoch was never replicated (term 0: started here, nobody else
//! knows it) seeds its first standby directly. Any later change of standby (the
//! standby was lost, a node came back in between) and any adoption of a replicated
//! room needs an election for the next term (`hub::replica`), during which messages
//! are stamped and held. An owner that cannot win one (it is cut off from most of
//! the cluster) gives the room up: its subscribers re-sync in a new epoch, while
//! the side that has a majority may continue the old one.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::Hub;
use super::effects::HubEvent;
use super::id::{Arrival, Ms, Ticket};
use super::msg::{Answer, Handoff, PeerMsg, Reply, Stamp};

/// Who waits for a publish's stamp.
#[derive(Debug, Clone, Copy)]
pub(super) enum Asker {
    /// A request of this worker.
    Here(u64),
    /// A request of a worker of this node (maybe this one).
    Worker(Ticket),
    /// A request from node `peer` (`via`: it relayed the publish for the asker).
    Peer {
        peer: usize,
        ticket: Ticket,
        via: Option<u16>,
    },
}

/// A message just stamped.
#[derive(Debug)]
pub(super) struct Fresh {
    pub seq: u64,
    pub frame: Bytes,
    /// Its conflation tag.
    pub tag: u64,
    /// When it reached the node.
    pub at: Arrival,
    /// What the app hears of it.
    pub event: Option<HubEvent>,
}

/// A stamped message held until the standby has it.
#[derive(Debug)]
struct Held {
    msg: Fresh,
    /// Who waits for its stamp (`true`: a repeat of its idempotency key).
    askers: Vec<(Asker, bool)>,
    /// Its scoped idempotency key (sent again with it to a new standby).
    key: Option<String>,
}

/// An owned room's replication state.
#[derive(Debug, Default)]
pub struct Standby {
    /// The node that keeps the copy (`None`: none yet, or an election runs).
    node: Option<usize>,
    /// The owner's term: 0 while the epoch was never replicated.
    term: u64,
    /// The standby holds every message up to this seq.
    acked: u64,
    /// Stamped and not yet released, oldest first (consecutive seqs).
    held: VecDeque<Held>,
    /// An election for `term + 1` runs.
    electing: bool,
    /// The standby acknowledged its seed (it has the room).
    seeded: bool,
    /// Answers a handoff brought, sent once the standby has the room: `(the node
    /// that handed it over, (seq, ticket, via, duplicate))`.
    owed: Vec<(usize, Answer)>,
}

impl Standby {
    /// A room taken over in `term` (0: its epoch was never replicated).
    pub fn in_term(term: u64) -> Self {
        Self {
            term,
            ..Self::default()
        }
    }

    /// The last message released, for a room whose latest seq is `seq`.
    pub fn released(&self, seq: u64) -> u64 {
        self.held.front().map_or(seq, |h| h.msg.seq - 1)
    }

    /// The owner's term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The node keeping the copy.
    pub fn node(&self) -> Option<usize> {
        self.node
    }

    /// Messages held for the standby.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether a standby has the room (or it was never replicated): until then a
    /// subscription is not answered, since the answer tells the epoch.
    pub fn ready(&self) -> bool {
        self.term == 0 || (self.node.is_some() && !self.electing && self.seeded)
    }
}

impl Hub {
    /// Whether owned `room` may answer a subscription now: its standby has it (a
    /// subscriber told an epoch that only this node knows would re-sync if this
    /// node were lost). Creates the room, and its standby, when it has none. A
    /// request held past its deadline goes ahead anyway.
    pub(super) fn standby_ready(&mut self, room: &Arc<str>, now: Ms) -> bool {
        if !self.replicating() || self.forced(now) {
            return true;
        }
        self.room_to_own(room);
        self.ensure_standby(room, now);
        self.owned.get(&**room).is_none_or(|r| r.standby.ready())
    }

    /// Whether rooms are replicated: on, and enough nodes for a majority without
    /// any one of them (with two, a survivor could never tell a lost peer from a
    /// cut link, so it could never continue an epoch anyway).
    pub(super) fn replicating(&self) -> bool {
        self.cfg.replicate && self.topo.nodes() >= 3
    }

    /// Message `seq` of owned `room` was stamped: deliver it and answer `asker`
    /// now, or hold both until the standby has it. `key`: its scoped idempotency
    /// key, for the copy.
    pub(super) fn settle_stamped(
        &mut self,
        room: &Arc<str>,
        msg: Fresh,
        asker: Option<Asker>,
        key: Option<String>,
    ) {
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        let epoch = r.position().0;
        let askers: Vec<(Asker, bool)> = asker.map(|a| (a, false)).into_iter().collect();
        if r.standby.term == 0 || !self.cfg.replicate || self.topo.nodes() < 3 {
            let key = None;
            return self.deliver(room, epoch, Held { msg, askers, key });
        }
        let (seq, frame) = (msg.seq, msg.frame.clone());
        let st = &mut r.standby;
        if let (Some(node), false) = (st.node, st.electing) {
            let term = st.term;
            self.replicate_to(node, room, (epoch.0, term), seq, frame.clone(), key.clone());
        }
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        r.standby.held.push_back(Held { msg, askers, key });
    }

    /// Let a stamped message go: to the interested workers and nodes, to the app,
    /// and its stamp to whoever asked.
    fn deliver(&mut self, room: &Arc<str>, epoch: crate::protocol::Epoch, h: Held) {
        let Some(r) = self.owned.get(&**room) else {
            return;
        };
        let Fresh {
            seq,
            frame,
            tag,
            at,
            event,
        } = h.msg;
        let workers: Vec<usize> = r.interested().collect();
        let peers = r.peer_mask();
        self.forward(room, peers, &frame, seq, tag);
        self.fan_out(room, &workers, frame, seq, tag, at);
        if let Some(e) = event {
            self.out.events.push_back(e);
        }
        for (asker, duplicate) in h.askers {
            self.answer(
                asker,
                Stamp {
                    epoch,
                    seq,
                    duplicate,
                },
            );
        }
    }

    /// Send stamped message `seq` of `room` (`(epoch, term)`) to standby `node`.
    fn replicate_to(
        &mut self,
        node: usize,
        room: &str,
        (epoch, term): (u64, u64),
        seq: u64,
        frame: Bytes,
        key: Option<String>,
    ) {
        let room = room.to_string();
        let msg = PeerMsg::Replicate {
            room,
            epoch,
            term,
            seq,
            frame,
            key,
        };
        self.send_peer(node, msg);
    }

    /// A repeat of an idempotency key that got `seq`: answered once that message
    /// is released.
    pub(super) fn answer_repeat(&mut self, room: &str, seq: u64, asker: Asker) {
        let Some(r) = self.owned.get_mut(room) else {
            return;
        };
        let epoch = r.position().0;
        if let Some(h) = r.standby.held.iter_mut().find(|h| h.msg.seq == seq) {
            h.askers.push((asker, true));
            return;
        }
        self.answer(
            asker,
            Stamp {
                epoch,
                seq,
                duplicate: true,
            },
        );
    }

    /// Tell `asker` the stamp its publish got.
    pub(super) fn answer(&mut self, asker: Asker, stamp: Stamp) {
        match asker {
            Asker::Here(req) => self.out.replies.push_back((req, Reply::Published(stamp))),
            Asker::Worker(ticket) => self.reply_to(ticket, Reply::Published(stamp)),
            Asker::Peer { peer, ticket, via } => {
                self.send_peer(peer, PeerMsg::Published { ticket, stamp, via });
            }
        }
    }

    /// Release `room`'s held messages up to `upto`: deliver them, answer their
    /// publishers.
    fn release_held(&mut self, room: &Arc<str>, upto: u64) {
        loop {
            let Some(r) = self.owned.get_mut(&**room) else {
                return;
            };
            if r.standby.held.front().is_none_or(|h| h.msg.seq > upto) {
                return;
            }
            let Some(h) = r.standby.held.pop_front() else {
                return;
            };
            let epoch = r.position().0;
            self.deliver(room, epoch, h);
        }
    }

    /// `room` is handed to its next owner, which gets every message it stamped:
    /// what is held is not delivered here (its subscribers get it from the new
    /// owner's replay) and its publishers are answered by the new owner once that
    /// one's standby has the room. Returns those answers, for the handoff. (The
    /// app hears of the messages now.)
    pub(super) fn hand_over_held(&mut self, room: &Arc<str>) -> Vec<Answer> {
        let Some(r) = self.owned.get_mut(&**room) else {
            return Vec::new();
        };
        let held = std::mem::take(&mut r.standby.held);
        let mut answers = Vec::new();
        for h in held {
            if let Some(e) = h.msg.event {
                self.out.events.push_back(e);
            }
            for (asker, dup) in h.askers {
                let seq = h.msg.seq;
                match asker {
                    Asker::Here(id) => {
                        let worker = self.id as u16;
                        answers.push((seq, Ticket { worker, id }, None, dup));
                    }
                    Asker::Worker(t) => answers.push((seq, t, None, dup)),
                    Asker::Peer {
                        peer,
                        ticket,
                        via: None,
                    } => answers.push((seq, ticket, Some(peer as u16), dup)),
                    // Relayed once already: its asker is known only to the
                    // relaying node; unanswered (its request times out).
                    Asker::Peer { via: Some(_), .. } => {}
                }
            }
        }
        answers
    }

    /// Answers a handoff from node `from` carried, owed once the standby has the
    /// room (at once without replication).
    pub(super) fn owe_answers(&mut self, room: &Arc<str>, from: usize, answers: Vec<Answer>) {
        if answers.is_empty() {
            return;
        }
        let replicating = self.replicating();
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        r.standby
            .owed
            .extend(answers.into_iter().map(|a| (from, a)));
        if !replicating || r.standby.term == 0 || r.standby.ready() {
            self.pay_answers(room);
        }
    }

    /// Send the answers owed for `room` (its standby has it now).
    fn pay_answers(&mut self, room: &Arc<str>) {
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        let epoch = r.position().0;
        for (from, (seq, ticket, via, duplicate)) in std::mem::take(&mut r.standby.owed) {
            let stamp = Stamp {
                epoch,
                seq,
                duplicate,
            };
            self.send_peer(from, PeerMsg::Published { ticket, stamp, via });
        }
    }

    /// The standby of owned `room` (node `peer`) has every message up to `seq` of
    /// `term`, or (`!ok`) refuses the term.
    pub(super) fn on_replicated(
        &mut self,
        peer: usize,
        (room, epoch, term, seq): (&str, u64, u64, u64),
        ok: bool,
        now: Ms,
    ) {
        let Some((name, r)) = self.owned.get_key_value(room) else {
            return;
        };
        let st = &r.standby;
        if r.position().0.0 != epoch || st.term != term || st.node != Some(peer) || st.electing {
            return; // about an earlier term or standby
        }
        let name = name.clone();
        if !ok {
            // It promised a later term to another node, or lost its copy: this
            // owner must win the next term to go on.
            if let Some(r) = self.owned.get_mut(&name) {
                r.standby.node = None;
            }
            self.stats.standby_refusals += 1;
            return self.ensure_standby(&name, now);
        }
        let mut seeded = false;
        if let Some(r) = self.owned.get_mut(&name) {
            r.standby.acked = r.standby.acked.max(seq);
            seeded = !std::mem::replace(&mut r.standby.seeded, true);
        }
        self.release_held(&name, seq);
        if seeded {
            self.pay_answers(&name);
            // Subscriptions waited for this.
            self.release(now);
        }
    }

    /// Owned `room` gets the standby this node's view names, if it has not: seeded
    /// at once while its epoch was never replicated, else after winning the next
    /// term. Without any live peer, a replicated room is given up (see the module
    /// docs).
    pub(super) fn ensure_standby(&mut self, room: &Arc<str>, now: Ms) {
        if !self.replicating() {
            return;
        }
        let desired = self.topo.standby(room);
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        if r.is_from_log() && r.standby.term > 0 {
            // Read back from the log, and not handed over by a live owner: a
            // standby may have gone on with the epoch since, and forgotten it by
            // now (its grants are not kept). It starts again instead.
            return self.give_up(room, now);
        }
        let st = &mut r.standby;
        if st.electing || (st.node.is_some() && st.node == desired) {
            return;
        }
        match (st.term, desired) {
            (0, None) => {}
            (0, Some(node)) => {
                st.term = 1;
                self.log_term(room);
                self.seed(room, node, now);
            }
            (_, None) => self.give_up(room, now),
            (term, Some(_)) => {
                st.electing = true;
                let old = st.node.take();
                let (epoch, seq) = (r.position().0.0, r.position().1);
                if let Some(old) = old.filter(|&o| self.topo.is_live(o)) {
                    let room = room.to_string();
                    self.send_peer(old, PeerMsg::Unseed { room, epoch });
                }
                self.elect(room, (epoch, term + 1, seq), false, now);
            }
        }
    }

    /// An election this worker ran for owned `room` ended (`won`: in term `term`).
    pub(super) fn kept(&mut self, room: &Arc<str>, term: u64, won: bool, now: Ms) {
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        r.standby.electing = false;
        if !won {
            return self.give_up(room, now);
        }
        r.standby.term = term;
        self.log_term(room);
        match self.topo.standby(room) {
            Some(node) => self.seed(room, node, now),
            None => self.give_up(room, now),
        }
    }

    /// With a log: owned `room` goes on under its term (a restart asks for a later
    /// one).
    pub(super) fn log_term(&mut self, room: &Arc<str>) {
        if !self.cfg.durable {
            return;
        }
        let Some(r) = self.owned.get(&**room).filter(|r| r.standby.term() > 0) else {
            return;
        };
        self.out.stored.push_back(super::Stamped {
            room: room.clone(),
            epoch: r.position().0.0,
            seq: r.standby.term(),
            frame: Bytes::new(),
            key: None,
            age: 0,
            kind: crate::store::record::Kind::Term,
        });
    }

    /// Send owned `room` as it is to `node`, its standby from now on, then what
    /// it holds.
    fn seed(&mut self, room: &Arc<str>, node: usize, now: Ms) {
        let Some((epoch, released)) = self
            .owned
            .get(&**room)
            .map(|r| (r.position().0, r.standby.released(r.position().1)))
        else {
            return;
        };
        // The keys of what the seed carries; those of held messages go with them.
        let keys: Vec<(String, u64, Ms)> = self
            .dedup
            .room_keys(room)
            .into_iter()
            .filter(|k| k.1 == epoch && k.2 <= released)
            .map(|(k, _, s, at)| (k, s, now.saturating_sub(at)))
            .collect();
        let max = self.cfg.peer_replay_bytes;
        let Some(r) = self.owned.get_mut(&**room) else {
            return;
        };
        let (epoch, seq) = r.position();
        let released = r.standby.released(seq);
        let messages: Vec<(u64, Ms, Bytes)> = r
            .history_upto(released, max)
            .into_iter()
            .map(|(s, at, f)| (s, now.saturating_sub(at), f))
            .collect();
        let st = &mut r.standby;
        st.node = Some(node);
        st.acked = 0;
        st.seeded = false;
        let term = st.term;
        let held: Vec<(u64, Bytes, Option<String>)> = st
            .held
            .iter()
            .map(|h| (h.msg.seq, h.msg.frame.clone(), h.key.clone()))
            .collect();
        let announced = r.roster.announced();
        let seed = Handoff {
            room: room.to_string(),
            epoch: epoch.0,
            seq: released,
            messages,
            keys,
            announced,
            from_log: false,
            term,
            answers: Vec::new(),
        };
        self.stats.seeds += 1;
        self.send_peer(node, PeerMsg::Seed(Box::new(seed)));
        for (seq, frame, key) in held {
            self.replicate_to(node, room, (epoch.0, term), seq, frame, key);
        }
    }

    /// Owned `room` cannot go on in its epoch here (no term won, or no peer to keep
    /// a copy): forget it. Its subscribers here subscribe again and get a new
    /// epoch; the nodes it served are told it moved; held publishes go unanswered
    /// (their publishers were never told they were stamped).
    pub(super) fn give_up(&mut self, room: &Arc<str>, now: Ms) {
        let Some(r) = self.owned.remove(&**room) else {
            return;
        };
        self.call_off_election(room);
        self.history_bytes -= r.history_bytes();
        self.dedup.take_rooms([&**room]);
        if !r.is_from_log() {
            self.stats.rooms_given_up += 1;
        }
        let epoch = r.position().0.0;
        if self.cfg.durable {
            // A restart must not continue it from the log either.
            self.out.stored.push_back(super::Stamped {
                room: room.clone(),
                epoch,
                seq: r.position().1,
                frame: Bytes::new(),
                key: None,
                age: 0,
                kind: crate::store::record::Kind::Gone,
            });
        }
        if let Some(node) = r.standby.node().filter(|&n| self.topo.is_live(n)) {
            let room = room.to_string();
            self.send_peer(node, PeerMsg::Unseed { room, epoch });
        }
        let workers: Vec<usize> = r.interested().collect();
        for w in workers {
            self.rehome_on(w, room, now);
        }
        let peers = r.peer_mask() & self.topo.peers();
        if peers != 0 {
            let room = room.to_string();
            self.out.peers.push_back((peers, PeerMsg::Moved { room }));
        }
    }

    /// Tell the standbys of rooms this worker forgot (`(room, epoch, node)`) to
    /// forget their copies.
    pub(super) fn unseed(&mut self, rooms: Vec<(Arc<str>, u64, usize)>) {
        for (room, epoch, node) in rooms {
            if self.topo.is_live(node) {
                let room = room.to_string();
                self.send_peer(node, PeerMsg::Unseed { room, epoch });
            }
        }
    }

    /// Rooms replicated, unreplicated (replication on but no standby keeps a
    /// copy), and messages held for standbys (gauges).
    pub fn replication_gauges(&self) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for r in self.owned.values() {
            let st = &r.standby;
            if st.node.is_some() && !st.electing {
                out.0 += 1;
            } else if self.replicating() {
                out.1 += 1;
            }
            out.2 += st.held.len();
        }
        out
    }
}
