//! Room routing on a worker: the subscriber side (the local room index) and the owner
//! side (seq, epoch, replay, interested workers), connected by mail.
//!
//! - `sub` on worker W: the connection joins W's index as *pending* and W asks the
//!   owner (inline when W owns the room). The owner marks W interested and answers
//!   with epoch, latest seq and the replay. Mail between two workers is FIFO, so every
//!   `Deliver` the owner sends after its answer arrives after it: the subscriber turns
//!   live on the answer and sees exactly the messages after `seq`, none twice.
//! - `pub` anywhere goes to the owner, which stamps the seq, encodes one frame and
//!   sends it once to each interested worker; each worker wraps it in one `Rc` and
//!   queues that to each local subscriber under the room's slow-consumer policy.

use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::mailbox::Mail;
use super::worker::State;
use crate::conn::ConnKey;
use crate::conn::outq::{Out, SharedFrame};
use crate::hub::home_worker;
use crate::hub::room::{OwnedRoom, SubAck};
use crate::protocol::{self, Cursor, Epoch, ErrorCode};

/// A room as seen by a worker with local subscribers.
#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    /// Subscribers receiving live messages.
    live: Vec<ConnKey>,
    /// Subscribers waiting for the owner's answer; they receive nothing until it.
    pending: Vec<ConnKey>,
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

/// The conflation tag of a message: the same for the same room and key, never 0.
pub fn conflation_tag(room: &str, key: Option<&str>) -> u64 {
    let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one((room, key));
    h | 1
}

impl State {
    /// `sub`: join the room (pending until the owner answers).
    pub fn subscribe(
        &mut self,
        key: ConnKey,
        room: &str,
        since: Option<Cursor>,
        reference: Option<&RawValue>,
    ) {
        let max = self.shared.config.limits.max_subscriptions;
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let refusal = if conn.rooms.iter().any(|r| &**r == room) {
            Some((
                ErrorCode::BadField,
                "already subscribed to this room".to_owned(),
            ))
        } else if conn.rooms.len() >= max {
            Some((
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {max} subscriptions per connection; unsubscribe from a room first"
                ),
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            let frame = protocol::error_frame(code, &reason, reference);
            self.enqueue(key, Out::Own(frame));
            return;
        }
        let name = match self.local.get_key_value(room) {
            Some((name, _)) => name.clone(),
            None => Arc::<str>::from(room),
        };
        if let Some(conn) = self.conn_mut(key) {
            conn.rooms.push(name.clone());
        }
        self.local
            .entry(name.clone())
            .or_default()
            .pending
            .push(key);
        let owner = home_worker(room, self.shared.mailboxes.len());
        if owner == self.id {
            let ack = self.owner_subscribe(&name, self.id, since);
            self.on_suback(&name, key, ack);
        } else {
            self.shared.mailboxes[owner].send(Mail::Subscribe {
                room: name,
                from: self.id,
                conn: key,
                since,
            });
        }
    }

    /// The owner's answer: send `subscribed` and the replay, then go live.
    pub(super) fn on_suback(&mut self, room: &str, key: ConnKey, ack: SubAck) {
        let Some(local) = self.local.get_mut(room) else {
            return; // everyone left before the answer came
        };
        let Some(i) = local.pending.iter().position(|k| *k == key) else {
            return; // this connection left (or its slot was reused)
        };
        local.pending.swap_remove(i);
        local.live.push(key);
        let head = protocol::subscribed_frame(room, ack.epoch, ack.seq, ack.recovered);
        self.enqueue(key, Out::Own(head));
        for frame in ack.replay {
            self.enqueue(key, Out::Own(frame));
        }
    }

    /// `unsub`. Returns whether the connection was subscribed.
    pub fn unsubscribe(&mut self, key: ConnKey, room: &str) -> bool {
        let Some(conn) = self.conn_mut(key) else {
            return false;
        };
        let Some(i) = conn.rooms.iter().position(|r| &**r == room) else {
            return false;
        };
        let name = conn.rooms.swap_remove(i);
        self.leave_local(&name, key);
        true
    }

    /// Take a connection out of a room's local index; tell the owner when the last
    /// local subscriber leaves.
    pub(super) fn leave_local(&mut self, room: &Arc<str>, key: ConnKey) {
        let Some(local) = self.local.get_mut(&**room) else {
            return;
        };
        local.remove(key);
        if !local.is_empty() {
            return;
        }
        self.local.remove(&**room);
        let owner = home_worker(room, self.shared.mailboxes.len());
        if owner == self.id {
            self.owner_uninterest(room, self.id);
        } else {
            self.shared.mailboxes[owner].send(Mail::Uninterest {
                room: room.clone(),
                from: self.id,
            });
        }
    }

    /// `pub` (or the HTTP API): stamp inline when this worker owns the room,
    /// otherwise mail the owner. Returns the epoch and seq when stamped inline.
    pub fn publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        reply: Option<usize>,
    ) -> Option<(Epoch, u64)> {
        let owner = home_worker(room, self.shared.mailboxes.len());
        if owner == self.id {
            return Some(self.owner_publish(room, data, key));
        }
        self.shared.mailboxes[owner].send(Mail::Publish {
            room: Arc::from(room),
            data: data.to_owned(),
            key: key.map(Box::from),
            reply: reply.map(|req| (self.id, req)),
        });
        None
    }

