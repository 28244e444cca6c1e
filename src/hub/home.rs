//! The home side: on each node one worker per room (its home) speaks for the node's
//! subscribers. On the owner node the home worker is the owner; elsewhere it keeps
//! a *mirror* (which owner it subscribed with, which local workers listen) and talks
//! to the owner node for them.

use std::sync::Arc;

use super::Hub;
use super::id::{ConnKey, Ms, Subscriber};
use super::msg::{Mail, PeerMsg};
use super::owner::Interest;
use super::park::{Admit, Parked};
use super::presence::Member;
use super::room::WorkerSet;
use crate::protocol::Cursor;

/// A subscription as the home worker receives it.
#[derive(Debug)]
pub(super) struct Join {
    /// The subscriber's worker.
    pub(super) from: usize,
    /// Its key there.
    pub(super) conn: ConnKey,
    /// Which of its subscriptions this is.
    pub(super) attempt: u32,
    /// Resume point.
    pub(super) since: Option<Cursor>,
    /// Its user, for the roster.
    pub(super) user: Option<Arc<str>>,
}

/// A room owned by a peer node, as its home worker here sees it.
#[derive(Debug)]
pub(super) struct Mirror {
    /// The owner node the subscriptions were sent to; messages about the room from
    /// any other node are stale and dropped.
    pub(super) owner: usize,
    /// Local workers with subscribers.
    pub(super) workers: WorkerSet,
    /// The owner said the room moved while this node still sees it as the owner:
    /// until then, wait for this node's own view to move it (see [`Hub::moved`]).
    pub(super) moved_until: Option<Ms>,
}

impl Hub {
    /// Home side of `sub`: answer as the owner, or forward to the owner node.
    pub(super) fn home_subscribe(&mut self, room: Arc<str>, join: Join, now: Ms) {
        self.check_mirror(&room, now);
        let remote = self.topo.remote_owner(&room);
        // After this node's earlier inputs about the room, which wait.
        let wait = self.is_parked(&room, None, now)
            || (remote.is_none()
                && (self.admit(&room, None, now) == Admit::Park
                    || !self.standby_ready(&room, now)));
        if wait {
            let Join {
                from,
                conn,
                attempt,
                since,
                user,
            } = join;
            let mail = Mail::Subscribe {
                room,
                from,
                conn,
                attempt,
                since,
                user,
            };
            return self.park(Parked::Local(mail), now);
        }
        let Join {
            from,
            conn,
            attempt,
            since,
            user,
        } = join;
        match remote {
            None => {
                let who = Member {
                    node: self.node() as u16,
                    worker: from as u16,
                    conn: conn.pack(),
                };
                let ack = self.owner_subscribe(&room, who, since, user, now);
                self.stats.resumed(since.is_some(), ack.miss);
                self.owner_interest(&room, Interest::Worker(from), now);
                self.send_suback(&room, from, conn, attempt, ack, now);
            }
            Some(owner) => {
                let mirror = self.mirrors.entry(room.clone()).or_insert_with(|| Mirror {
                    owner,
                    workers: WorkerSet::default(),
                    moved_until: None,
                });
                mirror.workers.set(from, true);
                if mirror.moved_until.is_some() {
                    // Held: the subscription is sent when the room moves (it is
                    // pending on its worker, and a move re-sends pending ones).
                    return;
                }
                self.send_peer(
                    owner,
                    PeerMsg::Subscribe {
                        room: room.to_string(),
                        who: Subscriber {
                            worker: from as u16,
                            conn: conn.pack(),
                        },
                        attempt,
                        since: since.map(|c| (c.epoch.0, c.seq)),
                        user: user.map(|u| u.to_string()),
                    },
                );
            }
        }
    }

    /// Home side of a connection leaving a room.
    pub(super) fn home_leave(
        &mut self,
        room: &Arc<str>,
        from: usize,
        conn: ConnKey,
        user: bool,
        last: bool,
        now: Ms,
    ) {
        self.withdraw_local(room, from, conn, last);
        if self.is_parked(room, None, now) {
            let mail = Mail::Leave {
                room: room.clone(),
                from,
                conn,
                user,
                last,
            };
            return self.park(Parked::Local(mail), now);
        }
        self.check_mirror(room, now);
        if let Some(mirror) = self.mirrors.get_mut(&**room) {
            if last {
                mirror.workers.set(from, false);
            }
            let node_left = mirror.workers.is_empty();
            let owner = mirror.owner;
            if node_left {
                self.mirrors.remove(&**room);
            }
            if user || node_left {
                self.send_peer(
                    owner,
                    PeerMsg::Leave {
                        room: room.to_string(),
                        who: user.then_some(Subscriber {
                            worker: from as u16,
                            conn: conn.pack(),
                        }),
                        node_left,
                    },
                );
            }
            return;
        }
        let node = self.node() as u16;
        let events = self.cfg.tracks_presence(room);
        if let Some(r) = self.owned.get_mut(&**room) {
            if user {
                r.roster.remove(
                    &Member {
                        node,
                        worker: from as u16,
                        conn: conn.pack(),
                    },
                    now,
                );
                if events && r.roster.has_changes() {
                    self.presence_dirty.push(room.clone());
                }
            }
            if last {
                r.set_interest(from, false);
            }
        }
    }

