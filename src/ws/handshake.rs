//! The HTTP/1.1 upgrade, sans-IO: the request head parsed with `httparse`, checked
//! against RFC 6455 §4.2.1, and answered with tungstenite's `derive_accept_key`.
//!
//! Input: the bytes received so far. Output: wait for more, accept (with the 101
//! response to write and the request facts the connection needs), or reject (with
//! the complete HTTP error response to write before closing). The size limit is
//! checked here; the time limit is the driver's (it owns the clock).
//!
//! Why not tungstenite's `Request::try_parse` / `create_response` /
//! `write_response`, which this module used before: they copy every header into an
//! `http::HeaderMap` (a name parse and an allocation each), build a second map for
//! the response and format it through `fmt`, which came to about a tenth of the
//! node's CPU per upgrade in a profile of 15,000 upgrades (10.6% of the workers'
//! samples, more than the request parse, SHA-1 and the base64 put together). The
//! head is now read where it lies, and the answer written as bytes. The checks and
//! the refusals are the same as tungstenite's, in the same order, and the response
//! is byte for byte what `write_response` wrote.

use tungstenite::handshake::derive_accept_key;

use crate::auth::visible_ascii;

/// Headers a request head may have (tungstenite's limit); more is a 400.
const MAX_HEADERS: usize = 124;

/// The subprotocol of ringway's JSON client protocol.
pub const SUBPROTOCOL: &str = "ringway.v1";

/// Which endpoint a client upgraded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The ringway.v1 client protocol (default `/ws`).
    Client,
    /// The conformance echo endpoint `/echo` (only with `echo = true`).
    Echo,
}

/// What the handshake needs from the configuration.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Path of the client endpoint.
    pub ws_path: String,
    /// Whether `/echo` exists.
    pub echo: bool,
    /// Largest request head accepted.
    pub max_bytes: usize,
    /// Request headers an upgrade keeps for the app (lower-case names; the connect
    /// callback's `cookie` and `hooks.connect_headers`). Empty: none.
    pub pass_headers: Vec<String>,
    /// Accept permessage-deflate offers (`compression.enabled`).
    pub deflate: bool,
}

/// A successful upgrade.
#[derive(Debug)]
pub struct Accepted {
    /// Bytes of the request head; anything after them is already WebSocket frames.
    pub consumed: usize,
    /// The complete `101 Switching Protocols` response.
    pub response: Vec<u8>,
    /// The endpoint asked for.
    pub endpoint: Endpoint,
    /// The client's token, if it sent one (see `auth::token_from`).
    pub token: Option<String>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The headers named in [`HandshakeConfig::pass_headers`] that it sent
    /// (lower-case name, value; a repeated header once per value).
    pub passed: Vec<(String, String)>,
    /// permessage-deflate, when the client offered it acceptably and it is on.
    pub deflate: Option<super::deflate::Agreed>,
}

/// A refused upgrade: the response to write, then close.
#[derive(Debug)]
pub struct Rejected {
    /// HTTP status (400, 404, 405, 426, 431, 503).
    pub status: u16,
    /// The complete response, with a plain-text reason as its body.
    pub response: Vec<u8>,
}

/// The handshake's verdict on the bytes so far.
#[derive(Debug)]
pub enum Outcome {
    /// The request head is not complete yet.
    Incomplete,
    /// Upgrade accepted.
    Accept(Accepted),
    /// Upgrade refused.
    Reject(Rejected),
    /// A plain `GET` (or `HEAD`) without an upgrade (a browser loading a page or the
    /// client library): the caller decides what to answer.
    Get {
        /// The path.
        path: String,
        /// The query string, if any.
        query: Option<String>,
        /// The `Origin` header, if any (for CORS).
        origin: Option<String>,
        /// `HEAD`: answer with the headers only.
        head: bool,
    },
}

