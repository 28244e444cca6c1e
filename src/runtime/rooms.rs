//! Room routing on a worker: the subscriber side (the local room index), the home
//! side (one worker per room on each node), and the owner side (seq, epoch, replay,
//! interested workers and nodes, roster), connected by mail and mesh frames.
//!
//! - `sub` on worker W: the connection joins W's index as *pending* and W tells the
//!   room's home worker H on this node. If this node owns the room, H is its owner:
//!   it marks W interested and answers with epoch, latest seq and the replay. If a
//!   peer owns it, H records W in the room's *mirror* and forwards the subscription
//!   over the mesh; the owner marks this node interested and answers through H.
//!   Every hop (worker mail, the mesh link) is FIFO and the answer and the messages
//!   after it travel the same path, so the subscriber turns live on the answer and
//!   sees exactly the messages after `seq`, none twice.
//! - `pub` anywhere goes to the owner (H, or the owner node's link), which stamps the
//!   seq, encodes one frame, and sends it once to each interested worker and once to
//!   each interested node. A node's H fans a frame from a peer out to its own
//!   interested workers and never forwards it to another node (one hop).
//! - Each worker wraps a frame in one `Rc` and queues that to each local subscriber
//!   under the room's slow-consumer policy.
//!
//! Ownership changes (mesh links up or down) are in `cluster.rs`.

use std::cmp::Reverse;
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
use crate::hub::presence::{self, Member};
use crate::hub::ring::{EvictCounts, Evicted};
use crate::hub::room::{OwnedRoom, SubAck, WorkerSet};
use crate::mesh::wire::{self, Frame, Subscriber, Ticket};
use crate::protocol::{self, Cursor, Epoch, ErrorCode};
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

/// A room owned by a peer node, as its home worker here sees it.
#[derive(Debug)]
pub(super) struct Mirror {
    /// The owner node the subscriptions were sent to; frames about the room from
    /// any other node are stale and dropped.
    pub(super) owner: usize,
    /// Local workers with subscribers.
    pub(super) workers: WorkerSet,
}

/// The conflation tag of a message: the same for the same room and key, never 0.
pub fn conflation_tag(room: &str, key: Option<&str>) -> u64 {
    let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one((room, key));
    h | 1
}

/// A connection key as it travels in mesh frames.
pub(super) fn pack(k: ConnKey) -> u64 {
    u64::from(k.slot) << 32 | u64::from(k.generation)
}

/// The inverse of [`pack`].
pub(super) fn unpack(v: u64) -> ConnKey {
    ConnKey {
        slot: (v >> 32) as u32,
        generation: v as u32,
    }
}

impl State {
    /// This node's index in the mesh (0 without one).
    pub(super) fn node_index(&self) -> usize {
        self.shared.mesh.as_ref().map_or(0, |m| m.me)
    }

    /// The peer node that owns `room`, or `None` when this node does.
    pub(super) fn remote_owner(&self, room: &str) -> Option<usize> {
        let mesh = self.shared.mesh.as_ref()?;
        let o = mesh.owner(room);
        (o != mesh.me).then_some(o)
    }

    fn home(&self, room: &str) -> usize {
        home_worker(room, self.shared.mailboxes.len())
    }