    /// If the owner of a mirrored room changed, leave the old owner and have the
    /// local subscribers re-subscribe.
    pub(super) fn check_mirror(&mut self, room: &Arc<str>, now: Ms) {
        let Some(mirror) = self.mirrors.get(&**room) else {
            return;
        };
        let now_owner = self.topo.remote_owner(room);
        if now_owner == Some(mirror.owner) {
            return;
        }
        let Some(mirror) = self.mirrors.remove(&**room) else {
            return;
        };
        self.stats.owner_moves += 1;
        if self.topo.is_live(mirror.owner) {
            self.send_peer(
                mirror.owner,
                PeerMsg::Leave {
                    room: room.to_string(),
                    who: None,
                    node_left: true,
                },
            );
        }
        for w in mirror.workers.iter() {
            self.rehome_on(w, room, now);
        }
    }

    /// The owner of mirrored `room`, node `peer`, gave it up: its view of the
    /// cluster moved the room to another node.
    ///
    /// When this node's view agrees, its subscribers subscribe again at once. When
    /// it still names `peer`, the link event that moved the room is most likely on
    /// its way here too (a node came back, and its links come up one by one):
    /// re-subscribing now would reach `peer` again, which would restart the room,
    /// and the event would then move it a second time, so every subscriber would
    /// re-sync twice. Instead the mirror waits for this node's view to move it, for
    /// at most `moved_grace_ms`, then re-subscribes wherever its view says.
    pub(super) fn moved(&mut self, room: &Arc<str>, peer: usize, now: Ms) {
        let Some(name) = self.mirrors.get_key_value(&**room).map(|(k, _)| k.clone()) else {
            return;
        };
        if self.mirrors.get(&name).map(|m| m.owner) != Some(peer) {
            return; // this node already subscribes elsewhere
        }
        // The sender may have started the room again since (a subscription this
        // node sent before it heard of the move): withdraw from that too. What the
        // subscribers send next follows this on the link.
        self.send_peer(
            peer,
            PeerMsg::Leave {
                room: name.to_string(),
                who: None,
                node_left: true,
            },
        );
        if self.topo.remote_owner(&name) == Some(peer) {
            let until = now + self.cfg.moved_grace_ms;
            if let Some(m) = self.mirrors.get_mut(&name)
                && m.moved_until.is_none()
            {
                m.moved_until = Some(until);
                self.moves.push((until, name));
            }
            return;
        }
        if let Some(mirror) = self.mirrors.remove(&name) {
            self.stats.owner_moves += 1;
            for w in mirror.workers.iter() {
                self.rehome_on(w, &name, now);
            }
        }
    }

    /// Mirrors whose owner gave them up and whose grace ran out: subscribe again
    /// wherever this node's view says.
    pub(super) fn expire_moves(&mut self, now: Ms) {
        if self.moves.iter().all(|(t, _)| *t > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.moves)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.moves = waiting;
        for (_, room) in due {
            // Stale when the mirror moved or went since.
            if self
                .mirrors
                .get(&room)
                .is_some_and(|m| m.moved_until.is_some_and(|t| t <= now))
                && let Some(mirror) = self.mirrors.remove(&room)
            {
                self.stats.owner_moves += 1;
                for w in mirror.workers.iter() {
                    self.rehome_on(w, &room, now);
                }
            }
        }
    }

    /// Have worker `w`'s subscribers of `room` subscribe again.
    pub(super) fn rehome_on(&mut self, w: usize, room: &Arc<str>, now: Ms) {
        if w == self.id {
            self.rehome(room, now);
        } else {
            self.out
                .mail
                .push_back((w, super::msg::Mail::Rehome { room: room.clone() }));
        }
    }

