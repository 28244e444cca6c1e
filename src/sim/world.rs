//! The simulated world: nodes of hubs, the queues between them, clients, faults.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::value::RawValue;

use super::client::{At, Client, Ledger, Sub, record};
use super::disk::Disk;
use super::rest::check_history;
use crate::hub::rendezvous;
use crate::hub::{ConnKey, Hub, HubConfig, Mail, Ms, PeerMsg, Reply, ToConn, Topology};

/// The rooms clients use (a few, so they collide), and their users.
const ROOMS: [&str; 5] = ["chat:a", "chat:b", "p:c", "news", "chat:e"];
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
/// Connections per user across the cluster (personal rooms enforce it).
const USER_CAP: u32 = 3;
/// How often hubs tick, in simulated ms.
pub(super) const TICK: Ms = 100;

/// What one step did.
pub enum Outcome {
    Ok,
    Violation(String),
}

/// Something queued for a worker from a peer link: in session order.
pub(super) enum FromPeer {
    Msg(PeerMsg),
    /// Up or down, and the session.
    Link(bool, u64),
}

/// A link between two nodes: whether a session is up, and what is in flight each
/// way (`[low→high, high→low]`).
#[derive(Default)]
pub(super) struct Link {
    pub(super) connected: bool,
    /// The current session (a new one at each heal).
    pub(super) session: u64,
    pub(super) flight: [VecDeque<PeerMsg>; 2],
}

pub(super) struct Node {
    pub(super) up: bool,
    pub(super) hubs: Vec<Hub>,
    /// The history log (durable worlds only), kept across crashes.
    pub(super) disk: Disk,
    /// Draining: it handed its rooms over and stops then.
    pub(super) stop_at: Option<Ms>,
}

/// A rooms query's answer: rooms with their counts, and the nodes missing.
type RoomsAnswer = (Vec<(String, u64)>, Vec<usize>);

