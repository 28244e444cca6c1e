//! Per-worker counters and their Prometheus rendering.
//!
//! Counters are plain integers owned by their worker (no atomics on the per-message
//! path). A scrape asks every worker for a snapshot by mail and renders the sum, with
//! per-worker series where the split matters (connections).

pub mod histogram;
mod render;

use crate::hub::HubStats;
pub use histogram::Histogram;
pub use render::render;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Disconnect {
    /// The client sent a close frame.
    ClientClose,
    /// The socket ended without a close handshake (EOF, reset).
    Eof,
    /// Protocol violation (1002).
    Protocol,
    /// Invalid UTF-8 (1007).
    InvalidData,
    /// Frame or message too large (1009).
    TooBig,
    /// Outbound queue over its bound (4008).
    SlowConsumer,
    /// Handshake refused or timed out.
    Handshake,
    /// Node shutting down (drain, 1012).
    Shutdown,
    /// No traffic (not even a pong) within `idle_timeout_ms` (1001).
    IdleTimeout,
    /// Kept sending over the rate limit (4029).
    RateLimited,
    /// The token expired without a refresh (4001).
    TokenExpired,
    /// Repeated requests outside the token's permissions (4003).
    Forbidden,
    /// The user is over its connection cap across the cluster (4009).
    UserLimit,
    /// Closed by the app (`POST /v1/disconnect`).
    Kicked,
    /// A message took longer than `limits.message_timeout_ms` to arrive (1008).
    MessageTimeout,
    /// Closed to keep a node-wide budget (unfinished messages, 1013).
    Overload,
    /// A plain HTTP request on the client listener, answered (the client library,
    /// the demo page, a demo token): not a WebSocket at all.
    Page,
    /// Any other close code we sent (1011 internal error, say).
    Other,
}

impl Disconnect {
    /// Number of reasons (the size of the counter array).
    pub const COUNT: usize = Disconnect::Other as usize + 1;

    /// All reasons, in label order.
    pub const ALL: [Disconnect; Disconnect::COUNT] = [
        Disconnect::ClientClose,
        Disconnect::Eof,
        Disconnect::Protocol,
        Disconnect::InvalidData,
        Disconnect::TooBig,
        Disconnect::SlowConsumer,
        Disconnect::Handshake,
        Disconnect::Shutdown,
        Disconnect::IdleTimeout,
        Disconnect::RateLimited,
        Disconnect::TokenExpired,
        Disconnect::Forbidden,
        Disconnect::UserLimit,
        Disconnect::Kicked,
        Disconnect::MessageTimeout,
        Disconnect::Overload,
        Disconnect::Page,
        Disconnect::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::ClientClose => "client_close",
            Disconnect::Eof => "eof",
            Disconnect::Protocol => "protocol_error",
            Disconnect::InvalidData => "invalid_utf8",
            Disconnect::TooBig => "too_big",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Handshake => "handshake",
            Disconnect::Shutdown => "shutdown",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Forbidden => "forbidden",
            Disconnect::UserLimit => "user_limit",
            Disconnect::Kicked => "kicked",
            Disconnect::MessageTimeout => "message_timeout",
            Disconnect::Overload => "overload",
            Disconnect::Page => "page",
            Disconnect::Other => "other",
        }
    }

    /// The reason matching a close code we sent.
    pub fn for_code(code: u16) -> Self {
        use crate::ws::close;
        match code {
            close::PROTOCOL => Disconnect::Protocol,
            close::INVALID_DATA => Disconnect::InvalidData,
            close::TOO_BIG => Disconnect::TooBig,
            close::SLOW_CONSUMER => Disconnect::SlowConsumer,
            close::RATE_LIMITED => Disconnect::RateLimited,
            close::RESTART => Disconnect::Shutdown,
            close::GOING_AWAY => Disconnect::IdleTimeout,
            close::TOKEN_EXPIRED => Disconnect::TokenExpired,
            close::FORBIDDEN => Disconnect::Forbidden,
            close::USER_LIMIT => Disconnect::UserLimit,
            close::KICKED => Disconnect::Kicked,
            close::POLICY => Disconnect::MessageTimeout,
            close::TRY_AGAIN => Disconnect::Overload,
            _ => Disconnect::Other,
        }
    }
}

