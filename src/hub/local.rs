//! The subscriber side: which of this worker's connections listen to which room,
//! pending until the owner's answer, live after it.

use std::sync::Arc;

use bytes::Bytes;

use super::Hub;
use super::effects::ToConn;
use super::id::{ConnKey, Ms};
use super::msg::Mail;
use super::room::SubAck;
use crate::protocol::{self, Cursor};
use crate::ws::close;

/// A room as seen by a worker with local subscribers.
#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    /// Subscribers receiving live messages.
    pub(super) live: Vec<ConnKey>,
    /// Subscribers waiting for the owner's answer; they receive nothing until it.
    pub(super) pending: Vec<ConnKey>,
}

impl LocalRoom {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }

    fn remove(&mut self, key: ConnKey) {
        for list in [&mut self.live, &mut self.pending] {
            if let Some(i) = list.iter().position(|k| *k == key) {
                list.swap_remove(i);
            }
        }
    }
}

impl Hub {
    /// `sub`: join the room's index (pending until the owner answers) and ask the
    /// room's home worker.
    pub(super) fn subscribe_local(
        &mut self,
        key: ConnKey,
        room: &str,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
        now: Ms,
    ) -> Arc<str> {
        let name = match self.local.get_key_value(room) {
            Some((name, _)) => name.clone(),
            None => Arc::<str>::from(room),
        };
        if let Some(user) = &user {
            let entry = self.users.entry(key).or_insert_with(|| (user.clone(), 0));
            entry.1 += 1;
        }
        self.local
            .entry(name.clone())
            .or_default()
            .pending
            .push(key);
        self.send_subscribe(name.clone(), key, since, user, now);
        name
    }

    /// Ask the room's home worker to (re)subscribe `key`, which is pending.
    pub(super) fn send_subscribe(
        &mut self,
        room: Arc<str>,
        conn: ConnKey,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
        now: Ms,
    ) {
        let home = self.topo.home(&room);
        if home == self.id {
            self.home_subscribe(room, self.id, conn, since, user, now);
        } else {
            self.out.mail.push_back((
                home,
                Mail::Subscribe {
                    room,
                    from: self.id,
                    conn,
                    since,
                    user,
                },
            ));
        }
    }

    /// Hand an owner's answer to the subscriber's worker.
    pub(super) fn send_suback(
        &mut self,
        room: &Arc<str>,
        worker: usize,
        conn: ConnKey,
        ack: SubAck,
    ) {
        if worker == self.id {
            self.on_suback(room, conn, ack);
        } else {
            self.out.mail.push_back((
                worker,
                Mail::SubAck {
                    room: room.clone(),
                    conn,
                    ack,
                },
            ));
        }
    }

    /// The owner's answer: send `subscribed` and the replay, then go live. A second
    /// answer for a live subscriber (the room moved while it subscribed) restarts its
    /// stream: the client gets another `subscribed` and re-syncs.
    pub(super) fn on_suback(&mut self, room: &str, key: ConnKey, ack: SubAck) {
        let Some(local) = self.local.get_mut(room) else {
            return; // everyone left before the answer came
        };
        if ack.refused {
            let cap = self.cfg.max_connections_per_user;
            self.out.conns.push_back(ToConn::Close(
                key,
                close::USER_LIMIT,
                format!("this user already has {cap} connections in the cluster"),
            ));
            return;
        }
        if let Some(i) = local.pending.iter().position(|k| *k == key) {
            local.pending.swap_remove(i);
            local.live.push(key);
        } else if !local.live.contains(&key) {
            return; // this connection left (or its slot was reused)
        }
        let head = protocol::subscribed_frame(room, ack.epoch, ack.seq, ack.recovered);
        self.out.conns.push_back(ToConn::Send(key, head));
        for frame in ack.replay {
            self.out.conns.push_back(ToConn::Send(key, frame));
        }
    }

    /// Take a connection out of a room's index; tell the home worker when the last
    /// local subscriber leaves, or when the roster has this connection.
    pub(super) fn leave_local(&mut self, room: &Arc<str>, key: ConnKey, user: bool, now: Ms) {
        let Some(local) = self.local.get_mut(&**room) else {
            return;
        };
        local.remove(key);
        let last = local.is_empty();
        if last {
            self.local.remove(&**room);
        }
        if user && let Some(entry) = self.users.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.users.remove(&key);
            }
        }
        if !last && !user {
            return;
        }
        let home = self.topo.home(room);
        if home == self.id {
            self.home_leave(room, self.id, key, user, last, now);
        } else {
            self.out.mail.push_back((
                home,
                Mail::Leave {
                    room: room.clone(),
                    from: self.id,
                    conn: key,
                    user,
                    last,
                },
            ));
        }
    }

    /// A stamped message for this worker's live subscribers of `room`.
    pub(super) fn deliver_local(&mut self, room: &str, frame: Bytes, tag: u64, at: Ms) {
        let Some((name, _)) = self.local.get_key_value(room) else {
            return;
        };
        self.out.conns.push_back(ToConn::Broadcast {
            room: name.clone(),
            frame,
            tag,
            at,
        });
    }

    /// Subscribe every local subscriber of `room` again (the room has a new owner).
    pub(super) fn rehome(&mut self, room: &Arc<str>, now: Ms) {
        let Some(name) = self.local.get_key_value(&**room).map(|(k, _)| k.clone()) else {
            return;
        };
        let Some(local) = self.local.get_mut(&name) else {
            return;
        };
        let live = std::mem::take(&mut local.live);
        local.pending.extend(live);
        let keys = local.pending.clone();
        for key in keys {
            // The new owner's roster needs the user again.
            let user = self.users.get(&key).map(|(u, _)| u.clone());
            self.send_subscribe(name.clone(), key, None, user, now);
        }
    }
}
