//! Configuration: every listener, limit and timing in one place, with its default
//! written next to it.
//!
//! A `Config` comes from the built-in defaults, then an optional TOML file
//! (`--config FILE`), then command-line flags, each layer overriding the one before.
//! Unknown keys in the file are an error (a typo must not silently fall back to a
//! default). [`Config::validate`] checks the combination and says what to change.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod compression;
mod hooks;
mod mesh;
mod rooms;

pub use compression::Compression;
pub use hooks::{HOOK_EVENTS, Hooks};
pub use mesh::{Mesh, Peer, PeerList};
pub use rooms::{FsyncPolicy, RoomPolicy, Rooms, SlowPolicy};

/// Mesh hellos an acceptor runs at once; more connections are closed unread, so
/// strangers cannot make the node spend a thread (or memory) each.
pub const MESH_PENDING_HELLOS: usize = 8;

/// Errors found while loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}; check the path given to --config")]
    Read {
        /// The file named by `--config`.
        path: String,
        /// Why reading failed.
        error: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file named by `--config`.
        path: String,
        /// The TOML parser's explanation (names the key and line).
        message: String,
    },
    /// A value is out of range or contradicts another value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole node configuration. `#[serde(default)]`: a file need only name what it
/// changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address for WebSocket clients. Default `127.0.0.1:8080` (loopback, so a first
    /// `cargo run` exposes nothing to the network).
    pub listen: SocketAddr,
    /// Address for the HTTP API (publish, metrics, health). Default `127.0.0.1:8081`.
    /// Kept on its own listener so it can stay private while `listen` is public.
    pub api_listen: SocketAddr,
    /// Worker threads, one per core, each with its own io_uring runtime and listener.
    /// `0` (the default) means one per available core.
    pub workers: usize,
    /// Pin worker `i` to core `i % cores` (default `true`). Turn off when several
    /// nodes share one small host (tests, laptops) and should float.
    pub pin_workers: bool,
    /// This node's name in the cluster and in `welcome` messages. Default `"n1"`.
    pub node_id: String,
    /// Path on which clients upgrade to WebSocket. Default `/ws`.
    pub ws_path: String,
    /// Add the conformance endpoint `/echo`, which echoes every data message through
    /// the same connection code. Default `false`.
    pub echo: bool,
    /// Accept clients without a token. Default `true`, logged as a warning at start-up.
    pub allow_anonymous: bool,
    /// Serve the demo chat page at `/` and guest tokens for `demo:*` rooms at
    /// `/demo/token` on the client listener. Default `true`; turn off in production
    /// (`demo = false`, `--no-demo`). `/client.js` is served either way.
    pub demo: bool,
    /// Per-connection and per-node limits.
    pub limits: Limits,
    /// Room history and replay.
    pub rooms: Rooms,
    /// Liveness checks.
    pub heartbeat: Heartbeat,
    /// Graceful shutdown.
    pub drain: Drain,
    /// Links to peer nodes (none by default: a single node).
    pub mesh: Mesh,
    /// Tokens, room permissions, origins, the API key.
    pub auth: Auth,
    /// TLS for the client listener (wss). Off by default.
    pub tls: Tls,
    /// The HTTP API's own limits.
    pub api: Api,
    /// What the node tells the app and asks it (webhooks, authorization and connect
    /// callbacks). Off by default.
    pub hooks: Hooks,
    /// permessage-deflate. On by default.
    pub compression: Compression,
}

/// Limits of the HTTP API listener: nothing a stranger sends it may hold the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Open API connections on this node; more are answered 503 and closed.
    /// Default 256. Held back from the open-file limit with the mesh's.
    pub max_connections: usize,
    /// Time a client has to send a request head, in milliseconds; slower: 408.
    /// Default 5 000.
    pub head_timeout_ms: u64,
    /// Time a client has to send a request body, in milliseconds; slower: 408.
    /// Default 10 000.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this long, in milliseconds.
    /// Default 30 000.
    pub idle_timeout_ms: u64,
    /// How long a request waits for another worker or node (a publish to a room
    /// owned elsewhere), in milliseconds; longer: 503. Default 5 000.
    pub reply_timeout_ms: u64,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            max_connections: 256,
            head_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            reply_timeout_ms: 5_000,
        }
    }
}

