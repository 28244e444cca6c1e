//! The authorization callback: the app decides subscribes and publishes to the
//! rooms it names, answers are cached, a silent app refuses (or lets through when
//! told to), and a connection waiting for an answer is still served. A real node,
//! real WebSocket clients and a stand-in app (`common::app`).

mod common;

use std::time::{Duration, Instant};

use common::app::{App, Request};
use common::{Client, Node, http};
use hmac::{Hmac, KeyInit, Mac};
use ringway::auth::{Claims, mint_hs256, unix_now};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "authz-test-token-secret-0123456789ab";
const HOOK_SECRET: &str = "hook-secret-0123456789";

fn token(sub: &str) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &Claims {
            sub: sub.into(),
            exp: unix_now() + 3600,
            rooms: None,
        },
    )
}

fn node(app: &App, tweak: impl FnOnce(&mut ringway::Config)) -> Node {
    Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.hooks.secret = HOOK_SECRET.into();
        c.hooks.authorize_url = app.url("/authorize");
        c.hooks.authorize_rooms = vec!["private:*".into()];
        c.hooks.authorize_timeout_ms = 400;
        tweak(c);
    })
}

fn connect(n: &Node, user: &str) -> Client {
    let mut c = Client::connect(&format!("{}?token={}", n.url("/ws"), token(user)));
    assert_eq!(c.recv()["type"], "subscribed"); // user:<id>
    c
}

/// The app's rule: alice may do anything in private rooms; others nothing.
fn alice_only(r: &Request) -> (u16, String) {
    let v = r.json();
    let allow = v["user"] == "alice";
    (200, json!({ "allow": allow }).to_string())
}

/// One exact sample from /metrics.
fn sample(n: &Node, line: &str) -> f64 {
    let (_, text) = http(n.api, "GET", "/metrics", "");
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn signed(r: &Request) -> bool {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    r.headers.get("x-ringway-signature") == Some(&format!("sha256={hex}"))
}

/// The next frame that is not a `msg`.
fn reply(c: &mut Client) -> Value {
    loop {
        let v = c.recv();
        if v["type"] != "msg" {
            return v;
        }
    }
}

#[test]
fn the_app_allows_and_refuses_subscribes_and_publishes() {
    let app = App::start(alice_only);
    let n = node(&app, |_| {});
    let mut alice = connect(&n, "alice");
    let mut bob = connect(&n, "bob");

    alice.sub("private:1");
    bob.send(json!({"type": "sub", "room": "private:1", "ref": "b1"}));
    let e = bob.recv();
    assert_eq!(
        (&e["type"], &e["code"], &e["ref"], &e["room"]),
        (
            &json!("error"),
            &json!("forbidden"),
            &json!("b1"),
            &json!("private:1")
        ),
        "{e}"
    );
    // A refusal by the app does not end the connection: bob goes on elsewhere.
    bob.sub("public:1");
    bob.send(json!({"type": "pub", "room": "private:1", "data": "x", "ref": 2}));
    let e = reply(&mut bob);
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("forbidden"), &json!(2)),
        "{e}"
    );

    alice.send(json!({"type": "pub", "room": "private:1", "data": "hi", "ref": 3}));
    let ack = reply(&mut alice);
    assert_eq!(
        (&ack["type"], &ack["ref"]),
        (&json!("ack"), &json!(3)),
        "{ack}"
    );
    // Rooms the app does not name never ask it.
    bob.send(json!({"type": "pub", "room": "public:1", "data": "y", "ref": 4}));
    assert_eq!(reply(&mut bob)["type"], "ack");

    let reqs = app.received();
    let asked: Vec<(String, String, String)> = reqs
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["user"].as_str().unwrap().to_owned(),
                v["room"].as_str().unwrap().to_owned(),
                v["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = asked.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("alice".into(), "private:1".into(), "publish".into()),
            ("alice".into(), "private:1".into(), "subscribe".into()),
            ("bob".into(), "private:1".into(), "publish".into()),
            ("bob".into(), "private:1".into(), "subscribe".into()),
        ],
        "one call per user, room and action"
    );
    for r in &reqs {
        assert!(signed(r), "unsigned: {:?}", r.headers);
        assert_eq!(r.path, "/authorize");
        let v = r.json();
        assert_eq!(v["claims"]["sub"], v["user"], "the token's claims: {v}");
        assert!(v["claims"]["exp"].as_u64().is_some(), "{v}");
        assert!(v["conn"].as_str().is_some(), "{v}");
    }
    assert_eq!(
        sample(&n, "ringway_authorize_requests_total{result=\"allowed\"}"),
        2.0
    );
    assert_eq!(
        sample(&n, "ringway_authorize_requests_total{result=\"denied\"}"),
        2.0
    );
}

