//! Connections, sans-IO: the per-connection state kept in each worker's slab, its
//! outbound queue, rate limits, deadlines, TLS session, and what a client's request
//! amounts to. The task that reads the socket is the runtime's (`runtime::driver`).
//!
//! An idle connection costs its slab entry, its `TcpStream` and one pending
//! io_uring POLL_ADD: no read buffer (bytes are received into the worker's scratch
//! buffer and only an unfinished frame is copied out), no timer (the worker's wheel
//! sweeps deadlines), no write buffer (the queue allocates only while non-empty).
//!
//! # Who owns the socket
//!
//! The `TcpStream` belongs to the connection's task; the slab entry keeps only its
//! raw fd (`Conn::fd`), for non-blocking writes from anywhere on the worker. The fd
//! is valid while the entry is in the slab: the task removes the entry before it
//! drops the stream, and nothing else closes the fd. A second handle (a dup) exists
//! only while a slow consumer waits for writability.
//!
//! # How a connection ends
//!
//! Four ways. The first three are methods of the worker's connections
//! (`runtime::conns`), the last of the worker's state (`runtime::worker`), since it
//! also leaves the router's rooms:
//!
//! | method      | when | what |
//! |-------------|------|------|
//! | `close`     | we end it: a violation, a limit, a drain | queue a close frame, act on no more input, shut the socket for writing once the queue is out; the peer's close or the close timeout follows. Four siblings differ only in what goes last: `refuse` (an HTTP refusal of the upgrade), `answer_page` (a page asked for instead of an upgrade), `fail_handshake` (a TLS alert, already queued) and `closed_by_peer` (our half of the peer's close) |
//! | `close_now` | the peer may be gone (idle timeout, drain's end) | `close`, write what can be written now, then `abort` |
//! | `abort`     | give up (close timeout, a broken socket) | drop unsent frames and shut the socket down, which wakes the task |
//! | `remove`    | the task saw EOF or the close finished | leave every room, free the slot, give back what was counted; the task then drops the stream, closing the fd |
//!
//! Every ending is counted once, by reason (`ringway_disconnects_total`); a close the
//! peer never finished is counted apart (`ringway_close_timeouts_total`).

pub mod outq;
pub(crate) mod rate;
pub(crate) mod request;
pub(crate) mod timers;
pub(crate) mod tls;
pub(crate) mod wheel;

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::conn::wheel::Tick;
use crate::ws::frame::Decoder;
use crate::ws::handshake::Endpoint;
use outq::OutQueue;
use rate::RateLimiter;

pub use crate::hub::id::{ConnId, ConnKey};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the HTTP upgrade request.
    Handshake,
    /// The upgrade request was read; the app is asked who it is (the connect
    /// callback). Its socket is not read meanwhile.
    Identifying,
    /// WebSocket open.
    Open,
    /// Close frame sent (or the upgrade refused): no more input is acted on; the
    /// socket is shut for writing once the queue drains, and dropped at the peer's
    /// EOF or the close timeout.
    Closing,
}

/// Who waits for a connection's socket to become writable (its send buffer was
/// full; the queue is flushed again when it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteWait {
    /// Nobody: the socket took everything so far.
    No,
    /// The worker's reactor (the socket's registration asks for output readiness
    /// too): an open connection, at no cost in descriptors.
    Reactor,
    /// A task of its own on a duplicate of the descriptor: a connection the reactor
    /// does not watch (still upgrading, or one that got a task of its own).
    Task,
}

