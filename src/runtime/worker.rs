//! One worker: a thread pinned to a core, running a monoio runtime that owns a slab
//! of connections, the rooms this worker sequences, and the index of which local
//! connections listen to which room.
//!
//! Everything here is single-threaded: state lives in a `RefCell` that no borrow
//! holds across an `.await`. Other workers are reached only by [`Mail`].
//!
//! This file holds the state, the mail dispatch, and the outbound side (queueing
//! under the slow-consumer policies, flushing, closing). Room routing is in
//! `rooms.rs`; admission limits, heartbeats and drain in `lifecycle.rs`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;
use nix::sys::socket::{Shutdown, shutdown};
use slab::Slab;
use tracing::debug;

use super::mailbox::{Mail, Mailbox};
use super::rooms::{LocalRoom, Mirror};
use super::wheel::{Tick, Wheel};
use crate::config::{Config, SlowPolicy};
use crate::conn::outq::{Flushed, Out};
use crate::conn::{Conn, ConnId, ConnKey, Phase};
use crate::hub::room::OwnedRoom;
use crate::metrics::histogram::now_ns;
use crate::metrics::{Disconnect, Drop as DropReason, WorkerStats};
use crate::protocol::Epoch;
use crate::ws::close;
use crate::ws::frame::encode_close;
use crate::ws::handshake::HandshakeConfig;

/// Size of each worker's receive scratch buffer.
pub const SCRATCH: usize = 64 << 10;

/// What every worker shares: the configuration and the way to reach each other.
#[derive(Debug)]
pub struct Shared {
    /// The node configuration.
    pub config: Config,
    /// Handshake settings derived from it.
    pub handshake: HandshakeConfig,
    /// Mailbox of each worker, by index.
    pub mailboxes: Vec<Mailbox>,
    /// Set when the node stops accepting (shutdown); `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Open WebSocket connections on the node (checked against `max_connections`
    /// at each upgrade; touched on connect and disconnect only).
    pub connections: AtomicUsize,
    /// The effective node-wide connection cap (`limits.max_connections`, or what the
    /// open-file limit allows).
    pub max_connections: usize,
    /// Open connections per client address (only kept when a per-IP cap is set).
    pub per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// The cluster, when peers are configured.
    pub mesh: Option<Arc<crate::mesh::Mesh>>,
    /// Checks client tokens, when a key is configured.
    pub verifier: Option<crate::auth::Verifier>,
    /// Open connections per user (only kept when a per-user cap is set).
    pub per_user: Mutex<HashMap<Arc<str>, u32>>,
    /// TLS server configuration, when the client listener serves wss.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open HTTP API connections on the node (capped by `api.max_connections`).
    pub api_connections: AtomicUsize,
    /// The demo's guest tokens (with the demo on and anonymous clients allowed).
    pub demo: Option<crate::auth::Demo>,
}

impl Shared {
    /// Whether the node is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Answers a worker waits for at most at once (presence queries and API calls to
/// other workers and nodes); more are refused with `unavailable`.
pub const MAX_WAITING: usize = 4096;

/// How long a connection's request waits for another worker or node, in ms.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Who waits for an answer from another worker or node.
#[derive(Debug)]
enum Waiter {
    /// A task (an API request).
    Task(oneshot::Sender<Reply>),
    /// A connection (a `presence` request), with its request's `ref`.
    Conn {
        /// The connection.
        key: ConnKey,
        /// The request's `ref`, echoed in the answer.
        reference: Option<Box<serde_json::value::RawValue>>,
        /// When it was asked (wheel tick).
        since: Tick,
    },
}

/// A reply to a request a task made of another worker.
#[derive(Debug)]
pub enum Reply {
    /// A publish was stamped.
    Published(Epoch, u64),
    /// A worker's counters.
    Stats(Box<WorkerStats>),
    /// A room's roster (`presence` JSON).
    Presence(String),
}

/// The worker's mutable state.
pub struct State {
    /// This worker's index.
    pub id: usize,
    /// Shared configuration and mailboxes.
    pub shared: Arc<Shared>,
    /// Connections, by slot.
    pub conns: Slab<Conn>,
    next_generation: u32,
    /// Rooms with local subscribers.
    pub(super) local: HashMap<Arc<str>, LocalRoom>,
    /// Rooms this worker owns (sequences).
    pub(super) owned: HashMap<Arc<str>, OwnedRoom>,
    /// Bytes of history its owned rooms hold (bounded by its share of
    /// `rooms.history_budget_bytes`).
    pub(super) history_bytes: usize,
    /// Owned rooms by the age of their oldest message, oldest first (entries may be
    /// stale: checked when popped; see `rooms::account_history`).
    pub(super) history_heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, Arc<str>)>>,
    /// Rooms this worker is home to that a peer node owns.
    pub(super) mirrors: HashMap<Arc<str>, Mirror>,
    /// Until when a lost peer's roster entries are kept, by node index.
    pub(super) lease: Vec<Option<Instant>>,
    /// Owned rooms with presence changes waiting for their debounce window.
    pub(super) presence_dirty: Vec<Arc<str>>,
    /// Connections with output queued since the last flush.
    dirty: Vec<ConnKey>,
    /// Refused connections delivering their answer (see `conn::driver::refuse`).
    pub(crate) refusing: usize,
    /// Rate of `/demo/token` on this worker.
    pub(crate) demo_gate: crate::conn::rate::RateLimiter,
    /// Bytes of unfinished frames and messages held by this worker's connections
    /// (bounded by its share of `limits.partial_budget_bytes`).
    pub(crate) partial_bytes: usize,
    /// Counters.
    pub stats: WorkerStats,
    /// Tasks and connections waiting for a reply from another worker or node.
    requests: Slab<Waiter>,
    /// Heartbeat deadlines, one entry per open connection.
    pub(super) wheel: Wheel<ConnKey>,
    /// When this worker started: the origin of its ticks and milliseconds.
    pub(super) started: Instant,
}