/// Why frames toward a slow consumer were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Dropped {
    /// Unsent frames of a connection closed with 4008.
    SlowConsumer,
    /// Oldest frames dropped to make room (`drop-oldest`).
    Oldest,
    /// Older frames of the same room/key replaced (`conflate`).
    Conflated,
}

impl Dropped {
    const ALL: [(Dropped, &'static str); 3] = [
        (Dropped::SlowConsumer, "slow_consumer_disconnect"),
        (Dropped::Oldest, "drop_oldest"),
        (Dropped::Conflated, "conflate"),
    ];
}

/// Why an upgrade was refused for capacity (the HTTP statuses are counted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Refused {
    /// The node is at `max_connections` (503).
    NodeFull,
    /// The client address is at `max_connections_per_ip` (429).
    PerIp,
    /// The node is draining (503).
    Draining,
    /// No valid token where one is needed (401).
    Unauthorized,
    /// `Origin` not in `auth.origins` (403).
    Origin,
    /// The user is at `auth.max_connections_per_user` (429).
    PerUser,
}

impl Refused {
    const ALL: [(Refused, &'static str); 6] = [
        (Refused::NodeFull, "max_connections"),
        (Refused::PerIp, "per_ip"),
        (Refused::Draining, "draining"),
        (Refused::Unauthorized, "unauthorized"),
        (Refused::Origin, "origin"),
        (Refused::PerUser, "per_user"),
    ];
}

/// Upper bounds (frames) of the send-queue depth buckets; the last is open-ended.
pub const DEPTH_BUCKETS: [usize; 6] = [0, 1, 8, 64, 512, usize::MAX];

/// The depth bucket of a queue holding `len` frames.
pub fn depth_bucket(len: usize) -> usize {
    DEPTH_BUCKETS
        .iter()
        .position(|&b| len <= b)
        .unwrap_or(DEPTH_BUCKETS.len() - 1)
}

/// HTTP statuses a refused upgrade can get, in label order.
pub const HANDSHAKE_STATUSES: [u16; 10] = [400, 401, 403, 404, 405, 408, 426, 429, 431, 503];

/// One worker's counters. Gauges are filled in when the snapshot is taken.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// Open connections (gauge).
    pub connections: u64,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Completed WebSocket upgrades.
    pub upgrades: u64,
    /// Refused upgrades, by status (index into [`HANDSHAKE_STATUSES`]).
    pub handshake_failures: [u64; HANDSHAKE_STATUSES.len()],
    /// Upgrades refused for capacity, by reason (index: `Refused as usize`).
    pub refused: [u64; Refused::ALL.len()],
    /// Ended connections, by reason (index: `Disconnect as usize`).
    pub disconnects: [u64; Disconnect::COUNT],
    /// Frames dropped toward slow consumers, by reason (index: `Dropped as usize`).
    pub drops: [u64; Dropped::ALL.len()],
    /// Server pings sent.
    pub pings: u64,
    /// Closes the peer did not finish within `limits.close_timeout_ms` (the socket was
    /// shut down; the connection was counted under its close's reason).
    pub close_timeouts: u64,
    /// Publishers paused because their room's fan-out was behind (client
    /// connections and HTTP publishes).
    pub publishers_paused: u64,
    /// Rooms whose fan-out is behind on this worker (gauge).
    pub rooms_behind: u64,
    /// Letters waiting in this worker's inbox (gauge).
    pub inbox: u64,
    /// Connections by send-queue depth (gauge; buckets of [`DEPTH_BUCKETS`]).
    pub queue_depth: [u64; DEPTH_BUCKETS.len()],
    /// Data messages received from clients.
    pub messages_in: u64,
    /// Frames written toward clients (queued).
    pub messages_out: u64,
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes written to client sockets.
    pub bytes_out: u64,