/// Per-connection state. Small and fixed-size: everything that grows (the partial
/// frame, a fragmented message, the queue, the room list) allocates only while used.
#[derive(Debug)]
pub struct Conn {
    /// Generation this entry was created with (see [`ConnKey`]).
    pub generation: u32,
    /// The socket's fd, for the non-blocking writes. The `TcpStream` itself belongs
    /// to the connection's read task, which closes it when the connection ends.
    pub fd: RawFd,
    /// Peer address (logs, per-IP limits); the port is of no use to either.
    pub peer: IpAddr,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Endpoint chosen at the upgrade.
    pub endpoint: Endpoint,
    /// Frame decoder (holds a buffer only inside a fragmented message).
    pub decoder: Decoder,
    /// Bytes of an unfinished frame (or request head). Empty, unallocated, when idle.
    pub partial: Vec<u8>,
    /// Frames waiting for the socket.
    pub outq: OutQueue,
    /// Rooms this connection is subscribed to (names shared with the room index).
    pub rooms: Vec<Arc<str>>,
    /// TLS session (wss listeners only).
    pub tls: Option<Box<tls::Tls>>,
    /// What the connection's token grants (`None`: anonymous).
    pub grant: Option<Box<crate::auth::Grant>>,
    /// Queued on the worker's dirty list for a flush.
    pub dirty: bool,
    /// What waits for the socket to take more, once its send buffer was full.
    pub write_wait: WriteWait,
    /// Shut the socket for writing once the queue drains (after a close frame).
    pub shutdown_after_flush: bool,
    /// Counted in its user's open connections (`auth.max_connections_per_user`).
    pub user_counted: bool,
    /// The socket was shut down; the read task is about to reclaim the entry.
    pub aborted: bool,
    /// A request was refused for permissions once; the next closes with 4003.
    pub denied: bool,
    /// permessage-deflate: the client's window bits (`server_max_window_bits`, 8 to
    /// 15), or 0 when it was not negotiated.
    pub deflate: u8,
    /// Not read while a room it publishes to is behind (`runtime::backpressure`).
    pub paused: bool,
    /// Messages it published in its last read (saturating): one that publishes in
    /// bulk is not read at all while the node's inboxes are long
    /// (`runtime::backpressure`).
    pub read_pubs: u8,
    /// When its socket last took bytes, in units of 16 ms of the worker's clock
    /// (wrapping every 17 minutes; 16 bits keep the entry at 184 bytes): a subscriber
    /// that stopped reading does not hold its rooms' publishers back.
    pub drained: u16,
    /// The app heard it connect (a `connect` webhook event): it hears it end too.
    pub announced: bool,
    /// Why it ended, once it began to close.
    pub ended: Option<crate::metrics::Disconnect>,
    /// Wheel tick of the last bytes received (any frame, pongs included).
    pub last_seen: Tick,
    /// Tick of the connection's live wheel entry (older entries are stale); 0 while
    /// it upgrades (no entry yet: its task's own timer bounds the upgrade).
    pub due: Tick,
    /// Since when an unfinished frame or fragmented message has been waiting.
    pub partial_since: Option<Tick>,
    /// Message and byte rate limits.
    pub rate: RateLimiter,
}

impl Conn {
    /// Write queued frames (through TLS when the connection has it), timing the
    /// broadcast frames that leave into `lat`.
    pub fn flush(
        &mut self,
        now_ns: u64,
        lat: &mut crate::metrics::Histogram,
    ) -> (usize, outq::Flushed) {
        match self.tls.as_deref_mut() {
            Some(tls) => self.outq.flush_tls(self.fd, tls, now_ns, lat),
            None => self.outq.flush(self.fd, now_ns, lat),
        }
    }

    /// Let go of unfinished input (a partial frame, a fragmented message); returns
    /// the bytes it held (as counted in the worker's unfinished-input total).
    pub fn drop_input(&mut self) -> usize {
        let held = self.input_held();
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.drop_held();
        }
        self.partial = Vec::new();
        self.decoder = Decoder::default();
        self.partial_since = None;
        held
    }

    /// Bytes of unfinished input it holds: a frame or request head cut short, a
    /// fragmented message, a TLS record cut short (counted in the worker's
    /// unfinished-input total).
    pub fn input_held(&self) -> usize {
        self.partial.capacity()
            + self.decoder.buffered()
            + self.tls.as_deref().map_or(0, tls::Tls::held)
    }

    /// The connection's user, if it presented a valid token.
    pub fn user(&self) -> Option<Arc<str>> {
        self.grant.as_ref().map(|g| g.user.clone())
    }

    /// A new connection in the handshake phase.
    pub fn new(fd: RawFd, peer: IpAddr, generation: u32, rate: RateLimiter) -> Self {
        Self {
            generation,
            fd,
            peer,
            phase: Phase::Handshake,
            endpoint: Endpoint::Client,
            decoder: Decoder::default(),
            partial: Vec::new(),
            outq: OutQueue::default(),
            rooms: Vec::new(),
            tls: None,
            grant: None,
            dirty: false,
            write_wait: WriteWait::No,
            shutdown_after_flush: false,
            user_counted: false,
            aborted: false,
            denied: false,
            deflate: 0,
            paused: false,
            read_pubs: 0,
            drained: 0,
            announced: false,
            ended: None,
            last_seen: 0,
            due: 0,
            partial_since: None,
            rate,
        }
    }
}
