//! The authorization callback: before a connection subscribes or publishes to a room
//! matching `hooks.authorize_rooms`, the app is asked (`POST hooks.authorize_url`).
//!
//! Two halves. [`Gate`] is sans-IO and lives in each worker: the answers it has
//! (cached per user, room and action for their TTL, bounded), and the requests
//! parked behind a question already asked (one call per user, room and action, however
//! many requests wait on it). [`Authorizer`] is the node's pool of threads that make
//! the calls; a worker hands it a question and a way back to its mailbox, and goes on
//! serving its connections, this one included, while the app thinks.
//!
//! The call:
//!
//! ```text
//! POST authorize_url   X-Ringway-Signature: sha256=<hex HMAC of the body under hooks.secret>
//! {"node":"n1","conn":"0-5-1","user":"alice","room":"private:1","action":"subscribe",
//!  "claims":{"sub":"alice","exp":1790000000,...}}
//! ```
//!
//! `action` is `subscribe` (also asked for `presence`), `publish` or `send` (a direct
//! message: the room is the recipient's `user:<id>`). `user` and `claims` are `null`
//! for anonymous connections. The app answers 200 `{"allow": true|false, "ttl_s": N}`
//! (`ttl_s` optional: `hooks.authorize_ttl_s`; 0 caches nothing), or 401/403 for a
//! refusal. Anything else (no answer within `hooks.authorize_timeout_ms`, another
//! status, a body that says neither) is a failure: refused, unless
//! `hooks.authorize_fail_open`, and never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::warn;

use super::client::{Client, Outcome};
use super::pool::{Job, Pool};
use crate::config;
use crate::metrics::histogram::Histogram;

/// What a connection wants to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Subscribe (or ask for the roster).
    Subscribe,
    /// Publish to a room.
    Publish,
    /// Send a direct message (the room is the recipient's personal room).
    Send,
}

impl Action {
    /// Its name in the call.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Send => "send",
        }
    }
}

/// Whose answer: a user (cached across its connections) or an anonymous connection
/// (its id, with a prefix no user id can have), a room and an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The user, or `" conn <id>"` for an anonymous connection.
    pub who: Box<str>,
    /// The room.
    pub room: Box<str>,
    /// The action.
    pub action: Action,
}

/// The app's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed, cached for `ttl_s`.
    Allow {
        /// Seconds to cache it.
        ttl_s: u64,
    },
    /// Refused, cached for `ttl_s`.
    Deny {
        /// Seconds to cache it.
        ttl_s: u64,
    },
    /// No usable answer (a timeout, a failure, an answer that says neither): why.
    Failed {
        /// It ran out of time (else it failed otherwise).
        timeout: bool,
        /// What happened, for the log.
        why: String,
    },
}

/// What the gate says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Allowed (a cached answer): go on.
    Allowed,
    /// Refused (a cached answer).
    Denied,
    /// Parked; this is the first request for its key: ask the app.
    Ask,
    /// Parked behind a question already asked.
    Waiting,
}

/// The answers a worker has and the requests waiting for one. Sans-IO: times are
/// the caller's milliseconds.
#[derive(Debug)]
pub struct Gate<W> {
    /// Answers, with when they expire.
    cache: HashMap<Key, (bool, u64)>,
    /// Questions asked, with the requests waiting on each (in arrival order).
    asked: HashMap<Key, Vec<W>>,
    /// At most this many cached answers.
    max_cached: usize,
}

impl<W> Gate<W> {
    /// A gate caching at most `max_cached` answers.
    pub fn new(max_cached: usize) -> Self {
        Self {
            cache: HashMap::new(),
            asked: HashMap::new(),
            max_cached,
        }
    }

    /// What to do with a request for `key` at `now_ms`; if it is parked, `waiter`
    /// makes what [`Gate::answer`] returns for it. Requests for a key in question
    /// wait even if an older answer is cached: they are served in order.
    pub fn check(&mut self, key: &Key, now_ms: u64, waiter: impl FnOnce() -> W) -> Check {
        if let Some(waiting) = self.asked.get_mut(key) {
            waiting.push(waiter());
            return Check::Waiting;
        }
        match self.cache.get(key) {
            Some(&(true, until)) if now_ms < until => Check::Allowed,
            Some(&(false, until)) if now_ms < until => Check::Denied,
            _ => {
                self.asked.insert(key.clone(), vec![waiter()]);
                Check::Ask
            }
        }
    }