/// A worker: its state, and the scratch buffer every socket read goes through.
pub struct Worker {
    /// This worker's index.
    pub id: usize,
    /// Shared configuration and mailboxes.
    pub shared: Arc<Shared>,
    /// Mutable state; never borrowed across an `.await`.
    pub state: RefCell<State>,
    /// Receive buffer shared by all connections of this worker.
    pub scratch: RefCell<Box<[u8]>>,
    /// Plaintext out of TLS sessions (empty without TLS).
    pub plain: RefCell<Box<[u8]>>,
    /// The client listener's fd, shut down to stop accepting when draining.
    pub listener_fd: Cell<Option<RawFd>>,
}

impl Worker {
    /// A worker with no connections.
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let plain = if shared.tls.is_some() { SCRATCH } else { 0 };
        Self {
            id,
            shared: shared.clone(),
            state: RefCell::new(State {
                id,
                shared,
                conns: Slab::new(),
                next_generation: 0,
                local: HashMap::new(),
                owned: HashMap::new(),
                history_bytes: 0,
                history_heap: std::collections::BinaryHeap::new(),
                mirrors: HashMap::new(),
                lease: Vec::new(),
                presence_dirty: Vec::new(),
                dirty: Vec::new(),
                partial_bytes: 0,
                refusing: 0,
                demo_gate: crate::conn::rate::RateLimiter::new(&crate::client::DEMO_RATE, 0),
                stats: WorkerStats {
                    worker: id,
                    ..WorkerStats::default()
                },
                requests: Slab::new(),
                wheel: Wheel::new(),
                started: Instant::now(),
            }),
            scratch: RefCell::new(vec![0u8; SCRATCH].into_boxed_slice()),
            plain: RefCell::new(vec![0u8; plain].into_boxed_slice()),
            listener_fd: Cell::new(None),
        }
    }

    /// Handle one piece of mail. Returns `false` on shutdown.
    pub fn handle_mail(self: &Rc<Self>, mail: Mail) -> bool {
        let mut st = self.state.borrow_mut();
        match mail {
            Mail::Subscribe {
                room,
                from,
                conn,
                since,
                user,
            } => st.home_subscribe(room, from, conn, since, user),
            Mail::SubAck { room, conn, ack } => st.on_suback(&room, conn, ack),
            Mail::Leave {
                room,
                from,
                conn,
                user,
                last,
            } => st.home_leave(&room, from, conn, user, last),
            Mail::Publish {
                room,
                data,
                key,
                reply,
                at,
            } => {
                let (epoch, seq) = st.owner_publish(&room, &data, key.as_deref(), at);
                if let Some(ticket) = reply {
                    st.reply_published(None, ticket, epoch, seq);
                }
            }
            Mail::Published { req, epoch, seq } => st.complete(req, Reply::Published(epoch, seq)),
            Mail::Deliver {
                room,
                frame,
                tag,
                at,
            } => st.deliver_local(&room, frame, tag, at),
            Mail::PresenceQuery { room, ticket } => {
                let json = st.roster_json(&room);
                st.answer_presence(ticket, json);
            }
            Mail::Presence { ticket, json } => st.answer_presence(ticket, json),
            Mail::Rehome { room } => st.rehome(&room),
            Mail::FromPeer { peer, frame, at } => st.on_peer_frame(peer, frame, at),
            Mail::Membership { peer, up } => st.on_membership(peer, up),
            Mail::StatsRequest { from, req } => {
                let stats = Box::new(st.snapshot());
                st.shared.mailboxes[from].send(Mail::Stats { req, stats });
            }
            Mail::Stats { req, stats } => st.complete(req, Reply::Stats(stats)),
            Mail::Drain { window } => {
                drop(st);
                self.start_drain(window);
            }
            Mail::Shutdown => return false,
        }
        true
    }

    /// Write every connection's queued frames (one vectored `sendmsg` each). Called
    /// once per batch of work, so frames queued by one batch leave together.
    pub fn flush_dirty(self: &Rc<Self>) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut dirty = std::mem::take(&mut st.dirty);
        let mut now_ns = now_ns();
        for (i, key) in dirty.drain(..).enumerate() {
            // A batch of many writes takes a while: re-read the clock now and then
            // so the latency histogram sees when each frame really left.
            if i % 64 == 63 {
                now_ns = crate::metrics::histogram::now_ns();
            }
            let Some(conn) = st.conns.get_mut(key.slot as usize) else {
                continue;
            };
            if conn.generation != key.generation {
                continue;
            }
            conn.dirty = false;
            if conn.write_blocked {
                continue;
            }
            let (n, res) = conn.flush(now_ns, &mut st.stats.publish_to_write);
            st.stats.bytes_out += n as u64;
            match res {
                Flushed::All => {
                    if conn.shutdown_after_flush {
                        conn.shutdown_after_flush = false;
                        let _ = shutdown(conn.fd, Shutdown::Write);
                    }
                }
                Flushed::Blocked => match writability_handle(conn.fd) {
                    Ok(stream) => {
                        conn.write_blocked = true;
                        let w = self.clone();
                        monoio::spawn(async move {
                            let _ = stream.writable(false).await;
                            w.on_writable(key);
                        });
                    }
                    Err(_) => {
                        // Out of descriptors: treat like a broken socket.
                        conn.phase = Phase::Closing;
                        abort(conn);
                    }
                },
                Flushed::Failed => {
                    // The peer is gone. Wake the read task, which ends the connection.
                    conn.phase = Phase::Closing;
                    abort(conn);
                }
            }
        }
        // Keep the allocation for the next round.
        st.dirty = dirty;
    }

    fn on_writable(self: &Rc<Self>, key: ConnKey) {
        {
            let mut st = self.state.borrow_mut();
            let Some(conn) = st.conn_mut(key) else {
                return;
            };
            conn.write_blocked = false;
            st.mark_dirty(key);
        }
        self.flush_dirty();
    }

    /// Register a request awaiting a reply from another worker.
    pub fn request(&self) -> (usize, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let req = self.state.borrow_mut().requests.insert(Waiter::Task(tx));
        (req, rx)
    }

    /// Periodic upkeep, once per `heartbeat.tick_ms`: heartbeats and idle closes,
    /// then forgetting rooms with no subscribers and no history left.
    pub fn tick(self: &Rc<Self>, now: Instant) {
        {
            let mut st = self.state.borrow_mut();
            let tick = st.tick_at(now);
            st.heartbeat(tick, crate::auth::unix_now());
            st.forget_idle_rooms(now);
            st.settle_presence(now);
            st.expire_leases(now);
            st.expire_requests();
        }
        self.flush_dirty();
    }
}