/// A parsed request head, borrowed from the bytes it was parsed from.
struct Head<'h, 'b> {
    /// The request target's path (`/ws`), origin-form or not.
    path: std::borrow::Cow<'b, str>,
    /// The query string, if any.
    query: Option<std::borrow::Cow<'b, str>>,
    /// The headers, in order.
    headers: &'h [httparse::Header<'b>],
}

impl<'h, 'b> Head<'h, 'b> {
    /// Every value of header `name` (any case), in order.
    fn all(&self, name: &'static str) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first value of header `name`, as a header map would give it.
    fn first(&self, name: &'static str) -> Option<&'b [u8]> {
        self.all(name).next()
    }

    /// The first value of `name` as text (visible ASCII), if it is that.
    fn text(&self, name: &'static str) -> Option<&'b str> {
        self.first(name).and_then(visible_ascii)
    }
}

/// Split a request target into path and query. Origin-form (`/ws?x`) is taken as
/// it lies; any other form (absolute-form, `http://host/ws`) goes through
/// `http::Uri`, as tungstenite's parse did; `None` if it is no URI.
fn target(raw: &str) -> Option<(std::borrow::Cow<'_, str>, Option<std::borrow::Cow<'_, str>>)> {
    use std::borrow::Cow;
    if raw.starts_with('/') {
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(Cow::Borrowed(q))),
            None => (raw, None),
        };
        return Some((Cow::Borrowed(path), query));
    }
    let uri: tungstenite::http::Uri = raw.parse().ok()?;
    Some((
        Cow::Owned(uri.path().to_owned()),
        uri.query().map(|q| Cow::Owned(q.to_owned())),
    ))
}

/// Judge the request head in `buf`.
pub fn handle(buf: &[u8], cfg: &HandshakeConfig) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > cfg.max_bytes => {
            return Outcome::Reject(reject(431, "request header fields too large"));
        }
        Ok(httparse::Status::Partial) => return Outcome::Incomplete,
        Err(_) => return Outcome::Reject(reject(400, "malformed HTTP request")),
    };
    // A complete parse has all three.
    let (Some(method), Some(version), Some(raw_target)) = (req.method, req.version, req.path)
    else {
        return Outcome::Reject(reject(400, "malformed HTTP request"));
    };
    let head_only = method == "HEAD";
    if !head_only && method != "GET" {
        return Outcome::Reject(reject(405, "only GET can upgrade to WebSocket"));
    }
    if !head_only && version < 1 {
        return Outcome::Reject(reject(400, "malformed HTTP request"));
    }
    let Some((path, query)) = target(raw_target) else {
        return Outcome::Reject(reject(400, "malformed HTTP request"));
    };
    let head = Head {
        path,
        query,
        headers: req.headers,
    };
    let origin = head.text("origin").map(str::to_owned);
    if head_only {
        return Outcome::Get {
            path: head.path.into_owned(),
            query: head.query.map(std::borrow::Cow::into_owned),
            origin,
            head: true,
        };
    }
    if consumed > cfg.max_bytes {
        return Outcome::Reject(reject(431, "request header fields too large"));
    }
    let path = &*head.path;
    let upgrade = head
        .first("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    if !upgrade && path != cfg.ws_path && path != "/echo" {
        return Outcome::Get {
            path: path.to_owned(),
            query: head.query.as_deref().map(str::to_owned),
            origin,
            head: false,
        };
    }
    let endpoint = if path == cfg.ws_path {
        Endpoint::Client
    } else if cfg.echo && path == "/echo" {
        Endpoint::Echo
    } else {
        return Outcome::Reject(reject(404, "no WebSocket endpoint at this path"));
    };
    let key = match upgrade_key(&head) {
        Ok(key) => key,
        Err(refusal) => return Outcome::Reject(refusal),
    };
    // What tungstenite's `write_response` wrote (its header map names print in lower
    // case), and the two optional headers after it.
    let mut response = Vec::with_capacity(224);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ",
    );
    response.extend_from_slice(derive_accept_key(key).as_bytes());
    response.extend_from_slice(b"\r\n");
    if endpoint == Endpoint::Client && offers_subprotocol(&head, SUBPROTOCOL) {
        response.extend_from_slice(b"sec-websocket-protocol: ");
        response.extend_from_slice(SUBPROTOCOL.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    let deflate = if cfg.deflate {
        super::deflate::negotiate(head.all("sec-websocket-extensions"))
    } else {
        None
    };
    let deflate = deflate.and_then(|(agreed, value)| {
        visible_ascii(value.as_bytes())?;
        response.extend_from_slice(b"sec-websocket-extensions: ");
        response.extend_from_slice(value.as_bytes());
        response.extend_from_slice(b"\r\n");
        Some(agreed)
    });
    response.extend_from_slice(b"\r\n");
    let mut passed = Vec::new();
    for name in &cfg.pass_headers {
        let values = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| visible_ascii(h.value));
        for v in values {
            passed.push((name.clone(), v.to_owned()));
        }
    }
    Outcome::Accept(Accepted {
        consumed,
        response,
        endpoint,
        token: crate::auth::token_from(
            head.query.as_deref(),
            head.headers.iter().map(|h| (h.name, h.value)),
        ),
        origin,
        passed,
        deflate,
    })
}

