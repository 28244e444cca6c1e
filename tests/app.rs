//! What the app behind ringway relies on: who sent a message, acknowledged and
//! idempotent publishes, history, disconnecting users. A real node and real
//! WebSocket clients.

mod common;

use common::{Client, Node};
use ringway::auth::{Claims, RoomClaims, mint_hs256, unix_now};
use serde_json::{Value, json};

const SECRET: &str = "app-test-secret-0123456789abcdef0123";

fn node() -> Node {
    Node::start(|c| c.auth.token_secret = SECRET.into())
}

fn token(sub: &str, rooms: Option<RoomClaims>) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &Claims {
            sub: sub.into(),
            exp: unix_now() + 3600,
            rooms,
        },
    )
}

/// A client with a token for `user`; its personal room's `subscribed` is read.
fn user(n: &Node, user: &str, rooms: Option<RoomClaims>) -> Client {
    let mut c = Client::connect(&format!("{}?token={}", n.url("/ws"), token(user, rooms)));
    let s = c.recv();
    assert_eq!(s["type"], "subscribed", "{s}");
    c
}

fn anonymous(n: &Node) -> Client {
    Client::connect(&n.url("/ws"))
}

/// The next message that is not about presence.
fn next(c: &mut Client) -> Value {
    loop {
        let v = c.recv();
        if v["type"] != "join" && v["type"] != "leave" {
            return v;
        }
    }
}

