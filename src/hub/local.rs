//! The subscriber side: which of this worker's connections listen to which room,
//! pending until the owner's answer, live after it.
//!
//! Every live subscriber of a room on a worker is at the same place in the room's
//! stream: answers and messages reach the worker on one FIFO path from the owner, so
//! a subscriber that turns live is exactly where the others are. The room keeps that
//! place (its *cursor*: epoch and last seq delivered), and when its subscribers must
//! subscribe again (the room moved, or messages were dropped on a slow link) they do
//! so from it: an answer that recovers the gap in the same epoch replays it without
//! a new `subscribed`, so the move is invisible to the client.

use std::sync::Arc;

use bytes::Bytes;

use crate::ws::deflate::Lazy;

use super::Hub;
use super::effects::ToConn;
use super::id::{Arrival, ConnKey, Ms};
use super::msg::Mail;
use super::room::SubAck;
use crate::protocol::{self, Cursor};
use crate::ws::close;

/// A room as seen by a worker with local subscribers.
#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    /// Subscribers receiving live messages.
    pub(super) live: Vec<ConnKey>,
    /// Subscribers waiting for the owner's answer, with the subscription's attempt
    /// number; they receive nothing until it. An answer to an earlier attempt (the
    /// connection left and subscribed again, or the room moved) is stale: ignored.
    pub(super) pending: Vec<(ConnKey, u32)>,
    /// Pending attempts that resume from a cursor: `(conn, attempt, cursor,
    /// silent)`; `silent`: the connection was live and is only catching up (no
    /// `subscribed` if the answer recovers in the same epoch).
    resuming: Vec<(ConnKey, u32, Cursor, bool)>,
    /// Where the live subscribers are: the epoch of their answers and the last seq
    /// delivered.
    cursor: Option<Cursor>,
}

