//! The connect callback, for apps whose users have cookie sessions rather than
//! tokens: an upgrade without a token asks `hooks.connect_url` who it is, and is
//! answered only once the app says (within the handshake timeout).
//!
//! ```text
//! POST connect_url   X-Ringway-Signature: sha256=<hex HMAC of the body under hooks.secret>
//! {"node":"n1","ip":"203.0.113.7","origin":"https://app.example",
//!  "cookies":{"sid":"..."},"headers":{"x-tenant":"acme"}}
//! ```
//!
//! The app answers 200 `{"user": "alice", "rooms"?: {"sub": [...], "pub": [...]},
//! "exp"?: UNIX_SECONDS}`: the connection is alice's, with the room patterns and
//! expiry a token would carry (no `exp`: it lasts while it stays connected; with one,
//! it is closed 4001 at that time and the client connects again, its cookie checked
//! afresh). `{"user": null}` makes it anonymous (refused 401 unless
//! `allow_anonymous`); 401 or 403 refuses the upgrade with that status. No answer
//! within `hooks.authorize_timeout_ms`, another status, or a body that says neither
//! refuses it with 503 (the client retries).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::warn;

use super::client::{Client, Outcome};
use super::pool::{Job, Pool};
use crate::auth::{Grant, RoomClaims};
use crate::config;
use crate::metrics::histogram::Histogram;

/// Who the app says a connection is.
#[derive(Debug)]
pub enum Identity {
    /// A user, with what a token would grant.
    User(Box<Grant>),
    /// Nobody: an anonymous connection.
    Anonymous,
    /// The app refused the session (401 or 403).
    Refused(u16),
    /// No usable answer: why.
    Failed(String),
}

/// Counters of the connect callback.
#[derive(Debug, Default)]
pub struct ConnectStats {
    /// Answered with a user.
    pub users: AtomicU64,
    /// Answered anonymous.
    pub anonymous: AtomicU64,
    /// Refused (401/403).
    pub refused: AtomicU64,
    /// No usable answer.
    pub failed: AtomicU64,
}

/// The node's connect callback: its client and counters; calls run on the node's
/// [`Pool`].
pub struct Connector {
    client: Client,
    pool: Arc<Pool>,
    cfg: config::Hooks,
    node: String,
    /// Counters.
    pub stats: ConnectStats,
    latency: Mutex<Histogram>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.cfg.connect_url)
            .finish_non_exhaustive()
    }
}

struct Question {
    me: Arc<Connector>,
    body: Vec<u8>,
    reply: Box<dyn FnOnce(Identity) + Send>,
    at: Instant,
}

impl Job for Question {
    fn run(self: Box<Self>) {
        let me = &self.me;
        let timeout = Duration::from_millis(me.cfg.authorize_timeout_ms);
        let identity = if self.at.elapsed() >= timeout {
            Identity::Failed("waited its whole timeout for a free caller".into())
        } else {
            match me.client.post(&self.body, &[]) {
                Outcome::Ok(text) => parse(&text, crate::auth::unix_now()),
                Outcome::Refused(s @ (401 | 403)) => Identity::Refused(s),
                Outcome::Refused(s) => Identity::Failed(format!(
                    "the app answered HTTP {s}; answer 200 with {{\"user\": ...}}, or 401/403"
                )),
                Outcome::Retry(why) => Identity::Failed(why),
            }
        };
        me.count(&identity, self.at);
        (self.reply)(identity);
    }

    fn refuse(self: Box<Self>, why: &str) {
        let i = Identity::Failed(why.into());
        self.me.count(&i, self.at);
        (self.reply)(i);
    }
}

impl Connector {
    /// The callback `cfg` describes for node `node`, calling on `pool`; `None`
    /// without `connect_url`.
    pub fn new(cfg: &config::Hooks, node: &str, pool: &Arc<Pool>) -> Option<Arc<Self>> {
        if cfg.connect_url.is_empty() {
            return None;
        }
        let timeout = Duration::from_millis(cfg.authorize_timeout_ms);
        Some(Arc::new(Self {
            client: Client::new(&cfg.connect_url, &cfg.secret, node, timeout),
            pool: pool.clone(),
            cfg: cfg.clone(),
            node: node.to_owned(),
            stats: ConnectStats::default(),
            latency: Mutex::new(Histogram::default()),
        }))
    }

    /// Ask who the upgrade from `ip` with `origin` and `passed` headers is; `reply`
    /// gets the answer, on a calling thread.
    pub fn ask(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        origin: Option<&str>,
        passed: &[(String, String)],
        reply: Box<dyn FnOnce(Identity) + Send>,
    ) {
        let body = body(&self.node, ip, origin, passed);
        self.pool.submit(Box::new(Question {
            me: self.clone(),
            body,
            reply,
            at: Instant::now(),
        }));
    }