    /// The app answered for `key` at `now_ms`: whether it allows (`None`: it did
    /// not say, nothing is cached), and the requests that waited, in order.
    pub fn answer(&mut self, key: &Key, verdict: &Verdict, now_ms: u64) -> Vec<W> {
        let (allow, ttl_s) = match *verdict {
            Verdict::Allow { ttl_s } => (true, ttl_s),
            Verdict::Deny { ttl_s } => (false, ttl_s),
            Verdict::Failed { .. } => (false, 0),
        };
        if ttl_s > 0 {
            if self.cache.len() >= self.max_cached && !self.cache.contains_key(key) {
                self.cache.retain(|_, &mut (_, until)| until > now_ms);
                if self.cache.len() >= self.max_cached {
                    // Still full of live answers: forget an arbitrary one (it is
                    // asked again when next needed).
                    if let Some(k) = self.cache.keys().next().cloned() {
                        self.cache.remove(&k);
                    }
                }
            }
            let until = now_ms.saturating_add(ttl_s.saturating_mul(1000));
            self.cache.insert(key.clone(), (allow, until));
        } else {
            self.cache.remove(key);
        }
        self.asked.remove(key).unwrap_or_default()
    }

    /// Cached answers (expired ones included until they are swept).
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Questions waiting for the app.
    #[cfg(test)]
    pub fn asking(&self) -> usize {
        self.asked.len()
    }
}

/// Counters of the authorization callback.
#[derive(Debug, Default)]
pub struct AuthorizeStats {
    /// Calls the app answered allow.
    pub allowed: AtomicU64,
    /// Calls the app answered deny (or 401/403).
    pub denied: AtomicU64,
    /// Calls that got no answer in time.
    pub timeouts: AtomicU64,
    /// Calls that failed otherwise (a connection error, another status, a body
    /// that says neither, the pool's queue full).
    pub errors: AtomicU64,
    /// Requests decided by a cached answer.
    pub cache_hits: AtomicU64,
}

/// The node's authorization callback: its client and counters; the calls run on
/// the node's [`Pool`].
pub struct Authorizer {
    client: Client,
    pool: Arc<Pool>,
    cfg: config::Hooks,
    /// Counters.
    pub stats: AuthorizeStats,
    /// Time from a question being asked to its verdict.
    latency: Mutex<Histogram>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("url", &self.cfg.authorize_url)
            .finish_non_exhaustive()
    }
}

/// One question on its way.
struct Question {
    me: Arc<Authorizer>,
    body: Vec<u8>,
    reply: Box<dyn FnOnce(Verdict) + Send>,
    at: Instant,
}

impl Job for Question {
    fn run(self: Box<Self>) {
        let me = &self.me;
        let timeout = Duration::from_millis(me.cfg.authorize_timeout_ms);
        let verdict = if self.at.elapsed() >= timeout {
            Verdict::Failed {
                timeout: true,
                why: "waited its whole timeout for a free caller".into(),
            }
        } else {
            call(
                &me.client,
                &self.body,
                me.cfg.authorize_ttl_s,
                self.at,
                timeout,
            )
        };
        me.count(&verdict, self.at);
        (self.reply)(verdict);
    }

    fn refuse(self: Box<Self>, why: &str) {
        let v = Verdict::Failed {
            timeout: false,
            why: why.into(),
        };
        self.me.count(&v, self.at);
        (self.reply)(v);
    }
}

impl Authorizer {
    /// The callback `cfg` describes for node `node`, calling on `pool`; `None`
    /// without `authorize_url`.
    pub fn new(cfg: &config::Hooks, node: &str, pool: &Arc<Pool>) -> Option<Arc<Self>> {
        if cfg.authorize_url.is_empty() {
            return None;
        }
        let timeout = Duration::from_millis(cfg.authorize_timeout_ms);
        Some(Arc::new(Self {
            client: Client::new(&cfg.authorize_url, &cfg.secret, node, timeout),
            pool: pool.clone(),
            cfg: cfg.clone(),
            stats: AuthorizeStats::default(),
            latency: Mutex::new(Histogram::default()),
        }))
    }

