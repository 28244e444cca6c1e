//! Every resource a stranger can make a node hold has a bound: the floods of a
//! hostile probe, repeated as short tests on loopback. Each shows the bound holding
//! and a healthy subscriber missing nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Node, WAIT, client_frame, metric, raw_http_status, wait_for};
use serde_json::json;

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A healthy subscriber of `room` (and a publisher of its own).
struct Watcher {
    client: Client,
    publisher: Client,
    room: &'static str,
    seq: u64,
}

impl Watcher {
    fn new(node: &Node, room: &'static str) -> Watcher {
        let mut client = node.client();
        let seq = client.sub(room)["seq"].as_u64().unwrap();
        let publisher = node.client();
        Watcher {
            client,
            publisher,
            room,
            seq,
        }
    }

    /// Publish one message; it must arrive next, in order, nothing missed.
    fn still_served(&mut self, _node: &Node) {
        self.publisher
            .send(json!({"type": "pub", "room": self.room, "data": "still here"}));
        let m = self.client.recv();
        assert_eq!(m["type"], "msg", "{m}");
        assert_eq!(
            m["seq"].as_u64(),
            Some(self.seq + 1),
            "no message missed: {m}"
        );
        self.seq += 1;
    }
}

fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn history_is_bounded_by_bytes_per_room_and_per_node() {
    // 1 MiB for the node (two workers: 512 KiB each), 256 KiB per room.
    let node = Node::start(|c| {
        c.rooms.history_budget_bytes = 1 << 20;
        c.rooms.replay_bytes = 256 << 10;
        c.limits.bytes_per_second = 0;
        c.limits.messages_per_second = 0;
    });
    let mut watcher = Watcher::new(&node, "calm");
    let pad = "h".repeat(64 << 10);
    let mut publisher = node.client();
    // 60 rooms nobody listens to, 4 x 64 KiB each: 15 MiB offered.
    let mut first_epochs = Vec::new();
    for r in 0..60 {
        let room = format!("hoard:{r}");
        for i in 0..4 {
            let (epoch, _) = node.publish(&room, json!({"i": i, "pad": pad}));
            if i == 0 {
                first_epochs.push(epoch);
            }
        }
    }
    publisher.send(json!({"type": "ping"}));
    assert_eq!(publisher.recv()["type"], "pong");
    let held = metric(node.api, "ringway_history_bytes");
    assert!(
        held <= (1 << 20) as f64,
        "history {held} bytes over the 1 MiB budget"
    );
    assert!(
        held >= (512 << 10) as f64,
        "the budget is used, not emptied: {held}"
    );
    let evicted = metric(
        node.api,
        "ringway_history_evicted_total{reason=\"node_budget\"}",
    );
    assert!(evicted > 0.0, "evictions are counted");
    // The oldest history went first: the first room cannot resume, the last can.
    let mut c = node.client();
    c.send(
        json!({"type": "sub", "room": "hoard:0", "since": {"epoch": first_epochs[0], "seq": 1}}),
    );
    assert_eq!(c.recv()["recovered"], false);
    c.send(
        json!({"type": "sub", "room": "hoard:59", "since": {"epoch": first_epochs[59], "seq": 3}}),
    );
    let s = c.recv();
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(c.recv()["seq"], 4);
    // Per room: 4 x 64 KiB does not fit 256 KiB (frames carry headers): 3 are kept.
    let one = Node::start(|c| c.limits.bytes_per_second = 0);
    let (epoch, _) = one.publish("big", json!({"pad": pad}));
    for _ in 0..3 {
        one.publish("big", json!({"pad": pad}));
    }
    let mut c = one.client();
    c.send(json!({"type": "sub", "room": "big", "since": {"epoch": epoch, "seq": 0}}));
    assert_eq!(
        c.recv()["recovered"],
        true,
        "64 MiB default budget, 4 MiB room bound"
    );
    watcher.still_served(&node);
}