    fn count(&self, i: &Identity, at: Instant) {
        let s = &self.stats;
        let c = match i {
            Identity::User(_) => &s.users,
            Identity::Anonymous => &s.anonymous,
            Identity::Refused(_) => &s.refused,
            Identity::Failed(_) => &s.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Identity::Failed(why) = i {
            warn!(url = %self.cfg.connect_url, "connect callback failed: {why}; the upgrade is refused with 503");
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
        let name = "ringway_connect_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Calls to hooks.connect_url, by answer: a user, anonymous, refused (401/403), or failed (no usable answer: the upgrade gets 503).\n# TYPE {name} counter"
        );
        for (result, c) in [
            ("user", &s.users),
            ("anonymous", &s.anonymous),
            ("refused", &s.refused),
            ("failed", &s.failed),
        ] {
            let _ = writeln!(
                out,
                "{name}{{result=\"{result}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(
                out,
                "ringway_connect_seconds",
                "From an upgrade asking hooks.connect_url to its answer.",
            );
    }
}

/// The JSON body of a question: cookies by name (the last of a repeated name),
/// the other passed headers by name (repeated ones joined with ", ").
pub fn body(
    node: &str,
    ip: std::net::IpAddr,
    origin: Option<&str>,
    passed: &[(String, String)],
) -> Vec<u8> {
    let mut cookies = BTreeMap::new();
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in passed {
        if name == "cookie" {
            for pair in value.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    cookies.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        } else {
            headers
                .entry(name)
                .and_modify(|h| {
                    h.push_str(", ");
                    h.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "node": node,
        "ip": ip.to_string(),
        "origin": origin,
        "cookies": cookies,
        "headers": headers,
    }))
    .unwrap_or_default()
}

#[derive(Deserialize)]
struct Answer {
    user: Option<String>,
    rooms: Option<RoomClaims>,
    exp: Option<u64>,
}

/// The furthest `exp` an answer may name (ten years): a larger one is not Unix
/// seconds.
const MAX_EXP_AHEAD_S: u64 = 10 * 365 * 86_400;

/// What an answer body says, at Unix time `now`.
pub fn parse(text: &str, now: u64) -> Identity {
    let a = match serde_json::from_str::<Answer>(text) {
        Ok(a) => a,
        Err(e) => {
            return Identity::Failed(format!(
                "the answer is not {{\"user\": \"<id>\"|null, \"rooms\"?, \"exp\"?}}: {e}"
            ));
        }
    };
    let Some(user) = a.user else {
        return Identity::Anonymous;
    };
    if !crate::protocol::valid_user(&user) {
        return Identity::Failed(format!(
            "the user id {user:?} is not 1 to 100 characters of A-Z a-z 0-9 _ - . : / @ # = +"
        ));
    }
    match a.exp {
        Some(exp) if exp <= now => return Identity::Refused(401),
        Some(exp) if exp > now + MAX_EXP_AHEAD_S => {
            return Identity::Failed(format!(
                "exp {exp} is more than ten years ahead: give it in Unix seconds"
            ));
        }
        _ => {}
    }
    Identity::User(Box::new(Grant {
        user: Arc::from(user),
        exp: a.exp.unwrap_or(u64::MAX),
        rooms: a.rooms.map(Arc::new),
        // A cookie session cannot answer `refresh_needed`: it is not sent.
        refresh_asked: true,
        claims: Some(Box::from(text)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_headers_are_passed_by_name() {
        let passed = [
            ("cookie".to_owned(), "sid=abc; theme=dark".to_owned()),
            ("cookie".to_owned(), "lang=fr".to_owned()),
            ("x-tenant".to_owned(), "acme".to_owned()),
            ("x-tenant".to_owned(), "beta".to_owned()),
        ];
        let b = body(
            "n1",
            "10.0.0.1".parse().unwrap(),
            Some("https://a"),
            &passed,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["cookies"]["sid"], "abc");
        assert_eq!(v["cookies"]["theme"], "dark");
        assert_eq!(v["cookies"]["lang"], "fr");
        assert_eq!(v["headers"]["x-tenant"], "acme, beta");
        assert_eq!(v["ip"], "10.0.0.1");
        assert_eq!(v["origin"], "https://a");
        assert!(v["headers"].get("cookie").is_none());
    }

    #[test]
    fn answers_name_a_user_nobody_or_nothing_usable() {
        let now = 1_800_000_000;
        let Identity::User(g) = parse(r#"{"user":"alice","rooms":{"sub":["chat:*"]}}"#, now) else {
            panic!()
        };
        assert_eq!(&*g.user, "alice");
        assert_eq!(g.exp, u64::MAX);
        assert!(g.may_subscribe("chat:1") && !g.may_subscribe("x"));
        assert!(!g.may_publish("chat:1"));
        let Identity::User(g) = parse(r#"{"user":"bob","exp":1800000060}"#, now) else {
            panic!()
        };
        assert_eq!(g.exp, 1_800_000_060);
        assert!(g.refresh_asked, "no refresh_needed for a session");
        // A session already over is refused like an expired token.
        assert!(matches!(
            parse(r#"{"user":"bob","exp":1799999999}"#, now),
            Identity::Refused(401)
        ));
        assert!(matches!(
            parse(r#"{"user":null}"#, now),
            Identity::Anonymous
        ));
        assert!(matches!(parse("{}", now), Identity::Anonymous));
        for bad in [
            "",
            "[]",
            r#"{"user":5}"#,
            r#"{"user":"has space"}"#,
            r#"{"user":"ms","exp":1800000000000}"#,
        ] {
            assert!(matches!(parse(bad, now), Identity::Failed(_)), "{bad:?}");
        }
    }
}
