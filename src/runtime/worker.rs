//! One worker: a thread pinned to a core, running a monoio runtime that owns a slab
//! of connections and a router ([`Hub`]), and carries out what the router decides.
//!
//! Everything here is single-threaded: state lives in a `RefCell` that no borrow
//! holds across an `.await`. Other workers are reached only by mail.
//!
//! The worker is the hub's executor: it feeds it inputs (client requests, mail,
//! peer messages, link events, ticks, each with the worker's clock) and, after each,
//! drains its effects ([`State::run_hub`]): frames and broadcasts to connections,
//! mail to workers, messages to peers, answers to waiting requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use slab::Slab;
use tracing::{info, warn};

use super::backpressure;
use super::conns::Conns;
use super::mailbox::{Letter, Mailbox};
use crate::config::Config;
use crate::conn::outq::{Out, SharedFrame};
use crate::conn::wheel::Tick;
use crate::conn::{ConnKey, WriteWait};
use crate::hub::{Hub, HubConfig, Ms, Reply, ToConn, Topology};
use crate::metrics::WorkerStats;
use crate::ws::handshake::HandshakeConfig;

/// Where the router's clock starts: far enough from 0 that history read back from
/// disk can be dated before the worker started (its messages' ages are subtracted
/// from the clock at start).
pub const CLOCK_ORIGIN: Ms = 1 << 40;

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
    /// Client sockets on the node, pending upgrades included (checked against
    /// `max_connections` at each accept).
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
    /// What the client listener serves to plain GETs (the client library, the demo).
    pub site: crate::client::Site,
    /// Webhooks, when `hooks.url` is set.
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    /// The authorization callback, when `hooks.authorize_url` is set.
    pub authorizer: Option<Arc<crate::hooks::authorize::Authorizer>>,
    /// The connect callback, when `hooks.connect_url` is set.
    pub connector: Option<Arc<crate::hooks::connect::Connector>>,
    /// When the node started.
    pub started: Instant,
    /// Set once the node has joined its cluster (see [`Shared::joining`]).
    pub joined: AtomicBool,
    /// Workers done draining (they stop together, once all are).
    pub drained: AtomicUsize,
    /// The history directory (`rooms.data_dir`), read back at start.
    pub store: Option<super::store::NodeStore>,
    /// Rooms whose fan-out is behind (`runtime::backpressure`).
    pub lag: super::backpressure::LagTable,
}

impl Shared {
    /// Whether the node is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the node is still joining its cluster: it has peers, has not yet
    /// linked to each of them, and `mesh.join_timeout_ms` has not passed. Until then
    /// it admits no client and holds API requests that route messages: its router
    /// would take its peers' rooms for its own. Says once in the log how joining
    /// ended.
    pub fn joining(&self) -> bool {
        if self.joined.load(Ordering::Acquire) {
            return false;
        }
        let Some(mesh) = &self.mesh else {
            self.joined.store(true, Ordering::Release);
            return false;
        };
        let waited = self.started.elapsed();
        let all = mesh.linked_to_all();
        if !all && waited < Duration::from_millis(mesh.config.join_timeout_ms) {
            return true;
        }
        if !self.joined.swap(true, Ordering::AcqRel) {
            let ms = waited.as_millis();
            if all {
                info!("mesh: linked to every peer after {ms} ms; serving clients");
            } else {
                warn!(
                    "mesh: no link to {} after {ms} ms (mesh.join_timeout_ms); serving clients \
                     anyway: until they link, this node answers for their rooms itself, as in \
                     a partition. Check that they run and that mesh.secret and the peer lists match",
                    mesh.never_linked().join(", ")
                );
            }
        }
        false
    }

