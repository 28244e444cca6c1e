//! Black-box tests of one node: rooms across workers, the HTTP API, resume, and bad
//! input closing only the connection that sent it.

mod common;

use common::{Client, Node, client_frame, raw_bytes_then_close_code, raw_http_status};
use serde_json::json;

#[test]
fn publish_reaches_subscribers_on_both_workers_in_order() {
    let node = Node::start(|_| {});
    let (mut a, mut b) = node.client_on_each_worker();
    assert_ne!(a.worker(), b.worker());
    let room = "chat:order";
    let sa = a.sub(room);
    let sb = b.sub(room);
    assert_eq!(sa["epoch"], sb["epoch"]);
    let start = sa["seq"].as_u64().unwrap();
    for i in 0..50 {
        a.send(json!({"type": "pub", "room": room, "data": {"i": i}}));
    }
    for c in [&mut a, &mut b] {
        for i in 0..50u64 {
            let m = c.recv();
            assert_eq!(m["type"], "msg", "{m}");
            assert_eq!(m["room"], room);
            assert_eq!(m["seq"].as_u64().unwrap(), start + 1 + i, "{m}");
            assert_eq!(m["data"]["i"], i);
        }
    }
}

#[test]
fn publishers_on_two_workers_produce_one_order() {
    let node = Node::start(|_| {});
    let (mut a, mut b) = node.client_on_each_worker();
    let room = "chat:total-order";
    let start = a.sub(room)["seq"].as_u64().unwrap();
    b.sub(room);
    for i in 0..40 {
        a.send(json!({"type": "pub", "room": room, "data": {"from": "a", "i": i}}));
        b.send(json!({"type": "pub", "room": room, "data": {"from": "b", "i": i}}));
    }
    let seen_a: Vec<_> = (0..80).map(|_| a.recv()).collect();
    let seen_b: Vec<_> = (0..80).map(|_| b.recv()).collect();
    assert_eq!(seen_a, seen_b, "both subscribers see the same sequence");
    for (i, m) in seen_a.iter().enumerate() {
        assert_eq!(m["seq"].as_u64().unwrap(), start + 1 + i as u64);
    }
}

#[test]
fn api_publish_reaches_websocket_subscribers() {
    let node = Node::start(|_| {});
    let (mut a, mut b) = node.client_on_each_worker();
    let room = "news";
    let sub = a.sub(room);
    b.sub(room);
    let (epoch, seq) = node.publish(room, json!({"headline": "hello"}));
    assert_eq!(epoch, sub["epoch"].as_str().unwrap());
    for c in [&mut a, &mut b] {
        let m = c.recv();
        assert_eq!(
            m,
            json!({"type": "msg", "room": room, "seq": seq, "data": {"headline": "hello"}})
        );
    }
}

#[test]
fn resume_inside_the_window_replays_exactly_the_missing_messages() {
    let node = Node::start(|_| {});
    let room = "chat:resume";
    let mut a = node.client();
    let first = a.sub(room);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let base = first["seq"].as_u64().unwrap();
    for i in 0..10 {
        node.publish(room, json!(i));
    }
    for _ in 0..4 {
        a.recv();
    }
    drop(a); // the connection drops after seq base+4
    for i in 10..12 {
        node.publish(room, json!(i)); // published while away
    }
    let mut a = node.client();
    a.send(json!({"type": "sub", "room": room, "since": {"epoch": epoch, "seq": base + 4}}));
    let s = a.recv();
    assert_eq!(s["type"], "subscribed");
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(s["seq"].as_u64().unwrap(), base + 12);
    for i in 4..12u64 {
        let m = a.recv();
        assert_eq!(m["seq"].as_u64().unwrap(), base + 1 + i, "{m}");
        assert_eq!(m["data"], json!(i));
    }
    // Then live, with no duplicate and no gap.
    let (_, live) = node.publish(room, json!("live"));
    assert_eq!(live, base + 13);
    let m = a.recv();
    assert_eq!(
        (m["seq"].as_u64().unwrap(), m["data"].clone()),
        (live, json!("live"))
    );
}

