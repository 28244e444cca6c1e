//! The router, sans-IO: one [`Hub`] per worker decides where every message goes.
//!
//! A hub owns the rooms of its worker: the subscriber index of its connections
//! (`local`), the rooms it sequences as their owner (`owner`: seq, epoch, replay ring,
//! interested workers and nodes, roster, the per-user cap), the rooms owned by
//! another node that it is home to (`home`: mirrors), and what follows from links
//! going up and down (`cluster`). It reads no clock, opens no socket, spawns nothing
//! and draws no random number of its own: inputs carry `now`, epochs come from the
//! source it was built with, and every consequence is an effect its caller polls.
//!
//! ```text
//!           client requests ─┐                  ┌─▶ poll_conn:  frames, broadcasts, closes
//!   mail from other workers ─┤                  ├─▶ poll_mail:  mail for other workers
//!  messages from other nodes ┼─▶ handle_* ─ Hub ┼─▶ poll_peer:  messages for other nodes
//!       links up and down ───┤   (now: Ms)      ├─▶ poll_reply: answers to this worker's requests
//!                    ticks ──┘                  └─▶ poll_timeout: when to tick next
//! ```
//!
//! # Calling order
//!
//! After every `handle_*` call, drain the effects before the next input: first
//! `poll_conn` (a broadcast is executed against [`Hub::subscribers`] *as they are
//! then*, so a subscriber that turns live in a later input must not see an earlier
//! broadcast), then `poll_mail`, `poll_peer` and `poll_reply` in any order (they go
//! to different places; each keeps its own order). Call [`Hub::handle_tick`] at or
//! after [`Hub::poll_timeout`]'s deadline, and at least every `tick` anyway (rooms
//! age). Mail and peer messages must be delivered in the order they were polled,
//! per destination (worker inboxes and mesh links are FIFO): the protocol's
//! "no gap, no duplicate" rests on it. After a batch of inputs, before writing to
//! the links, call [`Hub::flush_acks`]: a standby acknowledges what it received
//! once per batch (the owners hold those messages until then).
//!
//! # How a message travels
//!
//! - `sub` on worker W: the connection joins W's index as *pending* and W tells the
//!   room's home worker H on this node. If this node owns the room, H is its owner:
//!   it marks W interested and answers with epoch, latest seq and the replay. If a
//!   peer owns it, H records W in the room's *mirror* and forwards the subscription
//!   to the owner node; the owner marks this node interested and answers through H.
//!   Every hop is FIFO and the answer and the messages after it travel the same path,
//!   so the subscriber turns live on the answer and sees exactly the messages after
//!   `seq`, none twice.
//! - `pub` anywhere goes to the owner (H, or the owner node), which stamps the seq,
//!   encodes one frame, and sends it once to each interested worker and once to each
//!   interested node. A node's H fans a message from a peer out to its own interested
//!   workers and never forwards it to another node (one hop).
//! - Ownership follows rendezvous hashing over the live nodes, so a link event can
//!   move rooms: see `cluster`.

mod cluster;
pub mod dedup;
pub mod effects;
pub mod gather;
mod handoff;
mod home;
pub mod id;
mod local;
pub mod msg;
mod owner;
mod park;
pub mod presence;
pub mod rendezvous;
mod replica;
#[cfg(test)]
mod replica_tests;
mod replicate;
pub mod ring;
pub mod room;
#[cfg(test)]
mod testnet;
pub mod topology;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::value::RawValue;

pub use effects::{HubEvent, PeerSet, Stamped, ToConn};
pub use gather::{Query, Target};
pub use id::{Arrival, ConnKey, Ms};
pub use msg::{Mail, Origin, PeerMsg, Reply, Route, Stamp};
pub use topology::Topology;

use effects::Effects;
use home::Mirror;
use local::LocalRoom;
use ring::{EvictCounts, Miss};
use room::OwnedRoom;

