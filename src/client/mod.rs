//! The browser client (`ringway.js`, with TypeScript declarations) and the demo
//! page, embedded in the binary and served on the client listener to plain `GET`s:
//!
//! | path                 | what |
//! |----------------------|------|
//! | `/client.js`         | the ES module (always) |
//! | `/client.d.ts`       | its TypeScript declarations (always) |
//! | `/`                  | the demo chat page (`demo = true`, the default) |
//! | `/demo/token?name=N` | a 10-minute token for user `guest:N`, rooms `demo:*` only (`demo = true` and anonymous clients allowed) |
//!
//! Demo tokens are for trying ringway: they are signed with their own key (never
//! `auth.token_secret`; see `auth::Demo`), accepted only by nodes with the demo on,
//! handed out at most 5 a second per worker, and grant nothing an anonymous client
//! could not do except a name for presence, and only in `demo:*` rooms. Turn the demo
//! off in production (`demo = false`).

use crate::auth::{Demo, unix_now};
use crate::config::Config;
use crate::conn::rate::{RateLimiter, Rates, Verdict};
use crate::http::Response;

/// What the client listener serves, from the configuration.
#[derive(Debug, Clone)]
pub struct Site {
    /// Serve the demo page (`demo`).
    pub demo_page: bool,
    /// Origins allowed to load the client library (`auth.origins`; empty: any).
    pub origins: Vec<String>,
    /// The demo's guest tokens (the demo on and anonymous clients allowed).
    pub demo: Option<Demo>,
}

impl Site {
    /// The site `config` describes. Demo tokens get their own key, never the
    /// production secret (see `auth::Demo`).
    pub fn from_config(config: &Config) -> Self {
        Self {
            demo_page: config.demo_served(),
            origins: config.auth.origins.clone(),
            demo: config
                .demo_served()
                .then(|| Demo::new(Demo::key_for(&config.mesh.secret))),
        }
    }
}

/// The client library.
pub const JS: &str = include_str!("ringway.js");
/// Its TypeScript declarations.
pub const DTS: &str = include_str!("ringway.d.ts");
/// The demo page.
pub const DEMO: &str = include_str!("demo.html");

/// Lifetime of a demo token, in seconds.
const DEMO_TTL: u64 = 600;

/// What a plain `GET` or `HEAD` on the client listener asked for.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The path.
    pub path: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// The `Origin` header: pages on other origins import `/client.js` (CORS).
    pub origin: Option<&'a str>,
    /// `HEAD`: the headers only.
    pub head: bool,
}

/// The complete HTTP response to a plain `GET` (or `HEAD`) on the client listener.
pub fn serve(site: &Site, asked: Asked<'_>, gate: DemoGate<'_>) -> Vec<u8> {
    let page = |content_type, body: &str| Response::with_type(200, content_type, body);
    let answer = match asked.path {
        "/client.js" => page("text/javascript; charset=utf-8", JS),
        "/client.d.ts" => page("application/typescript; charset=utf-8", DTS),
        "/" | "/index.html" if site.demo_page => page("text/html; charset=utf-8", DEMO),
        // A HEAD mints nothing: it gets the headers, with no token behind them.
        "/demo/token" if site.demo_page && asked.head => {
            return Response::json(200, "").head(false);
        }
        "/demo/token" if site.demo_page => demo_token(site, asked.query, &mut { gate }),
        _ => text(
            404,
            "not found: this is a WebSocket endpoint (see /client.js and, with demo = true, /)",
        ),
    };
    let mut answer = answer.header("Cache-Control", "no-cache");
    answer.headers.push_str(&cors(&site.origins, asked.origin));
    if asked.head {
        answer.head(false)
    } else {
        answer.encode(false)
    }
}

/// The CORS header lines for a response to `origin`: any origin may load the client
/// library, unless `auth.origins` lists the allowed ones (then only those, with
/// `Vary: Origin` so caches keep the answers apart).
fn cors(allowed: &[String], origin: Option<&str>) -> String {
    if allowed.is_empty() {
        return "Access-Control-Allow-Origin: *\r\n".to_owned();
    }
    match origin {
        Some(o) if allowed.iter().any(|a| a == o) => {
            format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n")
        }
        _ => "Vary: Origin\r\n".to_owned(),
    }
}

fn demo_token(site: &Site, query: Option<&str>, gate: &mut DemoGate) -> Response {
    let Some(demo) = &site.demo else {
        return text(404, "no such page");
    };
    let now = unix_now();
    if gate.limiter.check(gate.now_ms, 0, &DEMO_RATE) != Verdict::Allow {
        return text(429, "too many demo tokens asked for; retry in a second");
    }
    let name = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return text(400, "name must be 1 to 32 of A-Z a-z 0-9 - _");
    }
    let token = demo.mint(&format!("guest:{name}"), now, DEMO_TTL);
    Response::json(200, format!("{{\"token\":\"{token}\"}}"))
}

/// Demo tokens a worker hands out per second (and in a burst): enough for people
/// trying the demo, not for a script minting identities.
pub const DEMO_RATE: Rates = Rates {
    messages_per_second: 5,
    message_burst: 10,
    bytes_per_second: 0,
    byte_burst: 0,
    close_after_ms: u32::MAX,
};

/// The worker's limiter for `/demo/token`, and its clock.
#[derive(Debug)]
pub struct DemoGate<'a> {
    /// The worker's limiter (see [`DEMO_RATE`]).
    pub limiter: &'a mut RateLimiter,
    /// The worker's clock, milliseconds.
    pub now_ms: u32,
}

fn text(status: u16, reason: &str) -> Response {
    Response::text(status, format!("{reason}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_allows_any_origin_or_only_the_listed_ones() {
        assert_eq!(
            cors(&[], Some("https://x")),
            "Access-Control-Allow-Origin: *\r\n"
        );
        let listed = vec!["https://app.example".to_owned()];
        assert!(
            cors(&listed, Some("https://app.example"))
                .contains("Allow-Origin: https://app.example")
        );
        assert!(!cors(&listed, Some("https://evil.example")).contains("Allow-Origin"));
        assert!(!cors(&listed, None).contains("Allow-Origin"));
    }
}
