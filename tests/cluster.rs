//! Several real nodes on this machine, linked by the mesh, driven by real WebSocket
//! clients: interest routing, one total order per room, direct messages, presence,
//! node loss and return, and refused peers.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET, addr, next_of, token};
use common::{Client, Process, http};
use serde_json::{Value, json};

#[test]
fn publish_reaches_other_nodes_once_in_order_and_idle_nodes_get_nothing() {
    let cl = Cluster::start(4);
    cl.wait_converged();
    let all = [0, 1, 2, 3];
    // Owned by n1; subscribers on n2 and n3; n4 has none.
    let room = cl.room_owned_by(0, &all, "interest:");
    let mut a = cl.client(1);
    let mut b = cl.client(2);
    let sa = a.sub(&room);
    let sb = b.sub(&room);
    assert_eq!(sa["epoch"], sb["epoch"], "one owner, one epoch");
    let delivers_to_n4 = cl.metric(3, "ringway_mesh_delivers_in_total");
    let mut seqs = Vec::new();
    for k in 0..20 {
        // Published on n1 (the owner) and on n4 (forwarded to the owner).
        let from = if k % 2 == 0 { 0 } else { 3 };
        let (epoch, seq) = cl.publish(from, &room, json!({"k": k}));
        assert_eq!(json!(epoch), sa["epoch"]);
        seqs.push(seq);
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    for c in [&mut a, &mut b] {
        for (k, seq) in seqs.iter().enumerate() {
            let m = c.recv();
            assert_eq!(m["type"], "msg");
            assert_eq!(m["seq"], *seq, "{m}");
            assert_eq!(m["data"]["k"], k);
        }
    }
    // Exactly once: nothing more arrives.
    a.send(json!({"type": "ping"}));
    assert_eq!(a.recv()["type"], "pong");
    // No N×M traffic: the owner sent each message once to each interested node,
    // and the node without subscribers received none.
    assert_eq!(
        cl.metric(3, "ringway_mesh_delivers_in_total") - delivers_to_n4,
        0.0
    );
    assert_eq!(cl.metric(0, "ringway_mesh_forwarded_total"), 40.0);
    assert_eq!(cl.metric(1, "ringway_mesh_delivered_total"), 20.0);
    assert_eq!(cl.metric(2, "ringway_mesh_delivered_total"), 20.0);
}

/// The harness itself. On a host whose ephemeral port range leaves no port below
/// it (the kernel profile's 1024-65535), another process can take a port between
/// the harness's check and a node's bind; the node exits, and the cluster must come
/// up elsewhere rather than fail the test.
#[test]
fn a_cluster_whose_port_is_taken_starts_on_other_ports() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = taken.local_addr().unwrap();
    let cl = Cluster::start_on(vec![addr(), held]);
    assert_ne!(cl.mesh[1], held, "moved off the taken port");
    cl.wait_converged();
    let mut sub = cl.client(1);
    sub.sub("moved");
    cl.publish(0, "moved", json!("across"));
    assert_eq!(sub.recv()["data"], "across");
}

