//! Tokens, room permissions, expiry and refresh, the API key, presence events: a real
//! node and real WebSocket clients.

mod common;

use std::time::Duration;

use common::{Client, Node, raw_http_status};
use ringway::auth::{Claims, RoomClaims, mint_hs256, unix_now};
use serde_json::json;

const SECRET: &str = "auth-test-secret-0123456789abcdef";

fn node() -> Node {
    Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.allow_anonymous = false;
        c.heartbeat.tick_ms = 100;
    })
}

fn token(sub: &str, ttl: i64, rooms: Option<RoomClaims>) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &Claims {
            sub: sub.into(),
            exp: (unix_now() as i64 + ttl) as u64,
            rooms,
        },
    )
}

fn upgrade_status(n: &Node, query_token: Option<&str>) -> u16 {
    let path = match query_token {
        Some(t) => format!("/ws?token={t}"),
        None => "/ws".into(),
    };
    raw_http_status(
        n.ws,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
}

/// A connected client with `token`; its `subscribed` for the personal room is read.
fn connect(n: &Node, token: &str) -> Client {
    let mut c = Client::connect(&format!("{}?token={token}", n.url("/ws")));
    let s = c.recv();
    assert_eq!(s["type"], "subscribed", "{s}");
    c
}

#[test]
fn a_good_token_is_welcomed_with_its_user() {
    let n = node();
    let c = connect(&n, &token("alice", 3600, None));
    assert_eq!(c.welcome["user"], "alice");
}

#[test]
fn token_in_the_subprotocol_header_works_for_browsers() {
    let n = node();
    let t = token("carol", 60, None);
    let stream = std::net::TcpStream::connect(n.ws).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(n.url("/ws")).unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("ringway.v1, bearer.{t}").parse().unwrap(),
    );
    let (mut ws, resp) = tungstenite::client::client(req, stream).unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "ringway.v1",
        "the token is not echoed back as the chosen protocol"
    );
    assert_eq!(common::recv_json(&mut ws)["user"], "carol");
}

#[test]
fn missing_forged_expired_malformed_and_wrong_algorithm_get_401() {
    let n = node();
    assert_eq!(upgrade_status(&n, None), 401);
    let forged = mint_hs256(
        b"not-the-secret-0123456789abcdefgh",
        &Claims {
            sub: "mallory".into(),
            exp: unix_now() + 60,
            rooms: None,
        },
    );
    assert_eq!(upgrade_status(&n, Some(&forged)), 401);
    assert_eq!(upgrade_status(&n, Some(&token("alice", -30, None))), 401);
    assert_eq!(upgrade_status(&n, Some("this.is.not-a-jwt")), 401);
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &Claims {
            sub: "alice".into(),
            exp: unix_now() + 60,
            rooms: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(upgrade_status(&n, Some(&hs384)), 401);
    // Other clients are unaffected.
    assert_eq!(
        connect(&n, &token("alice", 3600, None)).welcome["user"],
        "alice"
    );
}

#[test]
fn rooms_outside_the_token_are_refused_then_closed_with_4003() {
    let n = node();
    let rooms = RoomClaims {
        sub: vec!["chat:*".into()],
        publish: vec!["chat:1".into()],
    };
    let mut c = connect(&n, &token("alice", 60, Some(rooms)));
    c.sub("chat:9");
    c.sub("chat:1");
    c.send(json!({"type": "pub", "room": "chat:1", "data": 1}));
    assert_eq!(c.recv()["type"], "msg");
    c.send(json!({"type": "pub", "room": "chat:2", "data": 1, "ref": 5}));
    let e = c.recv();
    assert_eq!(
        (e["code"].clone(), e["ref"].clone(), e["room"].clone()),
        (json!("forbidden"), json!(5), json!("chat:2")),
        "the error names the room and echoes the ref"
    );
    c.send(json!({"type": "sub", "room": "admin"}));
    assert_eq!(c.expect_close(), 4003);
    // Counted as what it was, not as a protocol error.
    let forbidden = "ringway_disconnects_total{reason=\"forbidden\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while common::metric(n.api, forbidden) != 1.0 {
        assert!(std::time::Instant::now() < deadline, "4003 not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        common::metric(
            n.api,
            "ringway_disconnects_total{reason=\"protocol_error\"}"
        ),
        0.0
    );
}