/// The checks of RFC 6455 §4.2.1 on an upgrade request (tungstenite's, in its
/// order), and the client's key when they pass.
fn upgrade_key<'b>(head: &Head<'_, 'b>) -> Result<&'b [u8], Rejected> {
    let connection_upgrade = head.text("connection").is_some_and(|v| {
        v.split([' ', ','])
            .any(|p| p.eq_ignore_ascii_case("upgrade"))
    });
    let upgrade_websocket = head
        .text("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !connection_upgrade || !upgrade_websocket {
        return Err(reject(
            426,
            "this endpoint only speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if head.first("sec-websocket-version") != Some(b"13") {
        return Err(reject(
            426,
            "unsupported WebSocket version: use Sec-WebSocket-Version: 13",
        ));
    }
    match head.first("sec-websocket-key") {
        Some(key) if valid_key(key) => Ok(key),
        _ => Err(reject(400, "invalid WebSocket upgrade request")),
    }
}

/// A `Sec-WebSocket-Key` is 16 bytes in base64: 24 characters (RFC 6455 §4.1),
/// canonically padded.
fn valid_key(key: &[u8]) -> bool {
    use base64::Engine;
    let mut raw = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut raw)
            .is_ok_and(|n| n == 16)
}

fn offers_subprotocol(head: &Head<'_, '_>, wanted: &str) -> bool {
    head.all("sec-websocket-protocol")
        .filter_map(visible_ascii)
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == wanted)
}