use crate::config::Config;
use crate::protocol::Cursor;

/// What the hub needs from the configuration (for one worker).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Messages kept per room (`rooms.replay_messages`).
    pub replay_messages: usize,
    /// How long a message stays replayable, ms (`rooms.replay_seconds`).
    pub replay_ms: Ms,
    /// Bytes of history per room (`rooms.replay_bytes`).
    pub replay_bytes: usize,
    /// This worker's share of `rooms.history_budget_bytes`.
    pub history_budget: usize,
    /// Room-name prefixes that announce joins and leaves.
    pub presence_events: Vec<String>,
    /// How long a join or leave must hold before it is announced, ms.
    pub presence_debounce_ms: Ms,
    /// A lost node's roster entries are kept this long, ms.
    pub presence_lease_ms: Ms,
    /// Connections per user across the cluster (0: no cap).
    pub max_connections_per_user: u32,
    /// The largest replay sent to another node in one answer, bytes.
    pub peer_replay_bytes: usize,
    /// How often the caller ticks, ms (the hub's timers are that coarse).
    pub tick_ms: Ms,
    /// How long a mirror whose owner gave the room up waits for this node's own
    /// view to move it before subscribing again anyway, ms (`mesh.dead_after_ms`).
    pub moved_grace_ms: Ms,
    /// How long an idempotency key is remembered, ms (`rooms.idempotency_window_s`).
    pub idempotency_window_ms: Ms,
    /// This worker's share of `rooms.idempotency_keys`.
    pub idempotency_keys: usize,
    /// Rooms whose client publishes the app hears of (patterns; empty: none).
    pub hook_publish_rooms: Vec<String>,
    /// Rooms whose joins and leaves the app hears of (patterns; empty: none).
    pub hook_presence_rooms: Vec<String>,
    /// Stamped messages go to the worker's log (`rooms.data_dir` is set): see
    /// [`Hub::poll_stored`].
    pub durable: bool,
    /// At start, how long to wait for each peer's handoffs before starting rooms
    /// without them, ms (`mesh.join_timeout_ms`).
    pub join_ms: Ms,
    /// History bytes one handoff burst (a drain, a link that came up) may put on
    /// the way to one node: this worker's share of a quarter of
    /// `mesh.queue_bytes`, so handing rooms over cannot fill the link's queue.
    /// Rooms past it go with their position and keys but no history.
    pub handoff_bytes: usize,
    /// Each room keeps a copy on a standby node, which continues it if the owner
    /// is lost (`mesh.replicate`; only with three nodes or more).
    pub replicate: bool,
}

#[cfg(test)]
impl HubConfig {
    /// A small configuration for unit tests (change what a test is about).
    pub(crate) fn for_tests() -> Self {
        Self {
            replay_messages: 16,
            replay_ms: 60_000,
            replay_bytes: 1 << 20,
            history_budget: 1 << 20,
            presence_events: Vec::new(),
            presence_debounce_ms: 300,
            presence_lease_ms: 1_000,
            max_connections_per_user: 0,
            peer_replay_bytes: 1 << 16,
            tick_ms: 100,
            moved_grace_ms: 2_000,
            idempotency_window_ms: 60_000,
            idempotency_keys: 1024,
            hook_publish_rooms: Vec::new(),
            hook_presence_rooms: Vec::new(),
            durable: false,
            join_ms: 5_000,
            handoff_bytes: 1 << 20,
            replicate: false,
        }
    }
}

