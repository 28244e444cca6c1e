//! wss: a rustls client completes the TLS and WebSocket handshakes with a node and
//! exchanges messages; plaintext and bad TLS on the same listener fail alone.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Node, WAIT};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// A self-signed certificate for 127.0.0.1, written to temporary PEM files.
struct Cert {
    der: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn cert() -> Cert {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "ringway-tls-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    Cert {
        der: c.cert.der().clone(),
        cert,
        key,
    }
}

fn tls_node(c: &Cert) -> Node {
    tls_node_with(c, |_| {})
}

fn tls_node_with(c: &Cert, tweak: impl FnOnce(&mut ringway::config::Config)) -> Node {
    let (cert, key) = (c.cert.clone(), c.key.clone());
    Node::start(move |cfg| {
        cfg.tls.cert = Some(cert);
        cfg.tls.key = Some(key);
        cfg.limits.messages_per_second = 0;
        tweak(cfg);
    })
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn wss(node: &Node, c: &Cert) -> WebSocket<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(node.ws).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let stream = rustls::StreamOwned::new(session, tcp);
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(node.url("/ws")).unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "ringway.v1".parse().unwrap());
    let (ws, _) = tungstenite::client::client(req, stream).expect("wss handshake");
    ws
}

fn recv(ws: &mut WebSocket<Tls>) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn send(ws: &mut WebSocket<Tls>, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

#[test]
fn a_wss_client_handshakes_and_exchanges_messages() {
    let c = cert();
    let node = tls_node(&c);
    let mut a = wss(&node, &c);
    assert_eq!(recv(&mut a)["type"], "welcome");
    let mut b = wss(&node, &c);
    assert_eq!(recv(&mut b)["type"], "welcome");
    for ws in [&mut a, &mut b] {
        send(ws, json!({"type": "sub", "room": "secure:1"}));
        assert_eq!(recv(ws)["type"], "subscribed");
    }
    // Bigger than one TLS record, to cross record boundaries both ways.
    let big = "x".repeat(40_000);
    send(
        &mut a,
        json!({"type": "pub", "room": "secure:1", "data": big}),
    );
    for ws in [&mut a, &mut b] {
        let m = recv(ws);
        assert_eq!(m["data"].as_str().unwrap().len(), 40_000);
    }
    for k in 0..200 {
        send(
            &mut b,
            json!({"type": "pub", "room": "secure:1", "data": k}),
        );
    }
    for k in 0..200 {
        assert_eq!(recv(&mut a)["data"], k);
    }
    let (epoch, seq) = node.publish("secure:1", json!("from the API"));
    assert!(!epoch.is_empty() && seq == 202);
    assert_eq!(recv(&mut a)["data"], "from the API");
    a.close(None).unwrap();
    loop {
        match a.read() {
            Ok(Message::Close(_)) => continue,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

#[test]
fn plaintext_or_garbage_on_the_wss_listener_fails_alone() {
    let c = cert();
    let node = tls_node(&c);
    let mut good = wss(&node, &c);
    assert_eq!(recv(&mut good)["type"], "welcome");
    // A plain HTTP upgrade to a TLS port: the node answers with a TLS alert and closes.
    let mut plain = TcpStream::connect(node.ws).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "expected an alert record or EOF, got {:?}",
        &buf[..n]
    );
    // The good connection is unaffected.
    send(&mut good, json!({"type": "ping"}));
    assert_eq!(recv(&mut good)["type"], "pong");
}

#[test]
fn a_tls_record_cut_short_is_bounded_by_the_message_deadline() {
    let c = cert();
    let node = tls_node_with(&c, |cfg| {
        cfg.limits.message_timeout_ms = 1000;
        cfg.heartbeat.tick_ms = 100;
    });
    let mut good = wss(&node, &c);
    assert_eq!(recv(&mut good)["type"], "welcome");
    let mut slow = wss(&node, &c);
    assert_eq!(recv(&mut slow)["type"], "welcome");
    // A whole message in one record, of which only the first half is sent: the
    // node holds it as unfinished input (the record cannot be read before its end).
    let plain = common::client_frame(0x81, json!({"type": "ping"}).to_string().as_bytes());
    let mut bytes = Vec::new();
    {
        let stream = slow.get_mut();
        stream.conn.writer().write_all(&plain).unwrap();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut bytes).unwrap();
        }
        stream.sock.write_all(&bytes[..bytes.len() / 2]).unwrap();
    }
    // Past the deadline it is closed 1008 (it kept the connection's last bytes
    // recent, so only the unfinished-message deadline applies), and counted.
    let start = std::time::Instant::now();
    let closed = loop {
        match slow.read() {
            Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(closed, Some(1008));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        common::metric(
            node.api,
            "ringway_disconnects_total{reason=\"message_timeout\"}"
        ),
        1.0
    );
    // The other connection is unaffected.
    send(&mut good, json!({"type": "ping"}));
    assert_eq!(recv(&mut good)["type"], "pong");
}