    /// Ask the app (`body`, see [`body`]); `reply` gets the verdict, on a calling
    /// thread.
    pub fn ask(self: &Arc<Self>, body: Vec<u8>, reply: Box<dyn FnOnce(Verdict) + Send>) {
        self.pool.submit(Box::new(Question {
            me: self.clone(),
            body,
            reply,
            at: Instant::now(),
        }));
    }

    /// Whether requests for `room` are asked about.
    pub fn covers(&self, room: &str) -> bool {
        super::matches_any(&self.cfg.authorize_rooms, room)
    }

    /// Whether a failed call lets the request through.
    pub fn fail_open(&self) -> bool {
        self.cfg.authorize_fail_open
    }

    fn count(&self, v: &Verdict, at: Instant) {
        let s = &self.stats;
        let c = match v {
            Verdict::Allow { .. } => &s.allowed,
            Verdict::Deny { .. } => &s.denied,
            Verdict::Failed { timeout: true, .. } => &s.timeouts,
            Verdict::Failed { .. } => &s.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Verdict::Failed { why, timeout } = v {
            let why = if *timeout {
                format!(
                    "no answer within hooks.authorize_timeout_ms ({} ms)",
                    self.cfg.authorize_timeout_ms
                )
            } else {
                why.clone()
            };
            warn!(
                url = %self.cfg.authorize_url,
                "authorization callback failed: {why}; the request is {}",
                if self.cfg.authorize_fail_open {
                    "allowed (hooks.authorize_fail_open is on)"
                } else {
                    "refused (hooks.authorize_fail_open is off)"
                }
            );
        }
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(at.elapsed().as_nanos() as u64);
    }

    /// Prometheus text for the callback.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        let name = "ringway_authorize_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Calls to hooks.authorize_url, by result (a timeout or an error refuses unless hooks.authorize_fail_open).\n# TYPE {name} counter"
        );
        for (result, c) in [
            ("allowed", &s.allowed),
            ("denied", &s.denied),
            ("timeout", &s.timeouts),
            ("error", &s.errors),
        ] {
            let _ = writeln!(
                out,
                "{name}{{result=\"{result}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let name = "ringway_authorize_cache_hits_total";
        let _ = writeln!(
            out,
            "# HELP {name} Subscribes and publishes decided by a cached answer of the authorization callback.\n# TYPE {name} counter\n{name} {}",
            s.cache_hits.load(Ordering::Relaxed)
        );
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(
                out,
                "ringway_authorize_seconds",
                "From a question to the authorization callback to its verdict.",
            );
    }
}

/// The app's answer body.
#[derive(Deserialize)]
struct Answer {
    allow: bool,
    ttl_s: Option<u64>,
}

/// The most an answer may be cached, whatever it says (a day).
const MAX_TTL_S: u64 = 86_400;

/// One call, and what its outcome means.
fn call(client: &Client, body: &[u8], default_ttl: u64, at: Instant, limit: Duration) -> Verdict {
    match client.post(body, &[]) {
        Outcome::Ok(text) => parse(&text, default_ttl),
        Outcome::Refused(401 | 403) => Verdict::Deny { ttl_s: default_ttl },
        Outcome::Refused(status) => Verdict::Failed {
            timeout: false,
            why: format!(
                "the app answered HTTP {status}; answer 200 with {{\"allow\": true|false}}"
            ),
        },
        Outcome::Retry(why) => Verdict::Failed {
            timeout: at.elapsed() >= limit,
            why,
        },
    }
}

/// What an answer body says.
pub fn parse(text: &str, default_ttl: u64) -> Verdict {
    match serde_json::from_str::<Answer>(text) {
        Ok(a) => {
            let ttl_s = a.ttl_s.unwrap_or(default_ttl).min(MAX_TTL_S);
            if a.allow {
                Verdict::Allow { ttl_s }
            } else {
                Verdict::Deny { ttl_s }
            }
        }
        Err(e) => Verdict::Failed {
            timeout: false,
            why: format!("the answer is not {{\"allow\": true|false, \"ttl_s\"?: N}}: {e}"),
        },
    }
}

/// The JSON body of a question.
pub fn body(
    node: &str,
    conn: &str,
    user: Option<&str>,
    room: &str,
    action: Action,
    claims: Option<&str>,
) -> Vec<u8> {
    let claims = claims
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "node": node,
        "conn": conn,
        "user": user,
        "room": room,
        "action": action.as_str(),
        "claims": claims,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(who: &str, room: &str) -> Key {
        Key {
            who: who.into(),
            room: room.into(),
            action: Action::Subscribe,
        }
    }

    #[test]
    fn one_question_per_key_and_its_waiters_in_order() {
        let mut g = Gate::new(10);
        let k = key("alice", "private:1");
        assert_eq!(g.check(&k, 0, || 1), Check::Ask);
        assert_eq!(g.check(&k, 1, || 2), Check::Waiting);
        assert_eq!(g.check(&key("bob", "private:1"), 1, || 9), Check::Ask);
        assert_eq!(g.asking(), 2);
        let released = g.answer(&k, &Verdict::Allow { ttl_s: 60 }, 5);
        assert_eq!(released, vec![1, 2]);
        assert_eq!(g.check(&k, 6, || 3), Check::Allowed);
        // Cached until the TTL ends, then asked again.
        assert_eq!(g.check(&k, 60_004, || 4), Check::Allowed);
        assert_eq!(g.check(&k, 60_005, || 5), Check::Ask);
    }

    #[test]
    fn refusals_are_cached_and_failures_are_not() {
        let mut g = Gate::new(10);
        let k = key("alice", "private:1");
        g.check(&k, 0, || ());
        g.answer(&k, &Verdict::Deny { ttl_s: 10 }, 0);
        assert_eq!(g.check(&k, 1, || ()), Check::Denied);
        let k2 = key("alice", "private:2");
        g.check(&k2, 0, || ());
        let failed = Verdict::Failed {
            timeout: true,
            why: "slow".into(),
        };
        assert_eq!(g.answer(&k2, &failed, 0).len(), 1);
        assert_eq!(g.check(&k2, 1, || ()), Check::Ask);
        // A TTL of 0 caches nothing, and forgets an older answer.
        g.answer(&k, &Verdict::Allow { ttl_s: 0 }, 2);
        assert_eq!(g.check(&k, 3, || ()), Check::Ask);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut g = Gate::new(3);
        for i in 0..10 {
            let k = key("u", &format!("r{i}"));
            g.check(&k, 0, || ());
            g.answer(&k, &Verdict::Allow { ttl_s: 60 }, 0);
            assert!(g.cached() <= 3, "{} cached", g.cached());
        }
        // The newest answer is kept.
        assert_eq!(g.check(&key("u", "r9"), 1, || ()), Check::Allowed);
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(parse(r#"{"allow":true}"#, 60), Verdict::Allow { ttl_s: 60 });
        assert_eq!(
            parse(r#"{"allow":false,"ttl_s":5}"#, 60),
            Verdict::Deny { ttl_s: 5 }
        );
        assert_eq!(
            parse(r#"{"allow":true,"ttl_s":999999999}"#, 60),
            Verdict::Allow { ttl_s: MAX_TTL_S }
        );
        for bad in ["", "{}", r#"{"allow":"yes"}"#, "[true]", r#"{"ttl_s":5}"#] {
            assert!(
                matches!(parse(bad, 60), Verdict::Failed { timeout: false, .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_body_names_everything_the_app_decides_on() {
        let b = body(
            "n1",
            "0-1-2",
            Some("alice"),
            "private:1",
            Action::Publish,
            Some(r#"{"sub":"alice","exp":5,"org":"acme"}"#),
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["user"], "alice");
        assert_eq!(v["action"], "publish");
        assert_eq!(v["room"], "private:1");
        assert_eq!(v["claims"]["org"], "acme");
        let anon = body("n1", "0-1-2", None, "r", Action::Send, None);
        let v: serde_json::Value = serde_json::from_slice(&anon).unwrap();
        assert!(v["user"].is_null() && v["claims"].is_null());
        assert_eq!(v["action"], "send");
    }
}
