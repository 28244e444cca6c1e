//! A worker's connections: the slab, the timer wheel, the list of connections with
//! output to flush, and the ways a connection ends (the set is documented once, in
//! `conn`: `close` and its siblings, `close_now`, `abort`; `remove` is the worker
//! state's, since it also leaves the router's rooms).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use nix::sys::socket::{Shutdown, shutdown};
use slab::Slab;
use tracing::debug;

use super::worker::Shared;
use crate::config::SlowPolicy;
use crate::conn::outq::{Out, OutQueue};
use crate::conn::wheel::{Tick, Wheel};
use crate::conn::{Conn, ConnId, ConnKey, Phase};
use crate::metrics::{Disconnect, Dropped, WorkerStats};
use crate::ws::close;
use crate::ws::frame::encode_close;

/// The connection side of a worker.
pub struct Conns {
    /// This worker's index.
    pub id: usize,
    /// Configuration and the node-wide counts.
    pub shared: Arc<Shared>,
    /// Connections, by slot.
    pub slab: Slab<Conn>,
    next_generation: u32,
    /// Every open connection's one deadline entry (see `conn::timers`).
    pub wheel: Wheel<ConnKey>,
    /// Connections with output queued and not yet flushed, oldest first (a
    /// flush takes them from the front, a slice at a time: `runtime::flush`).
    pub(super) dirty: VecDeque<ConnKey>,
    /// Bytes of unfinished frames and messages held by this worker's connections
    /// (bounded by its share of `limits.partial_budget_bytes`).
    pub partial_bytes: usize,
    /// Counters.
    pub stats: WorkerStats,
    /// The compressor (permessage-deflate).
    pub(super) packer: super::compress::Packer,
}

/// Most slab entries reserved per worker (about 48 MiB of address space, which a
/// host with strict overcommit accounts for); past that the slab grows by doubling.
const MAX_RESERVED: usize = 1 << 18;