#[test]
fn a_message_names_its_sender_and_a_forged_from_is_ignored() {
    let n = node();
    let mut watcher = anonymous(&n);
    watcher.sub("chat:1");
    let mut alice = user(&n, "alice", None);
    alice.send(json!({"type": "pub", "room": "chat:1", "from": "mallory", "data": {"from": "mallory", "text": "hi"}}));
    let m = next(&mut watcher);
    assert_eq!(
        (&m["from"], &m["data"]["text"]),
        (&json!("alice"), &json!("hi")),
        "{m}"
    );
    // The envelope's `from` is the node's; whatever the data says is the client's.
    assert_eq!(m["data"]["from"], "mallory");
    let mut anon = anonymous(&n);
    anon.send(json!({"type": "pub", "room": "chat:1", "from": "alice", "data": 2}));
    let m = next(&mut watcher);
    assert_eq!(m["data"], 2);
    assert!(
        m.get("from").is_none(),
        "an anonymous publisher has no from: {m}"
    );
    // The API is the app: it names the sender.
    let (status, body) = n.post(
        "/v1/publish",
        &json!({"room": "chat:1", "from": "system", "data": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let m = next(&mut watcher);
    assert_eq!((&m["from"], &m["data"]), (&json!("system"), &json!(3)));
    let (status, _) = n.post(
        "/v1/publish",
        &json!({"room": "chat:1", "from": "no spaces", "data": 4}),
    );
    assert_eq!(status, 400);
}

#[test]
fn direct_messages_need_a_sender_unless_the_node_allows_anonymous_ones() {
    let n = node();
    let mut bob = user(&n, "bob", None);
    let mut anon = anonymous(&n);
    anon.send(json!({"type": "send", "user": "bob", "data": "psst", "ref": 1}));
    let e = anon.recv();
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("forbidden"), &json!(1)),
        "{e}"
    );
    // A token's room patterns do not stop a direct message: it is not a room.
    let mut alice = user(
        &n,
        "alice",
        Some(RoomClaims {
            sub: vec!["chat:*".into()],
            publish: vec!["chat:*".into()],
        }),
    );
    alice.send(json!({"type": "send", "user": "bob", "data": "hi bob"}));
    let m = next(&mut bob);
    assert_eq!(
        (&m["room"], &m["from"], &m["data"]),
        (&json!("user:bob"), &json!("alice"), &json!("hi bob")),
        "{m}"
    );

    let open = Node::start(|c| {
        c.auth.token_secret = SECRET.into();
        c.auth.anonymous_send = true;
    });
    let mut bob = user(&open, "bob", None);
    let mut anon = anonymous(&open);
    anon.send(json!({"type": "send", "user": "bob", "data": "psst"}));
    let m = next(&mut bob);
    assert_eq!(m["data"], "psst");
    assert!(m.get("from").is_none(), "{m}");
}

#[test]
fn a_publish_with_a_ref_is_acknowledged_with_its_seq_or_refused_with_its_ref() {
    let n = node();
    let mut watcher = anonymous(&n);
    let sub = watcher.sub("chat:acks");
    let mut alice = user(
        &n,
        "alice",
        Some(RoomClaims {
            sub: vec!["chat:*".into()],
            publish: vec!["chat:acks".into()],
        }),
    );
    for k in 1..=3 {
        alice.send(json!({"type": "pub", "room": "chat:acks", "data": k, "ref": format!("m{k}")}));
        let ack = alice.recv();
        assert_eq!(
            (
                &ack["type"],
                &ack["room"],
                &ack["seq"],
                &ack["ref"],
                &ack["epoch"]
            ),
            (
                &json!("ack"),
                &json!("chat:acks"),
                &json!(k),
                &json!(format!("m{k}")),
                &sub["epoch"]
            ),
            "{ack}"
        );
        assert_eq!(next(&mut watcher)["seq"], k);
    }
    // No ref, no ack.
    alice.send(json!({"type": "pub", "room": "chat:acks", "data": 4}));
    assert_eq!(next(&mut watcher)["seq"], 4);
    alice.send(json!({"type": "ping", "ref": "p"}));
    assert_eq!(alice.recv()["type"], "pong", "nothing came before the pong");
    // Refused: the error carries the ref (and the room).
    alice.send(json!({"type": "pub", "room": "chat:other", "data": 1, "ref": 9}));
    let e = alice.recv();
    assert_eq!(
        (&e["type"], &e["code"], &e["ref"], &e["room"]),
        (
            &json!("error"),
            &json!("forbidden"),
            &json!(9),
            &json!("chat:other")
        )
    );
    // A direct message is acknowledged too.
    alice.send(json!({"type": "send", "user": "bob", "data": 1, "ref": "dm"}));
    let ack = alice.recv();
    assert_eq!(
        (&ack["type"], &ack["room"], &ack["seq"]),
        (&json!("ack"), &json!("user:bob"), &json!(1)),
        "{ack}"
    );
}

#[test]
fn a_repeated_idempotency_key_is_stamped_once_per_sender() {
    let n = node();
    let mut watcher = anonymous(&n);
    watcher.sub("chat:idem");
    let mut alice = user(&n, "alice", None);
    let publish = |c: &mut Client, key: &str, data: i64| {
        c.send(json!({"type": "pub", "room": "chat:idem", "data": data, "idempotency_key": key, "ref": data}));
        c.recv()
    };
    let first = publish(&mut alice, "order-1", 1);
    assert_eq!(
        (&first["seq"], first.get("duplicate")),
        (&json!(1), None),
        "{first}"
    );
    // The retry (after a lost ack, say) gets the first seq back and goes nowhere.
    let again = publish(&mut alice, "order-1", 1);
    assert_eq!(
        (&again["seq"], &again["duplicate"]),
        (&json!(1), &json!(true)),
        "{again}"
    );
    // Another connection of the same user is the same sender.
    let mut alice2 = user(&n, "alice", None);
    assert_eq!(publish(&mut alice2, "order-1", 1)["duplicate"], true);
    // Another sender's key is its own: bob cannot suppress alice's messages.
    let mut bob = user(&n, "bob", None);
    let b = publish(&mut bob, "order-1", 2);
    assert_eq!((&b["seq"], b.get("duplicate")), (&json!(2), None), "{b}");
    // The API has its own scope, and answers the same way.
    let post = |key: &str| {
        n.post(
            "/v1/publish",
            &json!({"room": "chat:idem", "data": 3, "idempotency_key": key}),
        )
    };
    let (status, body) = post("order-1");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&api["seq"], api.get("duplicate")), (&json!(3), None));
    let (_, body) = post("order-1");
    let api2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&api2["seq"], &api2["duplicate"]),
        (&json!(3), &json!(true))
    );
    // Anonymous clients are one sender: a retry after a reconnect comes on another
    // connection and must be recognised (their keys must be unguessable).
    let (mut anon1, mut anon2) = (anonymous(&n), anonymous(&n));
    let a1 = publish(&mut anon1, "anon-8c1f2e", 4);
    assert_eq!((&a1["seq"], a1.get("duplicate")), (&json!(4), None), "{a1}");
    drop(anon1);
    let a2 = publish(&mut anon2, "anon-8c1f2e", 4);
    assert_eq!(
        (&a2["seq"], &a2["duplicate"]),
        (&json!(4), &json!(true)),
        "{a2}"
    );
    let a3 = publish(&mut anon2, "anon-77d0aa", 5);
    assert_eq!((&a3["seq"], a3.get("duplicate")), (&json!(5), None), "{a3}");
    // Unknown fields in an API call are refused, not ignored (a misspelt key
    // would silently deliver twice).
    let (status, body) = n.post(
        "/v1/publish",
        &json!({"room": "chat:idem", "data": 3, "idempotencyKey": "x"}),
    );
    assert_eq!(status, 400, "{body}");
    // The watcher saw each message once.
    let seqs: Vec<Value> = (0..5).map(|_| next(&mut watcher)["seq"].clone()).collect();
    assert_eq!(seqs, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    watcher.send(json!({"type": "ping"}));
    assert_eq!(watcher.recv()["type"], "pong", "no fourth message");
    let (status, _) = n.post(
        "/v1/publish",
        &json!({"room": "chat:idem", "data": 3, "idempotency_key": ""}),
    );
    assert_eq!(status, 400);
    let (_, metrics) = n.get("/metrics");
    assert!(
        metrics.contains("ringway_publish_duplicates_total 4\n"),
        "{metrics}"
    );
}

