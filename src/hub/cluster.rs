//! A worker's part in the cluster: messages from peer nodes, and what happens when
//! a link goes up or down.
//!
//! Ownership follows rendezvous hashing over the live nodes, so every link event can
//! move rooms. On each event every worker re-checks the rooms it is home to:
//!
//! - an owned room whose owner is now another node is *handed off* to it (epoch,
//!   seq, history: `hub::handoff`), and the local workers with subscribers are told
//!   to re-subscribe from their cursors (`Rehome`); the new owner answers them in
//!   the same epoch, so the move is invisible to them. The nodes it served are told
//!   it `Moved`. (A room whose owner is *lost* cannot be handed off: its next owner
//!   starts it with a new epoch and its subscribers re-sync.)
//! - a mirror (a room owned elsewhere) whose owner changed is rehomed the same way,
//!   after telling the old owner, if it is still reachable, that this node left.
//! - a lost peer's interest is dropped at once; its roster entries are kept for the
//!   presence lease (a brief outage does not flap presence) and dropped when the
//!   lease ends or the peer comes back (it re-subscribes everything).
//!
//! Messages from a room's old owner that arrive after a move are dropped: a mirror
//! only accepts messages from the node it subscribed with.

use std::sync::Arc;

use super::Hub;
use super::id::{Arrival, ConnKey, Ms};
use super::msg::{PeerMsg, Reply};
use super::owner::Interest;
use super::presence::Member;
use super::replicate::Asker;
use super::ring::Miss;
use super::room::SubAck;
use crate::protocol::{Cursor, Epoch};