/// Limits that protect the node from large, slow or abusive clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest single frame payload a client may send, in bytes; larger closes the
    /// connection with 1009. Default 1 MiB.
    pub max_frame_size: usize,
    /// Largest message (all fragments together) a client may send, in bytes; larger
    /// closes the connection with 1009. Default 1 MiB.
    pub max_message_size: usize,
    /// Largest HTTP upgrade request head, in bytes; larger gets 431. Default 8 KiB.
    pub max_handshake_bytes: usize,
    /// Time a client has to complete the upgrade request (slowloris guard), in
    /// milliseconds. Default 10 000. Under pressure (the node over three quarters of
    /// `max_connections`, pending upgrades included) a new connection gets a tenth of
    /// it (at least 500 ms).
    pub handshake_timeout_ms: u64,
    /// Time an unfinished frame or fragmented message may take to arrive in full, in
    /// milliseconds; slower: close 1008. Default 30 000.
    pub message_timeout_ms: u64,
    /// Bytes of unfinished frames and messages the node holds for all its clients
    /// together (each worker a share); over it, the connection holding the most is
    /// closed with 1013. Default 64 MiB.
    pub partial_budget_bytes: usize,
    /// Time we wait for the client's half of the close handshake before dropping the
    /// socket, in milliseconds. Default 5 000.
    pub close_timeout_ms: u64,
    /// Outbound queue bound per connection, in bytes. Default 1 MiB.
    pub max_queue_bytes: usize,
    /// Outbound queue bound per connection, in messages. Default 4 096.
    pub max_queue_messages: usize,
    /// Publisher back-pressure (`runtime::backpressure`): a subscriber with more
    /// than this many frames queued, still reading, is behind; a room with over half
    /// its subscribers on a worker behind stops the reading of its publishers. 0
    /// turns it off. Default 64.
    pub backpressure_frames: usize,
    /// The longest a publisher is left unread at a time, in milliseconds (then it is
    /// read again at least once). Default 1 000.
    pub backpressure_pause_ms: u64,
    /// Listen backlog (further capped by `net.core.somaxconn`). Default 65 535.
    pub listen_backlog: i32,
    /// Seconds the kernel holds a new client connection that has sent nothing yet
    /// before handing it to the node (`TCP_DEFER_ACCEPT` on the client listener).
    /// The node then takes a connection once, with its upgrade request already
    /// readable: no wake-up for the bare handshake and another for the request, no
    /// poll in between, and one acknowledgement fewer on the wire. A socket still
    /// silent after this is handed over anyway and meets `handshake_timeout_ms` and
    /// the caps like any other; until then it costs the node nothing (the kernel
    /// keeps a small request entry, within the listen backlog). `0` turns it off.
    /// Default 1.
    pub defer_accept_s: u32,
    /// Longest room name, in bytes. Default 128.
    pub max_room_name: usize,
    /// Open WebSocket connections on this node; the next upgrade gets HTTP 503 with
    /// Retry-After. `0` (the default) means as many as the open-file limit allows
    /// (the soft limit less what [`Config::fd_reserve`] holds back for the node, the
    /// API and the mesh). Pending upgrades count.
    pub max_connections: usize,
    /// Open connections per client IP address; over it: HTTP 429. `0` (the default)
    /// is no cap: behind a NAT or a load balancer many users share one address.
    pub max_connections_per_ip: usize,
    /// Rooms one connection may be subscribed to at once. Default 256.
    pub max_subscriptions: usize,
    /// Sustained client messages per second per connection (token bucket rate).
    /// Default 100. `0` disables rate limiting.
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst above the rate. Default 200.
    pub message_burst: u32,
    /// Sustained payload bytes per second per connection (a second token bucket,
    /// whose burst is the larger of this and `max_message_size`), so one client
    /// cannot fill the node's history budget in seconds. Default 1 MiB. `0` disables.
    pub bytes_per_second: u32,
    /// A client that stays over its message or byte rate this long (its buckets
    /// never refill to half) is closed with 4029, in milliseconds. Only the first
    /// refused message of such an overrun gets a `rate_limited` error. Default 2 000.
    pub rate_close_after_ms: u32,
    /// Kernel send buffer per client socket (SO_SNDBUF), bytes. `0` (the default)
    /// leaves it to the kernel's autotuning, which lets a slow client's socket hold
    /// up to `net.ipv4.tcp_wmem` max (often 4 MiB) of kernel memory; a fixed size
    /// bounds kernel memory per connection and hands backlog to the queue policies
    /// sooner.
    pub send_buffer_bytes: usize,
}

