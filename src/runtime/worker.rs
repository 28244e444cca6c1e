//! One worker: a thread pinned to a core, running a monoio runtime that owns a slab
//! of connections, the rooms this worker sequences, and the index of which local
//! connections listen to which room.
//!
//! Everything here is single-threaded: state lives in a `RefCell` that no borrow
//! holds across an `.await`. Other workers are reached only by [`Mail`].
//!
//! Room routing (single node): the owner of a room is `hub::home_worker(room)`.
//! - `sub` on worker W: the connection joins W's room index as *pending* and W mails
//!   the owner (or asks itself inline). The owner marks W interested and answers with
//!   epoch, latest seq and the replay. Because mail between two workers is FIFO, every
//!   `Deliver` the owner sends after its answer arrives after it: the subscriber turns
//!   live on the answer and sees exactly the messages after `seq`, none twice.
//! - `pub` anywhere goes to the owner, which stamps the seq, encodes one frame and
//!   sends it once to each interested worker; each worker wraps it in one `Rc` and
//!   queues that to each local subscriber.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use nix::sys::socket::{Shutdown, shutdown};
use serde_json::value::RawValue;
use slab::Slab;
use tracing::debug;

use super::mailbox::{Mail, Mailbox};
use crate::config::Config;
use crate::conn::outq::{Flushed, Out};
use crate::conn::{Conn, ConnId, ConnKey, Phase};
use crate::hub::home_worker;
use crate::hub::room::{OwnedRoom, SubAck};
use crate::metrics::{Disconnect, WorkerStats};
use crate::protocol::{self, Cursor, Epoch, ErrorCode};
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
}