impl HubConfig {
    /// The hub's part of `config`, for one of `workers` workers.
    pub fn from_config(c: &Config, workers: usize) -> Self {
        Self {
            replay_messages: c.rooms.replay_messages,
            replay_ms: c.rooms.replay_seconds.saturating_mul(1000),
            replay_bytes: c.rooms.replay_bytes,
            history_budget: c.rooms.history_budget_bytes / workers.max(1),
            presence_events: c.rooms.presence_events.clone(),
            presence_debounce_ms: c.rooms.presence_debounce_ms,
            presence_lease_ms: c.mesh.presence_lease_ms,
            max_connections_per_user: u32::try_from(c.auth.max_connections_per_user)
                .unwrap_or(u32::MAX),
            peer_replay_bytes: c.mesh.max_frame_bytes / 2,
            tick_ms: c.heartbeat.tick_ms,
            moved_grace_ms: c.mesh.dead_after_ms,
            idempotency_window_ms: c.rooms.idempotency_window_s.saturating_mul(1000),
            idempotency_keys: c.rooms.idempotency_keys.div_ceil(workers.max(1)),
            hook_publish_rooms: if c.hooks_want("publish") {
                c.hooks.publish_rooms.clone()
            } else {
                Vec::new()
            },
            hook_presence_rooms: if c.hooks_want("join") || c.hooks_want("leave") {
                c.hooks.presence_rooms.clone()
            } else {
                Vec::new()
            },
            durable: c.rooms.data_dir.is_some(),
            join_ms: c.mesh.join_timeout_ms,
            handoff_bytes: c.mesh.queue_bytes / 4 / workers.max(1),
            replicate: c.mesh.replicate,
        }
    }

    /// Whether the owner settles `room`'s joins and leaves (for its subscribers, or
    /// for the app).
    fn tracks_presence(&self, room: &str) -> bool {
        self.presence_events(room) || self.hook_presence(room)
    }

    fn hook_publish(&self, room: &str) -> bool {
        self.hook_publish_rooms
            .iter()
            .any(|p| crate::auth::matches(p, room))
    }

    fn hook_presence(&self, room: &str) -> bool {
        self.hook_presence_rooms
            .iter()
            .any(|p| crate::auth::matches(p, room))
    }

    fn presence_events(&self, room: &str) -> bool {
        self.presence_events
            .iter()
            .any(|p| room.starts_with(p.as_str()))
    }
}

/// The hub's counters (plain integers: one worker writes them).
#[derive(Debug, Clone, Default)]
pub struct HubStats {
    /// Messages stamped as room owner.
    pub published: u64,
    /// Room messages sent to peer nodes (one per message per interested node).
    pub mesh_forwarded: u64,
    /// Room messages from peer nodes fanned out to this node's workers.
    pub mesh_delivered: u64,
    /// Rooms that moved to another owner (disowned here or rehomed from a mirror).
    pub owner_moves: u64,
    /// Rooms whose subscribers here resumed from their cursors because messages for
    /// them were dropped on a slow link (`PeerMsg::Lagged`).
    pub lag_resumes: u64,
    /// Rooms handed to their next owner (epoch and history kept).
    pub handoffs_out: u64,
    /// Rooms taken over from another node by handoff.
    pub handoffs_in: u64,
    /// Handoffs refused: the room already lived here (the sender's copy is lost).
    pub handoffs_refused: u64,
    /// Requests held because a handoff of their room could be on its way.
    pub parked: u64,
    /// Held requests handled without the handoff they waited for.
    pub park_timeouts: u64,
    /// Waits for a peer's handoffs that ran out (`HandoffDone` never came).
    pub handoff_waits_expired: u64,
    /// Copies sent to standbys (`Seed`).
    pub seeds: u64,
    /// Elections this worker ran for a room's next term (it asks again every tick).
    pub elections: u64,
    /// Elections lost (or run out).
    pub elections_lost: u64,
    /// Rooms this worker took over from a lost owner's copy, same epoch.
    pub promotions: u64,
    /// Owned rooms given up: no term could be won (cut off from most nodes).
    pub rooms_given_up: u64,
    /// Times a standby refused this worker's messages (it granted a later term).
    pub standby_refusals: u64,
    /// Publishes recognised as repeats of an idempotency key (not delivered again).
    pub duplicates: u64,
    /// Resume requests answered with `recovered: true`.
    pub resumes_recovered: u64,
    /// Resume requests answered with `recovered: false`, by reason.
    pub resumes_missed: [u64; Miss::ALL.len()],
    /// History messages evicted, by reason.
    pub history_evicted: EvictCounts,
}

