//! What the router decided that leaves the worker's thread: mail for other workers,
//! messages for peers, answers to waiting requests, events for the app.
//!
//! Normally carried out at once. While the journal has records written but not yet
//! synced (`rooms.fsync = "always"`, see `runtime::store`), they are held here, in
//! the order they were decided, and let go by [`State::commit`] after the sync: a
//! stamped message must not reach anyone before it is on disk. Once something is
//! held, everything after it is held too, so each destination still sees its
//! messages in order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::mailbox::Letter;
use super::worker::State;
use crate::hub::{HubEvent, Mail, PeerMsg, Reply};

/// One effect held back.
#[derive(Debug)]
pub enum Held {
    /// Mail for a worker.
    Mail(usize, Mail),
    /// An encoded peer message, for each node on the session it was meant for.
    Peer {
        /// The encoded frame.
        wire: Bytes,
        /// `(node, session)`.
        to: Vec<(usize, u64)>,
        /// See [`Kind`].
        room: Option<(String, Kind)>,
    },
    /// An answer to request `req`.
    Reply(u64, Reply),
    /// An event for the app's webhooks.
    Event(HubEvent),
}

/// What a peer message about one room is, for the slow-peer rule: a room message
/// (`Deliver`) may be dropped for a slow peer, which is then told the room lagged;
/// after a subscription's answer a drop must be told again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room message: dropped when the peer's queue is over half its bound.
    Deliver,
    /// A subscription's answer: the peer's subscribers are live again from it.
    SubAck,
}

/// Effects held back until the journal's sync.
pub type Outbox = VecDeque<Held>;

impl State {
    /// Carry out (or hold back) what the router decided besides frames for this
    /// worker's connections.
    pub(super) fn send_out(&mut self) {
        let hold = !self.outbox.is_empty() || self.journal.as_ref().is_some_and(|j| j.unsynced());
        while let Some((worker, mail)) = self.hub.poll_mail() {
            self.out(Held::Mail(worker, mail), hold);
        }
        while let Some((peers, msg)) = self.hub.poll_peer() {
            if self.shared.mesh.is_none() {
                continue;
            }
            let frame = crate::mesh::wire::Frame::Hub(msg);
            let wire = crate::mesh::wire::encode(&frame);
            // The room's name, moved out of the encoded message (no copy).
            let room = match frame {
                crate::mesh::wire::Frame::Hub(PeerMsg::Deliver { room, seq, .. }) if seq > 0 => {
                    Some((room, Kind::Deliver))
                }
                crate::mesh::wire::Frame::Hub(PeerMsg::SubAck { room, .. }) => {
                    Some((room, Kind::SubAck))
                }
                _ => None,
            };
            let targets = (0..64).filter(|p| peers & (1 << p) != 0);
            if hold {
                // Sent later, on the sessions they were meant for now.
                let to = targets.map(|p| (p, self.hub.session(p))).collect();
                self.outbox.push_back(Held::Peer { wire, to, room });
            } else {
                for p in targets {
                    let session = self.hub.session(p);
                    self.send_to_peer(p, session, &wire, room.as_ref());
                }
            }
        }
        while let Some((req, reply)) = self.hub.poll_reply() {
            self.out(Held::Reply(req, reply), hold);
        }
        while let Some(event) = self.hub.poll_event() {
            self.out(Held::Event(event), hold);
        }
    }

    /// Sync the journal if it has unsynced records, then let go of what waited for
    /// it. Called before the worker writes its sockets.
    pub fn commit(&mut self) {
        if let Some(j) = &mut self.journal
            && j.unsynced()
        {
            j.commit();
        }
        while let Some(h) = self.outbox.pop_front() {
            self.carry_out(h);
        }
    }

    /// Close a connection and write its queue at once ([`crate::runtime::conns::Conns::close_now`]),
    /// after the journal's commit: what it writes must not carry a message the log
    /// has not synced.
    pub(crate) fn close_now(&mut self, key: crate::conn::ConnKey, code: u16, reason: &str) {
        self.commit();
        self.conns.close_now(key, code, reason);
    }

    fn out(&mut self, h: Held, hold: bool) {
        if hold {
            self.outbox.push_back(h);
        } else {
            self.carry_out(h);
        }
    }

    /// Queue an encoded message for node `p` on `session`, under the slow-peer rule
    /// when it is about a room.
    fn send_to_peer(
        &mut self,
        p: usize,
        session: u64,
        wire: &Bytes,
        room: Option<&(String, Kind)>,
    ) {
        let Some(mesh) = &self.shared.mesh else {
            return;
        };
        let Some((room, kind)) = room else {
            mesh.send(p, wire.clone(), session);
            return;
        };
        let sent = match kind {
            Kind::Deliver => mesh.send_deliver(p, wire.clone(), session),
            // Live again from this answer: a later drop is news.
            Kind::SubAck => {
                mesh.send(p, wire.clone(), session);
                true
            }
        };
        if sent {
            if *kind == Kind::Deliver {
                mesh.slots[p]
                    .stats
                    .delivers_out
                    .fetch_add(1, Ordering::Relaxed);
            }
            if !self.lagging.is_empty() {
                self.lagging.remove(&(p, room.clone()));
            }
        } else if self.lagging.insert((p, room.clone())) {
            // The first message of the room dropped since the last one sent: tell
            // the peer, in order, so it resumes the room.
            let lagged = PeerMsg::Lagged { room: room.clone() };
            mesh.send(
                p,
                crate::mesh::wire::encode(&crate::mesh::wire::Frame::Hub(lagged)),
                session,
            );
        }
    }

    fn carry_out(&mut self, h: Held) {
        match h {
            Held::Mail(worker, mail) => {
                if let Some(m) = self.shared.mailboxes.get(worker) {
                    m.send(Letter::Hub(mail));
                }
            }
            Held::Peer { wire, to, room } => {
                for (p, session) in to {
                    self.send_to_peer(p, session, &wire, room.as_ref());
                }
            }
            Held::Reply(req, reply) => self.complete(req, reply),
            Held::Event(event) => {
                let Some(h) = &self.shared.hooks else {
                    return;
                };
                match event {
                    HubEvent::Published {
                        room,
                        epoch,
                        seq,
                        from,
                        data,
                    } => h.event(&crate::hooks::Event::Publish {
                        room: &room,
                        epoch,
                        seq,
                        from: from.as_deref(),
                        data: &data,
                    }),
                    HubEvent::Presence { room, user, joined } => {
                        h.event(&crate::hooks::Event::Presence {
                            room: &room,
                            user: &user,
                            joined,
                        })
                    }
                }
            }
        }
    }
}