#[test]
fn one_client_cannot_publish_faster_than_its_byte_rate() {
    let node = Node::start(|c| {
        c.limits.bytes_per_second = 100 << 10;
        c.limits.messages_per_second = 0;
        c.limits.max_message_size = 64 << 10;
        c.limits.max_frame_size = 64 << 10;
    });
    let mut watcher = Watcher::new(&node, "calm");
    let mut hog = node.client();
    let pad = "b".repeat(32 << 10);
    let start = Instant::now();
    let mut refused = 0;
    for i in 0..40 {
        hog.send(json!({"type": "pub", "room": "hog", "data": {"i": i, "pad": pad}}));
    }
    // The refused messages were read: their bytes count, so the hog must slow down
    // for its bucket to come back (at most one burst of debt: 1 s, then half a
    // burst) before its ping is answered.
    std::thread::sleep(Duration::from_millis(1600));
    hog.send(json!({"type": "ping", "ref": "end"}));
    loop {
        let m = hog.recv();
        if m["code"] == "rate_limited" {
            assert!(
                m["reason"].as_str().unwrap().contains("bytes per second"),
                "{m}"
            );
            refused += 1;
        }
        if m["type"] == "pong" || m["type"] == "error" && m["code"] != "rate_limited" {
            break;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(refused, 1, "one error for the overrun");
    // The 100 KiB burst let 3 of the 40 x 32 KiB through, the rest were refused.
    let limited = metric(node.api, "ringway_rate_limited_total");
    assert!((35.0..=38.0).contains(&limited), "{limited} refused");
    watcher.still_served(&node);
}

#[test]
fn refreshing_a_token_over_and_over_holds_one_deadline() {
    let secret = "bounds-test-secret-0123456789abcdef";
    let node = Node::start(|c| {
        c.auth.token_secret = secret.into();
        c.limits.messages_per_second = 0;
    });
    let token = |ttl| {
        ringway::auth::mint_hs256(
            secret.as_bytes(),
            &ringway::auth::Claims {
                sub: "alice".into(),
                exp: ringway::auth::unix_now() + ttl,
                rooms: None,
            },
        )
    };
    let mut c = Client::connect(&format!("{}?token={}", node.url("/ws"), token(3600)));
    assert_eq!(c.recv()["type"], "subscribed");
    let before = metric(node.api, "ringway_timer_entries");
    assert!(before >= 1.0, "the connection has its entry");
    for i in 0..3000u64 {
        c.send(json!({"type": "refresh", "token": token(600 + i % 1000)}));
    }
    for _ in 0..3000 {
        assert_eq!(c.recv()["type"], "refreshed");
    }
    let after = metric(node.api, "ringway_timer_entries");
    assert!(
        after <= before + 2.0,
        "timer entries grew from {before} to {after} over 3000 refreshes"
    );
}

#[test]
fn silent_sockets_count_against_the_caps_and_others_still_connect() {
    let node = Node::start(|c| {
        c.limits.max_connections = 12;
        c.limits.max_connections_per_ip = 5;
        // Silent sockets reach the node at once, not a second later.
        c.limits.defer_accept_s = 0;
    });
    let mut watcher = Watcher::new(&node, "calm");
    // 100 sockets from one address that never send a byte.
    let mut silent: Vec<TcpStream> = (0..100)
        .map(|_| connect_from("127.0.0.9", node.ws))
        .collect();
    // All but five are answered 429 at once and closed. (Which five stay is up to
    // the order in which the two workers accept them.)
    let mut pending = Vec::new();
    for mut s in silent.drain(..) {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = String::new();
        match s.read_to_string(&mut buf) {
            Ok(_) => assert!(buf.starts_with("HTTP/1.1 429"), "{buf:?}"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(buf.is_empty(), "{buf:?}");
                pending.push(s);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(pending.len(), 5, "five wait for their upgrade");
    assert_eq!(
        metric(node.api, "ringway_refused_total{reason=\"per_ip\"}"),
        95.0
    );
    // The node holds the watcher's two connections and the five pending ones.
    assert_eq!(metric(node.api, "ringway_connections"), 7.0);
    // Another address still gets in.
    let status = raw_http_status(
        node.ws,
        &format!("GET /ws HTTP/1.1\r\nHost: a\r\n{UPGRADE}\r\n"),
    );
    assert_eq!(status, 101);
    watcher.still_served(&node);
    drop(pending);
}

#[test]
fn silent_sockets_wait_in_the_kernel_until_the_accept_deferral_ends() {
    let node = Node::start(|c| {
        c.limits.defer_accept_s = 1;
        c.limits.handshake_timeout_ms = 500;
    });
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(node.ws).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The node has not taken them (the kernel holds them), and one that speaks is
    // taken at once.
    assert_eq!(metric(node.api, "ringway_connections"), 0.0);
    let request = format!("GET /ws HTTP/1.1\r\nHost: a\r\n{UPGRADE}\r\n");
    assert_eq!(raw_http_status(node.ws, &request), 101);
    // After the deferral the kernel hands them over, and the node's upgrade timeout
    // applies as to any socket.
    for s in &mut silent {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        assert!(buf.starts_with("HTTP/1.1 408"), "{buf:?}");
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(1000 + 500),
        "answered before the deferral and the timeout were over: {took:?}"
    );
}

#[test]
fn a_full_node_shortens_the_upgrade_timeout() {
    let node = Node::start(|c| {
        c.limits.max_connections = 8;
        c.limits.handshake_timeout_ms = 10_000;
        c.limits.defer_accept_s = 0; // silent sockets reach the node at once
    });
    // Six silent sockets: 6 of 8, over three quarters.
    let _silent: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(node.ws).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut late = TcpStream::connect(node.ws).unwrap();
    late.set_read_timeout(Some(WAIT)).unwrap();
    let start = Instant::now();
    let mut buf = String::new();
    let _ = late.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 408"), "{buf:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a tenth of the timeout under pressure, not 10 s: {:?}",
        start.elapsed()
    );
}

#[test]
fn unfinished_messages_have_a_node_budget_and_a_deadline() {
    let node = Node::start(|c| {
        c.limits.partial_budget_bytes = 4 << 20; // 2 MiB per worker
        c.limits.message_timeout_ms = 1000;
        c.heartbeat.tick_ms = 100;
    });
    let mut watcher = Watcher::new(&node, "calm");
    // Ten clients each announce a 1 MiB frame and send all but its last byte.
    let frame = client_frame(0x81, &vec![b'a'; (1 << 20) - 1]);
    let mut hogs: Vec<Client> = (0..10).map(|_| node.client()).collect();
    for h in &mut hogs {
        h.ws.get_mut().write_all(&frame[..frame.len() - 1]).unwrap();
    }
    // At most four fit two 2 MiB shares; the others are closed with 1013.
    let mut closed = 0;
    for h in &mut hogs {
        h.ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if let Ok(tungstenite::Message::Close(Some(f))) = h.ws.read() {
            assert_eq!(u16::from(f.code), 1013);
            closed += 1;
        }
    }
    assert!(closed >= 6, "only {closed} of 10 closed");
    watcher.still_served(&node);
    // The rest trickle past the deadline: closed with 1008.
    std::thread::sleep(Duration::from_millis(1500));
    let timeouts = metric(
        node.api,
        "ringway_disconnects_total{reason=\"message_timeout\"}",
    );
    assert_eq!(timeouts, (10 - closed) as f64);
    watcher.still_served(&node);
}

#[test]
fn closing_connections_free_their_unfinished_input_and_cost_nobody_else() {
    // Hostile probe: connections that send a large unfinished message and then a
    // close frame stayed counted against the budget while closing, and the budget
    // then closed every connection that held nothing, one after another.
    let node = Node::start(|c| {
        c.limits.partial_budget_bytes = 4 << 20; // 2 MiB per worker
    });
    let mut watcher = Watcher::new(&node, "calm");
    let mut bystanders: Vec<Client> = (0..20).map(|_| node.client()).collect();
    // 300 KB first fragments of text messages, never finished: 60 of them, 18 MB,
    // far over both shares. Half send the close in the same write, half after.
    let fragment = client_frame(0x01, &vec![b'a'; 300_000]);
    let close = client_frame(0x88, &1000u16.to_be_bytes());
    let mut closers: Vec<Client> = (0..60).map(|_| node.client()).collect();
    for (i, c) in closers.iter_mut().enumerate() {
        let s = c.ws.get_mut();
        if i % 2 == 0 {
            s.write_all(&[fragment.as_slice(), close.as_slice()].concat())
                .unwrap();
        } else {
            s.write_all(&fragment).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
            s.write_all(&close).unwrap();
        }
    }
    // Every closer gets its close answered (none is cut short with 1013).
    for c in &mut closers {
        match c.ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1000),
            other => panic!("the close is answered, got {other:?}"),
        }
    }
    assert_eq!(
        metric(node.api, "ringway_disconnects_total{reason=\"overload\"}"),
        0.0,
        "nobody was over the budget once the closers let go"
    );
    // The bystanders were left alone: each still answers a ping.
    for b in &mut bystanders {
        b.ws.send(tungstenite::Message::Ping(b"here?".to_vec().into()))
            .unwrap();
        match b.ws.read() {
            Ok(tungstenite::Message::Pong(p)) => assert_eq!(&p[..], b"here?"),
            other => panic!("a bystander was closed: {other:?}"),
        }
    }
    watcher.still_served(&node);
}

#[test]
fn a_burst_of_pings_does_not_overflow_the_queue_with_pongs() {
    // Hostile probe: with the rate limits off, 5,000 pings in one write queued 5,000
    // pongs before the flush and closed a prompt reader as a slow consumer (4008).
    let node = Node::start(|c| {
        c.limits.messages_per_second = 0;
        c.limits.bytes_per_second = 0;
    });
    let mut watcher = Watcher::new(&node, "calm");
    let mut c = node.client();
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        burst.extend_from_slice(&client_frame(0x89, format!("{i}").as_bytes()));
    }
    c.ws.get_mut().write_all(&burst).unwrap();
    // Pongs arrive (at least one, at most one per ping), the last for the last ping.
    let mut pongs = 0;
    loop {
        match c.ws.read() {
            Ok(tungstenite::Message::Pong(p)) => {
                pongs += 1;
                if &p[..] == b"4999" {
                    break;
                }
            }
            other => panic!("after {pongs} pongs: {other:?}"),
        }
    }
    assert!(pongs <= 5_000);
    // The connection is still served.
    c.sub("after-pings");
    watcher.still_served(&node);
}

#[test]
fn the_api_reads_no_stranger_body_and_times_everything_out() {
    let node = Node::start(|c| {
        c.auth.api_key = "api-key-for-the-bounds-test-0123".into();
        c.api.head_timeout_ms = 300;
        c.api.idle_timeout_ms = 500;
        c.api.max_connections = 20;
    });
    let mut watcher = Watcher::new(&node, "calm");
    // A stranger announcing 1 MiB is refused before its body.
    let mut s = TcpStream::connect(node.api).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let start = Instant::now();
    write!(
        s,
        "POST /v1/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
    assert!(start.elapsed() < Duration::from_secs(1));
    // Partial heads are cut at the head timeout.
    let partial: Vec<TcpStream> = (0..15)
        .map(|_| {
            let mut s = TcpStream::connect(node.api).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            s
        })
        .collect();
    for mut s in partial {
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        assert!(buf.starts_with("HTTP/1.1 408"), "{buf:?}");
    }
    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(node.api).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut first = [0u8; 15];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "idle keep-alive held {took:?}"
    );
    // Over the connection cap: 503, and /healthz still answers after.
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(node.api).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut over = TcpStream::connect(node.api).unwrap();
    over.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = String::new();
    let _ = over.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 503"), "{buf:?}");
    drop(held);
    wait_for("/healthz answers again", || {
        matches!(
            common::try_http(node.api, "GET", "/healthz", ""),
            Ok((200, _))
        )
    });
    // Smuggling-prone framing is refused.
    let two =
        "POST /v1/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}";
    assert_eq!(raw_http_status(node.api, two), 400);
    let plus = "POST /v1/publish HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n{}";
    assert_eq!(raw_http_status(node.api, plus), 400);
    watcher.still_served(&node);
}

#[test]
fn api_and_client_payloads_get_one_validation() {
    let node = Node::start(|_| {});
    for user in ["bob\r\nX: 1", "", &"u".repeat(1 << 20)] {
        let (s, body) = node.post("/v1/send", &json!({"user": user, "data": 1}));
        assert_eq!(s, 400, "{user:?}: {body}");
    }
    let (s, _) = node.post(
        "/v1/publish",
        &json!({"room": "r", "key": "k".repeat(900 << 10), "data": 1}),
    );
    assert_eq!(s, 400);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(r#"{{"room":"r","data":{deep}}}"#);
    let (s, body) = common::http(node.api, "POST", "/v1/publish", &body);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("nested"), "{body}");
    let mut c = node.client();
    c.ws.send(tungstenite::Message::text(format!(
        r#"{{"type":"pub","room":"r","data":{}{}}}"#,
        "{\"a\":".repeat(70),
        "1".to_owned() + &"}".repeat(70)
    )))
    .unwrap();
    let e = c.recv();
    assert_eq!(e["code"], "bad_field", "{e}");
}

#[test]
fn a_personal_rooms_presence_is_for_its_user_only() {
    let secret = "bounds-test-secret-0123456789abcdef";
    let node = Node::start(|c| c.auth.token_secret = secret.into());
    let token = ringway::auth::mint_hs256(
        secret.as_bytes(),
        &ringway::auth::Claims {
            sub: "alice".into(),
            exp: ringway::auth::unix_now() + 60,
            rooms: None,
        },
    );
    let mut alice = Client::connect(&format!("{}?token={token}", node.url("/ws")));
    assert_eq!(alice.recv()["type"], "subscribed");
    let mut stranger = node.client();
    stranger.send(json!({"type": "presence", "room": "user:alice", "ref": 1}));
    let e = stranger.recv();
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_u64()),
        (Some("forbidden"), Some(1)),
        "{e}"
    );
    alice.send(json!({"type": "presence", "room": "user:alice"}));
    let p = alice.recv();
    assert_eq!(p["users"][0]["connections"], 1, "{p}");
    let (s, body) = node.get("/v1/presence/user:alice");
    assert_eq!(s, 200, "the API may ask: {body}");
}