impl HubStats {
    fn resumed(&mut self, asked: bool, miss: Option<Miss>) {
        match (asked, miss) {
            (false, _) => {}
            (true, None) => self.resumes_recovered += 1,
            (true, Some(m)) => self.resumes_missed[m as usize] += 1,
        }
    }

    fn evicted(&mut self, e: &EvictCounts) {
        for (total, n) in self.history_evicted.iter_mut().zip(e) {
            *total += n;
        }
    }
}

/// Where an epoch comes from: random in a node, seeded in the simulator.
pub type EpochSource = Box<dyn FnMut() -> u64>;

/// A room as the log kept it, for [`Hub::restore`].
#[derive(Debug)]
pub struct Restored {
    /// The room.
    pub room: String,
    /// Its epoch.
    pub epoch: u64,
    /// The latest seq stamped in it.
    pub seq: u64,
    /// The latest term it went on under (0: none; see `hub::replica`).
    pub term: u64,
    /// Its history: `(seq, age in ms, frame)`, consecutive seqs ending at `seq`,
    /// oldest first.
    pub messages: Vec<(u64, Ms, bytes::Bytes)>,
    /// Idempotency keys stamped in its epoch within the window: `(scoped key, seq,
    /// age in ms)`.
    pub keys: Vec<(String, u64, Ms)>,
}

/// One worker's router (see the module docs for what it does and how to drive it).
pub struct Hub {
    /// This worker's index on its node.
    id: usize,
    cfg: HubConfig,
    topo: Topology,
    epochs: EpochSource,
    /// Rooms with subscribers on this worker.
    local: HashMap<Arc<str>, LocalRoom>,
    /// The user of each identified subscriber, and in how many rooms it is (a room
    /// that moves subscribes them again, and the new owner's roster needs the user).
    users: HashMap<ConnKey, (Arc<str>, u32)>,
    /// Rooms this worker owns (sequences).
    owned: HashMap<Arc<str>, OwnedRoom>,
    /// Rooms this worker is home to that a peer node owns.
    mirrors: HashMap<Arc<str>, Mirror>,
    /// Mirrors waiting out a move their owner announced: `(until, room)`; entries
    /// may be stale (checked when due).
    moves: Vec<(Ms, Arc<str>)>,
    /// Until when a lost peer's roster entries are kept, by node index.
    lease: Vec<Option<Ms>>,
    /// The link session to each node this worker last saw come up.
    sessions: Vec<u64>,
    /// The last subscription attempt number handed out.
    attempts: u32,
    /// Owned rooms with presence changes waiting for their debounce window.
    presence_dirty: Vec<Arc<str>>,
    /// Bytes of history the owned rooms hold (bounded by `cfg.history_budget`).
    history_bytes: usize,
    /// Idempotency keys of the owned rooms' recent publishes.
    dedup: dedup::Dedup,
    /// Questions this worker asked every worker, by request.
    gathers: HashMap<u64, gather::Gather>,
    /// Owned rooms by the age of their oldest message, oldest first; entries may be
    /// stale (checked when popped).
    history_heap: BinaryHeap<Reverse<(Ms, Arc<str>)>>,
    /// Rooms handed over and waited for (`handoff`).
    handoffs: handoff::Handoffs,
    /// Copies kept as a standby, terms granted, elections run (`replica`).
    repl: replica::Replicas,
    stats: HubStats,
    out: Effects,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("id", &self.id)
            .field("local", &self.local.len())
            .field("owned", &self.owned.len())
            .field("mirrors", &self.mirrors.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// The router of worker `id` in `topo`, drawing new epochs from `epochs`.
    pub fn new(id: usize, cfg: HubConfig, topo: Topology, epochs: EpochSource) -> Self {
        let nodes = topo.nodes();
        let dedup = dedup::Dedup::new(cfg.idempotency_window_ms, cfg.idempotency_keys);
        Self {
            id,
            cfg,
            topo,
            epochs,
            local: HashMap::new(),
            users: HashMap::new(),
            owned: HashMap::new(),
            mirrors: HashMap::new(),
            moves: Vec::new(),
            lease: vec![None; nodes],
            sessions: vec![0; nodes],
            attempts: 0,
            presence_dirty: Vec::new(),
            history_bytes: 0,
            dedup,
            gathers: HashMap::new(),
            history_heap: BinaryHeap::new(),
            handoffs: handoff::Handoffs::new(nodes),
            repl: replica::Replicas::default(),
            stats: HubStats::default(),
            out: Effects::default(),
        }
    }

    // ----- inputs -----

    /// A connection of this worker subscribes to `room` (the caller checked that it
    /// may, and that it is not subscribed already). It is pending until the owner
    /// answers. Returns the room's shared name, for the connection's own list.
    pub fn handle_subscribe(
        &mut self,
        conn: ConnKey,
        room: &str,
        since: Option<Cursor>,
        user: Option<Arc<str>>,
        now: Ms,
    ) -> Arc<str> {
        self.subscribe_local(conn, room, since, user, now)
    }

    /// A connection of this worker left `room` (unsubscribed, or is gone);
    /// `identified`: it had a user (the roster counts it).
    pub fn handle_leave(&mut self, conn: ConnKey, room: &Arc<str>, identified: bool, now: Ms) {
        self.leave_local(room, conn, identified, now);
    }

    /// Publish (from a client of this worker, or the API): stamped here when this
    /// worker owns the room, else sent to the owner. `reply` is this worker's request
    /// id for the epoch and seq (answered through `poll_reply`). `at` is when the
    /// message reached the node (for latency).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_publish(
        &mut self,
        room: &str,
        data: &RawValue,
        key: Option<&str>,
        origin: Origin,
        reply: Option<u64>,
        at: Arrival,
        now: Ms,
    ) {
        self.publish(room, data, key, origin, reply, at, now);
    }

