//! Per-worker counters and their Prometheus rendering.
//!
//! Counters are plain integers owned by their worker (no atomics on the per-message
//! path). A scrape asks every worker for a snapshot by mail and renders the sum, with
//! per-worker series where the split matters (connections).

pub mod histogram;

use std::fmt::Write;

use crate::hub::HubStats;
use crate::hub::ring::Miss;
pub use histogram::Histogram;

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

/// A metric series: name, help text, and how to read it from a snapshot.
type Series = (&'static str, &'static str, fn(&WorkerStats) -> u64);

/// Render the Prometheus text exposition of all workers' snapshots.
pub fn render(workers: &[WorkerStats], process: ProcessStats) -> String {
    let mut out = String::with_capacity(4096);
    let w = &mut out;
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
    family(
        w,
        (
            "ringway_connections",
            "gauge",
            "Open WebSocket connections, per worker.",
        ),
        "worker",
        workers
            .iter()
            .map(|s| (s.worker.to_string(), s.connections)),
    );
    let counters: [Series; 39] = [
        ("ringway_accepted_total", "TCP connections accepted.", |s| {
            s.accepted
        }),
        (
            "ringway_upgrades_total",
            "Completed WebSocket upgrades.",
            |s| s.upgrades,
        ),
        (
            "ringway_messages_in_total",
            "Data messages received from clients.",
            |s| s.messages_in,
        ),
        (
            "ringway_messages_out_total",
            "Frames queued toward clients.",
            |s| s.messages_out,
        ),
        (
            "ringway_bytes_in_total",
            "Bytes received from clients.",
            |s| s.bytes_in,
        ),
        (
            "ringway_bytes_out_total",
            "Bytes written to client sockets.",
            |s| s.bytes_out,
        ),
        (
            "ringway_published_total",
            "Messages stamped by room owners.",
            |s| s.hub.published,
        ),
        (
            "ringway_rate_limited_total",
            "Client messages and pings refused for the rate limits (limits.messages_per_second, limits.bytes_per_second).",
            |s| s.rate_refused,
        ),
        ("ringway_pings_total", "Server pings sent.", |s| s.pings),
        (
            "ringway_close_timeouts_total",
            "Closes the peer did not finish within limits.close_timeout_ms (the socket was shut down).",
            |s| s.close_timeouts,
        ),
        (
            "ringway_mesh_forwarded_total",
            "Room messages this node's owners sent to peer nodes (one per message per interested node).",
            |s| s.hub.mesh_forwarded,
        ),
        (
            "ringway_mesh_delivered_total",
            "Room messages from peer nodes fanned out to local subscribers.",
            |s| s.hub.mesh_delivered,
        ),
        (
            "ringway_lag_resumes_total",
            "Rooms whose subscribers here resumed from their cursors because the owner dropped messages for this node (its mesh queue was over half its bound).",
            |s| s.hub.lag_resumes,
        ),
        (
            "ringway_owner_moves_total",
            "Rooms that moved to another owner after a mesh link went up or down.",
            |s| s.hub.owner_moves,
        ),
        (
            "ringway_handoffs_total",
            "Rooms this node handed to their next owner with their epoch, seq and history (a drain, or a node that came back).",
            |s| s.hub.handoffs_out,
        ),
        (
            "ringway_handoffs_received_total",
            "Rooms this node took over from another node by handoff.",
            |s| s.hub.handoffs_in,
        ),
        (
            "ringway_handoffs_refused_total",
            "Handoffs refused because the room already lived here (the sender's copy was dropped; its subscribers re-sync).",
            |s| s.hub.handoffs_refused,
        ),
        (
            "ringway_handoff_parked_total",
            "Requests held because a handoff of their room could still be on its way.",
            |s| s.hub.parked,
        ),
        (
            "ringway_handoff_park_timeouts_total",
            "Held requests handled after mesh.dead_after_ms without the handoff they waited for (the room may start with a new epoch).",
            |s| s.hub.park_timeouts,
        ),
        (
            "ringway_handoff_waits_expired_total",
            "Waits for a peer's handoffs that ran out before the peer said it was done.",
            |s| s.hub.handoff_waits_expired,
        ),
        (
            "ringway_replica_seeds_total",
            "Rooms sent whole to a standby (a new standby, or a room taken over).",
            |s| s.hub.seeds,
        ),
        (
            "ringway_replica_elections_total",
            "Elections this node ran to continue a room's epoch under a new term (a standby changed, an owner was lost, a room was handed over).",
            |s| s.hub.elections,
        ),
        (
            "ringway_replica_elections_lost_total",
            "Elections lost or run out (no majority granted the term).",
            |s| s.hub.elections_lost,
        ),
        (
            "ringway_replica_promotions_total",
            "Rooms this node took over from a lost owner, from its copy as the standby: same epoch, no re-sync.",
            |s| s.hub.promotions,
        ),
        (
            "ringway_replica_rooms_given_up_total",
            "Owned rooms given up because no term could be won (this node was cut off from most of the cluster): their subscribers re-sync in a new epoch.",
            |s| s.hub.rooms_given_up,
        ),
        (
            "ringway_replica_refusals_total",
            "Times a standby refused this node's messages for a room (it granted a later term to another node).",
            |s| s.hub.standby_refusals,
        ),
        (
            "ringway_publish_duplicates_total",
            "Publishes recognised by their idempotency key as repeats: answered with the first one's seq, not delivered again.",
            |s| s.hub.duplicates,
        ),
        (
            "ringway_deflate_messages_total",
            "Messages compressed with permessage-deflate (a broadcast once, however many subscribers get it).",
            |s| s.deflate.compressed,
        ),
        (
            "ringway_deflate_bytes_in_total",
            "Payload bytes of the messages compressed, before compression.",
            |s| s.deflate.bytes_before,
        ),
        (
            "ringway_deflate_bytes_out_total",
            "Payload bytes of the messages compressed, after compression.",
            |s| s.deflate.bytes_after,
        ),
        (
            "ringway_inflate_messages_total",
            "Compressed client messages inflated.",
            |s| s.deflate.inflated,
        ),
        (
            "ringway_inflate_bytes_in_total",
            "Bytes of compressed client messages as received.",
            |s| s.deflate.inflated_in,
        ),
        (
            "ringway_inflate_bytes_out_total",
            "Bytes of compressed client messages once inflated.",
            |s| s.deflate.inflated_out,
        ),
        (
            "ringway_store_records_total",
            "Records written to the history log (rooms.data_dir): stamped messages, and each room's position at the start of a segment.",
            |s| s.store.records,
        ),
        (
            "ringway_store_bytes_written_total",
            "Bytes written to the history log.",
            |s| s.store.bytes,
        ),
        (
            "ringway_store_fsyncs_total",
            "Syncs of the history log (rooms.fsync).",
            |s| s.store.fsyncs,
        ),
        (
            "ringway_store_segments_deleted_total",
            "History segments deleted once every message in them left the replay window.",
            |s| s.store.deleted,
        ),
        (
            "ringway_store_errors_total",
            "History log writes, syncs or deletes that failed (see the log; messages are still delivered).",
            |s| s.store.errors,
        ),
        (
            "ringway_idempotency_keys_forgotten_total",
            "Idempotency keys forgotten before rooms.idempotency_window_s ended, to stay under rooms.idempotency_keys.",
            |s| s.idempotency_forgotten,
        ),
    ];
    let name = "ringway_deflate_seconds_total";
    header(
        w,
        name,
        "counter",
        "Time spent compressing messages with permessage-deflate.",
    );
    let _ = writeln!(w, "{name} {}", sum(&|s| s.deflate.nanos) as f64 / 1e9);
    let name = "ringway_store_fsync_seconds_total";
    header(w, name, "counter", "Time spent syncing the history log.");
    let _ = writeln!(w, "{name} {}", sum(&|s| s.store.fsync_nanos) as f64 / 1e9);
    for (name, help, f) in counters {
        header(w, name, "counter", help);
        let _ = writeln!(w, "{name} {}", sum(&f));
    }
    header(
        w,
        "ringway_resumes_total",
        "counter",
        "Resume requests (sub with since) answered by this node's room owners, by outcome and reason. A jump is a reconnect storm.",
    );
    let _ = writeln!(
        w,
        "ringway_resumes_total{{outcome=\"recovered\",reason=\"in_window\"}} {}",
        sum(&|s| s.hub.resumes_recovered)
    );
    for m in Miss::ALL {
        let _ = writeln!(
            w,
            "ringway_resumes_total{{outcome=\"not_recovered\",reason=\"{}\"}} {}",
            m.label(),
            sum(&|s| s.hub.resumes_missed[m as usize])
        );
    }
    family(
        w,
        (
            "ringway_history_evicted_total",
            "counter",
            "Room history messages evicted before anyone asked for them, by reason (count, age, room_bytes, node_budget).",
        ),
        "reason",
        crate::hub::ring::Evicted::ALL.iter().map(|&e| {
            (
                e.label().to_owned(),
                sum(&|s| s.hub.history_evicted[e as usize]),
            )
        }),
    );
    let mut latency = Histogram::default();
    for s in workers {
        latency.merge(&s.publish_to_write);
    }
    latency.render(
        w,
        "ringway_publish_to_write_seconds",
        "Time from a message reaching this node (from a client, the API or a peer) to its frame being handed to the kernel for a subscriber.",
    );
    family(
        w,
        (
            "ringway_dropped_total",
            "counter",
            "Frames dropped toward slow consumers, by reason.",
        ),
        "reason",
        Dropped::ALL
            .iter()
            .map(|&(d, label)| (label.to_owned(), sum(&|s| s.drops[d as usize]))),
    );
    family(
        w,
        (
            "ringway_refused_total",
            "counter",
            "Upgrades refused for capacity, by reason.",
        ),
        "reason",
        Refused::ALL
            .iter()
            .map(|&(r, label)| (label.to_owned(), sum(&|s| s.refused[r as usize]))),
    );
    family(
        w,
        (
            "ringway_send_queue_depth",
            "gauge",
            "Connections by send-queue depth in frames, bucketed by upper bound (depth_le: the bucket's bound; a gauge, not a histogram).",
        ),
        "depth_le",
        DEPTH_BUCKETS.iter().enumerate().map(|(i, &bound)| {
            let le = if bound == usize::MAX {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            (le, sum(&|s| s.queue_depth[i]))
        }),
    );
    family(
        w,
        (
            "ringway_handshake_failures_total",
            "counter",
            "Refused WebSocket upgrades, by HTTP status.",
        ),
        "status",
        HANDSHAKE_STATUSES
            .iter()
            .enumerate()
            .map(|(i, status)| (status.to_string(), sum(&|s| s.handshake_failures[i]))),
    );
    family(
        w,
        (
            "ringway_disconnects_total",
            "counter",
            "Ended connections, by reason.",
        ),
        "reason",
        Disconnect::ALL
            .iter()
            .map(|&d| (d.label().to_owned(), sum(&|s| s.disconnects[d as usize]))),
    );
    let gauges: [Series; 15] = [
        (
            "ringway_idempotency_keys",
            "Idempotency keys the node's room owners remember (bounded by rooms.idempotency_keys).",
            |s| s.idempotency_keys,
        ),
        (
            "ringway_mesh_interest",
            "Interest entries: peer nodes registered on owned rooms plus rooms mirrored from peers.",
            |s| s.interest,
        ),
        (
            "ringway_rooms_owned",
            "Rooms owned (sequenced) by this node.",
            |s| s.rooms_owned,
        ),
        (
            "ringway_rooms_replicated",
            "Owned rooms whose standby keeps a copy: losing this node loses none of their acknowledged messages.",
            |s| s.rooms_replicated,
        ),
        (
            "ringway_rooms_unreplicated",
            "Owned rooms with no standby while mesh.replicate is on (no live peer, or a standby being chosen): losing this node now would cost them their epoch.",
            |s| s.rooms_unreplicated,
        ),
        (
            "ringway_replica_held_messages",
            "Stamped messages waiting for their standby's acknowledgement before delivery.",
            |s| s.replica_held,
        ),
        (
            "ringway_replica_copies",
            "Rooms this node keeps a copy of as their standby.",
            |s| s.replica_copies,
        ),
        (
            "ringway_replica_bytes",
            "Bytes of history in the copies this node keeps as a standby (each bounded as an owner's history is).",
            |s| s.replica_bytes,
        ),
        (
            "ringway_handoff_parked",
            "Requests held now because a handoff of their room could still be on its way (each for at most mesh.dead_after_ms).",
            |s| s.handoff_parked,
        ),
        (
            "ringway_timer_entries",
            "Entries on the workers' timer wheels: one per open connection, plus stale ones not yet come due.",
            |s| s.timer_entries,
        ),
        (
            "ringway_store_disk_bytes",
            "Bytes of history on disk (rooms.data_dir): about what the rooms published within rooms.replay_seconds, plus one open segment per worker.",
            |s| s.store.disk_bytes,
        ),
        (
            "ringway_store_segments",
            "History segment files on disk.",
            |s| s.store.segments,
        ),
        (
            "ringway_history_bytes",
            "Bytes of room history held for resume (bounded by rooms.history_budget_bytes).",
            |s| s.history_bytes,
        ),
        (
            "ringway_rooms_subscribed",
            "Rooms with local subscribers, summed over workers.",
            |s| s.rooms_local,
        ),
        (
            "ringway_send_queue_bytes",
            "Bytes queued toward clients, summed over connections (a broadcast frame queued for N subscribers counts N times; memory holds it once).",
            |s| s.queued_bytes,
        ),
    ];
    for (name, help, f) in gauges {
        header(w, name, "gauge", help);
        let _ = writeln!(w, "{name} {}", sum(&f));
    }
    header(
        w,
        "ringway_process_resident_memory_bytes",
        "gauge",
        "Resident set size.",
    );
    let _ = writeln!(
        w,
        "ringway_process_resident_memory_bytes {}",
        process.rss_bytes
    );
    header(
        w,
        "ringway_max_connections",
        "gauge",
        "The node's connection cap (limits.max_connections, or what the open-file limit allows).",
    );
    let _ = writeln!(w, "ringway_max_connections {}", process.max_connections);
    header(
        w,
        "ringway_host_memory_bytes",
        "gauge",
        "The host's memory (MemTotal), to compare with the resident set size.",
    );
    let _ = writeln!(w, "ringway_host_memory_bytes {}", process.host_memory_bytes);
    header(
        w,
        "ringway_process_open_fds",
        "gauge",
        "Open file descriptors.",
    );
    let _ = writeln!(w, "ringway_process_open_fds {}", process.open_fds);
    out
}

/// One metric family with a single label: the header, then a series per value.
/// (Writing to a String cannot fail.)
fn family(
    w: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    rows: impl Iterator<Item = (String, u64)>,
) {
    header(w, name, kind, help);
    for (value, n) in rows {
        let _ = writeln!(w, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_and_per_worker_series() {
        let mut a = WorkerStats {
            worker: 0,
            connections: 3,
            messages_in: 5,
            ..Default::default()
        };
        a.handshake_failed(426);
        a.disconnected(Disconnect::TooBig);
        let b = WorkerStats {
            worker: 1,
            connections: 4,
            messages_in: 7,
            ..Default::default()
        };
        let text = render(&[a, b], ProcessStats::default());
        assert!(text.contains("ringway_connections{worker=\"0\"} 3\n"));
        assert!(text.contains("ringway_connections{worker=\"1\"} 4\n"));
        assert!(text.contains("ringway_messages_in_total 12\n"));
        assert!(text.contains("ringway_handshake_failures_total{status=\"426\"} 1\n"));
        assert!(text.contains("ringway_disconnects_total{reason=\"too_big\"} 1\n"));
    }
}
