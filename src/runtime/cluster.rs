//! A worker's part in the cluster: frames from peer nodes, and what happens when a
//! link goes up or down.
//!
//! Ownership follows rendezvous hashing over the live nodes, so every link event can
//! move rooms. On each event every worker re-checks the rooms it is home to:
//!
//! - an owned room whose owner is now another node is *disowned*: its history is
//!   dropped and the local workers with subscribers are told to re-subscribe
//!   (`Rehome`); the re-subscriptions reach the new owner, which starts the room with
//!   a new epoch, so every subscriber gets `subscribed` with `recovered: false` and
//!   re-syncs. Peers interested in it see the same event and do the same.
//! - a mirror (a room owned elsewhere) whose owner changed is rehomed the same way,
//!   after telling the old owner, if it is still reachable, that this node left.
//! - a lost peer's interest is dropped at once; its roster entries are kept for
//!   `mesh.presence_lease_ms` (a brief outage does not flap presence) and dropped
//!   when the lease ends or the peer comes back (it re-subscribes everything).
//!
//! Frames from a room's old owner that arrive after a move are dropped: a mirror only
//! accepts frames from the node it subscribed with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mailbox::Mail;
use super::rooms::{Interest, unpack};
use super::worker::State;
use crate::hub::presence::Member;
use crate::hub::room::SubAck;
use crate::mesh::wire::Frame;
use crate::protocol::{Cursor, Epoch};

