//! The owner side: the rooms this worker sequences. The owner stamps each message
//! (seq, one encoded frame), remembers it for replay within the history bounds, and
//! sends it once to each interested worker and once to each interested node. It
//! keeps the roster (and with it the cluster-wide per-user cap) and announces
//! settled joins and leaves.

use std::cmp::Reverse;
use std::sync::Arc;

use bytes::Bytes;

use crate::ws::deflate::Lazy;
use serde_json::value::RawValue;

use super::Hub;
use super::effects::{HubEvent, PeerSet};
use super::id::{Arrival, Ms, Ticket};
use super::msg::{Mail, Origin, PeerMsg, Reply};
use super::presence::{Member, Roster};
use super::replicate::Asker;
use super::ring::{EvictCounts, Evicted};
use super::room::{OwnedRoom, SubAck};
use super::topology::conflation_tag;
use crate::protocol::{self, Cursor};

/// Who registers interest in an owned room.
#[derive(Debug, Clone, Copy)]
pub(super) enum Interest {
    /// A worker of this node.
    Worker(usize),
    /// A peer node.
    Node(usize),
}

impl Hub {
    /// `pub` (or the HTTP API): stamp here when this worker owns the room, else send
    /// it to the owner (worker or node).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        origin: Origin,
        reply: Option<u64>,
        at: Arrival,
        now: Ms,
    ) {
        let ticket = reply.map(|req| Ticket {
            worker: self.id as u16,
            id: req,
        });
        let home = self.topo.home(room);
        if home == self.id {
            let here = self.topo.remote_owner(room).is_none()
                && self.admit(room, None, now) == super::park::Admit::Go;
            if here {
                let asker = reply.map(Asker::Here);
                return self.owner_publish(room, data, key, &origin, asker, at, now);
            }
            return self.home_publish(
                Arc::from(room),
                data.to_owned(),
                key.map(Box::from),
                Box::new(origin),
                ticket,
                at,
                now,
            );
        }
        if let Some(owner) = self.topo.remote_owner(room) {
            self.send_peer(
                owner,
                PeerMsg::Publish {
                    room: room.to_owned(),
                    data: data.get().to_owned(),
                    key: key.map(str::to_owned),
                    origin,
                    reply: ticket,
                    via: None,
                },
            );
            return;
        }
        self.out.mail.push_back((
            home,
            Mail::Publish {
                room: Arc::from(room),
                data: data.to_owned(),
                key: key.map(Box::from),
                origin: Box::new(origin),
                reply: ticket,
                at,
            },
        ));
    }

    /// Home side of a publish from this node: stamp it when this worker owns the
    /// room (or starts it), else send it to the owner node; held while a handoff of
    /// the room may be on its way (see `hub::handoff`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn home_publish(
        &mut self,
        room: Arc<str>,
        data: Box<RawValue>,
        key: Option<Box<str>>,
        origin: Box<Origin>,
        reply: Option<Ticket>,
        at: Arrival,
        now: Ms,
    ) {
        let wait = self.is_parked(&room, None, now);
        if let Some(owner) = self.topo.remote_owner(&room).filter(|_| !wait) {
            return self.send_peer(
                owner,
                PeerMsg::Publish {
                    room: room.to_string(),
                    data: data.get().to_owned(),
                    key: key.map(String::from),
                    origin: *origin,
                    reply,
                    via: None,
                },
            );
        }
        if wait || self.admit(&room, None, now) == super::park::Admit::Park {
            let input = super::park::Parked::Local(Mail::Publish {
                room,
                data,
                key,
                origin,
                reply,
                at,
            });
            return self.park(input, now);
        }
        let asker = reply.map(Asker::Worker);
        self.owner_publish(&room, &data, key.as_deref(), &origin, asker, at, now);
    }

    /// Deliver an answer to whoever asked on this node.
    pub(super) fn reply_to(&mut self, ticket: Ticket, reply: Reply) {
        let w = usize::from(ticket.worker);
        if w == self.id {
            self.out.replies.push_back((ticket.id, reply));
            return;
        }
        let mail = match reply {
            Reply::Published(stamp) => Mail::Published {
                req: ticket.id,
                stamp,
            },
            Reply::Presence(json) => Mail::Presence { ticket, json },
            Reply::History(json) => Mail::History { ticket, json },
            // Answered where they were asked, never forwarded.
            Reply::Rooms { .. } | Reply::Disconnected { .. } => return,
        };
        self.out.mail.push_back((w, mail));
    }

    /// The owned room `room`, created with a fresh epoch (its history starts now).
    pub(super) fn room_to_own(&mut self, room: &str) -> &mut OwnedRoom {
        if !self.owned.contains_key(room) {
            let epoch = self.new_epoch();
            let fresh = OwnedRoom::new(
                epoch,
                self.cfg.replay_messages,
                self.cfg.replay_ms,
                self.cfg.replay_bytes,
            );
            self.owned.insert(Arc::from(room), fresh);
        }
        self.owned.get_mut(room).expect("inserted above")
    }

    /// A room read back from the log becomes owned here (see [`Hub::restore`]).
    pub(super) fn restore_room(
        &mut self,
        r: super::Restored,
        keys: &mut Vec<(Ms, Arc<str>, String, u64, u64)>,
        now: Ms,
    ) {
        let mut evicted = EvictCounts::default();
        let keep_until = now + self.cfg.replay_ms;
        let room = OwnedRoom::restored(
            (protocol::Epoch(r.epoch), r.seq),
            (
                self.cfg.replay_messages,
                self.cfg.replay_ms,
                self.cfg.replay_bytes,
            ),
            r.messages
                .into_iter()
                .map(|(seq, age, frame)| (seq, now.saturating_sub(age), frame)),
            keep_until,
            &mut evicted,
        );
        let mut room = room;
        room.set_from_log();
        if self.replicating() {
            // Other nodes may have gone on with this epoch since (a standby that
            // took over): it goes on here only under a term won later.
            room.standby = super::replicate::Standby::in_term(r.term.max(1));
        }
        let name: Arc<str> = Arc::from(r.room);
        self.owned.insert(name.clone(), room);
        self.account_history(&name, 0, false, &evicted);
        for (key, seq, age) in r.keys {
            keys.push((now.saturating_sub(age), name.clone(), key, r.epoch, seq));
        }
    }

    /// Owner side of `sub`: the answer, and the roster entry. The personal room's
    /// roster is the user's connections across the cluster: the cluster-wide
    /// per-user cap is enforced here.
    pub(super) fn owner_subscribe(
        &mut self,
        room: &Arc<str>,
        who: Member,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
        now: Ms,
    ) -> SubAck {
        let events = self.cfg.tracks_presence(room);
        let cap = self.cfg.max_connections_per_user;
        let personal = protocol::personal_room_user(room).is_some();
        let mut evicted = EvictCounts::default();
        self.room_to_own(room);
        self.ensure_standby(room, now);
        // (Given up when no peer can keep a copy: it starts again.)
        let r = self.room_to_own(room);
        let before = r.history_bytes();
        let mut ack = r.subscribe(since, now, &mut evicted);
        self.account_history(room, before, true, &evicted);
        let Some(r) = self.owned.get_mut(&**room) else {
            return ack;
        };
        if let Some(user) = user {
            if personal && cap > 0 && r.roster.count(&user) >= cap {
                ack.refused = true;
                ack.replay.clear();
                return ack;
            }
            r.roster.add(who, user, now);
            if events && r.roster.has_changes() {
                self.presence_dirty.push(room.clone());
            }
        }
        ack
    }

    /// Record who listens to an owned room.
    pub(super) fn owner_interest(&mut self, room: &str, who: Interest, _now: Ms) {
        let r = self.room_to_own(room);
        match who {
            Interest::Worker(w) => r.set_interest(w, true),
            Interest::Node(n) => r.set_peer(n, true),
        }
    }

    /// Owner side of `pub`: stamp, remember, fan out once per interested worker and
    /// once per interested node, and tell `asker` the stamp (once the standby has
    /// the message, when the room is replicated: `hub::replicate`). A repeat of an
    /// idempotency key gets the first stamp back and goes nowhere.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn owner_publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        origin: &Origin,
        asker: Option<Asker>,
        at: Arrival,
        now: Ms,
    ) {
        let mut evicted = EvictCounts::default();
        let epoch = self.room_to_own(room).position().0;
        if let Some(k) = &origin.idempotency_key
            && let Some(seq) = self.dedup.seen(room, origin.scope(), k, epoch, now)
        {
            self.stats.duplicates += 1;
            if let Some(a) = asker {
                self.answer_repeat(room, seq, a);
            }
            return;
        }
        if self.replicating()
            && let Some((name, r)) = self.owned.get_key_value(room)
            && r.standby.node().is_none()
        {
            let name = name.clone();
            self.ensure_standby(&name, now);
            if !self.owned.contains_key(room) {
                // Given up (no peer to keep a copy): it starts again.
                return self.owner_publish(room, data, key, origin, asker, at, now);
            }
        }
        let r = self.room_to_own(room);
        let (before, had) = (r.history_bytes(), r.oldest_at().is_some());
        let (seq, frame) = r.publish(room, data, origin.from.as_deref(), key, now, &mut evicted);
        if let Some(k) = &origin.idempotency_key {
            self.dedup.stamped(room, origin.scope(), k, epoch, seq, now);
        }
        self.stats.published += 1;
        let name = self
            .owned
            .get_key_value(room)
            .map(|(k, _)| k.clone())
            .expect("stamped above");
        self.account_history(&name, before, had, &evicted);
        // The app hears of it when it is delivered (with a standby, once the
        // standby has it: a message lost with its owner before that was never
        // acknowledged to anyone).
        let event = (origin.client && self.cfg.hook_publish(room)).then(|| HubEvent::Published {
            room: name.clone(),
            epoch,
            seq,
            from: origin.from.clone(),
            data: data.to_owned(),
        });
        let scoped = origin
            .idempotency_key
            .as_ref()
            .map(|k| super::dedup::Dedup::scoped(origin.scope(), k));
        if self.cfg.durable {
            self.out.stored.push_back(super::Stamped {
                room: name.clone(),
                epoch: epoch.0,
                seq,
                frame: frame.clone(),
                key: scoped.clone(),
                age: 0,
                kind: crate::store::record::Kind::Message,
            });
        }
        let tag = conflation_tag(room, key);
        let stamped = super::replicate::Fresh {
            seq,
            frame,
            tag,
            at,
            event,
        };
        self.settle_stamped(&name, stamped, asker, scoped);
    }

    /// Send a room frame (message `seq`, 0 for other frames) once to each of
    /// `workers` (this one inline). Only a message is timed from `at`: a frame with
    /// seq 0 (a presence change, from this node or a peer) is not a publish.
    pub(super) fn fan_out(
        &mut self,
        room: &str,
        workers: &[usize],
        frame: Bytes,
        seq: u64,
        tag: u64,
        at: Arrival,
    ) {
        let at = if seq == 0 { Arrival::UNTIMED } else { at };
        let mut name: Option<Arc<str>> = None;
        // One compressed variant for all the node's workers, made by the first that
        // needs it.
        let packed = Lazy::default();
        for &w in workers {
            if w == self.id {
                self.deliver_local(room, frame.clone(), seq, packed.clone(), tag, at);
            } else {
                let room = name.get_or_insert_with(|| Arc::from(room)).clone();
                self.out.mail.push_back((
                    w,
                    Mail::Deliver {
                        room,
                        seq,
                        frame: frame.clone(),
                        packed: packed.clone(),
                        tag,
                        at,
                    },
                ));
            }
        }
    }

    /// Send a room frame once to each node in `peers`, encoded once for all.
    pub(super) fn forward(
        &mut self,
        room: &str,
        peers: PeerSet,
        frame: &Bytes,
        seq: u64,
        tag: u64,
    ) {
        if peers == 0 {
            return;
        }
        self.stats.mesh_forwarded += u64::from(peers.count_ones());
        self.out.peers.push_back((
            peers,
            PeerMsg::Deliver {
                room: room.to_owned(),
                seq,
                tag,
                frame: frame.clone(),
            },
        ));
    }

    /// `presence`: ask the owner (worker or node) for the roster, for request `req`.
    pub(super) fn presence(&mut self, room: &str, req: u64, _now: Ms) {
        let ticket = Ticket {
            worker: self.id as u16,
            id: req,
        };
        if let Some(owner) = self.topo.remote_owner(room) {
            self.send_peer(
                owner,
                PeerMsg::PresenceQuery {
                    room: room.to_owned(),
                    ticket,
                },
            );
            return;
        }
        let home = self.topo.home(room);
        if home == self.id {
            let json = self.roster_json(room);
            self.out.replies.push_back((req, Reply::Presence(json)));
        } else {
            self.out.mail.push_back((
                home,
                Mail::PresenceQuery {
                    room: Arc::from(room),
                    ticket,
                },
            ));
        }
    }

    /// The app's history query: ask the owner (worker or node), for request `req`.
    pub(super) fn history(&mut self, room: &str, since: u64, limit: usize, req: u64, now: Ms) {
        let ticket = Ticket {
            worker: self.id as u16,
            id: req,
        };
        if let Some(owner) = self.topo.remote_owner(room) {
            self.send_peer(
                owner,
                PeerMsg::HistoryQuery {
                    room: room.to_owned(),
                    since,
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    ticket,
                },
            );
            return;
        }
        let home = self.topo.home(room);
        if home == self.id {
            let json = self.history_json(room, since, limit, now);
            self.out.replies.push_back((req, Reply::History(json)));
        } else {
            self.out.mail.push_back((
                home,
                Mail::HistoryQuery {
                    room: Arc::from(room),
                    since,
                    limit,
                    ticket,
                },
            ));
        }
    }

    /// An owned room's history after `since` (none when nobody owns the room here:
    /// it has none). Bounded to what one mesh message carries.
    pub(super) fn history_json(&mut self, room: &str, since: u64, limit: usize, now: Ms) -> String {
        let max = self.cfg.peer_replay_bytes;
        let mut evicted = EvictCounts::default();
        let replicating = self.replicating();
        let json = match self.owned.get_mut(room) {
            // A copy read back from the log may hold messages its owner never let
            // through (held for a standby when it stopped): it tells nothing until
            // it wins its term.
            Some(r) if replicating && r.is_from_log() && !r.standby.ready() => {
                protocol::history_json(room, None, None, std::iter::empty(), limit, max)
            }
            Some(r) => r.history_json(room, since, limit, max, now, &mut evicted),
            None => protocol::history_json(room, None, None, std::iter::empty(), limit, max),
        };
        self.stats.evicted(&evicted);
        json
    }

    /// The roster of an owned room (empty when the room has none).
    pub(super) fn roster_json(&self, room: &str) -> String {
        match self.owned.get(room) {
            Some(r) => r.roster.json(room),
            None => Roster::default().json(room),
        }
    }

    /// Announce settled joins and leaves of rooms whose rosters changed.
    pub(super) fn settle_presence(&mut self, now: Ms) {
        if self.presence_dirty.is_empty() {
            return;
        }
        let debounce = self.cfg.presence_debounce_ms;
        let rooms = std::mem::take(&mut self.presence_dirty);
        let mut again: Vec<Arc<str>> = Vec::new();
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
            let peers = r.peer_mask();
            let tag = conflation_tag(&room, Some("\0presence"));
            let (frames, hooks) = (
                self.cfg.presence_events(&room),
                self.cfg.hook_presence(&room),
            );
            for c in changes {
                if hooks {
                    self.out.events.push_back(HubEvent::Presence {
                        room: room.clone(),
                        user: c.user.clone(),
                        joined: c.joined,
                    });
                }
                if frames {
                    let frame = protocol::presence_change_frame(&room, &c.user, c.joined);
                    self.forward(&room, peers, &frame, 0, tag);
                    self.fan_out(&room, &workers, frame, 0, tag, Arrival::UNTIMED);
                }
            }
        }
        self.presence_dirty = again;
    }

    /// Forget owned rooms with no subscribers and no history left (their next
    /// incarnation gets a new epoch), age history out, and keep the history heap
    /// small.
    pub(super) fn forget_idle_rooms(&mut self, now: Ms) {
        let mut evicted = EvictCounts::default();
        let mut total = 0;
        let cfg = &self.cfg;
        let mut unseed = Vec::new();
        self.owned.retain(|name, room| {
            // A room whose last member just left keeps its roster until the leave
            // is announced.
            let idle = room.is_idle(now, &mut evicted)
                && !(cfg.tracks_presence(name) && room.roster.has_changes());
            total += room.history_bytes();
            if idle && let Some(node) = room.standby.node() {
                unseed.push((name.clone(), room.position().0.0, node));
            }
            !idle
        });
        unseed.sort_unstable();
        self.unseed(unseed);
        self.history_bytes = total;
        self.stats.evicted(&evicted);
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
    /// began, and while the worker is over its share of the history budget, evict
    /// the oldest message of any room it owns.
    pub(super) fn account_history(
        &mut self,
        name: &Arc<str>,
        before: usize,
        had: bool,
        evicted: &EvictCounts,
    ) {
        self.stats.evicted(evicted);
        let Some(r) = self.owned.get(&**name) else {
            return;
        };
        self.history_bytes = self.history_bytes + r.history_bytes() - before;
        if let (false, Some(at)) = (had, r.oldest_at()) {
            self.history_heap.push(Reverse((at, name.clone())));
        }
        while self.history_bytes > self.cfg.history_budget {
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
                // Its oldest went another way (count, age, its own byte bound): the
                // entry is stale; put the room back under its real age.
                Some(actual) => self.history_heap.push(Reverse((actual, room))),
                None => {}
            }
        }
    }

    /// Mail from another worker of this node.
    pub(super) fn on_mail(&mut self, mail: Mail, now: Ms) {
        match mail {
            Mail::Subscribe {
                room,
                from,
                conn,
                attempt,
                since,
                user,
            } => {
                let join = super::home::Join {
                    from,
                    conn,
                    attempt,
                    since,
                    user,
                };
                self.home_subscribe(room, join, now);
            }
            Mail::SubAck {
                room,
                conn,
                attempt,
                ack,
            } => self.on_suback(&room, conn, attempt, ack, now),
            Mail::Leave {
                room,
                from,
                conn,
                user,
                last,
            } => self.home_leave(&room, from, conn, user, last, now),
            Mail::Publish {
                room,
                data,
                key,
                origin,
                reply,
                at,
            } => self.home_publish(room, data, key, origin, reply, at, now),
            Mail::Published { req, stamp } => {
                self.out.replies.push_back((req, Reply::Published(stamp)));
            }
            Mail::Deliver {
                room,
                seq,
                frame,
                packed,
                tag,
                at,
            } => self.deliver_local(&room, frame, seq, packed, tag, at),
            Mail::PresenceQuery { room, ticket } => {
                let json = self.roster_json(&room);
                self.reply_to(ticket, Reply::Presence(json));
            }
            Mail::Presence { ticket, json } => {
                self.out
                    .replies
                    .push_back((ticket.id, Reply::Presence(json)));
            }
            Mail::HistoryQuery {
                room,
                since,
                limit,
                ticket,
            } => {
                let json = self.history_json(&room, since, limit, now);
                self.reply_to(ticket, Reply::History(json));
            }
            Mail::History { ticket, json } => {
                self.out
                    .replies
                    .push_back((ticket.id, Reply::History(json)));
            }
            Mail::Gather { ticket, query } => {
                let part = self.answer_query(&query);
                let me = self.node();
                self.send_part(me, ticket, part);
            }
            Mail::Part {
                ticket,
                worker,
                part,
            } => {
                let (me, workers) = (self.node(), self.topo.workers());
                self.on_part(me, ticket, worker, workers, part);
            }
            Mail::Rehome { room } => self.rehome(&room, now),
        }
    }
}