    /// Queue a message for node `peer`.
    pub(super) fn send_peer(&mut self, peer: usize, msg: PeerMsg) {
        self.out.peers.push_back((1 << peer, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::rendezvous;
    use crate::hub::{HubConfig, Topology};

    const GRACE: Ms = 2_000;

    /// Node 1 of three, one worker, with links to nodes 0 and 2 as given.
    fn node1(links: &[usize]) -> Hub {
        let seeds = (0..3).map(|i| rendezvous::seed(&format!("n{i}"))).collect();
        let cfg = HubConfig {
            moved_grace_ms: GRACE,
            ..HubConfig::for_tests()
        };
        let mut epoch = 0;
        let mut hub = Hub::new(
            0,
            cfg,
            Topology::cluster(1, seeds, 1),
            Box::new(move || {
                epoch += 1;
                epoch
            }),
        );
        for &p in links {
            hub.handle_link(p, true, 1, 0);
            // As the peer does once it handed over what it had for this node.
            let done = PeerMsg::HandoffDone {
                worker: 0,
                workers: 1,
                leaving: false,
            };
            hub.handle_peer(p, done, crate::hub::Arrival::UNTIMED, 0);
        }
        hub
    }

    /// A room owned by node 0 when all are up, and by node 2 without node 0.
    fn room() -> String {
        (0..)
            .map(|i| format!("r{i}"))
            .find(|r| {
                let seeds: Vec<u64> = (0..3).map(|i| rendezvous::seed(&format!("n{i}"))).collect();
                rendezvous::owner(r, &seeds, 0b111) == 0 && rendezvous::owner(r, &seeds, 0b110) == 2
            })
            .expect("some room")
    }

    /// The subscriptions this hub sent, by node, draining everything else.
    fn subscriptions(hub: &mut Hub) -> Vec<usize> {
        let mut to = Vec::new();
        while let Some((peers, msg)) = hub.poll_peer() {
            if matches!(msg, PeerMsg::Subscribe { .. }) {
                to.extend((0..3).filter(|p| peers & (1 << p) != 0));
            }
        }
        while hub.poll_conn().is_some() || hub.poll_mail().is_some() {}
        to
    }

    const CONN: ConnKey = ConnKey {
        slot: 1,
        generation: 1,
    };

    #[test]
    fn a_move_this_node_has_not_seen_yet_waits_for_it_and_subscribes_once() {
        let room = room();
        let mut hub = node1(&[2]);
        hub.handle_subscribe(CONN, &room, None, None, 10);
        assert_eq!(subscriptions(&mut hub), [2]);
        // Node 2 saw node 0 come back first and gave the room up.
        hub.handle_peer(
            2,
            PeerMsg::Moved { room: room.clone() },
            crate::hub::Arrival::UNTIMED,
            20,
        );
        assert_eq!(
            subscriptions(&mut hub),
            [] as [usize; 0],
            "not back to node 2"
        );
        assert_eq!(hub.poll_timeout(), Some(20 + GRACE));
        // This node's own link to node 0 comes up: one subscription, to node 0.
        hub.handle_link(0, true, 1, 30);
        assert_eq!(subscriptions(&mut hub), [0]);
        hub.handle_tick(20 + GRACE);
        assert_eq!(
            subscriptions(&mut hub),
            [] as [usize; 0],
            "the grace entry is stale"
        );
        assert_eq!(hub.mirror_owner(&room), Some(0));
    }

    #[test]
    fn a_move_this_node_never_sees_subscribes_again_after_the_grace() {
        let room = room();
        let mut hub = node1(&[2]);
        hub.handle_subscribe(CONN, &room, None, None, 10);
        assert_eq!(subscriptions(&mut hub), [2]);
        hub.handle_peer(
            2,
            PeerMsg::Moved { room: room.clone() },
            crate::hub::Arrival::UNTIMED,
            20,
        );
        // A second subscriber is held too, not sent to an owner that gave up.
        let other = ConnKey {
            slot: 2,
            generation: 1,
        };
        hub.handle_subscribe(other, &room, None, None, 25);
        assert_eq!(subscriptions(&mut hub), [] as [usize; 0]);
        hub.handle_tick(20 + GRACE - 1);
        assert_eq!(subscriptions(&mut hub), [] as [usize; 0]);
        // Node 0 stays out of reach from here: both subscribe where this node's
        // view says, rather than never.
        hub.handle_tick(20 + GRACE);
        assert_eq!(subscriptions(&mut hub), [2, 2]);
        assert_eq!(hub.poll_timeout(), None);
    }
}