    /// Queue one shared frame to every live local subscriber of `room`, under the
    /// room's slow-consumer policy.
    pub(super) fn deliver_local(&mut self, room: &str, frame: Bytes, tag: u64) {
        let policy = self.shared.config.rooms.policy(room);
        let Some(local) = self.local.get_mut(room) else {
            return;
        };
        // The list is taken out while frames are queued (queueing needs `&mut self`)
        // and put back after; queueing never changes room membership.
        let live = std::mem::take(&mut local.live);
        let shared = Rc::new(SharedFrame { bytes: frame, tag });
        for &key in &live {
            self.enqueue_with(key, Out::Shared(shared.clone()), policy);
        }
        if let Some(local) = self.local.get_mut(room) {
            local.live = live;
        }
    }

    fn owned_room(&mut self, room: &str) -> &mut OwnedRoom {
        if !self.owned.contains_key(room) {
            let cfg = &self.shared.config.rooms;
            let fresh = OwnedRoom::new(
                Epoch(fastrand::u64(..)),
                cfg.replay_messages,
                Duration::from_secs(cfg.replay_seconds),
            );
            self.owned.insert(Arc::from(room), fresh);
        }
        self.owned.get_mut(room).expect("inserted above")
    }

    /// Owner side of `sub`.
    pub(super) fn owner_subscribe(
        &mut self,
        room: &str,
        from: usize,
        since: Option<Cursor>,
    ) -> SubAck {
        let now = Instant::now();
        let r = self.owned_room(room);
        r.set_interest(from, true);
        let ack = r.subscribe(since, now);
        if since.is_some() {
            if ack.recovered {
                self.stats.replay_hits += 1;
            } else {
                self.stats.replay_misses += 1;
            }
        }
        ack
    }

    /// Owner side of a worker's last local subscriber leaving.
    pub(super) fn owner_uninterest(&mut self, room: &str, from: usize) {
        if let Some(r) = self.owned.get_mut(room) {
            r.set_interest(from, false);
        }
    }

    /// Owner side of `pub`: stamp, remember, fan out once per interested worker.
    pub(super) fn owner_publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
    ) -> (Epoch, u64) {
        let now = Instant::now();
        let me = self.id;
        let r = self.owned_room(room);
        let (seq, frame) = r.publish(room, data, key, now);
        let epoch = r.position().0;
        let targets: Vec<usize> = r.interested().collect();
        self.stats.published += 1;
        let tag = conflation_tag(room, key);
        let mut name: Option<Arc<str>> = None;
        for w in targets {
            if w == me {
                self.deliver_local(room, frame.clone(), tag);
            } else {
                let room = name.get_or_insert_with(|| Arc::from(room)).clone();
                self.shared.mailboxes[w].send(Mail::Deliver {
                    room,
                    frame: frame.clone(),
                    tag,
                });
            }
        }
        (epoch, seq)
    }

    /// Forget owned rooms with no subscribers and no history left (their next
    /// incarnation gets a new epoch).
    pub(super) fn forget_idle_rooms(&mut self, now: Instant) {
        self.owned.retain(|_, room| !room.is_idle(now));
    }

    /// Rooms owned and rooms with local subscribers (gauges).
    pub(super) fn room_counts(&self) -> (usize, usize) {
        (self.owned.len(), self.local.len())
    }
}