#[test]
fn a_refreshed_token_keeps_the_socket_and_no_refresh_closes_4001() {
    let n = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.auth.refresh_margin_s = 2;
        c.auth.refresh_grace_s = 1;
        c.heartbeat.tick_ms = 100;
    });
    let mut keeps = connect(&n, &token("alice", 3, None));
    let mut lapses = connect(&n, &token("bob", 3, None));
    for c in [&mut keeps, &mut lapses] {
        let r = c.recv();
        assert_eq!(r["type"], "refresh_needed", "{r}");
    }
    // A refresh for another user is refused.
    keeps.send(json!({"type": "refresh", "token": token("mallory", 60, None)}));
    assert_eq!(keeps.recv()["code"], "bad_token");
    keeps.send(json!({"type": "refresh", "token": token("alice", 3600, None)}));
    let r = keeps.recv();
    assert_eq!(r["type"], "refreshed", "{r}");
    assert_eq!(lapses.expect_close(), 4001);
    assert_eq!(
        common::metric(n.api, "ringway_disconnects_total{reason=\"token_expired\"}"),
        1.0
    );
    // Past the old expiry and grace, the refreshed socket still works.
    std::thread::sleep(Duration::from_millis(1500));
    keeps.send(json!({"type": "ping"}));
    assert_eq!(keeps.recv()["type"], "pong");
}

#[test]
fn rooms_can_require_a_token_even_with_anonymous_clients_allowed() {
    let n = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.auth.rooms_require_auth = vec!["private:".into()];
    });
    let mut anon = n.client();
    anon.sub("public:1");
    anon.send(json!({"type": "sub", "room": "private:1"}));
    assert_eq!(anon.recv()["code"], "forbidden");
    let mut alice = connect(&n, &token("alice", 3600, None));
    alice.sub("private:1");
}

#[test]
fn the_api_refuses_a_wrong_key_and_takes_the_right_one() {
    let n = Node::start(|c| c.auth.api_key = "k-0123456789".into());
    let req =
        |auth: &str| format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    assert_eq!(raw_http_status(n.api, &req("")), 401);
    assert_eq!(
        raw_http_status(n.api, &req("Authorization: Bearer k-0123456789x\r\n")),
        401
    );
    assert_eq!(
        raw_http_status(n.api, &req("Authorization: Bearer k-0123456789\r\n")),
        200
    );
    assert_eq!(
        raw_http_status(n.api, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        200,
        "health checks stay open"
    );
}

#[test]
fn presence_events_are_debounced_joins_and_leaves() {
    let n = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.rooms.presence_events = vec!["lobby:".into()];
        c.rooms.presence_debounce_ms = 300;
        c.heartbeat.tick_ms = 50;
    });
    let mut alice = connect(&n, &token("alice", 3600, None));
    alice.sub("lobby:1");
    let j = alice.recv();
    assert_eq!(
        (j["type"].clone(), j["user"].clone()),
        (json!("join"), json!("alice"))
    );
    let mut bob = connect(&n, &token("bob", 3600, None));
    bob.sub("lobby:1");
    let j = alice.recv();
    assert_eq!(
        (j["type"].clone(), j["user"].clone()),
        (json!("join"), json!("bob"))
    );
    // A quick reconnect inside the debounce window announces nothing...
    drop(bob);
    let mut bob = connect(&n, &token("bob", 3600, None));
    bob.sub("lobby:1");
    std::thread::sleep(Duration::from_millis(600));
    // ...and a real leave is announced once.
    drop(bob);
    let l = alice.recv();
    assert_eq!(
        (l["type"].clone(), l["user"].clone()),
        (json!("leave"), json!("bob"))
    );
    alice.send(json!({"type": "presence", "room": "lobby:1"}));
    let p = alice.recv();
    assert_eq!(p["users"], json!([{"user": "alice", "connections": 1}]));
    // Three presence changes reached alice, and no publish: nothing was timed as a
    // delivery (their frames once carried the router's millisecond clock as `born`).
    assert_eq!(
        common::metric(n.api, "ringway_publish_to_write_seconds_count"),
        0.0
    );
}

