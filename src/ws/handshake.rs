//! The HTTP/1.1 upgrade, sans-IO, over tungstenite's public handshake pieces
//! (`Request::try_parse`, `create_response`, `write_response`).
//!
//! Input: the bytes received so far. Output: wait for more, accept (with the 101
//! response to write and the request facts the connection needs), or reject (with
//! the complete HTTP error response to write before closing). The size limit is
//! checked here; the time limit is the driver's (it owns the clock).

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{Request, create_response, write_response};
use tungstenite::http::HeaderValue;

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
    /// The client's token, if it sent one (see `auth::token_from_request`).
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

/// Judge the request head in `buf`.
pub fn handle(buf: &[u8], cfg: &HandshakeConfig) -> Outcome {
    if buf.starts_with(b"HEAD ") {
        return head(buf, cfg);
    }
    let (consumed, request) = match Request::try_parse(buf) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if buf.len() > cfg.max_bytes => {
            return Outcome::Reject(reject(431, "request header fields too large"));
        }
        Ok(None) => return Outcome::Incomplete,
        Err(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::WrongHttpMethod)) => {
            return Outcome::Reject(reject(405, "only GET can upgrade to WebSocket"));
        }
        Err(_) => return Outcome::Reject(reject(400, "malformed HTTP request")),
    };
    if consumed > cfg.max_bytes {
        return Outcome::Reject(reject(431, "request header fields too large"));
    }
    let path = request.uri().path();
    let upgrade = request
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade && path != cfg.ws_path && path != "/echo" {
        return Outcome::Get {
            path: path.to_owned(),
            query: request.uri().query().map(str::to_owned),
            origin: header(&request, "origin"),
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
    let mut response = match create_response(&request) {
        Ok(r) => r,
        Err(e) => return Outcome::Reject(refusal_for(&e)),
    };
    if endpoint == Endpoint::Client && offers_subprotocol(&request, SUBPROTOCOL) {
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let deflate = if cfg.deflate {
        let offers = request.headers().get_all("sec-websocket-extensions");
        super::deflate::negotiate(offers.iter().map(HeaderValue::as_bytes))
    } else {
        None
    };
    let deflate = deflate.and_then(|(agreed, value)| {
        let value = HeaderValue::from_str(&value).ok()?;
        response
            .headers_mut()
            .insert("Sec-WebSocket-Extensions", value);
        Some(agreed)
    });
    let mut bytes = Vec::with_capacity(160);
    if write_response(&mut bytes, &response).is_err() {
        return Outcome::Reject(reject(400, "malformed HTTP request"));
    }
    let origin = header(&request, "origin");
    let mut passed = Vec::new();
    for name in &cfg.pass_headers {
        for v in request.headers().get_all(name.as_str()) {
            if let Ok(v) = v.to_str() {
                passed.push((name.clone(), v.to_owned()));
            }
        }
    }
    Outcome::Accept(Accepted {
        consumed,
        response: bytes,
        endpoint,
        token: crate::auth::token_from_request(&request),
        origin,
        passed,
        deflate,
    })
}

/// A `HEAD` request (tungstenite parses only `GET`): the same answer as a `GET`
/// without its body, which the caller leaves out.
fn head(buf: &[u8], cfg: &HandshakeConfig) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() > cfg.max_bytes => {
            return Outcome::Reject(reject(431, "request header fields too large"));
        }
        Ok(httparse::Status::Partial) => return Outcome::Incomplete,
        Err(_) => return Outcome::Reject(reject(400, "malformed HTTP request")),
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let origin = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("origin"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_owned);
    Outcome::Get {
        path: path.to_owned(),
        query,
        origin,
        head: true,
    }
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Map tungstenite's reason for refusing to an HTTP answer the client can act on.
fn refusal_for(e: &tungstenite::Error) -> Rejected {
    use tungstenite::error::ProtocolError as P;
    match e {
        tungstenite::Error::Protocol(P::MissingConnectionUpgradeHeader)
        | tungstenite::Error::Protocol(P::MissingUpgradeWebSocketHeader) => reject(
            426,
            "this endpoint only speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ),
        tungstenite::Error::Protocol(P::MissingSecWebSocketVersionHeader) => reject(
            426,
            "unsupported WebSocket version: use Sec-WebSocket-Version: 13",
        ),
        tungstenite::Error::Protocol(P::WrongHttpVersion) => {
            reject(400, "WebSocket needs HTTP/1.1 or later")
        }
        _ => reject(400, "invalid WebSocket upgrade request"),
    }
}

fn offers_subprotocol(request: &Request, wanted: &str) -> bool {
    request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
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