#[test]
fn answers_are_cached_per_user_room_and_action_for_their_ttl() {
    let app = App::start(|r| {
        let v = r.json();
        let ttl = if v["room"] == "private:short" { 1 } else { 60 };
        (200, json!({"allow": true, "ttl_s": ttl}).to_string())
    });
    let n = node(&app, |_| {});
    let mut a1 = connect(&n, "alice");
    let mut a2 = connect(&n, "alice");
    for _ in 0..3 {
        a1.sub("private:1");
        a1.send(json!({"type": "unsub", "room": "private:1"}));
        assert_eq!(a1.recv()["type"], "unsubscribed");
    }
    // Her other connection (on either worker) asks at most once more: each worker
    // keeps its own answers.
    a2.sub("private:1");
    let calls = |room: &str| {
        app.received()
            .iter()
            .filter(|r| r.json()["room"] == room)
            .count()
    };
    let first = calls("private:1");
    assert!((1..=2).contains(&first), "{first} calls for 5 subscribes");
    if a1.worker() == a2.worker() {
        assert_eq!(first, 1, "one call for repeated subscribes on one worker");
    }
    let hits = sample(&n, "ringway_authorize_cache_hits_total");
    let same = a1.worker() == a2.worker();
    assert_eq!(hits, if same { 3.0 } else { 2.0 }, "cache hits");

    // An answer with a short ttl_s is asked again once it ends.
    a1.sub("private:short");
    a1.send(json!({"type": "unsub", "room": "private:short"}));
    assert_eq!(a1.recv()["type"], "unsubscribed");
    a1.sub("private:short");
    assert_eq!(calls("private:short"), 1);
    std::thread::sleep(Duration::from_millis(1100));
    a1.send(json!({"type": "unsub", "room": "private:short"}));
    assert_eq!(a1.recv()["type"], "unsubscribed");
    a1.sub("private:short");
    assert_eq!(calls("private:short"), 2);
}

#[test]
fn a_silent_app_refuses_and_the_connection_is_served_while_it_waits() {
    let app = App::start(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        (200, r#"{"allow":true}"#.into())
    });
    let n = node(&app, |_| {});
    let mut alice = connect(&n, "alice");
    let t0 = Instant::now();
    alice.send(json!({"type": "sub", "room": "private:1", "ref": "s"}));
    // While the app thinks, the connection is served: a ping and another room.
    alice.send(json!({"type": "ping", "ref": "p"}));
    let pong = alice.recv();
    assert_eq!((&pong["type"], &pong["ref"]), (&json!("pong"), &json!("p")));
    alice.sub("public:1");
    assert!(t0.elapsed() < Duration::from_millis(300), "served at once");
    let e = alice.recv();
    assert_eq!(
        (&e["type"], &e["code"], &e["ref"]),
        (&json!("error"), &json!("forbidden"), &json!("s")),
        "{e}"
    );
    // Not the words of a refusal: the app was not heard.
    assert!(
        e["reason"].as_str().unwrap().contains("could not be asked"),
        "{e}"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1400),
        "refused after the 400 ms timeout, not the app's 1.5 s: {waited:?}"
    );
    assert_eq!(
        sample(&n, "ringway_authorize_requests_total{result=\"timeout\"}"),
        1.0
    );
    // A timeout is not cached: the next subscribe asks again.
    alice.send(json!({"type": "sub", "room": "private:1", "ref": "again"}));
    assert_eq!(alice.recv()["ref"], "again");
    assert_eq!(app.received().len(), 2);
}

