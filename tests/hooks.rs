//! Webhooks: what the app hears, signed, in order, through an outage. A real node,
//! real WebSocket clients and a stand-in app (`common::app`).

mod common;

use std::time::Duration;

use common::app::{App, Request};
use common::{Client, Node};
use hmac::{Hmac, KeyInit, Mac};
use ringway::auth::{Claims, mint_hs256, unix_now};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "hooks-test-token-secret-0123456789ab";
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
        c.hooks.url = app.url("/hooks");
        c.hooks.secret = HOOK_SECRET.into();
        c.hooks.batch_ms = 20;
        c.hooks.retry_base_ms = 50;
        c.hooks.retry_cap_ms = 400;
        c.hooks.publish_rooms = vec!["chat:*".into()];
        c.rooms.presence_debounce_ms = 100;
        c.heartbeat.tick_ms = 50;
        tweak(c);
    })
}

/// The signature the app computes: HMAC-SHA256 of the body, hex.
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

/// Every event delivered, in order, from the requests the app accepted (a retried
/// batch counts once).
fn events(reqs: &[Request]) -> Vec<Value> {
    let mut seen = std::collections::BTreeMap::new();
    for r in reqs {
        let v = r.json();
        seen.insert(
            v["batch"].as_u64().unwrap(),
            v["events"].as_array().unwrap().clone(),
        );
    }
    seen.into_values().flatten().collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_app_hears_every_event_signed_and_in_order() {
    let app = App::start(|_| (200, "{}".into()));
    let n = node(&app, |_| {});
    let mut alice = Client::connect(&format!("{}?token={}", n.url("/ws"), token("alice")));
    alice.recv(); // subscribed to user:alice
    alice.sub("chat:1");
    // Longer than the presence debounce: her joins are announced (a shorter visit
    // would cancel out).
    std::thread::sleep(Duration::from_millis(400));
    alice.send(json!({"type": "pub", "room": "chat:1", "data": {"text": "hi"}, "ref": 1}));
    let ack = loop {
        let m = alice.recv();
        if m["type"] == "ack" {
            break m;
        }
    };
    alice.send(json!({"type": "pub", "room": "other:1", "data": 1}));
    alice.send(json!({"type": "unsub", "room": "chat:1"}));
    assert_eq!(alice.recv()["type"], "unsubscribed");
    drop(alice);
    let reqs = app.wait_for(common::WAIT, |r| {
        kinds(&events(r)).iter().filter(|k| *k == "leave").count() >= 2
    });
    for r in &reqs {
        assert!(signed(r), "unsigned or badly signed: {:?}", r.headers);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks"));
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    let batches: Vec<u64> = reqs
        .iter()
        .map(|r| r.json()["batch"].as_u64().unwrap())
        .collect();
    assert!(batches.windows(2).all(|w| w[1] == w[0] + 1), "{batches:?}");
    let ev = events(&reqs);
    let mine: Vec<&Value> = ev
        .iter()
        .filter(|e| e["user"] == "alice" || e["from"] == "alice")
        .collect();
    let order: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // join/leave are settled after a debounce, so they interleave; the connection's
    // own events keep their order.
    let own: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| !["join", "leave"].contains(k))
        .collect();
    assert_eq!(
        own,
        [
            "connect",
            "subscribe",
            "publish",
            "unsubscribe",
            "disconnect"
        ],
        "{ev:?}"
    );
    let publish = mine.iter().find(|e| e["type"] == "publish").unwrap();
    assert_eq!(
        (
            &publish["room"],
            &publish["seq"],
            &publish["epoch"],
            &publish["data"]
        ),
        (
            &json!("chat:1"),
            &ack["seq"],
            &ack["epoch"],
            &json!({"text": "hi"})
        )
    );
    let disconnect = mine.iter().find(|e| e["type"] == "disconnect").unwrap();
    assert_eq!(disconnect["reason"], "eof");
    assert!(
        !ev.iter()
            .any(|e| e["type"] == "publish" && e["room"] == "other:1"),
        "other:* is not in publish_rooms"
    );
    // Presence: alice came online (user:alice) and joined chat:1, then left both.
    let joins: Vec<&Value> = ev.iter().filter(|e| e["type"] == "join").collect();
    let rooms: std::collections::BTreeSet<&str> =
        joins.iter().map(|e| e["room"].as_str().unwrap()).collect();
    assert_eq!(rooms, ["chat:1", "user:alice"].into());
    for e in &ev {
        assert_eq!(e["node"], "n1");
        assert!(e["time"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let (_, metrics) = n.get("/metrics");
    assert!(
        metrics.contains(&format!("ringway_hooks_delivered_total {}\n", ev.len())),
        "{metrics}"
    );
}

#[test]
fn webhooks_survive_the_app_being_down_and_lose_nothing_within_the_queue() {
    let app = App::start(|_| (503, "down".into()));
    let n = node(&app, |_| {});
    for _ in 0..20 {
        let mut c = Client::connect(&n.url("/ws"));
        c.sub("room:x");
    }
    // Down for 5 s: the node keeps retrying the first batch.
    std::thread::sleep(Duration::from_secs(5));
    let during = app.received();
    assert!(during.len() >= 3, "retried: {}", during.len());
    let first = during[0].json()["batch"].clone();
    assert!(
        during.iter().all(|r| r.json()["batch"] == first),
        "the same batch until it is acknowledged"
    );
    app.answer(|_| (200, "{}".into()));
    let reqs = app.wait_for(common::WAIT, |r| {
        let ok: Vec<&Request> = r.iter().skip(during.len()).collect();
        let mut evs = Vec::new();
        for q in ok {
            evs.extend(q.json()["events"].as_array().unwrap().clone());
        }
        evs.iter().filter(|e| e["type"] == "disconnect").count() == 20
    });
    let delivered: Vec<Value> = reqs[during.len()..]
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .collect();
    for kind in ["connect", "subscribe", "disconnect"] {
        assert_eq!(
            delivered.iter().filter(|e| e["type"] == kind).count(),
            20,
            "{kind}: {delivered:?}"
        );
    }
    let (_, metrics) = n.get("/metrics");
    assert!(
        !metrics.contains("ringway_hooks_retries_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringway_hooks_dropped_total{reason=\"overflow\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn a_long_outage_drops_the_oldest_events_and_counts_them() {
    let app = App::start(|_| (0, String::new())); // hangs up
    let n = node(&app, |c| {
        c.hooks.queue_events = 10;
        c.hooks.batch_events = 5;
        c.hooks.events = vec!["connect".into()];
    });
    let clients: Vec<Client> = (0..40).map(|_| Client::connect(&n.url("/ws"))).collect();
    let (_, metrics) = n.get("/metrics");
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
    };
    let dropped = value("ringway_hooks_dropped_total{reason=\"overflow\"}");
    let waiting = value("ringway_hooks_queue_events ");
    assert_eq!(value("ringway_hooks_events_total "), 40.0, "{metrics}");
    // The sender holds one batch (up to 5 events; on a busy machine it may take it
    // only after the queue filled, or not yet) and retries it; at most 10 wait; the
    // oldest of the rest were dropped.
    assert!((5.0..=10.0).contains(&waiting), "{waiting}: {metrics}");
    let in_flight = 40.0 - dropped - waiting;
    assert!((0.0..=5.0).contains(&in_flight), "{in_flight}: {metrics}");
    app.answer(|_| (200, "{}".into()));
    let reqs = app.wait_for(common::WAIT, |r| {
        let ok = events(r);
        ok.len() >= 15 || (ok.len() + dropped as usize >= 40)
    });
    // The newest connections are among those delivered: the oldest went first.
    let conns: Vec<String> = events(&reqs)
        .iter()
        .map(|e| e["conn"].as_str().unwrap().to_owned())
        .collect();
    let last = clients.last().unwrap().welcome["conn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(conns.contains(&last), "{conns:?} lacks {last}");
}

#[test]
fn a_stopping_node_gives_up_on_an_app_that_never_answers() {
    let app = App::start(|_| (503, "{}".into()));
    let n = node(&app, |c| c.hooks.timeout_ms = 300);
    let c = Client::connect(&format!("{}?token={}", n.url("/ws"), token("alice")));
    app.wait_for(common::WAIT, |r| !r.is_empty());
    drop(c);
    let t = std::time::Instant::now();
    let tries_before = app.received().len();
    drop(n);
    let took = t.elapsed();
    // 5 s of trying, with backoff, then what is left is dropped.
    assert!(
        took < Duration::from_secs(7),
        "the node took {took:?} to stop"
    );
    let tries = app.received().len() - tries_before;
    assert!(tries < 60, "{tries} requests while stopping: no backoff");
}
