//! The home side: on each node one worker per room (its home) speaks for the node's
//! subscribers. On the owner node the home worker is the owner; elsewhere it keeps
//! a *mirror* (which owner it subscribed with, which local workers listen) and talks
//! to the owner node for them.

use std::sync::Arc;

use super::Hub;
use super::id::{ConnKey, Ms, Subscriber};
use super::msg::PeerMsg;
use super::owner::Interest;
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
}

impl Hub {
    /// Home side of `sub`: answer as the owner, or forward to the owner node.
    pub(super) fn home_subscribe(&mut self, room: Arc<str>, join: Join, now: Ms) {
        let Join {
            from,
            conn,
            attempt,
            since,
            user,
        } = join;
        self.check_mirror(&room, now);
        match self.topo.remote_owner(&room) {
            None => {
                let who = Member {
                    node: self.node() as u16,
                    worker: from as u16,
                    conn: conn.pack(),
                };
                let ack = self.owner_subscribe(&room, who, since, user, now);
                self.stats.resumed(since.is_some(), ack.miss);
                self.owner_interest(&room, Interest::Worker(from), now);
                self.send_suback(&room, from, conn, attempt, ack);
            }
            Some(owner) => {
                let mirror = self.mirrors.entry(room.clone()).or_insert_with(|| Mirror {
                    owner,
                    workers: WorkerSet::default(),
                });
                mirror.workers.set(from, true);
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
        let events = self.cfg.presence_events(room);
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
