//! `[hooks]`: what the node tells the app and asks it (see `src/hooks`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The kinds of webhook event (`hooks.events`).
pub const HOOK_EVENTS: [&str; 7] = [
    "connect",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "publish",
    "join",
    "leave",
];

/// Webhooks and callbacks to the app (see `src/hooks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hooks {
    /// Where events are POSTed in signed batches (`http://` or `https://`); empty:
    /// no webhooks. Default empty.
    pub url: String,
    /// The key each request is signed with (HMAC-SHA256 of the body, header
    /// `X-Ringway-Signature: sha256=<hex>`); at least 16 bytes, required with any
    /// URL. Prefer the environment variable `RINGWAY_HOOKS_SECRET`.
    pub secret: String,
    /// Which events to send: `connect`, `disconnect`, `subscribe`, `unsubscribe`,
    /// `publish`, `join`, `leave`. Default all.
    pub events: Vec<String>,
    /// Rooms whose client publishes become `publish` events (patterns: `name` or
    /// `prefix*`). Default none.
    pub publish_rooms: Vec<String>,
    /// Rooms whose members' first join and last leave become `join`/`leave` events
    /// (patterns). Default `["*"]`: every room, the personal `user:<id>` rooms
    /// included (a user came online, went offline).
    pub presence_rooms: Vec<String>,
    /// Events per request at most. Default 100.
    pub batch_events: usize,
    /// How long an event may wait for others to share its request, in
    /// milliseconds. Default 100.
    pub batch_ms: u64,
    /// Events kept while the app does not answer; over it the oldest are dropped
    /// (counted). Default 100 000.
    pub queue_events: usize,
    /// Time for one request, in milliseconds. Default 5 000.
    pub timeout_ms: u64,
    /// Retry delay: random(0, min(cap, base * 2^attempt)), in milliseconds. Defaults
    /// 100 and 10 000.
    pub retry_base_ms: u64,
    /// See `retry_base_ms`.
    pub retry_cap_ms: u64,
    /// Where subscriptions and publishes to `authorize_rooms` are authorized
    /// (`POST {user, conn, room, action, claims}` → `{"allow": bool, "ttl_s"?}`);
    /// empty: tokens alone decide. Default empty.
    pub authorize_url: String,
    /// Rooms that need the app's authorization (patterns). Default none.
    pub authorize_rooms: Vec<String>,
    /// Time for an authorization, in milliseconds; a timeout denies (unless
    /// `authorize_fail_open`). Default 2 000.
    pub authorize_timeout_ms: u64,
    /// Allow instead of deny when the app does not answer in time or answers an
    /// error. Default false (fail closed).
    pub authorize_fail_open: bool,
    /// How long an answer without `ttl_s` is cached per user and room, in seconds.
    /// Default 60.
    pub authorize_ttl_s: u64,
    /// Calls to `authorize_url` in flight at once on the node (a thread each);
    /// more wait in a queue (64 per thread; past it they fail at once). Default 64.
    pub authorize_concurrency: usize,
    /// Where a connection without a token is identified (cookie sessions):
    /// `POST {cookies, headers}` → `{"user", "rooms"?}`, or 401/403 to refuse it.
    /// Empty: off. Default empty.
    pub connect_url: String,
    /// Request headers passed to `connect_url` besides the cookies (lower case).
    /// Default none.
    pub connect_headers: Vec<String>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            events: HOOK_EVENTS.iter().map(|k| k.to_string()).collect(),
            publish_rooms: Vec::new(),
            presence_rooms: vec!["*".to_owned()],
            batch_events: 100,
            batch_ms: 100,
            queue_events: 100_000,
            timeout_ms: 5_000,
            retry_base_ms: 100,
            retry_cap_ms: 10_000,
            authorize_url: String::new(),
            authorize_rooms: Vec::new(),
            authorize_timeout_ms: 2_000,
            authorize_fail_open: false,
            authorize_ttl_s: 60,
            authorize_concurrency: 64,
            connect_url: String::new(),
            connect_headers: Vec::new(),
        }
    }
}

impl Hooks {
    /// Check the settings: URLs, the secret, event kinds, bounds, and settings
    /// that would silently do nothing.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let h = self;
        let urls = [
            ("hooks.url", &h.url),
            ("hooks.authorize_url", &h.authorize_url),
            ("hooks.connect_url", &h.connect_url),
        ];
        for (key, url) in urls {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return bad(format!("{key} = {url:?}: give an http:// or https:// URL"));
            }
        }
        if urls.iter().any(|(_, u)| !u.is_empty()) && h.secret.len() < 16 {
            return bad("hooks.secret must be at least 16 bytes when a hooks URL is set: the app checks every request's signature with it (set RINGWAY_HOOKS_SECRET, e.g. `openssl rand -hex 32`)".to_owned());
        }
        if let Some(e) = h.events.iter().find(|e| !HOOK_EVENTS.contains(&e.as_str())) {
            return bad(format!(
                "hooks.events: {e:?} is not an event; give some of {}",
                HOOK_EVENTS.join(", ")
            ));
        }
        if h.batch_events == 0
            || h.queue_events == 0
            || h.timeout_ms == 0
            || h.authorize_timeout_ms == 0
            || h.authorize_concurrency == 0
        {
            return bad("hooks.batch_events, queue_events, timeout_ms, authorize_timeout_ms and authorize_concurrency must be above 0".to_owned());
        }
        if h.retry_base_ms == 0 || h.retry_cap_ms < h.retry_base_ms {
            return bad(
                "hooks.retry_base_ms must be above 0 and at most hooks.retry_cap_ms".to_owned(),
            );
        }
        if !h.authorize_url.is_empty() && h.authorize_rooms.is_empty() {
            return bad("hooks.authorize_url is set but hooks.authorize_rooms is empty: name the rooms the app decides (patterns such as \"private:*\")".to_owned());
        }
        if h.authorize_url.is_empty() && !h.authorize_rooms.is_empty() {
            // Rooms meant to be guarded would be open to anyone.
            return bad("hooks.authorize_rooms is set but hooks.authorize_url is empty: nothing would authorize those rooms; set the URL (--authorize-url) or remove the rooms".to_owned());
        }
        if h.connect_url.is_empty() && !h.connect_headers.is_empty() {
            return bad("hooks.connect_headers is set but hooks.connect_url is empty: set the URL (--connect-url) or remove the headers".to_owned());
        }
        Ok(())
    }
}