/// A complete HTTP error response with a text body.
pub fn reject(status: u16, reason: &str) -> Rejected {
    let mut r = crate::http::Response::text(status, format!("{reason}\n"));
    if status == 426 {
        r = r
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", 13);
    }
    if status == 503 {
        r = r.header("Retry-After", 5);
    }
    Rejected {
        status,
        response: r.encode(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HandshakeConfig {
        HandshakeConfig {
            ws_path: "/ws".into(),
            echo: true,
            max_bytes: 1024,
            pass_headers: Vec::new(),
            deflate: true,
        }
    }

    #[test]
    fn an_upgrade_keeps_the_headers_named_for_the_app_and_no_others() {
        let req = GOOD.replace(
            "Host: x\r\n",
            "Host: x\r\nCookie: sid=1\r\nX-Tenant: acme\r\nCookie: theme=dark\r\nX-Other: no\r\n",
        );
        let c = HandshakeConfig {
            pass_headers: vec!["cookie".into(), "x-tenant".into()],
            ..cfg()
        };
        let Outcome::Accept(a) = handle(req.as_bytes(), &c) else {
            panic!("refused");
        };
        let got: Vec<(&str, &str)> = a
            .passed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cookie", "sid=1"),
                ("cookie", "theme=dark"),
                ("x-tenant", "acme")
            ]
        );
        // Without names, nothing is kept.
        let Outcome::Accept(a) = handle(req.as_bytes(), &cfg()) else {
            panic!("refused");
        };
        assert!(a.passed.is_empty());
    }

    const GOOD: &str = "GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: foo, ringway.v1\r\n\r\n";

    fn status(o: &Outcome) -> u16 {
        match o {
            Outcome::Accept(_) => 101,
            Outcome::Reject(r) => r.status,
            Outcome::Incomplete => 0,
            Outcome::Get { .. } => 200,
        }
    }

    #[test]
    fn accepts_and_answers_rfc_example_key() {
        let mut req = GOOD.as_bytes().to_vec();
        req.extend_from_slice(b"\x81\x80"); // a frame right behind the head
        let Outcome::Accept(a) = handle(&req, &cfg()) else {
            panic!("not accepted")
        };
        assert_eq!(a.consumed, GOOD.len());
        assert_eq!(a.endpoint, Endpoint::Client);
        let text = String::from_utf8(a.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
        assert!(
            text.contains("sec-websocket-protocol: ringway.v1"),
            "{text}"
        );
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_the_last_byte() {
        let req = GOOD.as_bytes();
        for i in 0..req.len() {
            assert!(
                matches!(handle(&req[..i], &cfg()), Outcome::Incomplete),
                "{i}"
            );
        }
        assert_eq!(status(&handle(req, &cfg())), 101);
    }

    /// The response's `Sec-WebSocket-Extensions`, if any.
    fn extensions(o: &Outcome) -> Option<String> {
        let Outcome::Accept(a) = o else {
            panic!("refused: {o:?}");
        };
        let text = String::from_utf8_lossy(&a.response).into_owned();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("sec-websocket-extensions: ")
                    .or_else(|| l.strip_prefix("Sec-WebSocket-Extensions: "))
            })
            .map(str::to_owned)
    }

    #[test]
    fn permessage_deflate_is_negotiated_byte_at_a_time_and_only_when_on() {
        let with = GOOD.replace(
            "Host: x\r\n",
            "Host: x\r\nSec-WebSocket-Extensions: foo, permessage-deflate; unknown\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; client_max_window_bits\r\n",
        );
        let req = with.as_bytes();
        for i in 0..req.len() {
            assert!(
                matches!(handle(&req[..i], &cfg()), Outcome::Incomplete),
                "{i}"
            );
        }
        let o = handle(req, &cfg());
        assert_eq!(
            extensions(&o).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
            )
        );
        let Outcome::Accept(a) = o else {
            unreachable!()
        };
        assert_eq!(a.deflate.map(|d| d.server_window_bits), Some(10));
        // Off: no extension, the upgrade still succeeds.
        let off = HandshakeConfig {
            deflate: false,
            ..cfg()
        };
        let o = handle(req, &off);
        assert_eq!(extensions(&o), None);
        // Only bad offers: declined, the upgrade still succeeds.
        let bad = GOOD.replace(
            "Host: x\r\n",
            "Host: x\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n",
        );
        let o = handle(bad.as_bytes(), &cfg());
        assert_eq!(extensions(&o), None);
        let Outcome::Accept(a) = o else {
            unreachable!()
        };
        assert_eq!(a.deflate, None);
    }

    #[test]
    fn refusals_name_the_problem() {
        let c = cfg();
        let plain = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(&handle(plain.as_bytes(), &c)), 426);
        let other = GOOD.replace("GET /ws?", "GET /nope?");
        assert_eq!(status(&handle(other.as_bytes(), &c)), 404);
        let post = GOOD.replace("GET", "POST");
        assert_eq!(status(&handle(post.as_bytes(), &c)), 405);
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        assert_eq!(status(&handle(v8.as_bytes(), &c)), 426);
        assert_eq!(status(&handle(b"\x16\x03\x01garbage\r\n\r\n", &c)), 400);
        let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(status(&handle(huge.as_bytes(), &c)), 431);
        let no_echo = HandshakeConfig { echo: false, ..c };
        let echo = GOOD.replace("GET /ws?", "GET /echo?");
        assert_eq!(status(&handle(echo.as_bytes(), &no_echo)), 404);
    }

    /// What tungstenite's own pieces (which this module used before) answer: the
    /// 101 as `write_response` writes it, or `None` for a refusal.
    fn tungstenite_answer(req: &[u8]) -> Option<Vec<u8>> {
        use tungstenite::handshake::machine::TryParse;
        use tungstenite::handshake::server::{Request, create_response, write_response};
        let (_, request) = Request::try_parse(req).ok()??;
        let response = create_response(&request).ok()?;
        let mut out = Vec::new();
        write_response(&mut out, &response).ok()?;
        Some(out)
    }

    #[test]
    fn accepts_and_refuses_as_tungstenite_and_answers_the_same_bytes() {
        let plain = GOOD.replace("Sec-WebSocket-Protocol: foo, ringway.v1\r\n", "");
        let variants = [
            plain.clone(),
            plain.replace("Connection: keep-alive, Upgrade", "Connection: keep-alive"),
            plain.replace("Connection: keep-alive, Upgrade", "connection: UPGRADE"),
            plain.replace("Upgrade: websocket", "Upgrade: WebSocket"),
            plain.replace("Upgrade: websocket", "Upgrade: h2c"),
            plain.replace("Version: 13", "Version: 8"),
            plain.replace("Version: 13", "Version: 13, 8"),
            plain.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            // 24 characters that are not 16 bytes, and a non-canonical ending.
            plain.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=A"),
            plain.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
            plain.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"),
            plain.replace("HTTP/1.1\r\n", "HTTP/1.0\r\n"),
            plain.replace("GET /ws?token=abc", "GET http://x/ws?token=abc"),
            // Two Connection headers: a header map reads the first.
            plain.replace("Host: x\r\n", "Host: x\r\nConnection: close\r\n"),
        ];
        for req in &variants {
            let ours = match handle(req.as_bytes(), &cfg()) {
                Outcome::Accept(a) => Some(a.response),
                Outcome::Reject(_) => None,
                other => panic!("{req:?}: {other:?}"),
            };
            assert_eq!(ours, tungstenite_answer(req.as_bytes()), "{req:?}");
        }
    }

    #[test]
    fn an_absolute_form_target_upgrades_on_its_path() {
        let req = GOOD.replace("GET /ws?token=abc", "GET http://x/ws?token=abc");
        let Outcome::Accept(a) = handle(req.as_bytes(), &cfg()) else {
            panic!("refused");
        };
        assert_eq!(
            (a.endpoint, a.token.as_deref()),
            (Endpoint::Client, Some("abc"))
        );
    }

    #[test]
    fn a_plain_get_elsewhere_is_left_to_the_caller() {
        let get = b"GET /client.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        match handle(get, &cfg()) {
            Outcome::Get {
                path, query, head, ..
            } => {
                assert_eq!(
                    (path.as_str(), query.as_deref(), head),
                    ("/client.js", Some("v=1"), false)
                );
            }
            other => panic!("{other:?}"),
        }
        let req = b"HEAD /client.js HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\r\n";
        for i in 0..req.len() {
            assert!(
                matches!(handle(&req[..i], &cfg()), Outcome::Incomplete),
                "{i}"
            );
        }
        match handle(req, &cfg()) {
            Outcome::Get {
                path, origin, head, ..
            } => {
                assert_eq!(
                    (path.as_str(), origin.as_deref(), head),
                    ("/client.js", Some("https://a.example"), true)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