#[test]
fn publishers_on_two_nodes_make_one_total_order_seen_by_all() {
    let cl = Cluster::start(3);
    cl.wait_converged();
    let room = "order:1";
    let mut subs: Vec<Client> = (0..3).map(|i| cl.client(i)).collect();
    for s in &mut subs {
        s.sub(room);
    }
    let mut p1 = cl.client(0);
    let mut p2 = cl.client(1);
    for k in 0..100 {
        p1.send(json!({"type": "pub", "room": room, "data": {"from": 1, "k": k}}));
        p2.send(json!({"type": "pub", "room": room, "data": {"from": 2, "k": k}}));
    }
    let streams: Vec<Vec<(u64, Value)>> = subs
        .iter_mut()
        .map(|s| {
            (0..200)
                .map(|_| {
                    let m = s.recv();
                    (m["seq"].as_u64().unwrap(), m["data"].clone())
                })
                .collect()
        })
        .collect();
    assert_eq!(streams[0], streams[1]);
    assert_eq!(streams[0], streams[2]);
    let seqs: Vec<u64> = streams[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    // Each publisher's own messages keep their order.
    for from in [1, 2] {
        let ks: Vec<u64> = streams[0]
            .iter()
            .filter(|(_, d)| d["from"] == from)
            .map(|(_, d)| d["k"].as_u64().unwrap())
            .collect();
        assert_eq!(ks, (0..100).collect::<Vec<u64>>());
    }
}

#[test]
fn send_reaches_every_connection_of_the_user_on_any_node() {
    let cl = Cluster::start(3);
    cl.wait_converged();
    let mut alice1 = cl.user(0, "alice");
    let mut alice2 = cl.user(1, "alice");
    let mut bob = cl.user(2, "bob");
    bob.send(json!({"type": "send", "user": "alice", "data": {"text": "hi"}}));
    for a in [&mut alice1, &mut alice2] {
        let m = a.recv();
        assert_eq!(m["type"], "msg");
        assert_eq!(m["room"], "user:alice");
        assert_eq!(m["data"]["text"], "hi");
    }
    // The HTTP API reaches them too, from a node where alice is not connected.
    let (status, body) = http(
        cl.api[2],
        "POST",
        "/v1/send",
        r#"{"user":"alice","data":{"text":"from the app"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    for a in [&mut alice1, &mut alice2] {
        assert_eq!(a.recv()["data"]["text"], "from the app");
    }
    // Nobody may subscribe to someone else's personal room.
    bob.send(json!({"type": "sub", "room": "user:alice"}));
    assert_eq!(bob.recv()["code"], "reserved");
}

#[test]
fn presence_is_cluster_wide() {
    let cl = Cluster::start(3);
    cl.wait_converged();
    let room = "lobby:1";
    let mut alice1 = cl.user(0, "alice");
    let mut alice2 = cl.user(1, "alice");
    let mut bob = cl.user(2, "bob");
    for c in [&mut alice1, &mut alice2, &mut bob] {
        c.sub(room);
    }
    for i in 0..3 {
        let (status, body) = http(cl.api[i], "GET", &format!("/v1/presence/{room}"), "");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["users"],
            json!([{"user": "alice", "connections": 2}, {"user": "bob", "connections": 1}]),
            "seen from n{}",
            i + 1
        );
    }
    let mut anon = cl.client(1);
    anon.send(json!({"type": "presence", "room": room}));
    let p = anon.recv();
    assert_eq!(p["type"], "presence");
    assert_eq!(p["connections"], 3);
    // One of alice's connections leaves: she is still there, with one.
    drop(alice2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http(cl.api[2], "GET", &format!("/v1/presence/{room}"), "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["users"][0] == json!({"user": "alice", "connections": 1}) {
            break;
        }
        assert!(Instant::now() < deadline, "roster did not update: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A presence change is not a publish: the node it is forwarded to does not time
/// it into `ringway_publish_to_write_seconds` (it once stamped it with the link's
/// arrival), while a publish forwarded the same way is timed.
#[test]
fn presence_changes_from_another_node_are_not_timed() {
    let cl = Cluster::start_with_config(
        2,
        "[rooms]\npresence_events = [\"p:\"]\npresence_debounce_ms = 100\n",
    );
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1], "p:");
    let mut watcher = cl.user(1, "ann");
    watcher.sub(&room);
    assert_eq!(next_of(&mut watcher, "join")["user"], "ann");
    let mut bob = cl.user(0, "bob");
    bob.sub(&room);
    assert_eq!(next_of(&mut watcher, "join")["user"], "bob");
    drop(bob);
    assert_eq!(next_of(&mut watcher, "leave")["user"], "bob");
    let timed = || cl.metric(1, "ringway_publish_to_write_seconds_count");
    assert_eq!(timed(), 0.0, "three presence changes, no publish");
    cl.publish(0, &room, json!("timed"));
    assert_eq!(next_of(&mut watcher, "msg")["data"], "timed");
    assert_eq!(timed(), 1.0, "the publish, to its one subscriber on n2");
}

#[test]
fn losing_a_non_owner_affects_only_its_clients() {
    let mut cl = Cluster::start(3);
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1, 2], "steady:");
    let mut a = cl.client(1);
    let mut b = cl.client(2);
    a.sub(&room);
    b.sub(&room);
    cl.publish(0, &room, json!(1));
    assert_eq!(a.recv()["seq"], 1);
    assert_eq!(b.recv()["seq"], 1);
    cl.kill(2);
    // n2's subscriber keeps its stream: same epoch, next seq, no re-subscribe.
    for k in 2..=5 {
        let (_, seq) = cl.publish(0, &room, json!(k));
        assert_eq!(seq, k);
        let m = a.recv();
        assert_eq!(m["type"], "msg", "{m}");
        assert_eq!(m["seq"], k);
    }
}