    /// Rooms this worker owns (gauge).
    pub rooms_owned: u64,
    /// Requests held for a handoff now (gauge).
    pub handoff_parked: u64,
    /// Owned rooms whose standby keeps a copy (gauge).
    pub rooms_replicated: u64,
    /// Owned rooms without a standby while replication is on (gauge).
    pub rooms_unreplicated: u64,
    /// Stamped messages held for their standby's acknowledgement (gauge).
    pub replica_held: u64,
    /// Copies kept here as a standby (gauge).
    pub replica_copies: u64,
    /// Bytes of history in those copies (gauge).
    pub replica_bytes: u64,
    /// Rooms with local subscribers (gauge).
    pub rooms_local: u64,

    /// Messages and pings refused for the rate limits.
    pub rate_refused: u64,
    /// Bytes of room history held (gauge).
    pub history_bytes: u64,
    /// Idempotency keys remembered (gauge).
    pub idempotency_keys: u64,
    /// Idempotency keys forgotten before their window ended (over the cap).
    pub idempotency_forgotten: u64,
    /// Entries on the timer wheel (gauge): one per open connection, plus stale ones
    /// still to come due.
    pub timer_entries: u64,
    /// The router's counters.
    pub hub: HubStats,
    /// Time from a message reaching this node to its frame being handed to the
    /// kernel for a subscriber.
    pub publish_to_write: Histogram,
    /// Bytes queued toward clients (gauge).
    pub queued_bytes: u64,

    /// Interest entries: peers interested in owned rooms plus rooms mirrored from
    /// peers (gauge).
    pub interest: u64,
    /// permessage-deflate.
    pub deflate: DeflateStats,
    /// The history log (`rooms.data_dir`).
    pub store: StoreStats,
}

/// What a worker's history log did.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Syncs.
    pub fsyncs: u64,
    /// Time spent syncing, ns.
    pub fsync_nanos: u64,
    /// Segments deleted once out of the window.
    pub deleted: u64,
    /// Writes, syncs or deletes that failed.
    pub errors: u64,
    /// Bytes on disk (gauge).
    pub disk_bytes: u64,
    /// Segment files (gauge).
    pub segments: u64,
}

/// What permessage-deflate did on a worker.
#[derive(Debug, Clone, Default)]
pub struct DeflateStats {
    /// Messages compressed (a broadcast once, whatever its subscribers).
    pub compressed: u64,
    /// Their payload bytes before compression.
    pub bytes_before: u64,
    /// Their payload bytes after.
    pub bytes_after: u64,
    /// Time spent compressing, ns.
    pub nanos: u64,
    /// Client messages inflated.
    pub inflated: u64,
    /// Their bytes as received, and once inflated.
    pub inflated_in: u64,
    /// See `inflated_in`.
    pub inflated_out: u64,
}

impl WorkerStats {
    /// Count a refused upgrade.
    pub fn handshake_failed(&mut self, status: u16) {
        if let Some(i) = HANDSHAKE_STATUSES.iter().position(|&s| s == status) {
            self.handshake_failures[i] += 1;
        }
    }

    /// Count an ended connection.
    pub fn disconnected(&mut self, why: Disconnect) {
        self.disconnects[why as usize] += 1;
    }
}

/// Process-wide figures read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The host's memory (`MemTotal`), bytes.
    pub host_memory_bytes: u64,
    /// The node's effective connection cap (set by the caller).
    pub max_connections: u64,
}

impl ProcessStats {
    /// Read from /proc (the connection cap is left for the caller).
    pub fn read() -> Self {
        let kib = |file: &str, key: &str| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Self {
            rss_bytes: kib("/proc/self/status", "VmRSS:") * 1024,
            open_fds,
            host_memory_bytes: kib("/proc/meminfo", "MemTotal:") * 1024,
            max_connections: 0,
        }
    }
}