    /// Queue an encoded mesh frame for `peer`.
    pub(super) fn to_peer(&self, peer: usize, frame: &Frame) {
        if let Some(mesh) = &self.shared.mesh {
            mesh.send(peer, wire::encode(frame));
        }
    }

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
            let frame = protocol::error_frame(code, &reason, Some(room), reference);
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
        self.send_subscribe(name, key, since);
    }

    /// Ask the room's home worker to (re)subscribe `key`, which is pending.
    pub(super) fn send_subscribe(&mut self, room: Arc<str>, key: ConnKey, since: Option<Cursor>) {
        let user = self.conn_mut(key).and_then(|c| c.user());
        let home = self.home(&room);
        if home == self.id {
            self.home_subscribe(room, self.id, key, since, user);
        } else {
            self.shared.mailboxes[home].send(Mail::Subscribe {
                room,
                from: self.id,
                conn: key,
                since,
                user,
            });
        }
    }

    /// Home side of `sub`: answer as the owner, or forward to the owner node.
    pub(super) fn home_subscribe(
        &mut self,
        room: Arc<str>,
        from: usize,
        conn: ConnKey,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
    ) {
        self.check_mirror(&room);
        match self.remote_owner(&room) {
            None => {
                let who = Member {
                    node: self.node_index() as u16,
                    worker: from as u16,
                    conn: pack(conn),
                };
                let ack = self.owner_subscribe(&room, who, since, user);
                self.stats.resumed(since.is_some(), &ack);
                self.owner_interest(&room, Interest::Worker(from));
                self.send_suback(&room, from, conn, ack);
            }
            Some(owner) => {
                let mirror = self.mirrors.entry(room.clone()).or_insert_with(|| Mirror {
                    owner,
                    workers: WorkerSet::default(),
                });
                mirror.workers.set(from, true);
                self.to_peer(
                    owner,
                    &Frame::Subscribe {
                        room: room.to_string(),
                        who: Subscriber {
                            worker: from as u16,
                            conn: pack(conn),
                        },
                        since: since.map(|c| (c.epoch.0, c.seq)),
                        user: user.map(|u| u.to_string()),
                    },
                );
            }
        }
    }

    /// Hand an answer to the subscriber's worker.
    pub(super) fn send_suback(
        &mut self,
        room: &Arc<str>,
        worker: usize,
        conn: ConnKey,
        ack: SubAck,
    ) {
        if worker == self.id {
            self.on_suback(room, conn, ack);
        } else if let Some(m) = self.shared.mailboxes.get(worker) {
            m.send(Mail::SubAck {
                room: room.clone(),
                conn,
                ack,
            });
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
            let cap = self.shared.config.auth.max_connections_per_user;
            self.close(
                key,
                close::USER_LIMIT,
                &format!("this user already has {cap} connections in the cluster"),
            );
            return;
        }
        if let Some(i) = local.pending.iter().position(|k| *k == key) {
            local.pending.swap_remove(i);
            local.live.push(key);
        } else if !local.live.contains(&key) {
            return; // this connection left (or its slot was reused)
        }
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

    /// Take a connection out of a room's local index; tell the home worker when the
    /// last local subscriber leaves, or when the roster has this connection.
    pub(super) fn leave_local(&mut self, room: &Arc<str>, key: ConnKey) {
        let Some(local) = self.local.get_mut(&**room) else {
            return;
        };
        local.remove(key);
        let last = local.is_empty();
        if last {
            self.local.remove(&**room);
        }
        let user = self.conns_user(key);
        if !last && !user {
            return;
        }
        let home = self.home(room);
        if home == self.id {
            self.home_leave(room, self.id, key, user, last);
        } else {
            self.shared.mailboxes[home].send(Mail::Leave {
                room: room.clone(),
                from: self.id,
                conn: key,
                user,
                last,
            });
        }
    }

    fn conns_user(&self, key: ConnKey) -> bool {
        self.conns
            .get(key.slot as usize)
            .is_some_and(|c| c.generation == key.generation && c.grant.is_some())
    }

    /// Home side of a connection leaving a room.
    pub(super) fn home_leave(
        &mut self,
        room: &Arc<str>,
        from: usize,
        conn: ConnKey,
        user: bool,
        last: bool,
    ) {
        self.check_mirror(room);
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
                self.to_peer(
                    owner,
                    &Frame::Leave {
                        room: room.to_string(),
                        who: user.then_some(Subscriber {
                            worker: from as u16,
                            conn: pack(conn),
                        }),
                        node_left,
                    },
                );
            }
            return;
        }
        let node = self.node_index() as u16;
        let now = Instant::now();
        let events = self.presence_events(room);
        if let Some(r) = self.owned.get_mut(&**room) {
            if user {
                r.roster.remove(
                    &Member {
                        node,
                        worker: from as u16,
                        conn: pack(conn),
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

    /// `pub` (or the HTTP API): stamp inline when this worker owns the room,
    /// otherwise send it to the owner (worker or node). Returns the epoch and seq
    /// when stamped inline.
    pub fn publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        reply: Option<usize>,
        at: u64,
    ) -> Option<(Epoch, u64)> {
        let ticket = reply.map(|req| Ticket {
            worker: self.id as u16,
            id: req as u64,
        });
        if let Some(owner) = self.remote_owner(room) {
            self.to_peer(
                owner,
                &Frame::Publish {
                    room: room.to_owned(),
                    data: data.get().to_owned(),
                    key: key.map(str::to_owned),
                    reply: ticket,
                },
            );
            return None;
        }
        let home = self.home(room);
        if home == self.id {
            return Some(self.owner_publish(room, data, key, at));
        }
        self.shared.mailboxes[home].send(Mail::Publish {
            room: Arc::from(room),
            data: data.to_owned(),
            key: key.map(Box::from),
            reply: ticket,
            at,
        });
        None
    }

    /// Answer a publish's asker, local or on a peer.
    pub(super) fn reply_published(
        &mut self,
        from_peer: Option<usize>,
        ticket: Ticket,
        epoch: Epoch,
        seq: u64,
    ) {
        match from_peer {
            Some(peer) => self.to_peer(
                peer,
                &Frame::Published {
                    ticket,
                    epoch: epoch.0,
                    seq,
                },
            ),
            None => {
                if let Some(m) = self.shared.mailboxes.get(usize::from(ticket.worker)) {
                    m.send(Mail::Published {
                        req: ticket.id as usize,
                        epoch,
                        seq,
                    });
                }
            }
        }
    }

    /// Queue one shared frame to every live local subscriber of `room`, under the
    /// room's slow-consumer policy.
    pub(super) fn deliver_local(&mut self, room: &str, frame: Bytes, tag: u64, at: u64) {
        let policy = self.shared.config.rooms.policy(room);
        let Some(local) = self.local.get_mut(room) else {
            return;
        };
        // The list is taken out while frames are queued (queueing needs `&mut self`)
        // and put back after; queueing never changes room membership.
        let live = std::mem::take(&mut local.live);
        let shared = Rc::new(SharedFrame {
            bytes: frame,
            tag,
            born: at,
        });
        for &key in &live {
            self.enqueue_with(key, Out::Shared(shared.clone()), policy);
        }
        if let Some(local) = self.local.get_mut(room) {
            local.live = live;
        }
    }

    /// Send a frame to each of `workers` (this one inline).
    pub(super) fn fan_out(
        &mut self,
        room: &str,
        workers: &[usize],
        frame: Bytes,
        tag: u64,
        at: u64,
    ) {
        let mut name: Option<Arc<str>> = None;
        for &w in workers {
            if w == self.id {
                self.deliver_local(room, frame.clone(), tag, at);
            } else {
                let room = name.get_or_insert_with(|| Arc::from(room)).clone();
                self.shared.mailboxes[w].send(Mail::Deliver {
                    room,
                    frame: frame.clone(),
                    tag,
                    at,
                });
            }
        }
    }

    fn owned_room(&mut self, room: &str) -> &mut OwnedRoom {
        if !self.owned.contains_key(room) {
            let cfg = &self.shared.config.rooms;
            let fresh = OwnedRoom::new(
                Epoch(fastrand::u64(..)),
                cfg.replay_messages,
                Duration::from_secs(cfg.replay_seconds),
                cfg.replay_bytes,
            );
            self.owned.insert(Arc::from(room), fresh);
        }
        self.owned.get_mut(room).expect("inserted above")
    }

    /// Whether `room` announces joins and leaves.
    pub(super) fn presence_events(&self, room: &str) -> bool {
        self.shared
            .config
            .rooms
            .presence_events
            .iter()
            .any(|p| room.starts_with(p.as_str()))
    }

    /// Owner side of `sub`: the answer, and the roster entry.
    pub(super) fn owner_subscribe(
        &mut self,
        room: &Arc<str>,
        who: Member,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
    ) -> SubAck {
        let now = Instant::now();
        let events = self.presence_events(room);
        let cap = self.shared.config.auth.max_connections_per_user as u32;
        let personal = room.starts_with("user:");
        let mut evicted = EvictCounts::default();
        let r = self.owned_room(room);
        let before = r.history_bytes();
        let mut ack = r.subscribe(since, now, &mut evicted);
        self.account_history(room, before, true, &evicted);
        let Some(r) = self.owned.get_mut(&**room) else {
            return ack;
        };
        let mut dirty = false;
        if let Some(user) = user {
            // The personal room's roster is the user's connections across the
            // cluster: the cluster-wide per-user cap is enforced here.
            if personal && cap > 0 && r.roster.count(&user) >= cap {
                ack.refused = true;
                ack.replay.clear();
                return ack;
            }
            r.roster.add(who, user, now);
            dirty = events && r.roster.has_changes();
        }
        if dirty {
            self.presence_dirty.push(room.clone());
        }
        ack
    }

    /// Record who listens to an owned room.
    pub(super) fn owner_interest(&mut self, room: &str, who: Interest) {
        let r = self.owned_room(room);
        match who {
            Interest::Worker(w) => r.set_interest(w, true),
            Interest::Node(n) => r.set_peer(n, true),
        }
    }

    /// Owner side of `pub`: stamp, remember, fan out once per interested worker and
    /// once per interested node.
    pub(super) fn owner_publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        at: u64,
    ) -> (Epoch, u64) {
        let now = Instant::now();
        let mut evicted = EvictCounts::default();
        let r = self.owned_room(room);
        let (before, had) = (r.history_bytes(), r.oldest_at().is_some());
        let (seq, frame) = r.publish(room, data, key, now, &mut evicted);
        let epoch = r.position().0;
        let workers: Vec<usize> = r.interested().collect();
        let peers: Vec<usize> = r.peers().collect();
        self.stats.published += 1;
        let name = self
            .owned
            .get_key_value(room)
            .map(|(k, _)| k.clone())
            .expect("stamped above");
        self.account_history(&name, before, had, &evicted);
        let tag = conflation_tag(room, key);
        self.forward(room, &peers, &frame, tag);
        self.fan_out(room, &workers, frame, tag, at);
        (epoch, seq)
    }

    /// Send a room frame once to each of `peers` (encoded once).
    pub(super) fn forward(&mut self, room: &str, peers: &[usize], frame: &Bytes, tag: u64) {
        let Some(mesh) = &self.shared.mesh else {
            return;
        };
        if peers.is_empty() {
            return;
        }
        let wire = wire::encode(&Frame::Deliver {
            room: room.to_owned(),
            tag,
            frame: frame.clone(),
        });
        for &p in peers {
            mesh.slots[p]
                .stats
                .delivers_out
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            mesh.send(p, wire.clone());
        }
        self.stats.mesh_forwarded += peers.len() as u64;
    }

    /// `presence`: ask the owner (worker or node) for the roster.
    pub fn presence(&mut self, room: &str, ticket: Ticket) {
        if let Some(owner) = self.remote_owner(room) {
            self.to_peer(
                owner,
                &Frame::PresenceQuery {
                    room: room.to_owned(),
                    ticket,
                },
            );
            return;
        }
        let home = self.home(room);
        if home == self.id {
            let json = self.roster_json(room);
            self.answer_presence(ticket, json);
        } else {
            self.shared.mailboxes[home].send(Mail::PresenceQuery {
                room: Arc::from(room),
                ticket,
            });
        }
    }

    /// The roster of an owned room (empty when the room has none).
    pub(super) fn roster_json(&self, room: &str) -> String {
        match self.owned.get(room) {
            Some(r) => r.roster.json(room),
            None => presence::Roster::default().json(room),
        }
    }

    /// Deliver a roster to whoever asked on this node.
    pub(super) fn answer_presence(&mut self, ticket: Ticket, json: String) {
        let w = usize::from(ticket.worker);
        if w != self.id {
            if let Some(m) = self.shared.mailboxes.get(w) {
                m.send(Mail::Presence { ticket, json });
            }
            return;
        }
        self.complete(ticket.id as usize, super::worker::Reply::Presence(json));
    }

    /// Announce settled joins and leaves of rooms whose rosters changed.
    pub(super) fn settle_presence(&mut self, now: Instant) {
        if self.presence_dirty.is_empty() {
            return;
        }
        let debounce = Duration::from_millis(self.shared.config.rooms.presence_debounce_ms);
        let rooms = std::mem::take(&mut self.presence_dirty);
        let mut again = Vec::new();
        for room in rooms {
            if again.contains(&room) {
                continue;
            }
            let Some(r) = self.owned.get_mut(&room) else {
                continue;
            };
            let changes = r.roster.settle(now, debounce);
            if r.roster.has_changes() {
                again.push(room.clone());
            }
            let workers: Vec<usize> = r.interested().collect();
            let peers: Vec<usize> = r.peers().collect();
            let tag = conflation_tag(&room, Some("\0presence"));
            for c in changes {
                let frame = presence::change_frame(&room, &c);
                self.forward(&room, &peers, &frame, tag);
                self.fan_out(
                    &room,
                    &workers,
                    frame,
                    tag,
                    crate::metrics::histogram::now_ns(),
                );
            }
        }
        self.presence_dirty = again;
    }

    /// Forget owned rooms with no subscribers and no history left (their next
    /// incarnation gets a new epoch).
    pub(super) fn forget_idle_rooms(&mut self, now: Instant) {
        let mut evicted = EvictCounts::default();
        let mut total = 0;
        self.owned.retain(|_, room| {
            let idle = room.is_idle(now, &mut evicted);
            total += room.history_bytes();
            !idle
        });
        self.history_bytes = total;
        self.count_evictions(&evicted);
        if self.history_heap.len() > 2 * self.owned.len() + 64 {
            self.history_heap = self
                .owned
                .iter()
                .filter_map(|(name, r)| Some(Reverse((r.oldest_at()?, name.clone()))))
                .collect();
        }
    }

    /// After room `name`'s history changed from `before` bytes (`had`: it held some):
    /// keep the worker's total, put the room on the age heap when its history just
    /// began, and while the worker is over its share of `rooms.history_budget_bytes`,
    /// evict the oldest message of any room it owns.
    fn account_history(
        &mut self,
        name: &Arc<str>,
        before: usize,
        had: bool,
        evicted: &EvictCounts,
    ) {
        self.count_evictions(evicted);
        let Some(r) = self.owned.get(&**name) else {
            return;
        };
        self.history_bytes = self.history_bytes + r.history_bytes() - before;
        if let (false, Some(at)) = (had, r.oldest_at()) {
            self.history_heap.push(Reverse((at, name.clone())));
        }
        let share = self.shared.config.rooms.history_budget_bytes / self.shared.mailboxes.len();
        while self.history_bytes > share {
            let Some(Reverse((at, room))) = self.history_heap.pop() else {
                break; // cannot happen: every room with history is on the heap
            };
            let Some(r) = self.owned.get_mut(&room) else {
                continue; // forgotten since
            };
            match r.oldest_at() {
                Some(actual) if actual == at => {
                    self.history_bytes -= r.evict_oldest();
                    self.stats.history_evicted[Evicted::NodeBudget as usize] += 1;
                    if let Some(next) = r.oldest_at() {
                        self.history_heap.push(Reverse((next, room)));
                    }
                }
                // Its oldest went another way (count, age, its own byte bound):
                // the entry is stale; put the room back under its real age.
                Some(actual) => self.history_heap.push(Reverse((actual, room))),
                None => {}
            }
        }
    }

    fn count_evictions(&mut self, evicted: &EvictCounts) {
        for (total, n) in self.stats.history_evicted.iter_mut().zip(evicted) {
            *total += n;
        }
    }

    /// Rooms owned, rooms with local subscribers, and interest entries (interested
    /// peers of owned rooms plus mirrors of rooms owned elsewhere) (gauges).
    pub(super) fn room_counts(&self) -> (usize, usize, usize) {
        let interest = self
            .owned
            .values()
            .map(|r| r.peers().count())
            .sum::<usize>()
            + self.mirrors.len();
        (self.owned.len(), self.local.len(), interest)
    }
}

/// Who registers interest in an owned room.
#[derive(Debug, Clone, Copy)]
pub(super) enum Interest {
    /// A worker of this node.
    Worker(usize),
    /// A peer node.
    Node(usize),
}