#[test]
fn demo_tokens_open_only_demo_rooms_on_demo_nodes_and_are_rate_limited() {
    let secret = "bounds-test-secret-0123456789abcdef";
    let demo = Node::start(|c| c.auth.token_secret = secret.into());
    let strict = Node::start(|c| {
        c.auth.token_secret = secret.into();
        c.allow_anonymous = false;
        c.demo = false;
    });
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (_, body) = common::http_raw_body(demo.ws, &get("/demo/token?name=zoe"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = v["token"].as_str().unwrap();
    // Not a real token: a node with the same secret but no demo refuses it.
    let upgrade = |n: &Node| {
        raw_http_status(
            n.ws,
            &format!("GET /ws?token={token} HTTP/1.1\r\nHost: a\r\n{UPGRADE}\r\n"),
        )
    };
    assert_eq!(upgrade(&strict), 401);
    assert_eq!(upgrade(&demo), 101);
    // Handed out at most 5 a second per worker (10 in a burst): a script is slowed.
    let statuses: Vec<u16> = (0..40)
        .map(|i| raw_http_status(demo.ws, &get(&format!("/demo/token?name=g{i}"))))
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|&&s| s == 200).count() <= 22,
        "{statuses:?}"
    );
}

#[test]
fn tokens_not_yet_valid_or_too_long_lived_are_refused_plainly() {
    let secret = "bounds-test-secret-0123456789abcdef";
    let node = Node::start(|c| {
        c.auth.token_secret = secret.into();
        c.auth.max_token_ttl_s = 3600;
    });
    let now = ringway::auth::unix_now();
    let raw = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    for (claims, says) in [
        (
            json!({"sub": "a", "exp": now + 60, "nbf": now + 30}),
            "not valid yet",
        ),
        (
            json!({"sub": "a", "exp": now + 7200}),
            "auth.max_token_ttl_s",
        ),
        (json!({"sub": "a b", "exp": now + 60}), "sub must be"),
        (json!({"exp": now + 60}), "sub (a string)"),
    ] {
        let (status, body) = common::http_raw_body(
            node.ws,
            &format!(
                "GET /ws?token={} HTTP/1.1\r\nHost: a\r\n{UPGRADE}\r\n",
                raw(claims)
            ),
        );
        assert_eq!(status, 401);
        assert!(body.contains(says), "{body}");
        assert!(
            !body.contains("Kind") && !body.contains("Error("),
            "no internals: {body}"
        );
    }
}

#[test]
fn a_client_that_keeps_its_socket_full_does_not_keep_the_worker() {
    // One worker, no rate limits: nothing but the read budget stands between a
    // flood and everyone else on the worker.
    let n = Node::start(|c| {
        c.workers = 1;
        c.limits.messages_per_second = 0;
        c.limits.bytes_per_second = 0;
    });
    let mut other = n.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let mut flooder = n.client();
            std::thread::spawn(move || {
                let frame = json!({"type": "pub", "room": "flood", "data": "x".repeat(200)});
                let deadline = Instant::now() + Duration::from_secs(8);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    for _ in 0..200 {
                        let _ = flooder
                            .ws
                            .write(tungstenite::Message::text(frame.to_string()));
                    }
                    let _ = flooder.ws.flush();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // While the flood goes on, the other client and the API are answered.
    for i in 0..5 {
        let t = Instant::now();
        other.send(json!({"type": "ping", "ref": i}));
        assert_eq!(other.recv()["ref"], i);
        // /metrics asks the worker's inbox too.
        let (status, _) = common::http(n.api, "GET", "/metrics", "");
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "answered only after {:?} under the flood",
            t.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
}