impl LocalRoom {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some(i) = self.live.iter().position(|k| *k == key) {
            self.live.swap_remove(i);
        }
        if let Some(i) = self.pending.iter().position(|(k, _)| *k == key) {
            self.pending.swap_remove(i);
        }
        self.resuming.retain(|r| r.0 != key);
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
        let attempt = self.next_attempt();
        let local = self.local.entry(name.clone()).or_default();
        local.pending.push((key, attempt));
        if let Some(c) = since {
            local.resuming.push((key, attempt, c, false));
        }
        self.send_subscribe(name.clone(), key, attempt, since, user, now);
        name
    }

    /// Ask the room's home worker to (re)subscribe `key`, which is pending.
    pub(super) fn send_subscribe(
        &mut self,
        room: Arc<str>,
        conn: ConnKey,
        attempt: u32,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
        now: Ms,
    ) {
        let home = self.topo.home(&room);
        if home == self.id {
            let join = super::home::Join {
                from: self.id,
                conn,
                attempt,
                since,
                user,
            };
            self.home_subscribe(room, join, now);
        } else {
            self.out.mail.push_back((
                home,
                Mail::Subscribe {
                    room,
                    from: self.id,
                    conn,
                    attempt,
                    since,
                    user,
                },
            ));
        }
    }

    fn next_attempt(&mut self) -> u32 {
        self.attempts = self.attempts.wrapping_add(1);
        self.attempts
    }

    /// Hand an owner's answer to the subscriber's worker.
    pub(super) fn send_suback(
        &mut self,
        room: &Arc<str>,
        worker: usize,
        conn: ConnKey,
        attempt: u32,
        ack: SubAck,
        now: Ms,
    ) {
        if worker == self.id {
            self.on_suback(room, conn, attempt, ack, now);
        } else {
            self.out.mail.push_back((
                worker,
                Mail::SubAck {
                    room: room.clone(),
                    conn,
                    attempt,
                    ack,
                },
            ));
        }
    }

    /// The owner's answer to subscription `attempt`: send `subscribed` and the
    /// replay, then go live. An answer to another attempt is stale and ignored.
    pub(super) fn on_suback(
        &mut self,
        room: &str,
        key: ConnKey,
        attempt: u32,
        ack: SubAck,
        now: Ms,
    ) {
        let Some(local) = self.local.get_mut(room) else {
            return; // everyone left before the answer came
        };
        let Some(i) = local.pending.iter().position(|p| *p == (key, attempt)) else {
            return; // this connection left, or subscribed again since
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
        local.pending.swap_remove(i);
        if let Some(c) = local.cursor
            && c.epoch != ack.epoch
            && !local.live.is_empty()
        {
            // The room started another epoch (its owner gave it up, say) while
            // other subscribers here are live in the old one: they follow, from
            // their cursor, and are told (the answer is not `recovered`).
            let stale = std::mem::take(&mut local.live);
            self.resubscribe(room, stale, c, now);
        }
        let Some(local) = self.local.get_mut(room) else {
            return;
        };
        local.live.push(key);
        let silent = match local
            .resuming
            .iter()
            .position(|r| (r.0, r.1) == (key, attempt))
        {
            Some(j) => {
                let (_, _, from, silent) = local.resuming.swap_remove(j);
                silent && ack.recovered && from.epoch == ack.epoch
            }
            None => false,
        };
        local.cursor = Some(Cursor {
            epoch: ack.epoch,
            seq: ack.seq,
        });
        if !silent {
            let head = protocol::subscribed_frame(room, ack.epoch, ack.seq, ack.recovered);
            self.out.conns.push_back(ToConn::Send(key, head));
        }
        for frame in ack.replay {
            self.out.conns.push_back(ToConn::Send(key, frame));
        }
    }

    /// Subscribe `keys` (live subscribers of `room` here, at `cursor`) again.
    fn resubscribe(&mut self, room: &str, keys: Vec<ConnKey>, cursor: Cursor, now: Ms) {
        let Some(name) = self.local.get_key_value(room).map(|(k, _)| k.clone()) else {
            return;
        };
        for key in keys {
            let attempt = self.next_attempt();
            if let Some(local) = self.local.get_mut(&name) {
                local.pending.push((key, attempt));
                local.resuming.push((key, attempt, cursor, true));
            }
            let user = self.users.get(&key).map(|(u, _)| u.clone());
            self.send_subscribe(name.clone(), key, attempt, Some(cursor), user, now);
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
    pub(super) fn deliver_local(
        &mut self,
        room: &str,
        frame: Bytes,
        seq: u64,
        packed: Lazy,
        tag: u64,
        at: Arrival,
    ) {
        let Some((name, local)) = self.local.get_key_value(room) else {
            return;
        };
        let name = name.clone();
        if seq > 0
            && !local.live.is_empty()
            && let Some(c) = self.local.get_mut(room).and_then(|l| l.cursor.as_mut())
        {
            c.seq = seq;
        }
        if self.replaying_parked() {
            // Several held inputs are handled in one call: a subscriber that one of
            // the later ones turns live must not get this message, which a
            // broadcast (run against the subscribers as they are when the caller
            // gets to it) would give it. Rare: send to each one now (as its own
            // frame, so its write is not timed into publish-to-write).
            let live = self
                .local
                .get(room)
                .map(|l| l.live.clone())
                .unwrap_or_default();
            for key in live {
                self.out.conns.push_back(ToConn::Send(key, frame.clone()));
            }
            return;
        }
        self.out.conns.push_back(ToConn::Broadcast {
            room: name,
            frame,
            packed,
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
        // Live subscribers resume from where they are; pending ones from where they
        // asked to.
        let cursor = local.cursor;
        let asked = std::mem::take(&mut local.resuming);
        let mut keys: Vec<(ConnKey, Option<(Cursor, bool)>)> = std::mem::take(&mut local.live)
            .into_iter()
            .map(|k| (k, cursor.map(|c| (c, true))))
            .collect();
        keys.extend(local.pending.drain(..).map(|(k, attempt)| {
            let since = asked
                .iter()
                .find(|r| (r.0, r.1) == (k, attempt))
                .map(|r| (r.2, r.3));
            (k, since)
        }));
        for (key, since) in keys {
            // A new attempt: answers to the earlier one are stale now.
            let attempt = self.next_attempt();
            if let Some(local) = self.local.get_mut(&name) {
                local.pending.push((key, attempt));
                if let Some((c, silent)) = since {
                    local.resuming.push((key, attempt, c, silent));
                }
            }
            // The new owner's roster needs the user again.
            let user = self.users.get(&key).map(|(u, _)| u.clone());
            self.send_subscribe(name.clone(), key, attempt, since.map(|s| s.0), user, now);
        }
    }
}