#[test]
fn the_app_reads_a_rooms_history_to_resync() {
    let n = node();
    let mut alice = user(&n, "alice", None);
    for k in 1..=5 {
        alice.send(json!({"type": "pub", "room": "chat:h", "data": {"k": k}, "ref": k}));
        assert_eq!(alice.recv()["type"], "ack");
    }
    let get = |q: &str| {
        let (status, body) = n.get(&format!("/v1/history/chat:h{q}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let h = get("?since=1&limit=2");
    assert_eq!(
        (&h["room"], &h["seq"], &h["oldest"], &h["more"]),
        (&json!("chat:h"), &json!(5), &json!(1), &json!(true))
    );
    assert_eq!(
        h["messages"],
        json!([{"seq": 2, "from": "alice", "data": {"k": 2}}, {"seq": 3, "from": "alice", "data": {"k": 3}}])
    );
    let all = get("");
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);
    assert_eq!(all["more"], false);
    // The epoch is the one subscribers see: a client that got recovered:false
    // compares it with its own.
    let mut c = anonymous(&n);
    let s = c.sub("chat:h");
    assert_eq!(s["epoch"], all["epoch"]);
    // A room without history.
    let (_, body) = n.get("/v1/history/nobody:here");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&empty["epoch"], &empty["messages"]),
        (&Value::Null, &json!([]))
    );
    for bad in [
        "?since=x",
        "?limit=0",
        "?limit=1001",
        "?what=1",
        "?limit=2&limit=3",
    ] {
        let (status, body) = n.get(&format!("/v1/history/chat:h{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = n.get("/v1/history/bad%20room");
    assert_eq!(status, 400);
}

#[test]
fn the_app_lists_rooms_with_their_subscribers_page_by_page() {
    let n = node();
    let mut clients: Vec<Client> = (0..3).map(|_| anonymous(&n)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for room in ["list:a", "list:b", "list:c", "list:d"].iter().skip(i) {
            c.sub(room);
        }
    }
    let get = |q: &str| {
        let (status, body) = n.get(&format!("/v1/rooms{q}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let page = get("?limit=2");
    assert_eq!(
        page,
        json!({"rooms": [{"room": "list:a", "subscribers": 1}, {"room": "list:b", "subscribers": 2}],
               "next": "list:b", "missing": []})
    );
    let page = get("?after=list:b&limit=2");
    assert_eq!(
        page,
        json!({"rooms": [{"room": "list:c", "subscribers": 3}, {"room": "list:d", "subscribers": 3}],
               "next": null, "missing": []})
    );
    drop(clients.pop());
    // The last client's rooms lose it once its leave is processed.
    let deadline = std::time::Instant::now() + common::WAIT;
    while get("?after=list:c")["rooms"] != json!([{"room": "list:d", "subscribers": 2}]) {
        assert!(std::time::Instant::now() < deadline, "{}", get(""));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for bad in ["?limit=0", "?limit=1001", "?page=2"] {
        assert_eq!(n.get(&format!("/v1/rooms{bad}")).0, 400, "{bad}");
    }
}

#[test]
fn the_app_disconnects_a_user_or_one_connection() {
    let n = node();
    let mut a1 = user(&n, "alice", None);
    let mut a2 = user(&n, "alice", None);
    let mut b = user(&n, "bob", None);
    let (status, body) = n.post(
        "/v1/disconnect",
        &json!({"user": "alice", "reason": "banned"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["disconnected"],
        2
    );
    for c in [&mut a1, &mut a2] {
        let d = next(c);
        assert_eq!(
            (&d["type"], &d["code"], &d["reason"], &d["reconnect"]),
            (
                &json!("disconnect"),
                &json!(4010),
                &json!("banned"),
                &json!(false)
            ),
            "{d}"
        );
        assert_eq!(c.expect_close(), 4010);
    }
    // Bob stays.
    b.send(json!({"type": "ping"}));
    assert_eq!(b.recv()["type"], "pong");
    // One connection, by the id `welcome` gave it; a code and reconnect of the app's.
    let mut b2 = user(&n, "bob", None);
    let id = b2.welcome["conn"].as_str().unwrap().to_owned();
    let (_, body) = n.post(
        "/v1/disconnect",
        &json!({"conn": id, "code": 4100, "reconnect": true}),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["disconnected"],
        1
    );
    let d = next(&mut b2);
    assert_eq!((&d["code"], &d["reconnect"]), (&json!(4100), &json!(true)));
    assert_eq!(b2.expect_close(), 4100);
    b.send(json!({"type": "ping"}));
    assert_eq!(b.recv()["type"], "pong", "bob's other connection stays");
    let (_, metrics) = n.get("/metrics");
    assert!(
        metrics.contains("ringway_disconnects_total{reason=\"kicked\"} 3\n"),
        "{metrics}"
    );
    for bad in [
        json!({"user": "alice", "code": 1000}),
        json!({"user": "alice", "conn": "0.1.1"}),
        json!({"conn": "0.1"}),
        json!({}),
        json!({"user": "bad user"}),
        json!({"user": "alice", "colour": "red"}),
    ] {
        assert_eq!(n.post("/v1/disconnect", &bad).0, 400, "{bad}");
    }
}