impl Limits {
    /// The per-connection rate limits.
    pub fn rates(&self) -> crate::conn::rate::Rates {
        crate::conn::rate::Rates {
            messages_per_second: self.messages_per_second,
            message_burst: self.message_burst,
            bytes_per_second: self.bytes_per_second,
            byte_burst: self
                .bytes_per_second
                .max(u32::try_from(self.max_message_size).unwrap_or(u32::MAX)),
            close_after_ms: self.rate_close_after_ms,
        }
    }
}

/// Graceful shutdown (SIGTERM, SIGINT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Drain {
    /// Time over which connections are closed with 1012 in paced batches, in
    /// milliseconds; what is left is closed at the end and the process exits 0.
    /// Default 30 000.
    pub window_ms: u64,
}

impl Default for Drain {
    fn default() -> Self {
        Self { window_ms: 30_000 }
    }
}

/// TLS for client connections: set both files to serve wss on `listen`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain (leaf first).
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

/// Authentication and authorization (see `src/auth.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// HS256 secret for client tokens (at least 32 bytes). Prefer the environment
    /// variable `RINGWAY_TOKEN_SECRET`. None by default.
    pub token_secret: String,
    /// PEM file with an RSA or EC (P-256) public key: RS256/ES256 client tokens.
    pub token_public_key: Option<std::path::PathBuf>,
    /// Seconds before `exp` at which `refresh_needed` is sent. Default 60.
    pub refresh_margin_s: u64,
    /// Seconds after `exp` a connection may stay open waiting for its refresh;
    /// then it is closed with 4001. Default 10.
    pub refresh_grace_s: u64,
    /// Room-name prefixes that anonymous connections may not use even when
    /// `allow_anonymous` is on. Default none.
    pub rooms_require_auth: Vec<String>,
    /// Browser origins allowed to connect (`https://app.example.com`); a request
    /// with another `Origin` header gets 403. Empty (the default) allows any.
    pub origins: Vec<String>,
    /// Connections per user on this node; 0 = no cap (the default). More get 429.
    pub max_connections_per_user: usize,
    /// Longest token lifetime accepted (`exp` at most this far in the future), in
    /// seconds; a longer-lived token is refused (401). Default 86 400 (a day); 0: no
    /// cap.
    pub max_token_ttl_s: u64,
    /// Whether anonymous clients may send direct messages (`send`). Default false:
    /// a direct message then always has a sender the recipient can trust.
    pub anonymous_send: bool,
    /// Bearer key for the HTTP API, compared in constant time. Without one the API
    /// must listen on loopback. Prefer `RINGWAY_API_KEY`.
    pub api_key: String,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            token_secret: String::new(),
            token_public_key: None,
            refresh_margin_s: 60,
            refresh_grace_s: 10,
            rooms_require_auth: Vec::new(),
            origins: Vec::new(),
            max_connections_per_user: 0,
            max_token_ttl_s: 86_400,
            anonymous_send: false,
            api_key: String::new(),
        }
    }
}

impl Auth {
    /// Whether anonymous connections are kept out of `room`.
    pub fn room_requires_auth(&self, room: &str) -> bool {
        self.rooms_require_auth
            .iter()
            .any(|p| room.starts_with(p.as_str()))
    }
}

/// Liveness settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    /// Server ping period, in milliseconds; also announced in `welcome`. Default
    /// 25 000 (below the 30–60 s idle cut-off of common load balancers).
    pub ping_interval_ms: u64,
    /// A connection with no traffic (pongs count) for this long is closed, in
    /// milliseconds. Default 60 000.
    pub idle_timeout_ms: u64,
    /// Resolution of the per-worker timer wheel, in milliseconds: pings and idle
    /// closes happen up to one tick late. Default 1 000.
    pub tick_ms: u64,
}