#[test]
fn failing_open_lets_requests_through_when_the_app_is_down() {
    // Nothing listens where the app should be.
    let port = common::free_port();
    let n = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.hooks.secret = HOOK_SECRET.into();
        c.hooks.authorize_url = format!("http://127.0.0.1:{port}/authorize");
        c.hooks.authorize_rooms = vec!["private:*".into()];
        c.hooks.authorize_fail_open = true;
    });
    let mut alice = connect(&n, "alice");
    alice.sub("private:1");
    assert_eq!(
        sample(&n, "ringway_authorize_requests_total{result=\"error\"}"),
        1.0
    );
    // Failing closed (the default), the same outage refuses.
    let closed = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.hooks.secret = HOOK_SECRET.into();
        c.hooks.authorize_url = format!("http://127.0.0.1:{port}/authorize");
        c.hooks.authorize_rooms = vec!["private:*".into()];
    });
    let mut bob = connect(&closed, "bob");
    bob.send(json!({"type": "sub", "room": "private:1"}));
    assert_eq!(bob.recv()["code"], "forbidden");
}

#[test]
fn requests_waiting_for_the_app_keep_their_order_and_anonymous_ones_ask_too() {
    let app = App::start(|r| {
        std::thread::sleep(Duration::from_millis(100));
        let v = r.json();
        // Anonymous connections may only read.
        let allow = !v["user"].is_null() || v["action"] == "subscribe";
        (200, json!({ "allow": allow }).to_string())
    });
    let n = node(&app, |c| c.allow_anonymous = true);
    let mut alice = connect(&n, "alice");
    let mut watcher = Client::connect(&n.url("/ws"));
    watcher.sub("private:1");
    for i in 0..10 {
        alice.send(json!({"type": "pub", "room": "private:1", "data": i, "ref": i}));
    }
    let got: Vec<Value> = (0..10).map(|_| watcher.recv()["data"].clone()).collect();
    assert_eq!(got, (0..10).map(Value::from).collect::<Vec<_>>());
    let acks: Vec<Value> = (0..10).map(|_| reply(&mut alice)["ref"].clone()).collect();
    assert_eq!(acks, (0..10).map(Value::from).collect::<Vec<_>>());
    watcher.send(json!({"type": "pub", "room": "private:1", "data": "anon", "ref": 1}));
    assert_eq!(reply(&mut watcher)["code"], "forbidden");
    let anon = app
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|v| v["user"].is_null())
        .expect("the anonymous subscribe asked");
    assert!(anon["claims"].is_null(), "{anon}");
    // Ten publishes, one question.
    let pubs = app
        .received()
        .iter()
        .filter(|r| r.json()["user"] == "alice")
        .count();
    assert_eq!(pubs, 1);
}

#[test]
fn a_connection_may_keep_only_32_requests_waiting_for_the_app() {
    let app = App::start(|_| {
        std::thread::sleep(Duration::from_millis(800));
        (200, r#"{"allow":true}"#.into())
    });
    let n = node(&app, |c| c.hooks.authorize_timeout_ms = 2_000);
    let mut alice = connect(&n, "alice");
    for i in 0..40 {
        alice.send(json!({"type": "sub", "room": format!("private:{i}"), "ref": i}));
    }
    // The 8 over the bound are refused at once; the 32 are answered once the app is.
    let mut unavailable = Vec::new();
    let mut subscribed = 0;
    while subscribed + unavailable.len() < 40 {
        let v = alice.recv();
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("subscribed"), _) => subscribed += 1,
            (Some("error"), Some("unavailable")) => unavailable.push(v["ref"].as_u64().unwrap()),
            _ => panic!("{v}"),
        }
    }
    assert_eq!(
        (subscribed, unavailable),
        (32, (32..40).collect::<Vec<u64>>())
    );
}