#[test]
fn without_replication_losing_the_owner_rehomes_the_room_and_its_return_hands_it_back() {
    // With `mesh.replicate` (the default) the standby continues the epoch: see
    // tests/failover.rs. Without it, losing the owner costs the room its epoch.
    let mut cl = Cluster::start_with_config(3, "[mesh]\nreplicate = false\n");
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1, 2], "moving:");
    let mut a = cl.client(1);
    let mut b = cl.client(2);
    let first = a.sub(&room);
    b.sub(&room);
    cl.publish(1, &room, json!("before"));
    assert_eq!(a.recv()["seq"], 1);
    assert_eq!(b.recv()["seq"], 1);

    cl.kill(0);
    // Both subscribers are told the stream restarted under a new owner and epoch.
    let mut epochs = Vec::new();
    for c in [&mut a, &mut b] {
        let s = next_of(c, "subscribed");
        assert_eq!(s["recovered"], false);
        assert_ne!(s["epoch"], first["epoch"]);
        epochs.push(s["epoch"].clone());
    }
    assert_eq!(epochs[0], epochs[1], "one new owner");
    let (epoch, seq) = cl.publish(2, &room, json!("after"));
    assert_eq!(json!(epoch), epochs[0]);
    assert_eq!(seq, 1);
    for c in [&mut a, &mut b] {
        let m = c.recv();
        assert_eq!(
            (m["seq"].clone(), m["data"].clone()),
            (json!(1), json!("after"))
        );
    }
    // A resume with the lost owner's cursor cannot be honoured.
    let mut late = cl.client(2);
    late.send(json!({"type": "sub", "room": room, "since": {"epoch": first["epoch"], "seq": 1}}));
    let s = late.recv();
    assert_eq!(s["recovered"], false);

    // The owner returns: the room is handed back to it in the interim owner's epoch,
    // and delivery goes on with the next seq; nobody is told anything moved.
    cl.boot(0);
    cl.wait_converged();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cl.metric(0, "ringway_handoffs_received_total") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "n1 never got its room back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (e, seq) = cl.publish(1, &room, json!("home again"));
    assert_eq!((e.as_str(), seq), (epoch.as_str(), 2));
    for c in [&mut a, &mut b, &mut late] {
        let m = c.recv();
        assert_eq!(m["type"], "msg", "no re-sync: {m}");
        assert_eq!(
            (m["seq"].clone(), m["data"].clone()),
            (json!(2), json!("home again"))
        );
    }
}

/// A restarted node admits clients only once it has linked to its peers: before,
/// it would answer for their rooms itself, and a resume would fail.
#[test]
fn a_restarted_node_admits_clients_once_linked_so_a_resume_succeeds() {
    let mut cl = Cluster::start(2);
    cl.wait_converged();
    // Owned by n1, which stays up; n2 restarts. n1 dials (its id sorts first), so
    // after n2's crash n1 retries with a growing backoff: the link comes back a
    // while after n2 does.
    let room = cl.room_owned_by(0, &[0, 1], "rejoin:");
    let mut a = cl.client(0);
    let first = a.sub(&room);
    for k in 1..=3 {
        cl.publish(0, &room, json!(k));
    }
    cl.kill(1);
    std::thread::sleep(Duration::from_millis(1500));
    let (epoch, seq) = cl.publish(0, &room, json!(4));
    assert_eq!((json!(epoch.clone()), seq), (first["epoch"].clone(), 4));
    cl.boot(1);
    // At once: the upgrade waits in the backlog until n2 has its link.
    let mut b = cl.client(1);
    b.send(json!({"type": "sub", "room": room, "since": {"epoch": epoch, "seq": 2}}));
    let s = b.recv();
    assert_eq!(
        (
            s["type"].clone(),
            s["recovered"].clone(),
            s["epoch"].clone()
        ),
        (json!("subscribed"), json!(true), json!(epoch)),
        "{s}"
    );
    for k in 3..=4 {
        let m = b.recv();
        assert_eq!(
            (m["seq"].clone(), m["data"].clone()),
            (json!(k), json!(k)),
            "{m}"
        );
    }
    let (_, body) = http(cl.api[1], "GET", "/readyz", "");
    assert_eq!(body, "ready\n");
}

