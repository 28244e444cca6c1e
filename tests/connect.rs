//! The connect callback: an upgrade without a token is identified by the app from
//! its cookies (and the headers named), or refused before the upgrade. A real node,
//! real WebSocket clients and a stand-in app (`common::app`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::app::{App, Request};
use common::{Node, WAIT, http, http_raw_body, recv_json};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

const HOOK_SECRET: &str = "hook-secret-0123456789";
const TOKEN_SECRET: &str = "connect-test-token-secret-0123456789";

/// The app's sessions: `sid=good` is alice (chat rooms only), `sid=anon` nobody,
/// anything else refused.
fn sessions(r: &Request) -> (u16, String) {
    let v = r.json();
    match v["cookies"]["sid"].as_str() {
        Some("good") => (
            200,
            json!({"user": "alice", "rooms": {"sub": ["chat:*"], "pub": ["chat:*"]}}).to_string(),
        ),
        Some("anon") => (200, json!({"user": null}).to_string()),
        Some("slow") => {
            std::thread::sleep(Duration::from_millis(1500));
            (200, json!({"user": "late"}).to_string())
        }
        _ => (403, "{}".into()),
    }
}

fn node(app: &App, tweak: impl FnOnce(&mut ringway::Config)) -> Node {
    Node::start(|c| {
        c.allow_anonymous = false;
        c.auth.token_secret = TOKEN_SECRET.into();
        c.hooks.secret = HOOK_SECRET.into();
        c.hooks.connect_url = app.url("/connect");
        c.hooks.connect_headers = vec!["X-Tenant".into()];
        c.hooks.authorize_timeout_ms = 400;
        tweak(c);
    })
}

/// Upgrade with `cookie`; the welcome, or the HTTP status of the refusal.
fn upgrade(n: &Node, cookie: &str) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    let stream = TcpStream::connect(n.ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = n.url("/ws").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Sec-WebSocket-Protocol", "ringway.v1".parse().unwrap());
    h.insert("Cookie", cookie.parse().unwrap());
    h.insert("X-Tenant", "acme".parse().unwrap());
    h.insert("X-Secret", "not for the app".parse().unwrap());
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

#[test]
fn a_cookie_session_is_the_apps_user_with_its_rooms() {
    let app = App::start(sessions);
    let n = node(&app, |_| {});
    let mut ws = upgrade(&n, "sid=good; theme=dark").expect("upgraded");
    let welcome = recv_json(&mut ws);
    assert_eq!(
        (&welcome["type"], &welcome["user"]),
        (&json!("welcome"), &json!("alice")),
        "{welcome}"
    );
    let asked = app.received();
    assert_eq!(asked.len(), 1);
    let q = asked[0].json();
    assert_eq!(q["cookies"], json!({"sid": "good", "theme": "dark"}), "{q}");
    assert_eq!(
        q["headers"],
        json!({"x-tenant": "acme"}),
        "only the headers named: {q}"
    );
    assert_eq!(q["ip"], "127.0.0.1");
    assert!(asked[0].headers.contains_key("x-ringway-signature"));
    // Her personal room, then the rooms the app granted, as a token would.
    assert_eq!(recv_json(&mut ws)["room"], "user:alice");
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, v: Value| {
        ws.send(tungstenite::Message::text(v.to_string())).unwrap();
    };
    send(&mut ws, json!({"type": "sub", "room": "chat:1"}));
    assert_eq!(recv_json(&mut ws)["type"], "subscribed");
    send(&mut ws, json!({"type": "sub", "room": "ops:1"}));
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
    send(&mut ws, json!({"type": "pub", "room": "chat:1", "data": 1}));
    let m = recv_json(&mut ws);
    assert_eq!(
        (&m["type"], &m["from"]),
        (&json!("msg"), &json!("alice")),
        "{m}"
    );
}

#[test]
fn the_app_refuses_before_the_upgrade_and_a_silent_app_is_a_503() {
    let app = App::start(sessions);
    let n = node(&app, |_| {});
    assert_eq!(upgrade(&n, "sid=stolen").err(), Some(403));
    // Nobody, on a node that refuses anonymous clients.
    assert_eq!(upgrade(&n, "sid=anon").err(), Some(401));
    let t0 = Instant::now();
    assert_eq!(upgrade(&n, "sid=slow").err(), Some(503));
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_millis(1400),
        "refused at the 400 ms callback timeout, not the app's 1.5 s: {waited:?}"
    );
    let (_, metrics) = http(n.api, "GET", "/metrics", "");
    for line in [
        "ringway_connect_requests_total{result=\"refused\"} 1",
        "ringway_connect_requests_total{result=\"anonymous\"} 1",
        "ringway_connect_requests_total{result=\"failed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing");
    }
    // The node is fine: a good session still gets in.
    assert!(upgrade(&n, "sid=good").is_ok());
}

#[test]
fn anonymous_sessions_and_tokens_on_a_node_that_allows_them() {
    let app = App::start(sessions);
    let n = node(&app, |c| c.allow_anonymous = true);
    let mut ws = upgrade(&n, "sid=anon").expect("anonymous is allowed here");
    let welcome = recv_json(&mut ws);
    assert!(welcome.get("user").is_none_or(Value::is_null), "{welcome}");
    // A token decides by itself: the app is not asked.
    let before = app.received().len();
    let token = ringway::auth::mint_hs256(
        TOKEN_SECRET.as_bytes(),
        &ringway::auth::Claims {
            sub: "bob".into(),
            exp: ringway::auth::unix_now() + 60,
            rooms: None,
        },
    );
    let c = common::Client::connect(&format!("{}?token={token}", n.url("/ws")));
    assert_eq!(c.welcome["user"], "bob");
    assert_eq!(app.received().len(), before);
}

#[test]
fn frames_right_behind_the_request_head_are_read_once_the_app_answers() {
    let app = App::start(|r| {
        std::thread::sleep(Duration::from_millis(150));
        sessions(r)
    });
    let n = node(&app, |_| {});
    let mut s = TcpStream::connect(n.ws).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Cookie: sid=good\r\n\r\n"
        .as_bytes()
        .to_vec();
    bytes.extend(common::client_frame(
        0x81,
        br#"{"type":"ping","ref":"early"}"#,
    ));
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("early") {
        let n = s.read(&mut buf).expect("the answer and the pong");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains(r#""user":"alice""#), "{text}");
    assert!(text.contains(r#""type":"pong""#), "{text}");
    // A refused session never gets to its frames: an HTTP answer, then the close.
    let (status, _) = http_raw_body(
        n.ws,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Cookie: sid=nope\r\n\r\n",
    );
    assert_eq!(status, 403);
}