#[test]
fn resume_with_stale_epoch_or_outside_the_window_is_not_recovered() {
    let node = Node::start(|c| c.rooms.replay_messages = 5);
    let room = "chat:window";
    let mut a = node.client();
    let s = a.sub(room);
    let epoch = s["epoch"].as_str().unwrap().to_owned();
    for i in 0..20 {
        node.publish(room, json!(i));
    }
    let mut b = node.client();
    b.send(json!({"type": "sub", "room": room, "since": {"epoch": epoch, "seq": 3}}));
    let r = b.recv();
    assert_eq!(
        (r["type"].as_str(), r["recovered"].as_bool()),
        (Some("subscribed"), Some(false)),
        "{r}"
    );
    assert_eq!(r["seq"], 20);
    let mut c = node.client();
    c.send(json!({"type": "sub", "room": room, "since": {"epoch": "0123456789abcdef", "seq": 19}}));
    let r = c.recv();
    assert_eq!(r["recovered"], false, "{r}");
    // Inside the window (5 kept: 16..=20) with the right epoch it is recovered.
    let mut d = node.client();
    d.send(json!({"type": "sub", "room": room, "since": {"epoch": epoch, "seq": 16}}));
    let r = d.recv();
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(
        (17..=20)
            .map(|_| d.recv()["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![17, 18, 19, 20]
    );
}

#[test]
fn malformed_json_gets_an_error_and_the_connection_lives_on() {
    let node = Node::start(|_| {});
    let mut a = node.client();
    for (bad, code) in [
        ("{bad", "bad_json"),
        ("[1,2,3]", "bad_json"),
        (r#"{"type":"teleport","ref":"r1"}"#, "unknown_type"),
        (r#"{"type":"sub"}"#, "bad_field"),
        (r#"{"type":"sub","room":"no spaces"}"#, "bad_room"),
    ] {
        a.ws.send(tungstenite::Message::text(bad)).unwrap();
        let e = a.recv();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{bad} -> {e}"
        );
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    a.send(json!({"type": "ping", "ref": 9}));
    assert_eq!(a.recv(), json!({"type": "pong", "ref": 9}));
    a.sub("still:alive");
}

#[test]
fn oversize_message_closes_only_that_connection_with_1009() {
    let node = Node::start(|c| {
        c.limits.max_message_size = 4096;
        c.limits.max_frame_size = 4096;
    });
    let room = "chat:big";
    let mut victim = node.client();
    let mut bystander = node.client();
    victim.sub(room);
    bystander.sub(room);
    let big = "x".repeat(5000);
    victim
        .ws
        .send(tungstenite::Message::text(format!(
            r#"{{"type":"pub","room":"{room}","data":"{big}"}}"#
        )))
        .unwrap();
    assert_eq!(victim.expect_close(), 1009);
    for i in 0..5 {
        let (_, seq) = node.publish(room, json!(i));
        let m = bystander.recv();
        assert_eq!(m["seq"].as_u64().unwrap(), seq);
    }
}

#[test]
fn protocol_violations_close_with_the_right_code_and_spare_others() {
    let node = Node::start(|_| {});
    let mut bystander = node.client();
    bystander.sub("calm");
    let url = node.url("/ws");
    // Unmasked frame: 1002.
    assert_eq!(raw_bytes_then_close_code(&url, b"\x81\x02hi"), 1002);
    // Reserved opcode: 1002.
    assert_eq!(
        raw_bytes_then_close_code(&url, &client_frame(0x83, b"")),
        1002
    );
    // Invalid UTF-8 in a text frame: 1007.
    assert_eq!(
        raw_bytes_then_close_code(&url, &client_frame(0x81, b"\xc0\xaf")),
        1007
    );
    // Continuation with nothing to continue: 1002.
    assert_eq!(
        raw_bytes_then_close_code(&url, &client_frame(0x80, b"x")),
        1002
    );
    let (_, seq) = node.publish("calm", json!("still here"));
    assert_eq!(bystander.recv()["seq"].as_u64().unwrap(), seq);
}

#[test]
fn binary_frames_get_an_error_not_a_crash() {
    let node = Node::start(|_| {});
    let mut a = node.client();
    a.ws.send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(a.recv()["code"], "unsupported");
    a.sub("after:binary");
}

#[test]
fn upgrade_refusals_are_plain_http_answers() {
    let node = Node::start(|_| {});
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let up = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    assert_eq!(
        raw_http_status(
            node.ws,
            &format!("GET /nope HTTP/1.1\r\nHost: a\r\n{up}{key}\r\n")
        ),
        404
    );
    assert_eq!(
        raw_http_status(node.ws, "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"),
        426
    );
    assert_eq!(
        raw_http_status(
            node.ws,
            &format!("POST /ws HTTP/1.1\r\nHost: a\r\n{up}{key}\r\n")
        ),
        405
    );
    let huge = format!("GET /ws HTTP/1.1\r\nX-Pad: {}\r\n", "p".repeat(10_000));
    assert_eq!(raw_http_status(node.ws, &huge), 431);
    // The node still serves.
    let mut c = node.client();
    c.sub("fine");
}

#[test]
fn echo_endpoint_echoes_text_and_binary() {
    let node = Node::start(|_| {});
    let mut ws = common::raw_connect(&node.url("/echo"));
    ws.send(tungstenite::Message::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("héllo"));
    let blob: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    ws.send(tungstenite::Message::binary(blob.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::binary(blob));
}

#[test]
fn echo_is_absent_unless_configured() {
    let node = Node::start(|c| c.echo = false);
    let key = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    assert_eq!(
        raw_http_status(
            node.ws,
            &format!("GET /echo HTTP/1.1\r\nHost: a\r\n{key}\r\n")
        ),
        404
    );
}

#[test]
fn metrics_and_health() {
    let node = Node::start(|_| {});
    let mut a = node.client();
    a.sub("m");
    a.send(json!({"type": "pub", "room": "m", "data": 1}));
    a.recv();
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("ringway_connections{worker=\"0\"}"), "{text}");
    assert!(text.contains("ringway_connections{worker=\"1\"}"), "{text}");
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("ringway_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 1);
    let line = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(line("ringway_messages_in_total ") >= 2);
    assert!(line("ringway_messages_out_total ") >= 3);
    assert!(line("ringway_bytes_in_total ") > 0);
    assert_eq!(node.get("/healthz").0, 200);
    assert_eq!(node.get("/readyz").0, 200);
    assert_eq!(node.get("/nope").0, 404);
}

#[test]
fn deliveries_are_timed_and_resumes_counted_by_outcome() {
    let node = Node::start(|_| {});
    let (mut a, mut b) = node.client_on_each_worker();
    let first = a.sub("timed");
    b.sub("timed");
    let count = || common::metric(node.api, "ringway_publish_to_write_seconds_count");
    assert_eq!(count(), 0.0);
    for i in 0..5 {
        node.publish("timed", json!(i));
    }
    a.send(json!({"type": "pub", "room": "timed", "data": "from a client"}));
    for c in [&mut a, &mut b] {
        for _ in 0..6 {
            assert_eq!(c.recv()["type"], "msg");
        }
    }
    // Six messages to two subscribers: twelve frames handed to the kernel.
    assert_eq!(count(), 12.0);
    let inf = common::metric(
        node.api,
        "ringway_publish_to_write_seconds_bucket{le=\"+Inf\"}",
    );
    assert_eq!(inf, 12.0);
    // A resume inside the window, then one with a stale epoch.
    let epoch = first["epoch"].as_str().unwrap();
    let mut c = node.client();
    c.send(json!({"type": "sub", "room": "timed", "since": {"epoch": epoch, "seq": 2}}));
    assert_eq!(c.recv()["recovered"], true);
    let mut d = node.client();
    d.send(
        json!({"type": "sub", "room": "timed", "since": {"epoch": "0000000000000001", "seq": 2}}),
    );
    assert_eq!(d.recv()["recovered"], false);
    let resumes =
        |labels: &str| common::metric(node.api, &format!("ringway_resumes_total{{{labels}}}"));
    assert_eq!(resumes("outcome=\"recovered\",reason=\"in_window\""), 1.0);
    assert_eq!(
        resumes("outcome=\"not_recovered\",reason=\"stale_epoch\""),
        1.0
    );
}

#[test]
fn errors_name_their_room_and_ref_and_presence_answers_echo_ref() {
    let node = Node::start(|_| {});
    let mut c = node.client();
    c.sub("named");
    c.send(json!({"type": "sub", "room": "named", "ref": "again"}));
    let e = c.recv();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(
        (e["room"].as_str(), e["ref"].as_str()),
        (Some("named"), Some("again"))
    );
    c.send(json!({"type": "unsub", "room": "other", "ref": 3}));
    let e = c.recv();
    assert_eq!(
        (e["code"].as_str(), e["room"].as_str(), e["ref"].as_u64()),
        (Some("not_subscribed"), Some("other"), Some(3))
    );
    // Presence goes to the room's owner (maybe another worker) and comes back with the ref.
    for (i, room) in ["named", "p:1", "p:2", "p:3"].iter().enumerate() {
        c.send(json!({"type": "presence", "room": room, "ref": i}));
        let p = c.recv();
        assert_eq!(p["type"], "presence", "{p}");
        assert_eq!(
            (p["room"].as_str(), p["ref"].as_u64()),
            (Some(*room), Some(i as u64))
        );
    }
}

#[test]
fn api_refuses_bad_publishes_with_reasons() {
    let node = Node::start(|_| {});
    let (s, body) = node.post("/v1/publish", &json!({"room": "ok"}));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("data"), "{body}");
    let (s, _) = node.post("/v1/publish", &json!({"room": "bad room", "data": 1}));
    assert_eq!(s, 400);
    let (s, _) = common::http(node.api, "POST", "/v1/publish", "not json");
    assert_eq!(s, 400);
}

#[test]
fn unsubscribe_stops_delivery() {
    let node = Node::start(|_| {});
    let mut a = node.client();
    a.sub("u");
    a.send(json!({"type": "unsub", "room": "u"}));
    assert_eq!(a.recv(), json!({"type": "unsubscribed", "room": "u"}));
    node.publish("u", json!(1));
    a.send(json!({"type": "ping"}));
    assert_eq!(
        a.recv()["type"],
        "pong",
        "nothing from the room arrived before the pong"
    );
    a.send(json!({"type": "unsub", "room": "u"}));
    assert_eq!(a.recv()["code"], "not_subscribed");
}

#[test]
fn many_clients_fan_out_across_workers() {
    let node = Node::start(|_| {});
    let room = "fan";
    let mut clients: Vec<Client> = (0..40).map(|_| node.client()).collect();
    for c in &mut clients {
        c.sub(room);
    }
    let workers: std::collections::HashSet<u64> = clients.iter().map(|c| c.worker()).collect();
    assert_eq!(workers.len(), 2, "clients spread over both workers");
    let (_, seq) = node.publish(room, json!({"to": "all"}));
    for c in &mut clients {
        assert_eq!(c.recv()["seq"].as_u64().unwrap(), seq);
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_and_reclaimed_while_others_get_everything() {
    let node = Node::start(|c| {
        c.limits.max_queue_bytes = 64 << 10;
        c.limits.max_queue_messages = 64;
        c.limits.close_timeout_ms = 500;
        c.heartbeat.tick_ms = 100;
    });
    let room = "chat:flood";
    let mut stuck = node.client();
    stuck.sub(room);
    let mut reader = node.client();
    let base = reader.sub(room)["seq"].as_u64().unwrap();
    // 2,000 messages of 8 KiB: far more than the stuck client's queue bound plus
    // what the kernel buffers for it.
    let pad = "x".repeat(8 << 10);
    let n = 2000u64;
    let publisher = std::thread::spawn({
        let api = node.api;
        move || {
            for i in 0..n {
                let body = json!({"room": room, "data": {"i": i, "pad": pad}}).to_string();
                let (status, _) = common::http(api, "POST", "/v1/publish", &body);
                assert_eq!(status, 200);
            }
        }
    });
    for i in 0..n {
        let m = reader.recv();
        assert_eq!(m["seq"].as_u64().unwrap(), base + 1 + i);
    }
    publisher.join().unwrap();
    // The stuck client was closed as a slow consumer and, since it never read its
    // close frame, reclaimed after the close timeout.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let (_, text) = node.get("/metrics");
        let value = |prefix: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let slow = value("ringway_disconnects_total{reason=\"slow_consumer\"}");
        let open = value("ringway_connections{");
        if slow == 1 && open == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow={slow} open={open}\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stuck);
}