    /// The roster of `room`, for this worker's request `req` (answered through
    /// `poll_reply`, from the owner wherever it is).
    pub fn handle_presence(&mut self, room: &str, req: u64, now: Ms) {
        self.presence(room, req, now);
    }

    /// The history of `room` after seq `since` (at most `limit` messages), for this
    /// worker's request `req` (answered through `poll_reply`, from the owner
    /// wherever it is).
    pub fn handle_history(&mut self, room: &str, since: u64, limit: usize, req: u64, now: Ms) {
        self.history(room, since, limit, req, now);
    }

    /// Ask every worker of every live node `query` (rooms with subscribers, or a
    /// disconnect), for this worker's request `req`; answered through `poll_reply`
    /// once all have answered, or after `timeout` ms with what came.
    pub fn handle_query(&mut self, query: Query, req: u64, timeout: Ms, now: Ms) {
        self.gather(query, req, timeout, now);
    }

    /// Mail from another worker of this node.
    pub fn handle_mail(&mut self, mail: Mail, now: Ms) {
        self.on_mail(mail, now);
    }

    /// A message from node `peer` (routed to this worker by [`PeerMsg::route`]);
    /// `at` is when it arrived.
    pub fn handle_peer(&mut self, peer: usize, msg: PeerMsg, at: Arrival, now: Ms) {
        self.on_peer(peer, msg, at, now);
    }

    /// The link to node `peer` came up or went down; `session` numbers the link's
    /// sessions. Every worker gets every link event, in the order the link had them,
    /// and every message of a session is handled after its `up` and before its
    /// `down`. Messages for `peer` go out on the session this worker last saw come up
    /// ([`Hub::session`]): the caller must drop them if the link has moved on.
    pub fn handle_link(&mut self, peer: usize, up: bool, session: u64, now: Ms) {
        if let Some(s) = self.sessions.get_mut(peer)
            && up
        {
            *s = session;
        }
        self.on_link(peer, up, now);
    }