    /// Wait until the node has joined its cluster (see [`Shared::joining`]).
    pub async fn joined(&self) {
        while self.joining() {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The router's view of the node: alone, or one node of the mesh.
    pub fn topology(&self) -> Topology {
        let workers = self.mailboxes.len();
        match &self.mesh {
            Some(m) => Topology::cluster(m.me, m.seeds().to_vec(), workers),
            None => Topology::single(workers),
        }
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
    Task(oneshot::Sender<Answer>),
    /// A connection (a `presence` request, a publish with a `ref`), with its
    /// request's `ref` and room.
    Conn {
        /// The connection.
        key: ConnKey,
        /// The request's `ref`, echoed in the answer.
        reference: Option<Box<serde_json::value::RawValue>>,
        /// The room the request is about.
        room: Box<str>,
        /// When it was asked (wheel tick).
        since: Tick,
    },
}

/// What a task waiting on another worker gets back.
#[derive(Debug)]
pub enum Answer {
    /// The router's answer (a publish's epoch and seq, a roster).
    Hub(Reply),
    /// A worker's counters.
    Stats(Box<WorkerStats>),
}

/// The worker's mutable state.
pub struct State {
    /// This worker's index.
    pub id: usize,
    /// Shared configuration and mailboxes.
    pub shared: Arc<Shared>,
    /// The connections: slab, wheel, dirty list, counters.
    pub conns: Conns,
    /// The router.
    pub hub: Hub,
    /// Tasks and connections waiting for a reply from another worker or node.
    waiters: Slab<Waiter>,
    /// Refused connections delivering their answer (see `runtime::driver::refuse`).
    pub(crate) refusing: usize,
    /// The authorization callback's answers and the requests waiting for one.
    pub(crate) permits: super::authorize::Permits,
    /// Upgrades waiting for the connect callback.
    pub(crate) identifying: HashMap<ConnKey, super::identify::Identifying>,
    /// Inflates compressed client messages (taken while in use).
    pub(crate) inflater: Option<crate::ws::deflate::Inflater>,
    /// Rate of `/demo/token` on this worker.
    pub(crate) demo_gate: crate::conn::rate::RateLimiter,
    /// The history log (`rooms.data_dir`).
    pub(crate) journal: Option<super::store::Journal>,
    /// Effects held until the journal's sync (see `runtime::outbox`).
    pub(crate) outbox: super::outbox::Outbox,
    /// Rooms whose messages to a peer were dropped (its queue was over half its
    /// bound) and the peer told, until one is sent again: `(peer, room)`.
    pub(crate) lagging: std::collections::HashSet<(usize, String)>,
    /// Rooms behind here and publishers paused (`runtime::backpressure`).
    pub(crate) pacing: super::backpressure::Pacing,
    /// When this worker started: the origin of its ticks and milliseconds.
    started: Instant,
    /// Rooms taken over from lost owners and rooms given up, as last logged.
    failovers_logged: (u64, u64),
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
    /// Readiness of the open connections (`runtime::reactor`).
    pub reactor: super::reactor::Reactor,
    /// The pacer task runs (`runtime::backpressure`).
    pub(super) pacing: Cell<bool>,
    /// The flushing task runs (`runtime::flush`).
    pub(super) flushing: Cell<bool>,
}

impl Worker {
    /// A worker with no connections.
    pub fn new(id: usize, shared: Arc<Shared>, reactor: super::reactor::Reactor) -> Self {
        // Room for the plaintext of a read and of the records a session held.
        let plain = if shared.tls.is_some() {
            SCRATCH + crate::conn::tls::MAX_HELD
        } else {
            0
        };
        let workers = shared.mailboxes.len();
        let mut hub = Hub::new(
            id,
            HubConfig::from_config(&shared.config, workers),
            shared.topology(),
            Box::new(|| fastrand::u64(..)),
        );
        let journal = shared
            .store
            .as_ref()
            .and_then(|s| s.take(id))
            .map(|(journal, rooms)| {
                super::store::Journal::restore(&mut hub, rooms, CLOCK_ORIGIN);
                journal
            });
        // Rooms a peer owned while this node was away come back by handoff.
        hub.start(CLOCK_ORIGIN);
        Self {
            id,
            shared: shared.clone(),
            state: RefCell::new(State {
                id,
                conns: Conns::new(id, shared.clone()),
                hub,
                waiters: Slab::new(),
                refusing: 0,
                permits: Default::default(),
                identifying: HashMap::new(),
                inflater: None,
                demo_gate: crate::conn::rate::RateLimiter::new(&crate::client::DEMO_RATE, 0),
                journal,
                outbox: Default::default(),
                lagging: Default::default(),
                pacing: Default::default(),
                started: Instant::now(),
                failovers_logged: (0, 0),
                shared,
            }),
            scratch: RefCell::new(vec![0u8; SCRATCH].into_boxed_slice()),
            plain: RefCell::new(vec![0u8; plain].into_boxed_slice()),
            listener_fd: Cell::new(None),
            reactor,
            pacing: Cell::new(false),
            flushing: Cell::new(false),
        }
    }

    /// Handle one letter. Returns `false` on shutdown.
    pub fn handle_letter(self: &Rc<Self>, letter: Letter) -> bool {
        let mut st = self.state.borrow_mut();
        let now = st.now();
        match letter {
            Letter::Hub(mail) => st.hub.handle_mail(mail, now),
            Letter::Peer { peer, msg, at } => st.hub.handle_peer(peer, msg, at, now),
            Letter::Link { peer, up, session } => st.hub.handle_link(peer, up, session, now),
            Letter::StatsRequest { from, req } => {
                let stats = Box::new(st.snapshot());
                st.shared.mailboxes[from].send(Letter::Stats { req, stats });
            }
            Letter::Stats { req, stats } => st.complete_task(req, Answer::Stats(stats)),
            Letter::Drain { window } => {
                // Rooms go to their next owners first (the handoffs leave with the
                // next flush), so clients that reconnect elsewhere resume there.
                let now = st.now();
                let before = st.hub.stats().handoffs_out;
                st.hub.handle_drain(now);
                st.run_hub();
                let rooms = st.hub.stats().handoffs_out - before;
                if rooms > 0 {
                    info!(
                        worker = self.id,
                        rooms, "draining: rooms handed to their next owners (same epoch and seq)"
                    );
                }
                drop(st);
                self.start_drain(window);
                return true;
            }
            Letter::Authorized { key, verdict } => st.on_authorized(&key, &verdict),
            Letter::Identified { conn, identity } => st.on_identified(conn, identity),
            Letter::Shutdown => return false,
        }
        st.run_hub();
        true
    }

    /// Register a task's request awaiting a reply from another worker or node.
    pub fn request(&self) -> (u64, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let req = self.state.borrow_mut().waiters.insert(Waiter::Task(tx));
        (req as u64, rx)
    }

    /// Periodic upkeep, once per `heartbeat.tick_ms`: connection deadlines, the
    /// router's timers, requests that waited too long.
    pub fn tick(self: &Rc<Self>, now: Instant) {
        {
            let mut st = self.state.borrow_mut();
            let tick = st.tick_at(now);
            st.heartbeat(tick, crate::auth::unix_now());
            let ms = st.now();
            st.hub.handle_tick(ms);
            let State { journal, hub, .. } = &mut *st;
            if let Some(j) = journal {
                j.tick(hub);
            }
            st.run_hub();
            st.expire_requests();
            st.log_failovers();
        }
        self.flush_dirty();
    }
}

impl State {
    /// Carry out everything the router decided: frames and broadcasts for this
    /// worker's connections, mail for other workers, messages for peers, answers for
    /// waiting requests. Called after every input to the router (see `hub`'s
    /// calling order).
    pub fn run_hub(&mut self) {
        // First into the log: nothing stamped may be seen (delivered, acknowledged,
        // forwarded) before it is written.
        if let Some(j) = &mut self.journal {
            j.write(&mut self.hub);
        }
        while let Some(effect) = self.hub.poll_conn() {
            match effect {
                ToConn::Send(key, frame) => self.conns.enqueue(key, Out::Own(frame)),
                ToConn::Broadcast {
                    room,
                    frame,
                    packed,
                    tag,
                    at,
                } => {
                    let policy = self.shared.config.rooms.policy(&room);
                    let room_packs = self.shared.config.compression.room_on(&room);
                    // One `Rc` per worker, one queue entry per subscriber: no copy.
                    // Subscribers that negotiated compression share a second one,
                    // compressed once for the node.
                    let mut zipped: Option<Option<Rc<SharedFrame>>> = None;
                    let shared = Rc::new(SharedFrame {
                        bytes: frame,
                        tag,
                        born: at,
                    });
                    let per_subscriber = !self.shared.config.compression.shared;
                    // Publisher back-pressure: how many subscribers are behind.
                    let frames = self.shared.config.limits.backpressure_frames;
                    let pace = frames > 0;
                    let now_ms = self.now_ms();
                    let mut lagging = 0;
                    let Self { hub, conns, .. } = self;
                    let subscribers = hub.subscribers(&room);
                    for &key in subscribers {
                        let bits = conns.get_mut(key).map_or(0, |c| c.deflate);
                        let out =
                            if room_packs && per_subscriber && conns.packs(&shared.bytes, bits) {
                                // The comparison only (compression.shared = false).
                                Rc::new(SharedFrame {
                                    bytes: conns.pack(&shared.bytes),
                                    tag,
                                    born: at,
                                })
                            } else if room_packs && conns.packs(&shared.bytes, bits) {
                                let z = zipped.get_or_insert_with(|| {
                                    let bytes = packed
                                        .get_or_make(|| Some(conns.pack(&shared.bytes)))
                                        .cloned()?;
                                    Some(Rc::new(SharedFrame {
                                        bytes,
                                        tag,
                                        born: at,
                                    }))
                                });
                                z.as_ref().unwrap_or(&shared).clone()
                            } else {
                                shared.clone()
                            };
                        conns.enqueue_with(key, Out::Shared(out), policy);
                        if pace
                            && conns
                                .get_mut(key)
                                .is_some_and(|c| backpressure::lags(c, frames, now_ms))
                        {
                            lagging += 1;
                        }
                    }
                    if pace {
                        let n = subscribers.len();
                        self.report_lag(&room, lagging, n);
                    }
                }
                ToConn::Close(key, code, reason) => self.conns.close(key, code, &reason),
                ToConn::Kick {
                    key,
                    code,
                    reason,
                    reconnect,
                } => {
                    let frame = crate::protocol::disconnect_frame(code, &reason, reconnect);
                    self.conns.enqueue(key, Out::Own(frame));
                    self.conns.kick(key, code, &reason);
                }
            }
        }
        self.send_out();
    }

    /// Forget a connection: leave its rooms, free its slot, give back what was
    /// counted. The caller closes the socket: the reactor (`reactor::close`) or the
    /// task holding the stream, when it drops it.
    pub fn remove(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ended = conn.phase == crate::conn::Phase::Closing;
        let identifying = conn.phase == crate::conn::Phase::Identifying;
        if conn.write_wait == WriteWait::Task {
            // Complete the pending writability poll so its task lets go of the socket.
            let _ = nix::sys::socket::shutdown(conn.fd, nix::sys::socket::Shutdown::Both);
        }
        let peer = conn.peer;
        let identified = conn.grant.is_some();
        let announced = conn.announced.then(|| (conn.ended, conn.user()));
        if let (Some((why, user)), Some(h)) = (announced, &self.shared.hooks) {
            let id = self.conns.conn_id(key).to_string();
            h.event(&crate::hooks::Event::Disconnect {
                conn: &id,
                user: user.as_deref(),
                reason: why.unwrap_or(crate::metrics::Disconnect::Eof).label(),
            });
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let user = conn.user().filter(|_| conn.user_counted);
        let held = conn.input_held();
        let rooms = std::mem::take(&mut conn.rooms);
        self.conns.partial_bytes -= held;
        self.conns.slab.remove(key.slot as usize);
        if !ended {
            self.conns
                .stats
                .disconnected(crate::metrics::Disconnect::Eof);
        }
        if identifying {
            self.forget_identify(key);
        }
        let now = self.now();
        for room in rooms {
            self.hub.handle_leave(key, &room, identified, now);
        }
        self.run_hub();
        self.release(peer, user);
    }

    /// A task's answer arrived.
    fn complete_task(&mut self, req: u64, answer: Answer) {
        if let Some(Waiter::Task(tx)) = self.waiters.try_remove(req as usize) {
            let _ = tx.send(answer); // the asking task may have gone; fine
        }
    }

    /// The router answered request `req` (a task's or a connection's).
    pub(super) fn complete(&mut self, req: u64, reply: Reply) {
        match self.waiters.try_remove(req as usize) {
            Some(Waiter::Task(tx)) => {
                let _ = tx.send(Answer::Hub(reply)); // the asking task may have gone
            }
            Some(Waiter::Conn {
                key,
                reference,
                room,
                ..
            }) => {
                let frame = match reply {
                    Reply::Presence(json) => {
                        crate::protocol::presence_frame(&json, reference.as_deref())
                    }
                    Reply::Published(s) => crate::protocol::ack_frame(
                        &room,
                        s.epoch,
                        s.seq,
                        s.duplicate,
                        reference.as_deref(),
                    ),
                    // Asked by the API only.
                    Reply::History(_) | Reply::Rooms { .. } | Reply::Disconnected { .. } => return,
                };
                self.conns.enqueue(key, Out::Own(frame));
            }
            None => {} // answered late: the request timed out
        }
    }

    /// Drop a request nobody waits for any more.
    pub fn forget_request(&mut self, req: u64) {
        self.waiters.try_remove(req as usize);
    }

    /// Register a connection's request for an answer from another worker or node;
    /// `None` when this worker already waits for [`MAX_WAITING`] answers.
    pub fn request_for(
        &mut self,
        key: ConnKey,
        reference: Option<&serde_json::value::RawValue>,
        room: &str,
    ) -> Option<u64> {
        if self.waiters.len() >= MAX_WAITING {
            return None;
        }
        let since = self.conns.current_tick();
        let req = self.waiters.insert(Waiter::Conn {
            key,
            reference: reference.map(ToOwned::to_owned),
            room: Box::from(room),
            since,
        });
        Some(req as u64)
    }

    /// Say (once per tick at most) how many rooms this worker took over from lost
    /// owners as their standby, or had to give up.
    fn log_failovers(&mut self) {
        let s = self.hub.stats();
        let (promoted, given_up) = (s.promotions, s.rooms_given_up);
        let (was_promoted, was_given_up) = self.failovers_logged;
        if promoted > was_promoted {
            info!(
                worker = self.id,
                rooms = promoted - was_promoted,
                "took over rooms of a lost node from their copies here (same epoch and seq: nobody re-syncs)"
            );
        }
        if given_up > was_given_up {
            warn!(
                worker = self.id,
                rooms = given_up - was_given_up,
                "gave rooms up: no peer could keep their copies (this node is cut off from most of the cluster); their subscribers here re-sync in a new epoch"
            );
        }
        self.failovers_logged = (promoted, given_up);
    }

    /// Answer connections whose requests have waited longer than
    /// [`REQUEST_TIMEOUT_MS`] with an `unavailable` error (the owner's node went
    /// away, say), so nothing waits forever.
    fn expire_requests(&mut self) {
        let limit = self.conns.ticks(REQUEST_TIMEOUT_MS);
        let now = self.conns.current_tick();
        let late: Vec<usize> = self
            .waiters
            .iter()
            .filter_map(|(i, w)| match w {
                Waiter::Conn { since, .. } if now.saturating_sub(*since) >= limit => Some(i),
                _ => None,
            })
            .collect();
        for i in late {
            if let Some(Waiter::Conn {
                key,
                reference,
                room,
                ..
            }) = self.waiters.try_remove(i)
            {
                let frame = crate::protocol::error_frame(
                    crate::protocol::ErrorCode::Unavailable,
                    "the room's owner did not answer in time; retry",
                    Some(&room),
                    reference.as_deref(),
                );
                self.conns.enqueue(key, Out::Own(frame));
            }
        }
    }

    /// A copy of the counters with the gauges filled in.
    pub fn snapshot(&self) -> WorkerStats {
        let mut s = self.conns.stats.clone();
        s.connections = self.conns.slab.len() as u64;
        let (owned, local, interest, history) = self.hub.gauges();
        s.interest = interest as u64;
        s.rooms_owned = owned as u64;
        s.handoff_parked = self.hub.parked() as u64;
        let (replicated, unreplicated, held) = self.hub.replication_gauges();
        s.rooms_replicated = replicated as u64;
        s.rooms_unreplicated = unreplicated as u64;
        s.replica_held = held as u64;
        let (copies, copy_bytes) = self.hub.copies();
        s.replica_copies = copies as u64;
        s.replica_bytes = copy_bytes as u64;
        s.rooms_local = local as u64;
        s.history_bytes = history as u64;
        let (keys, forgotten) = self.hub.idempotency();
        s.idempotency_keys = keys as u64;
        s.idempotency_forgotten = forgotten;
        s.timer_entries = self.conns.wheel.len() as u64;
        s.rooms_behind = self.pacing.rooms_behind(&self.shared.lag) as u64;
        s.inbox = self.shared.mailboxes[self.id].len() as u64;
        if let Some(j) = &self.journal {
            let (log, disk, segments, errors) = j.stats();
            s.store = crate::metrics::StoreStats {
                records: log.records,
                bytes: log.bytes,
                fsyncs: log.fsyncs,
                fsync_nanos: log.fsync_ns,
                deleted: log.deleted,
                errors,
                disk_bytes: disk,
                segments: segments as u64,
            };
        }
        s.hub = self.hub.stats().clone();
        for (_, c) in self.conns.slab.iter() {
            s.queued_bytes += c.outq.bytes() as u64;
            s.queue_depth[crate::metrics::depth_bucket(c.outq.len())] += 1;
        }
        s
    }

    /// The router's clock: milliseconds since this worker started, plus
    /// [`CLOCK_ORIGIN`].
    pub fn now(&self) -> Ms {
        CLOCK_ORIGIN + self.started.elapsed().as_millis() as Ms
    }

    /// Milliseconds since this worker started (wrapping u32, for rate limits).
    pub fn now_ms(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    /// The wheel tick of `now`.
    pub fn tick_at(&self, now: Instant) -> Tick {
        (now.saturating_duration_since(self.started).as_millis()
            / u128::from(self.shared.config.heartbeat.tick_ms)) as Tick
    }
}