/// The owner remembers idempotency keys, so a repeat is recognised from any node.
#[test]
fn an_idempotent_publish_is_delivered_once_across_nodes() {
    let cl = Cluster::start(2);
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1], "idem:");
    let mut a = cl.client(0);
    let mut b = cl.client(1);
    a.sub(&room);
    b.sub(&room);
    let mut alice = cl.user(1, "alice");
    for attempt in 0..2 {
        alice.send(json!({"type": "pub", "room": room, "data": "once", "idempotency_key": "k1", "ref": attempt}));
        let ack = next_of(&mut alice, "ack");
        assert_eq!(ack["seq"], 1, "{ack}");
        assert_eq!(ack.get("duplicate").is_some(), attempt == 1, "{ack}");
    }
    // The API on either node, same key: one message.
    let post = |i: usize| {
        let (status, body) = http(
            cl.api[i],
            "POST",
            "/v1/publish",
            &json!({"room": room, "data": "api", "idempotency_key": "k2"}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let first = post(1);
    let again = post(0);
    assert_eq!(
        (&first["seq"], &again["seq"], &again["duplicate"]),
        (&json!(2), &json!(2), &json!(true))
    );
    for c in [&mut a, &mut b] {
        let m1 = c.recv();
        let m2 = c.recv();
        assert_eq!(
            (&m1["seq"], &m1["from"], &m2["seq"]),
            (&json!(1), &json!("alice"), &json!(2))
        );
        c.send(json!({"type": "ping"}));
        assert_eq!(c.recv()["type"], "pong", "nothing delivered twice");
    }
}

/// The app's view of the cluster: rooms and their subscribers from every node, a
/// user disconnected everywhere, a room's history from any node.
#[test]
fn the_app_sees_and_acts_on_the_whole_cluster() {
    let cl = Cluster::start(3);
    cl.wait_converged();
    let mut subs: Vec<Client> = (0..3).map(|i| cl.client(i)).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        c.sub("whole:x");
        if i > 0 {
            c.sub("whole:y");
        }
    }
    let (status, body) = http(cl.api[2], "GET", "/v1/rooms?after=whole:", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["rooms"],
        json!([{"room": "whole:x", "subscribers": 3}, {"room": "whole:y", "subscribers": 2}])
    );
    assert_eq!(v["missing"], json!([]));

    // Alice on every node; one call disconnects her everywhere.
    let mut alices: Vec<Client> = (0..3).map(|i| cl.user(i, "alice")).collect();
    let mut bob = cl.user(1, "bob");
    let (status, body) = http(
        cl.api[0],
        "POST",
        "/v1/disconnect",
        &json!({"user": "alice"}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["disconnected"],
        3
    );
    for a in &mut alices {
        assert_eq!(next_of(a, "disconnect")["code"], 4010);
        assert_eq!(a.expect_close(), 4010);
    }
    bob.send(json!({"type": "ping"}));
    assert_eq!(next_of(&mut bob, "pong")["type"], "pong");

    // A client told recovered:false re-syncs from the history, asked of any node.
    let room = cl.room_owned_by(0, &[0, 1, 2], "resync:");
    for k in 1..=3 {
        cl.publish(1, &room, json!(k));
    }
    let mut late = cl.client(2);
    late.send(
        json!({"type": "sub", "room": room, "since": {"epoch": "0000000000000001", "seq": 1}}),
    );
    let s = late.recv();
    assert_eq!(s["recovered"], false);
    let (status, body) = http(cl.api[2], "GET", &format!("/v1/history/{room}?since=0"), "");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&h["epoch"], &h["seq"]), (&s["epoch"], &s["seq"]));
    let data: Vec<Value> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(1), json!(2), json!(3)]);
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused() {
    let cl = Cluster::start_with_secrets(vec![
        SECRET.to_owned(),
        "a-different-secret-0123456789".to_owned(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cl.links_up(0), 0);
    assert_eq!(cl.links_up(1), 0);
    assert_eq!(cl.metric(0, "ringway_mesh_connects_total"), 0.0);
    // Without the mesh each node owns its rooms alone: nothing crosses.
    let mut a = cl.client(1);
    a.sub("island:1");
    cl.publish(0, "island:1", json!(1));
    a.send(json!({"type": "ping"}));
    assert_eq!(a.recv()["type"], "pong");
}

#[test]
fn a_lost_nodes_presence_expires_after_the_lease() {
    let mut cl = Cluster::start_with_config(
        3,
        "[mesh]\npresence_lease_ms = 1500\n[heartbeat]\ntick_ms = 100\n",
    );
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1, 2], "leased:");
    let mut alice = cl.user(1, "alice");
    let mut bob = cl.user(2, "bob");
    alice.sub(&room);
    bob.sub(&room);
    let users = |cl: &Cluster| -> Value {
        let (_, body) = http(cl.api[0], "GET", &format!("/v1/presence/{room}"), "");
        serde_json::from_str::<Value>(&body).unwrap()["users"].clone()
    };
    assert_eq!(users(&cl).as_array().unwrap().len(), 2);
    let lost = Instant::now();
    cl.kill(1);
    // Still listed inside the lease (a blip must not flap presence)...
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(users(&cl).as_array().unwrap().len(), 2, "{}", users(&cl));
    // ...and gone after it.
    loop {
        let u = users(&cl);
        if u == json!([{"user": "bob", "connections": 1}]) {
            break;
        }
        assert!(
            lost.elapsed() < Duration::from_secs(5),
            "alice never expired: {u}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lost.elapsed() >= Duration::from_millis(1400));
}

#[test]
fn the_per_user_cap_holds_across_the_cluster() {
    let cl = Cluster::start_with_config(2, "[auth]\nmax_connections_per_user = 2\n");
    cl.wait_converged();
    let _a1 = cl.user(0, "alice");
    let _a2 = cl.user(1, "alice");
    // A third connection, on either node, is one too many for the cluster.
    let mut a3 = Client::connect(&format!("{}?token={}", cl.url(1), token("alice")));
    assert_eq!(a3.expect_close(), 4009);
    // Another user is not affected.
    let _b = cl.user(1, "bob");
}

#[test]
fn a_node_missing_from_the_peer_list_is_refused() {
    // n1 knows only n2; a stranger "n0" (which sorts first, so it dials) lists n1.
    let (m1, m0) = (addr(), addr());
    let n1 = Process::start(&[
        "--node-id",
        "n1",
        "--mesh-listen",
        &m1.to_string(),
        "--mesh-secret",
        SECRET,
        "--peer",
        &format!("n2={}", addr()),
    ]);
    let n0 = Process::start(&[
        "--node-id",
        "n0",
        "--mesh-listen",
        &m0.to_string(),
        "--mesh-secret",
        SECRET,
        "--peer",
        &format!("n1={m1}"),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    for p in [&n1, &n0] {
        let (_, body) = http(p.api, "GET", "/v1/cluster", "");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["up"] == false),
            "{v}"
        );
        assert_eq!(p.metric("ringway_mesh_connects_total"), 0.0);
    }
}

#[test]
fn every_node_can_carry_the_same_peer_list() {
    let cl = Cluster::start_with_one_list(3);
    cl.wait_converged();
    let room = cl.room_owned_by(1, &[0, 1, 2], "one-list:");
    let mut a = cl.client(0);
    let mut c = cl.client(2);
    a.sub(&room);
    c.sub(&room);
    let (_, seq) = cl.publish(0, &room, json!("everywhere"));
    for cl in [&mut a, &mut c] {
        let m = cl.recv();
        assert_eq!(
            (m["seq"].as_u64(), m["data"].clone()),
            (Some(seq), json!("everywhere"))
        );
    }
    // Every link reports its heartbeat round trip.
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0..3 {
        loop {
            let (_, text) = http(cl.api[i], "GET", "/metrics", "");
            let rtts: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with("ringway_mesh_rtt_seconds{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(rtts.len(), 2, "{text}");
            if rtts.iter().all(|&r| r > 0.0 && r < 1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no round trip measured: {rtts:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_stranger_on_the_mesh_port_learns_nothing_and_cannot_crowd_out_peers() {
    use ringway::mesh::wire::{self, Frame};
    use std::io::{Read, Write};
    let mut cl = Cluster::start(2);
    cl.wait_converged();
    // A stranger who says hello hears a challenge, with no node id or cluster name.
    let mut s = std::net::TcpStream::connect(cl.mesh[1]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&wire::encode(&Frame::Hello {
        version: wire::VERSION,
        nonce: [7; 16],
    }))
    .unwrap();
    let mut got = vec![0u8; 4096];
    let n = s.read(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(
        n > 0 && !text.contains("n1") && !text.contains("n2") && !text.contains("ringway"),
        "{text:?}"
    );
    // A wrong proof is refused without a reason that names anything.
    s.write_all(&wire::encode(&Frame::Auth {
        node: "n1".into(),
        mac: [0; 32],
    }))
    .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("authentication failed"), "{text:?}");
    assert!(
        !text.contains("n2") && !text.contains("cluster \""),
        "{text:?}"
    );
    // Twenty silent connections to n2's mesh port (n1 dials n2): eight hold a
    // hello slot until its deadline, the rest are closed unread, and the real peer
    // still gets in when n1 restarts and dials.
    let silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(cl.mesh[1]).unwrap())
        .collect();
    cl.kill(0);
    cl.boot(0);
    cl.wait_converged();
    drop(silent);
}