/// A TOML error as one line: `line N (the line): what is wrong`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return what;
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let content = text.lines().nth(line - 1).unwrap_or("").trim();
    if content.is_empty() {
        format!("line {line}: {what}")
    } else {
        format!("line {line} ({content}): {what}")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            workers: 0,
            pin_workers: true,
            node_id: "n1".to_owned(),
            ws_path: "/ws".to_owned(),
            echo: false,
            allow_anonymous: true,
            demo: true,
            limits: Limits::default(),
            rooms: Rooms::default(),
            heartbeat: Heartbeat::default(),
            drain: Drain::default(),
            mesh: Mesh::default(),
            auth: Auth::default(),
            tls: Tls::default(),
            api: Api::default(),
            hooks: Hooks::default(),
            compression: Compression::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            max_handshake_bytes: 8 << 10,
            handshake_timeout_ms: 10_000,
            message_timeout_ms: 30_000,
            partial_budget_bytes: 64 << 20,
            close_timeout_ms: 5_000,
            max_queue_bytes: 1 << 20,
            max_queue_messages: 4096,
            backpressure_frames: 64,
            backpressure_pause_ms: 1_000,
            listen_backlog: 65_535,
            defer_accept_s: 1,
            max_room_name: 128,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_subscriptions: 256,
            messages_per_second: 100,
            message_burst: 200,
            bytes_per_second: 1 << 20,
            rate_close_after_ms: 2_000,
            send_buffer_bytes: 0,
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            tick_ms: 1_000,
        }
    }
}