impl Shared {
    /// Whether the node is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// A reply to a request a task made of another worker.
#[derive(Debug)]
pub enum Reply {
    /// A publish was stamped.
    Published(Epoch, u64),
    /// A worker's counters.
    Stats(Box<WorkerStats>),
}

/// A room as seen by a worker with local subscribers.
#[derive(Debug, Default)]
struct LocalRoom {
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
    local: HashMap<Arc<str>, LocalRoom>,
    /// Rooms this worker owns (sequences).
    owned: HashMap<Arc<str>, OwnedRoom>,
    /// Connections with output queued since the last flush.
    dirty: Vec<ConnKey>,
    /// Counters.
    pub stats: WorkerStats,
    /// Tasks waiting for a reply from another worker.
    requests: Slab<oneshot::Sender<Reply>>,
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
}

impl Worker {
    /// A worker with no connections.
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
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
                dirty: Vec::new(),
                stats: WorkerStats {
                    worker: id,
                    ..WorkerStats::default()
                },
                requests: Slab::new(),
            }),
            scratch: RefCell::new(vec![0u8; SCRATCH].into_boxed_slice()),
        }
    }

    /// Handle one piece of mail. Returns `false` on shutdown.
    pub fn handle_mail(&self, mail: Mail) -> bool {
        let mut st = self.state.borrow_mut();
        match mail {
            Mail::Subscribe {
                room,
                from,
                conn,
                since,
            } => {
                let ack = st.owner_subscribe(&room, from, since);
                if from == st.id {
                    st.on_suback(&room, conn, ack);
                } else {
                    st.shared.mailboxes[from].send(Mail::SubAck { room, conn, ack });
                }
            }
            Mail::SubAck { room, conn, ack } => st.on_suback(&room, conn, ack),
            Mail::Uninterest { room, from } => st.owner_uninterest(&room, from),
            Mail::Publish { room, data, reply } => {
                let (epoch, seq) = st.owner_publish(&room, &data);
                if let Some((w, req)) = reply {
                    st.shared.mailboxes[w].send(Mail::Published { req, epoch, seq });
                }
            }
            Mail::Published { req, epoch, seq } => st.complete(req, Reply::Published(epoch, seq)),
            Mail::Deliver { room, frame } => st.deliver_local(&room, frame),
            Mail::StatsRequest { from, req } => {
                let stats = Box::new(st.snapshot());
                st.shared.mailboxes[from].send(Mail::Stats { req, stats });
            }
            Mail::Stats { req, stats } => st.complete(req, Reply::Stats(stats)),
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
        for key in dirty.drain(..) {
            let Some(conn) = st.conns.get_mut(key.slot as usize) else {
                continue;
            };
            if conn.generation != key.generation {
                continue;
            }
            conn.dirty = false;
            if conn.write_blocked {
                if conn.phase == Phase::Closing {
                    abort(conn);
                }
                continue;
            }
            let (n, res) = conn.outq.flush(conn.fd);
            st.stats.bytes_out += n as u64;
            match res {
                Flushed::All => {
                    if conn.shutdown_after_flush {
                        conn.shutdown_after_flush = false;
                        let _ = shutdown(conn.fd, Shutdown::Write);
                    }
                }
                Flushed::Blocked if conn.phase == Phase::Closing => abort(conn),
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
        let req = self.state.borrow_mut().requests.insert(tx);
        (req, rx)
    }

    /// Periodic upkeep: forget rooms with no subscribers and no history left.
    pub fn tick(&self, now: Instant) {
        let mut st = self.state.borrow_mut();
        st.owned.retain(|_, room| !room.is_idle(now));
    }
}

/// A closing connection whose socket is full (a slow consumer that stopped reading)
/// is not worth waiting for: shut the socket down, which wakes its read task (EOF) and
/// any writability wait, so the slot, queue and rooms are reclaimed now.
fn abort(conn: &mut Conn) {
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

    fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.conn_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Queue a frame for a connection, enforcing the queue bound. Over the bound the
    /// connection is a slow consumer: its unsent frames are dropped and it is closed
    /// with 4008 (it resumes from its cursor on reconnect).
    pub fn enqueue(&mut self, key: ConnKey, out: Out) {
        let max_msgs = self.shared.config.limits.max_queue_messages;
        let max_bytes = self.shared.config.limits.max_queue_bytes;
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let len = match &out {
            Out::Shared(b) => b.len(),
            Out::Own(b) => b.len(),
        };
        // The bound limits backlog, not message size: an empty queue always takes one
        // frame (else a message larger than the bound could never be delivered).
        let over = conn.outq.len() >= max_msgs
            || (!conn.outq.is_empty() && conn.outq.bytes() + len > max_bytes);
        if over {
            let dropped = conn.outq.clear_unstarted() as u64 + 1;
            self.stats.dropped += dropped;
            debug!(conn = %self.conn_id(key), dropped, "slow consumer: closing with 4008");
            self.close(
                key,
                close::SLOW_CONSUMER,
                "slow consumer: resume from your last seq",
            );
            return;
        }
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
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        conn.shutdown_after_flush = true;
        if let Some(frame) = last {
            conn.outq.push(Out::Own(frame));
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
        let rooms = std::mem::take(&mut conn.rooms);
        for room in rooms {
            self.leave_local(&room, key);
        }
        self.conns.remove(key.slot as usize);
    }

    // ----- rooms: the subscriber side -----

    /// `sub`: join the room (pending until the owner answers).
    pub fn subscribe(
        &mut self,
        key: ConnKey,
        room: &str,
        since: Option<Cursor>,
        reference: Option<&RawValue>,
    ) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.rooms.iter().any(|r| &**r == room) {
            let frame = protocol::error_frame(
                ErrorCode::BadField,
                "already subscribed to this room",
                reference,
            );
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
    fn on_suback(&mut self, room: &str, key: ConnKey, ack: SubAck) {
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

    fn leave_local(&mut self, room: &Arc<str>, key: ConnKey) {
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
        reply: Option<usize>,
    ) -> Option<(Epoch, u64)> {
        let owner = home_worker(room, self.shared.mailboxes.len());
        if owner == self.id {
            return Some(self.owner_publish(room, data));
        }
        self.shared.mailboxes[owner].send(Mail::Publish {
            room: Arc::from(room),
            data: data.to_owned(),
            reply: reply.map(|req| (self.id, req)),
        });
        None
    }

    /// Queue one shared frame to every live local subscriber of `room`.
    fn deliver_local(&mut self, room: &str, frame: Bytes) {
        let Some(local) = self.local.get_mut(room) else {
            return;
        };
        // The list is taken out while frames are queued (queueing needs `&mut self`)
        // and put back after; queueing never changes room membership.
        let live = std::mem::take(&mut local.live);
        let shared = Rc::new(frame);
        for &key in &live {
            self.enqueue(key, Out::Shared(shared.clone()));
        }
        if let Some(local) = self.local.get_mut(room) {
            local.live = live;
        }
    }

    // ----- rooms: the owner side -----

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

    fn owner_subscribe(&mut self, room: &str, from: usize, since: Option<Cursor>) -> SubAck {
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

    fn owner_uninterest(&mut self, room: &str, from: usize) {
        if let Some(r) = self.owned.get_mut(room) {
            r.set_interest(from, false);
        }
    }

    fn owner_publish(&mut self, room: &str, data: &RawValue) -> (Epoch, u64) {
        let now = Instant::now();
        let me = self.id;
        let r = self.owned_room(room);
        let (seq, frame) = r.publish(room, data, now);
        let epoch = r.position().0;
        let targets: Vec<usize> = r.interested().collect();
        self.stats.published += 1;
        let mut name: Option<Arc<str>> = None;
        for w in targets {
            if w == me {
                self.deliver_local(room, frame.clone());
            } else {
                let room = name.get_or_insert_with(|| Arc::from(room)).clone();
                self.shared.mailboxes[w].send(Mail::Deliver {
                    room,
                    frame: frame.clone(),
                });
            }
        }
        (epoch, seq)
    }

    /// Drop a request that was answered inline.
    pub fn forget_request(&mut self, req: usize) {
        self.requests.try_remove(req);
    }

    fn complete(&mut self, req: usize, reply: Reply) {
        if let Some(tx) = self.requests.try_remove(req) {
            let _ = tx.send(reply); // the asking task may have gone; fine
        }
    }

    /// A copy of the counters with the gauges filled in.
    pub fn snapshot(&self) -> WorkerStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len() as u64;
        s.rooms_owned = self.owned.len() as u64;
        s.rooms_local = self.local.len() as u64;
        s.queued_bytes = self.conns.iter().map(|(_, c)| c.outq.bytes() as u64).sum();
        s
    }
}
