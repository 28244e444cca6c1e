//! `[rooms]`: room history for resume (in memory and on disk), idempotency, presence
//! events and the slow-consumer policies.

use serde::{Deserialize, Serialize};

/// Room history kept by each room's owner for resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rooms {
    /// Messages kept per room for replay. Default 256. `0` disables replay (every
    /// resume answers `recovered:false`).
    pub replay_messages: usize,
    /// How long a message stays replayable, in seconds. Default 120.
    pub replay_seconds: u64,
    /// Bytes of history kept per room (the oldest messages go first). Default 4 MiB.
    pub replay_bytes: usize,
    /// Bytes of history the node keeps for all its rooms together (each worker a
    /// share); over it, the oldest messages of any room go first (counted in
    /// `ringway_history_evicted_total`). Rooms without subscribers keep their
    /// history within these bounds. Default 256 MiB.
    pub history_budget_bytes: usize,
    /// How long a publish's `idempotency_key` is remembered by the room's owner: a
    /// repeat within it is answered with the first publish's seq and not delivered
    /// again. In seconds; `0` turns idempotency off. Default 300.
    pub idempotency_window_s: u64,
    /// Idempotency keys remembered at once on the node (each worker a share); over
    /// it the oldest are forgotten first (counted). Default 100 000.
    pub idempotency_keys: usize,
    /// Slow-consumer policies by room-name prefix; rooms matching none use
    /// `disconnect`. In TOML: `[[rooms.policy]] prefix = "ticker:"
    /// slow_consumer = "conflate"`.
    #[serde(rename = "policy")]
    pub policies: Vec<RoomPolicy>,
    /// Room-name prefixes whose subscribers receive `join`/`leave` events when a
    /// user's first connection joins or last one leaves (debounced). Default none:
    /// rosters are still available through `presence`.
    pub presence_events: Vec<String>,
    /// A user must stay joined (or gone) this long before the event is sent, in
    /// milliseconds; a reconnect inside the window sends nothing. Default 1 000.
    pub presence_debounce_ms: u64,
    /// Keep room history on disk here (`--data-dir`): each worker appends the
    /// messages its rooms stamp to its own segment log, and a restarted node
    /// rebuilds every room's epoch, seq and history from it, so clients resume
    /// `recovered:true` across restarts. Default none (history in memory only).
    pub data_dir: Option<std::path::PathBuf>,
    /// When the log is synced to disk: `"always"` (before anything stamped in a
    /// turn is delivered or acknowledged: survives a power loss), `"interval"`
    /// (every `fsync_interval_ms`: a process crash loses nothing, a power loss up to
    /// that much, and the rooms then restart with new epochs) or `"never"` (the
    /// kernel writes back in its own time; same guarantees as `interval`, with a
    /// longer window). Default `"interval"`.
    pub fsync: FsyncPolicy,
    /// The interval of `fsync = "interval"`, milliseconds. Default 100.
    pub fsync_interval_ms: u64,
}

/// When the history log is synced (`rooms.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every turn that stamped something, before it leaves the process.
    Always,
    /// Every `rooms.fsync_interval_ms`.
    Interval,
    /// Never (the kernel's write-back).
    Never,
}

impl Rooms {
    /// The log's fsync policy.
    pub fn fsync_policy(&self) -> crate::store::segment::Fsync {
        match self.fsync {
            FsyncPolicy::Always => crate::store::segment::Fsync::Always,
            FsyncPolicy::Interval => {
                crate::store::segment::Fsync::IntervalMs(self.fsync_interval_ms)
            }
            FsyncPolicy::Never => crate::store::segment::Fsync::Never,
        }
    }

    /// The slow-consumer policy of `room` (longest matching prefix).
    pub fn policy(&self, room: &str) -> SlowPolicy {
        self.policies
            .iter()
            .filter(|p| room.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len())
            .map_or(SlowPolicy::Disconnect, |p| p.slow_consumer)
    }
}

/// What to do with a subscriber whose outbound queue is over its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowPolicy {
    /// Close with 4008; the client reconnects and resumes from its cursor (default:
    /// nothing is lost silently).
    Disconnect,
    /// Drop the oldest queued messages of the connection to make room (the client
    /// sees a seq gap).
    DropOldest,
    /// Drop queued messages of the same room (and the same `key`, when messages carry
    /// one) so only the newest value waits: for tickers, cursors, presence-like state.
    Conflate,
}

/// A slow-consumer policy for the rooms whose names start with `prefix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPolicy {
    /// Room-name prefix; the longest matching prefix wins.
    pub prefix: String,
    /// The policy.
    pub slow_consumer: SlowPolicy,
}

impl Default for Rooms {
    fn default() -> Self {
        Self {
            replay_messages: 256,
            replay_seconds: 120,
            replay_bytes: 4 << 20,
            history_budget_bytes: 256 << 20,
            idempotency_window_s: 300,
            idempotency_keys: 100_000,
            policies: Vec::new(),
            presence_events: Vec::new(),
            presence_debounce_ms: 1_000,
            data_dir: None,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 100,
        }
    }
}