impl Hub {
    /// A message from peer node `peer` (already routed to this worker).
    pub(super) fn on_peer(&mut self, peer: usize, msg: PeerMsg, at: Arrival, now: Ms) {
        // A request about a room that may be handed here, or was handed away.
        let Some(msg) = self.screen(peer, msg, at, now) else {
            return;
        };
        if let PeerMsg::Subscribe { room, .. } = &msg
            && !self.standby_ready(&Arc::from(room.as_str()), now)
        {
            // Answered once the room's standby has it.
            return self.park(super::park::Parked::Peer { peer, msg, at }, now);
        }
        match msg {
            PeerMsg::Subscribe {
                room,
                who,
                attempt,
                since,
                user,
            } => {
                let room: Arc<str> = Arc::from(room);
                let member = Member {
                    node: peer as u16,
                    worker: who.worker,
                    conn: who.conn,
                };
                let since = since.map(|(e, s)| Cursor {
                    epoch: Epoch(e),
                    seq: s,
                });
                let mut ack = self.owner_subscribe(&room, member, since, user.map(Arc::from), now);
                self.owner_interest(&room, Interest::Node(peer), now);
                // The replay must fit one mesh message; a subscriber that is too far
                // behind re-syncs instead.
                if ack.replay.iter().map(|b| b.len()).sum::<usize>() > self.cfg.peer_replay_bytes {
                    ack.replay.clear();
                    ack.recovered = false;
                    ack.miss = Some(Miss::TooLarge);
                }
                self.stats.resumed(since.is_some(), ack.miss);
                self.send_peer(
                    peer,
                    PeerMsg::SubAck {
                        room: room.to_string(),
                        who,
                        attempt,
                        epoch: ack.epoch.0,
                        seq: ack.seq,
                        recovered: ack.recovered,
                        replay: ack.replay,
                        refused: ack.refused,
                    },
                );
            }
            PeerMsg::SubAck {
                room,
                who,
                attempt,
                epoch,
                seq,
                recovered,
                replay,
                refused,
            } => {
                let Some(mirror) = self.mirrors.get(room.as_str()) else {
                    return;
                };
                if mirror.owner != peer || mirror.moved_until.is_some() {
                    // From an owner this node no longer subscribes with, or that gave
                    // the room up (the subscription is sent again when it moves).
                    return;
                }
                let room: Arc<str> = Arc::from(room);
                let ack = SubAck {
                    epoch: Epoch(epoch),
                    seq,
                    recovered,
                    miss: None,
                    replay,
                    refused,
                };
                self.send_suback(
                    &room,
                    usize::from(who.worker),
                    ConnKey::unpack(who.conn),
                    attempt,
                    ack,
                    now,
                );
            }
            PeerMsg::Leave {
                room,
                who,
                node_left,
            } => {
                let events = self.cfg.tracks_presence(&room);
                let Some(name) = self
                    .owned
                    .get_key_value(room.as_str())
                    .map(|(k, _)| k.clone())
                else {
                    return;
                };
                let Some(r) = self.owned.get_mut(&name) else {
                    return;
                };
                if let Some(who) = who {
                    r.roster.remove(
                        &Member {
                            node: peer as u16,
                            worker: who.worker,
                            conn: who.conn,
                        },
                        now,
                    );
                }
                if node_left {
                    r.set_peer(peer, false);
                    r.roster.remove_node(peer as u16, now);
                }
                if events && r.roster.has_changes() {
                    self.presence_dirty.push(name);
                }
            }
            PeerMsg::Publish {
                room,
                data,
                key,
                origin,
                reply,
                via,
            } => {
                let Ok(data) = serde_json::value::RawValue::from_string(data) else {
                    return; // validated by the sending node; a bad one is dropped
                };
                // A relayed publish is answered through the relaying node, which
                // knows the asker (`via` is an index in its own node list).
                let asker = reply.map(|ticket| Asker::Peer { peer, ticket, via });
                self.owner_publish(&room, &data, key.as_deref(), &origin, asker, at, now);
            }
            PeerMsg::Published {
                ticket,
                stamp,
                via: Some(asker),
            } => {
                // The answer to a publish this node relayed: on to its asker.
                let msg = PeerMsg::Published {
                    ticket,
                    stamp,
                    via: None,
                };
                self.send_peer(usize::from(asker), msg);
            }
            PeerMsg::Published {
                ticket,
                stamp,
                via: None,
            } => {
                self.out
                    .replies
                    .push_back((ticket.id, Reply::Published(stamp)));
            }
            PeerMsg::Deliver {
                room,
                seq,
                tag,
                frame,
            } => {
                let Some(mirror) = self.mirrors.get(room.as_str()) else {
                    return; // nobody here listens any more
                };
                if mirror.owner != peer || mirror.moved_until.is_some() {
                    // From an old owner, or from a room the owner started again after
                    // it said the room moved (this node has left that one).
                    return;
                }
                let workers: Vec<usize> = mirror.workers.iter().collect();
                self.stats.mesh_delivered += 1;
                self.fan_out(&room, &workers, frame, seq, tag, at);
            }
            PeerMsg::Lagged { room } => {
                // Messages of this room were dropped on their way here: its
                // subscribers resume from their cursors at the same owner.
                let Some((name, mirror)) = self.mirrors.get_key_value(room.as_str()) else {
                    return;
                };
                if mirror.owner != peer || mirror.moved_until.is_some() {
                    return;
                }
                let (name, workers): (Arc<str>, Vec<usize>) =
                    (name.clone(), mirror.workers.iter().collect());
                self.stats.lag_resumes += 1;
                for w in workers {
                    self.rehome_on(w, &name, now);
                }
            }
            PeerMsg::Moved { room } => self.moved(&Arc::from(room), peer, now),
            PeerMsg::PresenceQuery { room, ticket } => {
                let json = self.roster_json(&room);
                self.send_peer(peer, PeerMsg::Presence { ticket, json });
            }
            PeerMsg::Presence { ticket, json } => {
                self.out
                    .replies
                    .push_back((ticket.id, Reply::Presence(json)));
            }
            PeerMsg::HistoryQuery {
                room,
                since,
                limit,
                ticket,
            } => {
                let json = self.history_json(&room, since, limit as usize, now);
                self.send_peer(peer, PeerMsg::History { ticket, json });
            }
            PeerMsg::History { ticket, json } => {
                self.out
                    .replies
                    .push_back((ticket.id, Reply::History(json)));
            }
            PeerMsg::Gather { ticket, query } => {
                let part = self.answer_query(&query);
                self.send_part(peer, ticket, part);
            }
            PeerMsg::Part {
                ticket,
                worker,
                workers,
                part,
            } => self.on_part(
                peer,
                ticket,
                usize::from(worker),
                usize::from(workers),
                part,
            ),
            PeerMsg::Handoff(h) => self.adopt(peer, *h, now),
            PeerMsg::Leaving { workers } => self.on_leaving(peer, workers, now),
            PeerMsg::HandoffDone {
                worker,
                workers,
                leaving,
            } => self.on_handoff_done(peer, worker, workers, leaving, now),
            PeerMsg::Seed(h) => self.on_seed(peer, *h, now),
            PeerMsg::Replicate {
                room,
                epoch,
                term,
                seq,
                frame,
                key,
            } => self.on_replicate(peer, (room, epoch, term, seq), frame, key, now),
            PeerMsg::Replicated {
                room,
                epoch,
                term,
                seq,
                ok,
            } => self.on_replicated(peer, (&room, epoch, term, seq), ok, now),
            PeerMsg::Unseed { room, epoch } => self.on_unseed(peer, &room, epoch),
            PeerMsg::Vote {
                room,
                epoch,
                term,
                seq,
            } => self.on_vote(peer, (room, epoch, term, seq), now),
            PeerMsg::Voted {
                room,
                epoch,
                term,
                granted,
                retry,
            } => self.on_voted(peer, (&room, epoch, term), granted, retry, now),
        }
    }