    /// The session of the link to `peer` that this worker last saw come up: the one
    /// its messages for `peer` are meant for.
    pub fn session(&self, peer: usize) -> u64 {
        self.sessions.get(peer).copied().unwrap_or(0)
    }

    /// Rooms read back from the log at start (see [`crate::store::recover`]): each
    /// becomes an owned room with its epoch, latest seq and history, and is kept
    /// for at least the replay window even if nobody comes back to it, so a client
    /// that resumes finds its place. Call before any other input.
    pub fn restore(&mut self, rooms: impl IntoIterator<Item = Restored>, now: Ms) {
        let mut keys = Vec::new();
        for r in rooms {
            self.restore_room(r, &mut keys, now);
        }
        // Oldest first, as the key store needs them.
        keys.sort();
        for (at, room, key, epoch, seq) in keys {
            self.dedup
                .restore(&room, &key, crate::protocol::Epoch(epoch), seq, at);
        }
    }

    /// The node starts (call once, after [`Hub::restore`] and before any other
    /// input): rooms it does not have wait up to [`HubConfig::join_ms`] for its
    /// peers to hand them over (a peer that owned them while this node was away
    /// hands them back when the link comes up).
    pub fn start(&mut self, now: Ms) {
        self.start_waiting(now);
    }

    /// This node leaves the cluster (it drains): every room this worker owns goes
    /// to its next owner with its epoch, seq and history, and its subscribers here
    /// follow it. Call on every worker before closing the clients; give the peer
    /// messages polled here time to leave before the process exits.
    pub fn handle_drain(&mut self, now: Ms) {
        self.leave_cluster(now);
    }

    /// Time passed: announce settled presence changes, expire lost nodes' roster
    /// entries, age history out and forget rooms nobody needs.
    pub fn handle_tick(&mut self, now: Ms) {
        self.expire_handoffs(now);
        self.tick_elections(now);
        self.settle_presence(now);
        self.expire_leases(now);
        self.expire_moves(now);
        self.expire_gathers(now);
        self.forget_idle_rooms(now);
    }

    // ----- outputs -----

    /// The next effect for this worker's connections.
    pub fn poll_conn(&mut self) -> Option<ToConn> {
        self.out.conns.pop_front()
    }

    /// The next mail for another worker: `(worker, mail)`.
    pub fn poll_mail(&mut self) -> Option<(usize, Mail)> {
        self.out.mail.pop_front()
    }

    /// The next message for other nodes: `(nodes, message)`, encode it once.
    pub fn poll_peer(&mut self) -> Option<(PeerSet, PeerMsg)> {
        self.out.peers.pop_front()
    }