#[test]
fn an_origin_outside_the_allow_list_gets_403() {
    let n = Node::start(|c| c.auth.origins = vec!["https://app.example.com".into()]);
    let req = |origin: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        )
    };
    assert_eq!(
        raw_http_status(n.ws, &req("Origin: https://evil.example\r\n")),
        403
    );
    assert_eq!(
        raw_http_status(n.ws, &req("Origin: https://app.example.com\r\n")),
        101
    );
    // Clients that send no Origin (servers, native apps) are not browsers: allowed.
    assert_eq!(raw_http_status(n.ws, &req("")), 101);
}

#[test]
fn the_node_serves_the_client_the_demo_and_guest_tokens() {
    let n = Node::start(|_| {});
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw_http_status(n.ws, &get("/client.js")), 200);
    assert_eq!(raw_http_status(n.ws, &get("/client.d.ts")), 200);
    assert_eq!(raw_http_status(n.ws, &get("/")), 200);
    assert_eq!(
        raw_http_status(n.ws, &get("/demo/token?name=bad%20name")),
        400
    );
    // A guest token names the user and only opens demo:* rooms.
    let (_, body) = common::http_raw_body(n.ws, &get("/demo/token?name=zoe"));
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Pages are not refused upgrades.
    let (_, metrics) = n.get("/metrics");
    assert!(
        metrics.contains("ringway_disconnects_total{reason=\"page\"} 5\n")
            && metrics.contains("ringway_disconnects_total{reason=\"handshake\"} 0\n"),
        "{metrics}"
    );
    let mut c = connect(&n, token["token"].as_str().unwrap());
    assert_eq!(c.welcome["user"], "guest:zoe");
    c.sub("demo:lobby");
    c.send(json!({"type": "sub", "room": "chat:1"}));
    assert_eq!(c.recv()["code"], "forbidden");

    // Pages on other origins import the client (CORS), and HEAD answers headers.
    let head = |path: &str, origin: &str| {
        common::http_raw_text(
            n.ws,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n"),
        )
    };
    let text = head("/client.js", "https://app.example");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("Access-Control-Allow-Origin: *\r\n"),
        "{text}"
    );
    let (head_part, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(body.is_empty(), "HEAD has no body: {body:?}");
    assert!(!head_part.contains("Content-Length: 0"), "{text}");
    let get_js = common::http_raw_text(
        n.ws,
        "GET /client.js HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
    );
    assert!(
        get_js.contains("Access-Control-Allow-Origin: *\r\n"),
        "{get_js}"
    );
    assert!(get_js.contains("export class Ringway"), "the module itself");
    let listed = Node::start(|c| c.auth.origins = vec!["https://app.example".into()]);
    let ok = common::http_raw_text(
        listed.ws,
        "GET /client.d.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
    );
    assert!(
        ok.contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{ok}"
    );
    let other = common::http_raw_text(
        listed.ws,
        "GET /client.js HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n",
    );
    assert!(!other.contains("Access-Control-Allow-Origin"), "{other}");

    let off = Node::start(|c| c.demo = false);
    assert_eq!(raw_http_status(off.ws, &get("/")), 404);
    assert_eq!(raw_http_status(off.ws, &get("/demo/token?name=zoe")), 404);
    assert_eq!(raw_http_status(off.ws, &get("/client.js")), 200);
}