/// Give up on a connection: drop what it has not started receiving and shut the
/// socket down, which wakes its read task (EOF) and any writability wait, so the slot,
/// queue and rooms are reclaimed now.
pub(super) fn abort(conn: &mut Conn) {
    conn.aborted = true;
    conn.outq.clear_unstarted();
    let _ = shutdown(conn.fd, Shutdown::Both);
}

/// A second handle on a connection's socket, to wait for writability while the read
/// task keeps the first. Used only while a socket's send buffer is full (slow
/// consumers), so the common idle connection pays nothing for it.
fn writability_handle(fd: std::os::fd::RawFd) -> std::io::Result<monoio::net::TcpStream> {
    use std::os::fd::{BorrowedFd, OwnedFd};
    // SAFETY: `fd` is open: it belongs to a connection still in the slab, whose read
    // task owns the stream and closes it only after removing the entry.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup: OwnedFd = borrowed.try_clone_to_owned()?;
    monoio::net::TcpStream::from_std(std::net::TcpStream::from(dup))
}

impl State {
    /// The connection at `key`, if it still exists (generation checked).
    pub fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns
            .get_mut(key.slot as usize)
            .filter(|c| c.generation == key.generation)
    }

    /// Insert a new connection, stamping a fresh generation.
    pub fn insert(&mut self, make: impl FnOnce(u32) -> Conn) -> ConnKey {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.conns.insert(make(generation));
        self.stats.accepted += 1;
        ConnKey {
            slot: slot as u32,
            generation,
        }
    }

    /// The node-wide id of a local connection.
    pub fn conn_id(&self, key: ConnKey) -> ConnId {
        ConnId {
            worker: self.id as u16,
            key,
        }
    }

    /// Put a connection on the list flushed at the end of this batch.
    pub fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.conn_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Queue a reply or control frame for a connection. Over the queue bound the
    /// connection is a slow consumer and is closed with 4008.
    pub fn enqueue(&mut self, key: ConnKey, out: Out) {
        self.enqueue_with(key, out, SlowPolicy::Disconnect);
    }

    /// Queue a frame, applying `policy` when the connection's queue is over its bound
    /// (by messages or bytes). The bound limits backlog, not message size: an empty
    /// queue always takes one frame.
    pub fn enqueue_with(&mut self, key: ConnKey, out: Out, policy: SlowPolicy) {
        let max_msgs = self.shared.config.limits.max_queue_messages;
        let max_bytes = self.shared.config.limits.max_queue_bytes;
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let len = out.bytes().len();
        let over = |q: &crate::conn::outq::OutQueue| {
            q.len() >= max_msgs || (!q.is_empty() && q.bytes() + len > max_bytes)
        };
        if over(&conn.outq) {
            let (reason, dropped) = match policy {
                SlowPolicy::Disconnect => {
                    let dropped = conn.outq.clear_unstarted() as u64 + 1;
                    self.stats.drops[DropReason::Disconnect as usize] += dropped;
                    debug!(conn = %self.conn_id(key), dropped, "slow consumer: closing with 4008");
                    self.close(
                        key,
                        close::SLOW_CONSUMER,
                        "slow consumer: resume from your last seq",
                    );
                    return;
                }
                SlowPolicy::Conflate => {
                    let tag = match &out {
                        Out::Shared(f) => f.tag,
                        Out::Own(_) => 0,
                    };
                    let mut n = conn.outq.drop_tagged(tag) as u64;
                    while over(&conn.outq) && conn.outq.drop_oldest() {
                        n += 1;
                    }
                    (DropReason::Conflate, n)
                }
                SlowPolicy::DropOldest => {
                    let mut n = 0;
                    while over(&conn.outq) && conn.outq.drop_oldest() {
                        n += 1;
                    }
                    (DropReason::DropOldest, n)
                }
            };
            self.stats.drops[reason as usize] += dropped;
        }
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        conn.outq.push(out);
        self.stats.messages_out += 1;
        self.mark_dirty(key);
    }

    /// Queue the raw HTTP bytes of an upgrade answer (no bound: the queue is empty).
    pub fn enqueue_raw(&mut self, key: ConnKey, bytes: Vec<u8>) {
        if let Some(conn) = self.conn_mut(key) {
            conn.outq.push(Out::Own(Bytes::from(bytes)));
            self.mark_dirty(key);
        }
    }

    /// Start the close handshake: queue a close frame, act on no more input, shut the
    /// socket for writing once the queue is out.
    pub fn close(&mut self, key: ConnKey, code: u16, reason: &str) {
        let frame = encode_close(code, reason);
        self.finish(key, Some(frame), Disconnect::for_code(code));
    }

    /// Move a connection to `Closing`, optionally queueing a last frame, and count
    /// why it ended.
    pub fn finish(&mut self, key: ConnKey, last: Option<Bytes>, why: Disconnect) {
        let now = self.wheel.now();
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        conn.shutdown_after_flush = true;
        if let Some(tls) = conn.tls.as_deref_mut() {
            tls.session.send_close_notify();
        }
        // From here `last_seen` dates the close: the wheel gives the peer
        // `close_timeout_ms` from now (more while it still sends) before aborting.
        conn.last_seen = now;
        let was_open = conn.due != 0;
        if let Some(frame) = last {
            conn.outq.push(Out::Own(frame));
        }
        if was_open {
            // The open-phase entry may be a ping interval away: move it to the close
            // deadline. (A connection closed during its upgrade has no entry: its task's
            // own timer bounds the close.)
            let linger = self.ticks(self.shared.config.limits.close_timeout_ms);
            self.schedule(key, now + linger);
        }
        self.stats.disconnected(why);
        self.mark_dirty(key);
    }

    /// Forget a connection: leave its rooms, free its slot. The socket closes when the
    /// last `Rc` of its stream drops.
    pub fn remove(&mut self, key: ConnKey) {
        let Some(phase) = self.conn_mut(key).map(|c| c.phase) else {
            return;
        };
        if phase != Phase::Closing {
            self.stats.disconnected(Disconnect::Eof);
        }
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.write_blocked {
            // Complete the pending writability poll so its task lets go of the socket.
            let _ = shutdown(conn.fd, Shutdown::Both);
        }
        let peer = conn.peer;
        let user = conn.user().filter(|_| conn.user_counted);
        let held = conn.partial.capacity() + conn.decoder.buffered();
        let rooms = std::mem::take(&mut conn.rooms);
        self.partial_bytes -= held;
        for room in rooms {
            self.leave_local(&room, key);
        }
        self.conns.remove(key.slot as usize);
        self.release(peer, user);
    }

    /// Drop a request that was answered inline.
    pub fn forget_request(&mut self, req: usize) {
        self.requests.try_remove(req);
    }

    pub(super) fn complete(&mut self, req: usize, reply: Reply) {
        match self.requests.try_remove(req) {
            Some(Waiter::Task(tx)) => {
                let _ = tx.send(reply); // the asking task may have gone; fine
            }
            Some(Waiter::Conn { key, reference, .. }) => {
                if let Reply::Presence(json) = reply {
                    let frame = crate::protocol::presence_frame(&json, reference.as_deref());
                    self.enqueue(key, Out::Own(frame));
                }
            }
            None => {} // answered late: the request timed out
        }
    }

    /// Register a connection's request for an answer from another worker or node;
    /// `None` when this worker already waits for [`MAX_WAITING`] answers.
    pub fn request_for(
        &mut self,
        key: ConnKey,
        reference: Option<&serde_json::value::RawValue>,
    ) -> Option<usize> {
        if self.requests.len() >= MAX_WAITING {
            return None;
        }
        let since = self.wheel.now();
        Some(self.requests.insert(Waiter::Conn {
            key,
            reference: reference.map(ToOwned::to_owned),
            since,
        }))
    }

    /// Answer connections whose requests have waited longer than
    /// [`REQUEST_TIMEOUT_MS`] with an `unavailable` error (the owner's node went
    /// away, say), so nothing waits forever.
    pub(super) fn expire_requests(&mut self) {
        let limit = self.ticks(REQUEST_TIMEOUT_MS);
        let now = self.wheel.now();
        let late: Vec<usize> = self
            .requests
            .iter()
            .filter_map(|(i, w)| match w {
                Waiter::Conn { since, .. } if now.saturating_sub(*since) >= limit => Some(i),
                _ => None,
            })
            .collect();
        for i in late {
            if let Some(Waiter::Conn { key, reference, .. }) = self.requests.try_remove(i) {
                let frame = crate::protocol::error_frame(
                    crate::protocol::ErrorCode::Unavailable,
                    "the room's owner did not answer in time; retry",
                    None,
                    reference.as_deref(),
                );
                self.enqueue(key, Out::Own(frame));
            }
        }
    }

    /// A copy of the counters with the gauges filled in.
    pub fn snapshot(&self) -> WorkerStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len() as u64;
        let (owned, local, interest) = self.room_counts();
        s.interest = interest as u64;
        s.rooms_owned = owned as u64;
        s.rooms_local = local as u64;
        s.history_bytes = self.history_bytes as u64;
        s.timer_entries = self.wheel.len() as u64;
        for (_, c) in self.conns.iter() {
            s.queued_bytes += c.outq.bytes() as u64;
            s.queue_depth[crate::metrics::depth_bucket(c.outq.len())] += 1;
        }
        s
    }

    /// The last wheel tick processed (the worker's coarse clock).
    pub fn current_tick(&self) -> Tick {
        self.wheel.now()
    }

    /// Milliseconds since this worker started (wrapping u32, for token buckets).
    pub fn now_ms(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    /// A duration in milliseconds as wheel ticks, rounded up (at least one).
    pub(super) fn ticks(&self, ms: u64) -> Tick {
        ms.div_ceil(self.shared.config.heartbeat.tick_ms).max(1) as Tick
    }

    /// The wheel tick of `now`.
    pub fn tick_at(&self, now: Instant) -> Tick {
        (now.saturating_duration_since(self.started).as_millis()
            / u128::from(self.shared.config.heartbeat.tick_ms)) as Tick
    }
}