impl State {
    /// A frame from peer node `peer` (already routed to this worker).
    pub(super) fn on_peer_frame(&mut self, peer: usize, frame: Frame, at: u64) {
        match frame {
            Frame::Subscribe {
                room,
                who,
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
                let mut ack = self.owner_subscribe(&room, member, since, user.map(Arc::from));
                self.owner_interest(&room, Interest::Node(peer));
                // The replay must fit one mesh frame; a subscriber that is too far
                // behind re-syncs instead.
                let budget = self
                    .shared
                    .mesh
                    .as_ref()
                    .map_or(0, |m| m.config.max_frame_bytes / 2);
                if ack.replay.iter().map(|b| b.len()).sum::<usize>() > budget {
                    ack.replay.clear();
                    ack.recovered = false;
                    ack.miss = Some(crate::hub::ring::Miss::TooLarge);
                }
                self.stats.resumed(since.is_some(), &ack);
                self.to_peer(
                    peer,
                    &Frame::SubAck {
                        room: room.to_string(),
                        who,
                        epoch: ack.epoch.0,
                        seq: ack.seq,
                        recovered: ack.recovered,
                        replay: ack.replay,
                        refused: ack.refused,
                    },
                );
            }
            Frame::SubAck {
                room,
                who,
                epoch,
                seq,
                recovered,
                replay,
                refused,
            } => {
                if self.mirrors.get(room.as_str()).map(|m| m.owner) != Some(peer) {
                    return; // from an owner this node no longer subscribes with
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
                self.send_suback(&room, usize::from(who.worker), unpack(who.conn), ack);
            }
            Frame::Leave {
                room,
                who,
                node_left,
            } => {
                let now = Instant::now();
                let events = self.presence_events(&room);
                let Some(name) = self
                    .owned
                    .get_key_value(room.as_str())
                    .map(|(k, _)| k.clone())
                else {
                    return;
                };
                let r = self.owned.get_mut(&name).expect("present");
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
            Frame::Publish {
                room,
                data,
                key,
                reply,
            } => {
                let Ok(data) = serde_json::value::RawValue::from_string(data) else {
                    return; // validated by the sending node; a bad one is dropped
                };
                let (epoch, seq) = self.owner_publish(&room, &data, key.as_deref(), at);
                if let Some(ticket) = reply {
                    self.reply_published(Some(peer), ticket, epoch, seq);
                }
            }
            Frame::Published { ticket, epoch, seq } => {
                self.complete(
                    ticket.id as usize,
                    super::worker::Reply::Published(Epoch(epoch), seq),
                );
            }
            Frame::Deliver { room, tag, frame } => {
                let Some(mirror) = self.mirrors.get(room.as_str()) else {
                    return; // nobody here listens any more
                };
                if mirror.owner != peer {
                    return;
                }
                let workers: Vec<usize> = mirror.workers.iter().collect();
                self.stats.mesh_delivered += 1;
                self.fan_out(&room, &workers, frame, tag, at);
            }
            Frame::PresenceQuery { room, ticket } => {
                let json = self.roster_json(&room);
                self.to_peer(peer, &Frame::Presence { ticket, json });
            }
            Frame::Presence { ticket, json } => self.answer_presence(ticket, json),
            Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Hello { .. }
            | Frame::Auth { .. }
            | Frame::Refuse { .. } => {}
        }
    }

    /// A link came up or went down: move the rooms whose owner changed.
    pub(super) fn on_membership(&mut self, peer: usize, up: bool) {
        let now = Instant::now();
        let lease = self
            .shared
            .mesh
            .as_ref()
            .map_or(0, |m| m.config.presence_lease_ms);
        if self.lease.len() <= peer {
            self.lease.resize(peer + 1, None);
        }
        if up {
            // The peer re-subscribes everything it still has; forget what it had.
            self.lease[peer] = None;
            self.drop_peer_roster(peer, now);
        } else {
            self.lease[peer] = Some(now + Duration::from_millis(lease));
            for r in self.owned.values_mut() {
                r.set_peer(peer, false);
            }
        }
        let disowned: Vec<Arc<str>> = self
            .owned
            .keys()
            .filter(|room| self.remote_owner(room).is_some())
            .cloned()
            .collect();
        for room in disowned {
            if let Some(r) = self.owned.remove(&room) {
                self.stats.owner_moves += 1;
                for w in r.interested() {
                    self.rehome_on(w, &room);
                }
            }
        }
        let moved: Vec<Arc<str>> = self.mirrors.keys().cloned().collect();
        for room in moved {
            self.check_mirror(&room);
        }
    }

    /// If the owner of a mirrored room changed, leave the old owner and have the
    /// local subscribers re-subscribe.
    pub(super) fn check_mirror(&mut self, room: &Arc<str>) {
        let Some(mirror) = self.mirrors.get(&**room) else {
            return;
        };
        let now_owner = self.remote_owner(room);
        if now_owner == Some(mirror.owner) {
            return;
        }
        let mirror = self.mirrors.remove(&**room).expect("present");
        self.stats.owner_moves += 1;
        let old_live = self
            .shared
            .mesh
            .as_ref()
            .is_some_and(|m| m.is_live(mirror.owner));
        if old_live {
            self.to_peer(
                mirror.owner,
                &Frame::Leave {
                    room: room.to_string(),
                    who: None,
                    node_left: true,
                },
            );
        }
        for w in mirror.workers.iter() {
            self.rehome_on(w, room);
        }
    }

    fn rehome_on(&mut self, w: usize, room: &Arc<str>) {
        if w == self.id {
            self.rehome(room);
        } else {
            self.shared.mailboxes[w].send(Mail::Rehome { room: room.clone() });
        }
    }

    /// Subscribe every local subscriber of `room` again (the room has a new owner).
    pub(super) fn rehome(&mut self, room: &Arc<str>) {
        let Some(local) = self.local.get_mut(&**room) else {
            return;
        };
        let live = std::mem::take(&mut local.live);
        local.pending.extend(live);
        let keys = local.pending.clone();
        let name = self
            .local
            .get_key_value(&**room)
            .map(|(k, _)| k.clone())
            .expect("present");
        for key in keys {
            self.send_subscribe(name.clone(), key, None);
        }
    }

    /// Drop the roster entries of lost peers whose lease has run out.
    pub(super) fn expire_leases(&mut self, now: Instant) {
        let mesh_live = |s: &State, p: usize| s.shared.mesh.as_ref().is_some_and(|m| m.is_live(p));
        for p in 0..self.lease.len() {
            if let Some(t) = self.lease[p]
                && now >= t
            {
                self.lease[p] = None;
                if !mesh_live(self, p) {
                    self.drop_peer_roster(p, now);
                }
            }
        }
    }

    fn drop_peer_roster(&mut self, peer: usize, now: Instant) {
        let events: Vec<Arc<str>> = self
            .owned
            .iter_mut()
            .filter_map(|(name, r)| {
                r.roster.remove_node(peer as u16, now);
                r.roster.has_changes().then(|| name.clone())
            })
            .collect();
        for room in events {
            if self.presence_events(&room) {
                self.presence_dirty.push(room);
            }
        }
    }
}