    /// The next event for the app's webhooks.
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.out.events.pop_front()
    }

    /// The next answer to one of this worker's requests.
    pub fn poll_reply(&mut self) -> Option<(u64, Reply)> {
        self.out.replies.pop_front()
    }

    /// The next stamped message for the worker's log (only with
    /// [`HubConfig::durable`]). Write it before anything else polled in the same
    /// turn leaves the process: a message must not be seen by anyone before it is in
    /// the log, or a restart could stamp its seq again.
    pub fn poll_stored(&mut self) -> Option<Stamped> {
        self.out.stored.pop_front()
    }

    /// When [`Hub::handle_tick`] has something to do next (`None`: nothing timed).
    pub fn poll_timeout(&self) -> Option<Ms> {
        let presence = self
            .presence_dirty
            .iter()
            .filter_map(|r| self.owned.get(r)?.roster.changed_since())
            .min()
            .map(|t| t + self.cfg.presence_debounce_ms);
        let lease = self.lease.iter().flatten().min().copied();
        let history = self
            .history_heap
            .peek()
            .map(|Reverse((t, _))| t + self.cfg.replay_ms + 1);
        let moved = self.moves.iter().map(|(t, _)| *t).min();
        let gather = self.next_gather_deadline();
        let handoff = self.handoffs.next_deadline();
        let election = self.repl.next_deadline();
        [presence, lease, history, moved, gather, handoff, election]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- what the caller may look at -----

    /// The live subscribers of `room` on this worker (for a [`ToConn::Broadcast`]).
    pub fn subscribers(&self, room: &str) -> &[ConnKey] {
        self.local.get(room).map_or(&[], |l| l.live.as_slice())
    }

    /// The node topology as this worker sees it.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Rooms owned, rooms with local subscribers, interest entries (peers registered
    /// on owned rooms plus mirrors), history bytes (gauges).
    pub fn gauges(&self) -> (usize, usize, usize, usize) {
        let interest = self
            .owned
            .values()
            .map(|r| r.peers().count())
            .sum::<usize>()
            + self.mirrors.len();
        (
            self.owned.len(),
            self.local.len(),
            interest,
            self.history_bytes,
        )
    }

    /// An owned room's state, for tests and the simulator.
    pub fn owned_room(&self, room: &str) -> Option<&OwnedRoom> {
        self.owned.get(room)
    }

    /// The rooms this worker owns.
    pub fn owned_rooms(&self) -> impl Iterator<Item = (&str, &OwnedRoom)> {
        self.owned.iter().map(|(k, v)| (&**k, v))
    }

    /// The rooms this worker has subscribers of: `(room, live, pending)`.
    pub fn local_rooms(&self) -> impl Iterator<Item = (&str, &[ConnKey], &[(ConnKey, u32)])> {
        self.local
            .iter()
            .map(|(k, l)| (&**k, l.live.as_slice(), l.pending.as_slice()))
    }

    /// The rooms this worker mirrors for a peer owner: `(room, owner node)`.
    pub fn mirrored_rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.mirrors.iter().map(|(k, m)| (&**k, m.owner))
    }

    /// The owner node a mirrored room subscribed with.
    pub fn mirror_owner(&self, room: &str) -> Option<usize> {
        self.mirrors.get(room).map(|m| m.owner)
    }

    /// Idempotency keys held, and how many were forgotten early to stay under the
    /// cap.
    pub fn idempotency(&self) -> (usize, u64) {
        (self.dedup.len(), self.dedup.forgotten)
    }

    /// Standby copies kept here, and the bytes of their history (gauges).
    pub fn copies(&self) -> (usize, usize) {
        self.repl.gauges()
    }

    /// The copy this worker keeps of `room` as a standby: `(owner node, epoch,
    /// term, latest seq)`.
    pub fn copy_of(&self, room: &str) -> Option<(usize, u64, u64, u64)> {
        self.repl.copy_of(room)
    }

    /// Every copy this worker keeps: `(room, (owner node, epoch, term, seq))`.
    pub fn copies_held(&self) -> impl Iterator<Item = (&str, (usize, u64, u64, u64))> {
        self.repl.copies_held()
    }

    /// Elections this worker runs for a room's next term.
    pub fn elections(&self) -> usize {
        self.repl.elections()
    }

    /// Requests held until a handoff of their room may have come.
    pub fn parked(&self) -> usize {
        self.handoffs.parked()
    }

    /// Identified subscribers this worker remembers users for.
    pub fn users_len(&self) -> usize {
        self.users.len()
    }

    /// Whether nothing waits in the effect queues.
    pub fn is_quiet(&self) -> bool {
        self.out.is_empty()
    }

    /// This node's index.
    fn node(&self) -> usize {
        self.topo.me()
    }

    fn new_epoch(&mut self) -> crate::protocol::Epoch {
        crate::protocol::Epoch((self.epochs)())
    }
}