    /// A link came up or went down: move the rooms whose owner changed. After a
    /// link came up, say that every room for the peer was handed over.
    pub(super) fn on_link(&mut self, peer: usize, up: bool, now: Ms) {
        if peer >= self.lease.len() || peer == self.node() {
            return;
        }
        self.topo.set_live(peer, up);
        self.handoff_link(peer, up, now);
        if up {
            // The peer re-subscribes everything it still has; forget what it had.
            self.lease[peer] = None;
            self.drop_peer_roster(peer, now);
        } else {
            self.lease[peer] = Some(now + self.cfg.presence_lease_ms);
            for r in self.owned.values_mut() {
                r.set_peer(peer, false);
            }
        }
        self.view_changed(now);
        if up {
            let (worker, workers) = (self.id as u16, self.topo.workers() as u16);
            self.send_peer(
                peer,
                PeerMsg::HandoffDone {
                    worker,
                    workers,
                    leaving: false,
                },
            );
            if self.topo.leaving() {
                // A link that came back during the drain: the peer must not count
                // on this node again (it would hand rooms back to it).
                self.send_peer(peer, PeerMsg::Leaving { workers });
                let done = PeerMsg::HandoffDone {
                    worker,
                    workers,
                    leaving: true,
                };
                self.send_peer(peer, done);
            }
        }
        self.release(now);
    }

    /// This worker's view of the cluster changed (a link event, or a peer is
    /// leaving): rooms it owns that now belong to another node are handed to it;
    /// mirrors whose owner changed subscribe again.
    pub(super) fn view_changed(&mut self, now: Ms) {
        // Copies whose owner was lost are promoted first: requests about those
        // rooms (from the mirrors below) wait for the outcome.
        self.check_copies(now);
        // Sorted: what follows (mail, messages) must not depend on hash order, so a
        // run replays exactly (the simulator relies on it).
        let mut disowned: Vec<(Arc<str>, usize)> = self
            .owned
            .keys()
            .filter_map(|room| Some((room.clone(), self.topo.remote_owner(room)?)))
            .collect();
        disowned.sort_unstable();
        self.hand_off(disowned, now);
        if self.replicating() {
            let mut kept: Vec<Arc<str>> = self.owned.keys().cloned().collect();
            kept.sort_unstable();
            for room in kept {
                self.ensure_standby(&room, now);
            }
        }
        let mut mirrored: Vec<Arc<str>> = self.mirrors.keys().cloned().collect();
        mirrored.sort_unstable();
        for room in mirrored {
            self.check_mirror(&room, now);
        }
    }

    /// Drop the roster entries of lost peers whose lease has run out.
    pub(super) fn expire_leases(&mut self, now: Ms) {
        for p in 0..self.lease.len() {
            if let Some(t) = self.lease[p]
                && now >= t
            {
                self.lease[p] = None;
                if !self.topo.is_live(p) {
                    self.drop_peer_roster(p, now);
                }
            }
        }
    }

    fn drop_peer_roster(&mut self, peer: usize, now: Ms) {
        let mut changed: Vec<Arc<str>> = self
            .owned
            .iter_mut()
            .filter_map(|(name, r)| {
                r.roster.remove_node(peer as u16, now);
                r.roster.has_changes().then(|| name.clone())
            })
            .collect();
        changed.sort_unstable();
        for room in changed {
            if self.cfg.tracks_presence(&room) {
                self.presence_dirty.push(room);
            }
        }
    }
}