impl Config {
    /// Load a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: display.clone(),
            error,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: display,
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text over the defaults. An error is one line: where, the line
    /// itself, and what is wrong with it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".to_owned(),
            message: one_line(text, &e),
        })
    }

    /// The number of workers to run: `workers`, or one per available core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Check values and combinations; the message says which key to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.rooms.idempotency_window_s > 7 * 86_400 {
            return bad(format!(
                "rooms.idempotency_window_s = {} is more than a week (604800): keys are held in memory, and a retry comes within minutes",
                self.rooms.idempotency_window_s
            ));
        }
        if !(1..=9).contains(&self.compression.level) {
            return bad(format!(
                "compression.level = {} must be 1 (fastest) to 9 (smallest)",
                self.compression.level
            ));
        }
        if self.worker_count() > 1024 {
            return bad(format!(
                "workers = {} is more than 1024; use one worker per core",
                self.workers
            ));
        }
        if !self.ws_path.starts_with('/') {
            return bad(format!(
                "ws_path = {:?} must start with '/', e.g. \"/ws\"",
                self.ws_path
            ));
        }
        if self.echo && self.ws_path == "/echo" {
            return bad("ws_path = \"/echo\" collides with the echo endpoint; pick another path or turn echo off".to_owned());
        }
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return bad("node_id must be 1 to 64 characters".to_owned());
        }
        let l = &self.limits;
        if l.max_frame_size < 125 || l.max_message_size < 125 {
            return bad("limits.max_frame_size and limits.max_message_size must be at least 125 bytes (the largest control frame)".to_owned());
        }
        if l.max_frame_size > l.max_message_size {
            return bad(format!(
                "limits.max_frame_size ({}) is larger than limits.max_message_size ({}); a frame is part of a message, so raise max_message_size or lower max_frame_size",
                l.max_frame_size, l.max_message_size
            ));
        }
        if l.max_handshake_bytes < 512 {
            return bad("limits.max_handshake_bytes must be at least 512".to_owned());
        }
        if l.max_message_size > 1 << 30 || l.max_queue_bytes > 1 << 30 {
            return bad(
                "limits.max_message_size and limits.max_queue_bytes must be at most 1 GiB"
                    .to_owned(),
            );
        }
        if l.backpressure_frames > 0 && !(1..=10_000).contains(&l.backpressure_pause_ms) {
            return bad(format!(
                "limits.backpressure_pause_ms is {}; it must be 1 to 10000 (or set limits.backpressure_frames = 0 to turn back-pressure off)",
                l.backpressure_pause_ms
            ));
        }
        if l.max_queue_messages == 0 || l.max_queue_bytes == 0 {
            return bad(
                "limits.max_queue_messages and limits.max_queue_bytes must be above 0".to_owned(),
            );
        }
        if l.max_room_name == 0 || l.max_room_name > 1024 {
            return bad("limits.max_room_name must be 1 to 1024".to_owned());
        }
        if self.heartbeat.ping_interval_ms == 0
            || self.heartbeat.idle_timeout_ms <= self.heartbeat.ping_interval_ms
        {
            return bad(format!(
                "heartbeat.idle_timeout_ms ({}) must be larger than heartbeat.ping_interval_ms ({}) so a healthy client has time to answer a ping",
                self.heartbeat.idle_timeout_ms, self.heartbeat.ping_interval_ms
            ));
        }
        let tick = self.heartbeat.tick_ms;
        if tick == 0 || tick > self.heartbeat.ping_interval_ms {
            return bad(format!(
                "heartbeat.tick_ms ({tick}) must be between 1 and heartbeat.ping_interval_ms ({})",
                self.heartbeat.ping_interval_ms
            ));
        }
        if l.message_timeout_ms == 0 {
            return bad("limits.message_timeout_ms must be above 0".to_owned());
        }
        if l.partial_budget_bytes < 2 * l.max_message_size {
            return bad(format!(
                "limits.partial_budget_bytes ({}) must be at least twice limits.max_message_size ({}) so the largest message can always arrive",
                l.partial_budget_bytes, l.max_message_size
            ));
        }
        if self.rooms.fsync == FsyncPolicy::Interval && self.rooms.fsync_interval_ms == 0 {
            return bad(
                "rooms.fsync_interval_ms must be above 0 (or set rooms.fsync = \"always\")"
                    .to_owned(),
            );
        }
        if self.rooms.history_budget_bytes < self.rooms.replay_bytes {
            return bad(format!(
                "rooms.history_budget_bytes ({}) is smaller than rooms.replay_bytes ({}): raise the budget or lower the per-room bound",
                self.rooms.history_budget_bytes, self.rooms.replay_bytes
            ));
        }
        let api = &self.api;
        if api.max_connections == 0
            || api.head_timeout_ms == 0
            || api.body_timeout_ms == 0
            || api.idle_timeout_ms == 0
            || api.reply_timeout_ms == 0
        {
            return bad(
                "api.max_connections and the api.*_timeout_ms values must be above 0".to_owned(),
            );
        }
        if l.max_subscriptions == 0 {
            return bad("limits.max_subscriptions must be at least 1".to_owned());
        }
        if l.messages_per_second > 0 && l.message_burst == 0 {
            return bad(
                "limits.message_burst must be at least 1 when limits.messages_per_second is set"
                    .to_owned(),
            );
        }
        let mut addrs = vec![("listen", self.listen), ("api_listen", self.api_listen)];
        addrs.extend(
            self.mesh
                .listen_addr(&self.node_id)
                .map(|a| match self.mesh.listen {
                    Some(_) => ("mesh.listen", a),
                    None => ("this node's entry in mesh.peers", a),
                }),
        );
        for (i, (a_key, a)) in addrs.iter().enumerate() {
            for (b_key, b) in &addrs[i + 1..] {
                if a.port() != 0 && a == b {
                    return bad(format!(
                        "{a_key} and {b_key} are both {a}: each listener needs its own address (different ports)"
                    ));
                }
            }
        }
        self.validate_mesh()?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad(
                "set both tls.cert and tls.key (--tls-cert, --tls-key), or neither".to_owned(),
            );
        }
        let a = &self.auth;
        if !a.token_secret.is_empty() && a.token_secret.len() < 32 {
            return bad("auth.token_secret must be at least 32 bytes (e.g. `openssl rand -hex 32`); a short HS256 secret can be brute-forced".to_owned());
        }
        if !self.allow_anonymous && a.token_secret.is_empty() && a.token_public_key.is_none() {
            return bad("tokens are required (require_auth / allow_anonymous = false) but no key is set: give --token-secret (RINGWAY_TOKEN_SECRET) or --token-public-key FILE".to_owned());
        }
        if a.api_key.is_empty() && !self.api_listen.ip().is_loopback() {
            return bad(format!(
                "api_listen = {} is not a loopback address but no auth.api_key is set: set one (RINGWAY_API_KEY) or keep the API on 127.0.0.1",
                self.api_listen
            ));
        }
        if self.drain.window_ms == 0 {
            return bad(
                "drain.window_ms must be above 0 (use 1 to close everything at once)".to_owned(),
            );
        }
        self.hooks.validate()
    }

    fn validate_mesh(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let m = &self.mesh;
        let peers = m.peer_list(&self.node_id)?.others;
        if peers.is_empty() {
            return Ok(());
        }
        if let (None, Some(own)) = (m.listen, m.peer_list(&self.node_id)?.own)
            && own.addr.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(format!(
                "this node's entry in mesh.peers, {}={}, is not IP:PORT (a node listens on an IP address, not a host name): write it as {}=127.0.0.1:7400, say, or set mesh.listen (--mesh-listen IP:PORT)",
                self.node_id, own.addr, self.node_id
            ));
        }
        if m.listen_addr(&self.node_id).is_none() {
            return bad(format!(
                "mesh.peers is set but this node ({:?}) has no mesh address: set mesh.listen (--mesh-listen HOST:PORT), or list it in mesh.peers as {:?}=IP:PORT",
                self.node_id, self.node_id
            ));
        }
        if m.secret.is_empty() {
            return bad("mesh.secret is not set but peers are configured: set the same value on every node (RINGWAY_MESH_SECRET or --mesh-secret), e.g. from `openssl rand -hex 32`".to_owned());
        }
        if m.secret.len() < 16 {
            return bad("mesh.secret must be at least 16 bytes when peers are configured; set the same value on every node (RINGWAY_MESH_SECRET or --mesh-secret), e.g. from `openssl rand -hex 32`".to_owned());
        }
        if peers.len() > 63 {
            return bad(format!(
                "{} peers: a cluster has at most 64 nodes",
                peers.len()
            ));
        }
        if m.heartbeat_ms == 0 || m.dead_after_ms < 2 * m.heartbeat_ms {
            return bad(format!(
                "mesh.dead_after_ms ({}) must be at least twice mesh.heartbeat_ms ({})",
                m.dead_after_ms, m.heartbeat_ms
            ));
        }
        if m.backoff_base_ms == 0 || m.backoff_cap_ms < m.backoff_base_ms {
            return bad(
                "mesh.backoff_base_ms must be above 0 and at most mesh.backoff_cap_ms".to_owned(),
            );
        }
        if m.max_frame_bytes < 2 * self.limits.max_message_size + 4096 {
            return bad(format!(
                "mesh.max_frame_bytes ({}) must be at least twice limits.max_message_size plus 4096 ({}) so any message fits a mesh frame",
                m.max_frame_bytes,
                2 * self.limits.max_message_size + 4096
            ));
        }
        if m.queue_frames == 0 || m.queue_bytes < m.max_frame_bytes {
            return bad("mesh.queue_bytes must be at least mesh.max_frame_bytes, and mesh.queue_frames above 0".to_owned());
        }
        Ok(())
    }

    /// Whether webhooks are on and send events of `kind`.
    pub fn hooks_want(&self, kind: &str) -> bool {
        !self.hooks.url.is_empty() && self.hooks.events.iter().any(|e| e == kind)
    }

    /// Whether the demo page and its guest tokens are served: `demo`, unless tokens
    /// are required (`allow_anonymous = false` refuses the guest tokens the page
    /// needs).
    pub fn demo_served(&self) -> bool {
        self.demo && self.allow_anonymous
    }

    /// File descriptors held back from the open-file limit so clients can never
    /// starve them: the node's own (listeners, mailboxes, rings, files), every API
    /// connection it allows, and the mesh (two per peer plus pending hellos).
    pub fn fd_reserve(&self) -> usize {
        let peers = self
            .mesh
            .peer_list(&self.node_id)
            .map_or(0, |l| l.others.len());
        // The app's callbacks hold a connection per calling thread (the webhook
        // sender one, the connect callback its own).
        let h = &self.hooks;
        let hooks = usize::from(!h.url.is_empty())
            + if h.authorize_url.is_empty() {
                0
            } else {
                h.authorize_concurrency
            }
            + if h.connect_url.is_empty() {
                0
            } else {
                h.authorize_concurrency
            };
        64 + self.api.max_connections + 2 * peers + MESH_PENDING_HELLOS + hooks
    }

    /// `heartbeat.ping_interval_ms` as a `Duration`.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat.ping_interval_ms)
    }
}

#[cfg(test)]
mod tests;