impl Conns {
    /// No connections yet. The slab reserves room for this worker's share of the
    /// node's connection cap up front: address space only (a page is resident once
    /// an entry in it is used), and the slab never moves. Grown by doubling instead,
    /// each step copied every entry while connections were being accepted and left
    /// the old buffer behind in the allocator: measured with `ringway bench idle`
    /// at 15,000 connections, about 130 bytes of resident memory per connection.
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let share = shared
            .max_connections
            .div_ceil(shared.mailboxes.len().max(1))
            .min(MAX_RESERVED);
        Self {
            id,
            slab: Slab::with_capacity(share),
            shared,
            next_generation: 0,
            wheel: Wheel::new(),
            dirty: VecDeque::new(),
            partial_bytes: 0,
            stats: WorkerStats {
                worker: id,
                ..WorkerStats::default()
            },
            packer: Default::default(),
        }
    }

    /// The connection at `key`, if it still exists (generation checked).
    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.slab
            .get_mut(key.slot as usize)
            .filter(|c| c.generation == key.generation)
    }

    /// Insert a new connection, stamping a fresh generation.
    pub fn insert(&mut self, make: impl FnOnce(u32) -> Conn) -> ConnKey {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.slab.insert(make(generation));
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

    /// Put a connection at the back of the line to be flushed.
    pub fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.get_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push_back(key);
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
        let Some(conn) = self.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let bits = conn.deflate;
        let out = match out {
            Out::Own(frame) if bits != 0 => Out::Own(self.own_frame(frame, bits)),
            out => out,
        };
        let Some(conn) = self.get_mut(key) else {
            return;
        };
        let len = out.bytes().len();
        let over = |q: &OutQueue| queue_over(q, len, max_msgs, max_bytes);
        if over(&conn.outq) {
            let (reason, dropped) = match policy {
                SlowPolicy::Disconnect => {
                    let dropped = conn.outq.clear_unstarted() as u64 + 1;
                    self.stats.drops[Dropped::SlowConsumer as usize] += dropped;
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
                    (Dropped::Conflated, n)
                }
                SlowPolicy::DropOldest => {
                    let mut n = 0;
                    while over(&conn.outq) && conn.outq.drop_oldest() {
                        n += 1;
                    }
                    (Dropped::Oldest, n)
                }
            };
            self.stats.drops[reason as usize] += dropped;
        }
        let Some(conn) = self.get_mut(key) else {
            return;
        };
        conn.outq.push(out);
        self.stats.messages_out += 1;
        self.mark_dirty(key);
    }

    /// Queue the raw HTTP bytes of an upgrade answer (no bound: the queue is empty).
    pub fn enqueue_raw(&mut self, key: ConnKey, bytes: Vec<u8>) {
        if let Some(conn) = self.get_mut(key) {
            conn.outq.push(Out::Own(Bytes::from(bytes)));
            self.mark_dirty(key);
        }
    }

    /// End a connection from our side: queue a close frame, act on no more input,
    /// shut the socket for writing once the queue is out. Counted by the code's
    /// reason.
    pub fn close(&mut self, key: ConnKey, code: u16, reason: &str) {
        self.end(
            key,
            Some(encode_close(code, reason)),
            Disconnect::for_code(code),
        );
    }

    /// End a connection the app disconnected (`POST /v1/disconnect`), with its code;
    /// counted as `kicked` whatever the code.
    pub fn kick(&mut self, key: ConnKey, code: u16, reason: &str) {
        self.end(key, Some(encode_close(code, reason)), Disconnect::Kicked);
    }

    /// End a connection whose upgrade was refused: the HTTP answer, then as `close`.
    pub fn refuse(&mut self, key: ConnKey, response: Vec<u8>) {
        self.enqueue_raw(key, response);
        self.end(key, None, Disconnect::Handshake);
    }

    /// End a connection that asked for a page, not a WebSocket: the HTTP answer,
    /// then as `close`.
    pub fn answer_page(&mut self, key: ConnKey, response: Vec<u8>) {
        self.enqueue_raw(key, response);
        self.end(key, None, Disconnect::Page);
    }

    /// End a connection whose TLS handshake failed (the alert is already queued in
    /// its session), as `close`.
    pub fn fail_handshake(&mut self, key: ConnKey) {
        self.end(key, None, Disconnect::Handshake);
    }

    /// Answer the peer's close frame (`frame`, our half), then as `close`.
    pub fn closed_by_peer(&mut self, key: ConnKey, frame: Bytes) {
        self.end(key, Some(frame), Disconnect::ClientClose);
    }

    /// Move a connection to `Closing`, optionally queueing a last frame, and count
    /// why it ended. The peer has `limits.close_timeout_ms` to finish the close.
    fn end(&mut self, key: ConnKey, last: Option<Bytes>, why: Disconnect) {
        let now = self.stamp();
        let Some(conn) = self.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        conn.ended = Some(why);
        conn.shutdown_after_flush = true;
        if let Some(tls) = conn.tls.as_deref_mut() {
            tls.close();
        }
        // From here `last_seen` dates the close: the wheel gives the peer
        // `close_timeout_ms` from now before aborting (input read while closing is
        // discarded and does not push that back).
        conn.last_seen = now;
        let was_open = conn.due != 0;
        if let Some(frame) = last {
            conn.outq.push(Out::Own(frame));
        }
        if was_open {
            // The open-phase entry may be a ping interval away: move it to the close
            // deadline. (A connection closed during its upgrade has no entry: its
            // task's own timer bounds the close.)
            let linger = self.ticks(self.shared.config.limits.close_timeout_ms);
            self.schedule(key, now + linger);
        }
        self.stats.disconnected(why);
        self.mark_dirty(key);
    }

    /// End a connection whose peer may be gone: `close`, try to write the close
    /// frame now, and `abort` instead of waiting for the peer's half.
    pub fn close_now(&mut self, key: ConnKey, code: u16, reason: &str) {
        self.close(key, code, reason);
        let now = crate::metrics::histogram::now_ns();
        let Self { slab, stats, .. } = self;
        if let Some(conn) = slab
            .get_mut(key.slot as usize)
            .filter(|c| c.generation == key.generation)
        {
            let (n, _) = conn.flush(now, &mut stats.publish_to_write);
            abort(conn);
            stats.bytes_out += n as u64;
        }
    }

    /// Put the connection's one wheel entry at tick `at` (an older entry becomes
    /// stale: see `conn::timers`).
    pub fn schedule(&mut self, key: ConnKey, at: Tick) {
        let at = self.wheel.schedule(key, at);
        if let Some(conn) = self.get_mut(key) {
            conn.due = at;
        }
    }

    /// Move the connection's wheel entry earlier, if `at` is.
    pub fn reschedule_if_sooner(&mut self, key: ConnKey, at: Tick) {
        if self.get_mut(key).is_some_and(|c| at < c.due) {
            self.schedule(key, at);
        }
    }

    /// A duration in milliseconds as wheel ticks, rounded up (at least one).
    pub fn ticks(&self, ms: u64) -> Tick {
        ms.div_ceil(self.shared.config.heartbeat.tick_ms).max(1) as Tick
    }

    /// The last wheel tick processed (the worker's coarse clock).
    pub fn current_tick(&self) -> Tick {
        self.wheel.now()
    }

    /// The tick to date something that happens now (traffic, a close, the start of
    /// an unfinished message): the wheel's tick rounded up. Real time is past the
    /// last tick processed but before the next, so a deadline counted from the
    /// next one is never early, and at most one tick late.
    pub fn stamp(&self) -> Tick {
        self.wheel.now() + 1
    }
}

/// Whether a frame of `len` bytes would take `q` over the connection's queue bound
/// (by messages or bytes). The bound limits backlog, not message size: an empty
/// queue always takes one frame.
pub fn queue_over(q: &OutQueue, len: usize, max_msgs: usize, max_bytes: usize) -> bool {
    q.len() >= max_msgs || (!q.is_empty() && q.bytes() + len > max_bytes)
}

/// Give up on a connection: drop what it has not started receiving and shut the
/// socket down, which makes it readable (EOF) to whoever reads it (the reactor, or a
/// handshake or closing task) and ends any writability wait, so the slot, queue and
/// rooms are reclaimed now.
pub fn abort(conn: &mut Conn) {
    conn.aborted = true;
    conn.outq.clear_unstarted();
    let _ = shutdown(conn.fd, Shutdown::Both);
}