pub struct World {
    pub(super) rng: fastrand::Rng,
    pub(super) now: Ms,
    pub(super) next_tick: Ms,
    pub(super) cfg: HubConfig,
    pub(super) seeds: Vec<u64>,
    pub(super) workers: usize,
    pub(super) nodes: Vec<Node>,
    /// Worker-to-worker mail on one node: `(node, from, to)`.
    pub(super) mail: BTreeMap<(usize, usize, usize), VecDeque<Mail>>,
    /// A link's messages and events for one worker: `(node, peer, worker)`.
    pub(super) inbox: BTreeMap<(usize, usize, usize), VecDeque<FromPeer>>,
    /// Links by `(low, high)` node index.
    pub(super) links: BTreeMap<(usize, usize), Link>,
    /// Slow links: how many more room messages from one node to another are dropped.
    pub(super) slow: BTreeMap<(usize, usize), u32>,
    /// Rooms whose dropped messages a peer was told of: `(from, to, room)`.
    pub(super) lagging: BTreeSet<(usize, usize, String)>,
    pub(super) clients: Vec<Client>,
    pub(super) by_conn: BTreeMap<At, usize>,
    pub(super) next_slot: u32,
    pub(super) ledger: Ledger,
    pub(super) next_data: u64,
    pub(super) next_req: u64,
    /// Publishes waiting for their epoch and seq: `(node, worker, req)` → room, data.
    pub(super) asked: BTreeMap<(usize, usize, u64), (String, u64)>,
    /// Publishes sent with an idempotency key, to repeat: room, client, data.
    pub(super) keyed: Vec<(String, usize, u64)>,
    /// History queries waiting for their answer: `(node, worker, req)` → room.
    pub(super) history_asked: BTreeMap<(usize, usize, u64), String>,
    /// The last answer to a rooms query: rooms with counts, nodes missing.
    pub(super) rooms_answer: Option<RoomsAnswer>,
    /// Messages the app heard of (webhook publish events): `(room, epoch, seq)`.
    pub(super) announced: BTreeSet<(String, u64, u64)>,
    pub(super) violation: Option<String>,
    /// `RINGWAY_SIM_TRACE`: print every step (to follow a failing seed).
    pub(super) trace: bool,
    /// Only planned moves (drains, restarts with every link back, one node at a
    /// time) and time passes only when nothing is in flight (no wait runs out
    /// early): a live subscription must never be told to re-sync.
    pub(super) planned: bool,
    /// Only crashes, one node at a time, each recovered from (every message in
    /// flight delivered, the node started again with its links) before the next;
    /// rooms keep copies on standbys: a live subscription must never be told to
    /// re-sync, however many owners are lost.
    pub(super) crashes: bool,
    /// The cluster has recovered from the last crash: the next may come.
    pub(super) crash_armed: bool,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = rng.usize(1..=4);
        let workers = rng.usize(1..=3);
        let cfg = HubConfig {
            replay_messages: rng.usize(4..64),
            replay_ms: 3_000,
            replay_bytes: 1 << 20,
            history_budget: if rng.bool() { 1 << 20 } else { 4096 },
            presence_events: vec!["p:".into()],
            presence_debounce_ms: 300,
            presence_lease_ms: 1_000,
            max_connections_per_user: USER_CAP,
            peer_replay_bytes: 1_500,
            tick_ms: TICK,
            moved_grace_ms: 600,
            // Long and large: every repeat within a seed must be recognised.
            idempotency_window_ms: 1 << 40,
            idempotency_keys: 1 << 20,
            hook_publish_rooms: vec!["chat:*".into()],
            hook_presence_rooms: vec!["p:*".into(), "user:*".into()],
            // Odd seeds keep history on disk (without drawing from the seed's
            // stream: every other seed runs as it always did).
            durable: seed % 2 == 1,
            join_ms: 600,
            // Small enough that some handoffs go without their history.
            handoff_bytes: 2_000,
            // Most seeds keep copies on standbys (with three nodes or more); one
            // in four runs without, as `mesh.replicate = false` does.
            replicate: seed % 4 != 3,
        };
        let seeds = (0..n).map(|i| rendezvous::seed(&format!("n{i}"))).collect();
        let mut w = World {
            rng,
            now: 0,
            next_tick: TICK,
            cfg,
            seeds,
            workers,
            nodes: Vec::new(),
            mail: BTreeMap::new(),
            inbox: BTreeMap::new(),
            links: BTreeMap::new(),
            slow: BTreeMap::new(),
            lagging: BTreeSet::new(),
            clients: USERS
                .iter()
                .map(|u| Some(u.to_string()))
                .chain([None, None, None])
                .cycle()
                .take(10)
                .map(Client::new)
                .collect(),
            by_conn: BTreeMap::new(),
            next_slot: 0,
            ledger: Ledger::default(),
            keyed: Vec::new(),
            history_asked: BTreeMap::new(),
            rooms_answer: None,
            announced: BTreeSet::new(),
            next_data: 0,
            next_req: 0,
            asked: BTreeMap::new(),
            violation: None,
            trace: std::env::var_os("RINGWAY_SIM_TRACE").is_some(),
            planned: false,
            crashes: false,
            crash_armed: false,
        };
        // One seed in eleven, decided without drawing from the seed's stream.
        if seed % 11 == 6 && n > 1 {
            w.planned = true;
            // History that never runs short of what a move needs (a resume that
            // falls out of the window re-syncs, rightly).
            w.cfg.replay_messages = 10_000;
            w.cfg.history_budget = 1 << 26;
            w.cfg.peer_replay_bytes = 1 << 24;
            w.cfg.handoff_bytes = 1 << 26;
            w.cfg.replay_ms = 30_000;
            w.cfg.idempotency_window_ms = 1 << 40;
        }
        // And one in eleven (with three nodes or more) has only crashes, with the
        // same history.
        if seed % 11 == 7 && n > 2 {
            w.crashes = true;
            w.cfg.replicate = true;
            w.cfg.replay_messages = 10_000;
            w.cfg.history_budget = 1 << 26;
            w.cfg.peer_replay_bytes = 1 << 24;
            w.cfg.handoff_bytes = 1 << 26;
            w.cfg.replay_ms = 30_000;
        }
        for i in 0..n {
            let hubs = w.fresh_hubs(i);
            w.nodes.push(Node {
                up: true,
                hubs,
                disk: Disk::default(),
                stop_at: None,
            });
            for hub in &mut w.nodes[i].hubs {
                hub.start(0);
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                w.links.insert((a, b), Link::default());
                w.heal(a, b);
            }
        }
        w
    }

    pub(super) fn fresh_hubs(&mut self, node: usize) -> Vec<Hub> {
        (0..self.workers)
            .map(|id| {
                let mut epochs = fastrand::Rng::with_seed(self.rng.u64(..));
                Hub::new(
                    id,
                    self.cfg.clone(),
                    Topology::cluster(node, self.seeds.clone(), self.workers),
                    Box::new(move || epochs.u64(..)),
                )
            })
            .collect()
    }

    /// One random step.
    pub fn step(&mut self) -> Outcome {
        let roll = self.rng.u32(0..100);
        match roll {
            0..60 => {
                self.deliver_one();
            }
            60..85 => self.client_action(),
            85..96 => {
                let ms = self.rng.u64(1..200);
                if (self.planned || self.crashes) && !self.quiet() {
                    self.deliver_one();
                } else {
                    self.advance(ms);
                }
            }
            _ if self.planned => self.planned_move(),
            _ if self.crashes => self.one_crash(),
            _ => self.fault(),
        }
        match self.violation.take() {
            Some(v) => Outcome::Violation(v),
            None => Outcome::Ok,
        }
    }

    fn fail(&mut self, v: String) {
        self.violation.get_or_insert(v);
    }

    // ----- queues -----

    /// Deliver the head of one random non-empty queue. Returns whether there was one.
    pub(super) fn deliver_one(&mut self) -> bool {
        let mut queues: Vec<u8> = Vec::new();
        if self.mail.values().any(|q| !q.is_empty()) {
            queues.push(0);
        }
        if self.inbox.values().any(|q| !q.is_empty()) {
            queues.push(1);
        }
        if self
            .links
            .values()
            .any(|l| l.flight.iter().any(|f| !f.is_empty()))
        {
            queues.push(2);
        }
        let owing: Vec<(usize, usize)> = (0..self.nodes.len())
            .flat_map(|n| (0..self.workers).map(move |w| (n, w)))
            .filter(|&(n, w)| self.nodes[n].up && self.nodes[n].hubs[w].acks_owed() > 0)
            .collect();
        if !owing.is_empty() {
            // A worker ends its batch: the standby's acknowledgements go out.
            queues.push(3);
        }
        let Some(&kind) = (!queues.is_empty()).then(|| &queues[self.rng.usize(..queues.len())])
        else {
            return false;
        };
        if kind == 3 {
            let (n, w) = owing[self.rng.usize(..owing.len())];
            self.nodes[n].hubs[w].flush_acks();
            self.drain(n, w);
            return true;
        }
        match kind {
            0 => {
                let keys: Vec<_> = self
                    .mail
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(k, _)| *k)
                    .collect();
                let key = keys[self.rng.usize(..keys.len())];
                let Some(mail) = self.mail.get_mut(&key).and_then(|q| q.pop_front()) else {
                    return true;
                };
                let (n, from, to) = key;
                let now = self.now;
                trace!(self, "node {n} worker {from} -> {to}: {mail:?}");
                self.nodes[n].hubs[to].handle_mail(mail, now);
                self.drain(n, to);
            }
            1 => {
                let keys: Vec<_> = self
                    .inbox
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(k, _)| *k)
                    .collect();
                let key = keys[self.rng.usize(..keys.len())];
                let Some(item) = self.inbox.get_mut(&key).and_then(|q| q.pop_front()) else {
                    return true;
                };
                let (n, peer, w) = key;
                let now = self.now;
                match &item {
                    FromPeer::Msg(m) => trace!(self, "node {peer} => node {n} worker {w}: {m:?}"),
                    FromPeer::Link(up, s) => {
                        trace!(
                            self,
                            "node {n} worker {w}: link to {peer} up={up} session {s}"
                        )
                    }
                }
                match item {
                    FromPeer::Msg(msg) => self.nodes[n].hubs[w].handle_peer(
                        peer,
                        msg,
                        crate::hub::Arrival::UNTIMED,
                        now,
                    ),
                    FromPeer::Link(up, s) => self.nodes[n].hubs[w].handle_link(peer, up, s, now),
                }
                self.drain(n, w);
            }
            _ => {
                let keys: Vec<_> = self
                    .links
                    .iter()
                    .flat_map(|(k, l)| {
                        (0..2)
                            .filter(|&d| !l.flight[d].is_empty())
                            .map(move |d| (*k, d))
                    })
                    .collect();
                let ((a, b), d) = keys[self.rng.usize(..keys.len())];
                let Some(msg) = self
                    .links
                    .get_mut(&(a, b))
                    .and_then(|l| l.flight[d].pop_front())
                else {
                    return true;
                };
                let (from, to) = if d == 0 { (a, b) } else { (b, a) };
                self.arrive(from, to, msg);
            }
        }
        true
    }

    /// A message reached node `to` over the link from `from`: into the queue of the
    /// worker that handles it.
    pub(super) fn arrive(&mut self, from: usize, to: usize, msg: PeerMsg) {
        let workers: Vec<usize> = match msg.route(self.workers) {
            crate::hub::Route::Worker(w) => vec![w],
            crate::hub::Route::Every => (0..self.workers).collect(),
        };
        for w in workers {
            self.inbox
                .entry((to, from, w))
                .or_default()
                .push_back(FromPeer::Msg(msg.clone()));
        }
    }

    /// Carry out what hub `(n, w)` decided (the executor's job).
    pub(super) fn drain(&mut self, n: usize, w: usize) {
        loop {
            let node = &mut self.nodes[n];
            if let Some(s) = node.hubs[w].poll_stored() {
                node.disk.write(s, self.now);
                continue;
            }
            let hub = &mut node.hubs[w];
            if let Some(effect) = hub.poll_conn() {
                match effect {
                    ToConn::Send(key, frame) => self.hand_to_client(
                        At {
                            node: n,
                            worker: w,
                            key,
                        },
                        &frame,
                    ),
                    ToConn::Broadcast { room, frame, .. } => {
                        let keys = self.nodes[n].hubs[w].subscribers(&room).to_vec();
                        for key in keys {
                            self.hand_to_client(
                                At {
                                    node: n,
                                    worker: w,
                                    key,
                                },
                                &frame,
                            );
                        }
                    }
                    ToConn::Close(key, code, _) | ToConn::Kick { key, code, .. } => {
                        trace!(self, "node {n} worker {w}: close {key:?} {code}");
                        if let Some(&c) = self.by_conn.get(&At {
                            node: n,
                            worker: w,
                            key,
                        }) {
                            self.clients[c].closing = true;
                        }
                    }
                }
                continue;
            }
            if let Some((to, mail)) = hub.poll_mail() {
                self.mail.entry((n, w, to)).or_default().push_back(mail);
                continue;
            }
            if let Some((peers, msg)) = hub.poll_peer() {
                for p in (0..64).filter(|p| peers & (1 << p) != 0) {
                    let (lo, hi) = (n.min(p), n.max(p));
                    let session = self.nodes[n].hubs[w].session(p);
                    // As the mesh does: only on the session the sender saw come up.
                    if let Some(link) = self.links.get(&(lo, hi))
                        && link.connected
                        && link.session == session
                    {
                        self.send_peer(n, p, &msg);
                    }
                }
                continue;
            }
            if let Some(event) = hub.poll_event() {
                // The app hears of each stamped client message once, from its owner.
                if let crate::hub::HubEvent::Published {
                    room,
                    epoch,
                    seq,
                    data,
                    ..
                } = event
                {
                    let id: serde_json::Value =
                        serde_json::from_str(data.get()).unwrap_or_default();
                    let id = id["id"].as_u64().unwrap_or(u64::MAX);
                    if !room.starts_with("chat:") {
                        self.fail(format!("a publish event for {room}, not in publish_rooms"));
                    } else if !self.announced.insert((room.to_string(), epoch.0, seq)) {
                        self.fail(format!(
                            "{room} seq {seq} epoch {:x} announced twice",
                            epoch.0
                        ));
                    } else if let Err(v) = record(&mut self.ledger, &room, epoch.0, seq, id) {
                        self.fail(format!("publish event: {v}"));
                    }
                }
                continue;
            }
            if let Some((req, reply)) = hub.poll_reply() {
                match reply {
                    Reply::Published(s) => {
                        if let Some((room, data)) = self.asked.remove(&(n, w, req))
                            && let Err(v) = record(&mut self.ledger, &room, s.epoch.0, s.seq, data)
                        {
                            self.fail(format!("publish answer: {v}"));
                        }
                    }
                    Reply::History(json) => {
                        if let Some(room) = self.history_asked.remove(&(n, w, req))
                            && let Err(v) = check_history(&mut self.ledger, &room, &json)
                        {
                            self.fail(format!("history of {room}: {v}: {json}"));
                        }
                    }
                    Reply::Rooms { rooms, missing, .. } => {
                        self.rooms_answer = Some((rooms, missing));
                    }
                    Reply::Presence(_) | Reply::Disconnected { .. } => {}
                }
                continue;
            }
            break;
        }
    }

    fn hand_to_client(&mut self, at: At, frame: &bytes::Bytes) {
        let Some(&c) = self.by_conn.get(&at) else {
            return; // a connection that went away
        };
        if self.clients[c].closing {
            return; // closing: nothing more is queued to it
        }
        let before = self.clients[c].unasked;
        if let Err(v) = self.clients[c].receive(frame, &mut self.ledger) {
            self.fail(format!("client {c} at {at:?}: {v}"));
        }
        if (self.planned || self.crashes) && self.clients[c].unasked > before {
            let world = if self.planned {
                "planned moves"
            } else {
                "crashes one at a time"
            };
            self.fail(format!(
                "client {c} at {at:?} had to re-sync in a world of {world} only: {}",
                String::from_utf8_lossy(&frame[2..])
            ));
        }
    }

    // ----- time -----

    pub(super) fn advance(&mut self, ms: Ms) {
        self.now += ms;
        while self.next_tick <= self.now {
            let now = self.next_tick;
            for n in 0..self.nodes.len() {
                if !self.nodes[n].up {
                    continue;
                }
                for w in 0..self.workers {
                    self.nodes[n].hubs[w].handle_tick(now);
                    self.drain(n, w);
                }
            }
            self.next_tick += TICK;
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].stop_at.is_some_and(|t| t <= self.now) {
                self.stop(n);
            }
        }
    }

    // ----- clients -----

    fn client_action(&mut self) {
        let c = self.rng.usize(..self.clients.len());
        let Some(at) = self.clients[c].at else {
            self.connect(c);
            return;
        };
        if self.clients[c].closing {
            self.disconnect(c);
            return;
        }
        let now = self.now;
        let user = self.clients[c].user.clone();
        match self.rng.u32(0..100) {
            0..30 => {
                let room = ROOMS[self.rng.usize(..ROOMS.len())];
                if self.clients[c].rooms.contains_key(room) {
                    return;
                }
                let since = match self.rng.u32(0..10) {
                    0..7 => self.clients[c].cursors.get(room).copied(),
                    7 => Some((self.rng.u64(..), self.rng.u64(0..5))), // a stranger's cursor
                    _ => None,
                };
                let cursor = since.map(|(e, s)| crate::protocol::Cursor {
                    epoch: crate::protocol::Epoch(e),
                    seq: s,
                });
                trace!(
                    self,
                    "client {c} at {at:?} ({user:?}) subscribes {room} since {since:?}"
                );
                self.clients[c]
                    .rooms
                    .insert(room.to_owned(), Sub::Pending { since });
                let hub = &mut self.nodes[at.node].hubs[at.worker];
                hub.handle_subscribe(at.key, room, cursor, user.as_deref().map(Arc::from), now);
                self.drain(at.node, at.worker);
            }
            30..40 => {
                let rooms: Vec<String> = self.clients[c]
                    .rooms
                    .keys()
                    .filter(|r| !r.starts_with("user:"))
                    .cloned()
                    .collect();
                if rooms.is_empty() {
                    return;
                }
                let room = rooms[self.rng.usize(..rooms.len())].clone();
                trace!(self, "client {c} at {at:?} unsubscribes {room}");
                self.clients[c].rooms.remove(&room);
                let hub = &mut self.nodes[at.node].hubs[at.worker];
                hub.handle_leave(at.key, &Arc::from(room.as_str()), user.is_some(), now);
                self.drain(at.node, at.worker);
            }
            40..80 => {
                // Now and then a client repeats an earlier publish of its own with the
                // same idempotency key (as after a lost ack): stamped once per epoch.
                let mine: Vec<usize> = (0..self.keyed.len())
                    .filter(|&i| self.keyed[i].1 == c)
                    .collect();
                let (room, data, idempotency) = if !mine.is_empty() && self.rng.u32(0..4) == 0 {
                    let (room, _, data) = self.keyed[mine[self.rng.usize(..mine.len())]].clone();
                    (room, data, true)
                } else {
                    let room = if self.rng.u32(0..8) == 0 {
                        format!("user:{}", USERS[self.rng.usize(..USERS.len())])
                    } else {
                        ROOMS[self.rng.usize(..ROOMS.len())].to_owned()
                    };
                    let data = self.next_data;
                    self.next_data += 1;
                    let keyed = self.rng.u32(0..3) == 0;
                    if keyed {
                        self.keyed.push((room.clone(), c, data));
                    }
                    self.ledger.from.insert(data, user.clone());
                    (room, data, keyed)
                };
                let origin = crate::hub::Origin {
                    from: user.clone(),
                    idempotency_key: idempotency.then(|| format!("k{data}")),
                    client: true,
                };
                trace!(
                    self,
                    "client {c} at {at:?} publishes {data} to {room} (keyed: {idempotency})"
                );
                let json = RawValue::from_string(format!("{{\"id\":{data}}}")).expect("JSON");
                let reply = self.rng.bool().then(|| {
                    self.next_req += 1;
                    self.asked
                        .insert((at.node, at.worker, self.next_req), (room.clone(), data));
                    self.next_req
                });
                let hub = &mut self.nodes[at.node].hubs[at.worker];
                hub.handle_publish(
                    &room,
                    &json,
                    None,
                    origin,
                    reply,
                    crate::hub::Arrival::UNTIMED,
                    now,
                );
                self.drain(at.node, at.worker);
            }
            80..85 => {
                self.next_req += 1;
                let room = ROOMS[self.rng.usize(..ROOMS.len())];
                let req = self.next_req;
                self.nodes[at.node].hubs[at.worker].handle_presence(room, req, now);
                self.drain(at.node, at.worker);
            }
            88..90 => {
                // The app disconnects a user everywhere (`POST /v1/disconnect`).
                self.next_req += 1;
                let user = USERS[self.rng.usize(..USERS.len())].to_owned();
                trace!(
                    self,
                    "the app disconnects {user} via node {} worker {}", at.node, at.worker
                );
                let query = crate::hub::Query::Disconnect {
                    target: crate::hub::Target::User(user),
                    code: 4010,
                    reason: String::new(),
                    reconnect: true,
                };
                self.nodes[at.node].hubs[at.worker].handle_query(query, self.next_req, 1_000, now);
                self.drain(at.node, at.worker);
            }
            85..88 => {
                // The app reads a room's history (as `GET /v1/history` does).
                self.next_req += 1;
                let room = ROOMS[self.rng.usize(..ROOMS.len())];
                let (req, since, limit) = (self.next_req, self.rng.u64(0..6), self.rng.usize(1..8));
                self.history_asked
                    .insert((at.node, at.worker, req), room.to_owned());
                self.nodes[at.node].hubs[at.worker].handle_history(room, since, limit, req, now);
                self.drain(at.node, at.worker);
            }
            _ => self.disconnect(c),
        }
    }

    /// Connect client `c` to a random live node and worker (identified clients join
    /// their personal room).
    fn connect(&mut self, c: usize) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].up && self.nodes[n].stop_at.is_none())
            .collect();
        if up.is_empty() {
            return;
        }
        let node = up[self.rng.usize(..up.len())];
        let worker = self.rng.usize(..self.workers);
        self.next_slot += 1;
        let at = At {
            node,
            worker,
            key: ConnKey {
                slot: self.next_slot,
                generation: 1,
            },
        };
        trace!(
            self,
            "client {c} ({:?}) connects at {at:?}", self.clients[c].user
        );
        let client = &mut self.clients[c];
        client.at = Some(at);
        client.closing = false;
        client.rooms.clear();
        self.by_conn.insert(at, c);
        if let Some(user) = client.user.clone() {
            let room = format!("user:{user}");
            client
                .rooms
                .insert(room.clone(), Sub::Pending { since: None });
            let now = self.now;
            self.nodes[node].hubs[worker].handle_subscribe(
                at.key,
                &room,
                None,
                Some(Arc::from(user)),
                now,
            );
            self.drain(node, worker);
        }
    }

    /// The connection of client `c` ends: it leaves its rooms.
    pub(super) fn disconnect(&mut self, c: usize) {
        let Some(at) = self.clients[c].at.take() else {
            return;
        };
        self.by_conn.remove(&at);
        trace!(self, "client {c} at {at:?} disconnects");
        let rooms = std::mem::take(&mut self.clients[c].rooms);
        self.clients[c].closing = false;
        if !self.nodes[at.node].up {
            return;
        }
        let identified = self.clients[c].user.is_some();
        let now = self.now;
        for room in rooms.keys() {
            self.nodes[at.node].hubs[at.worker].handle_leave(
                at.key,
                &Arc::from(room.as_str()),
                identified,
                now,
            );
        }
        self.drain(at.node, at.worker);
    }
}
