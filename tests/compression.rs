//! permessage-deflate against a real node, with a client that speaks the frames
//! itself (RSV1, raw deflate, the stripped tail) so every bit is checked: what is
//! negotiated, what goes compressed and what does not, one compressed frame shared
//! by every subscriber, and compressed input bounded like any other.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Node, WAIT, client_frame, metric};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};

/// A client that offers `extensions` (or nothing).
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// The server's answer to the offer.
    agreed: Option<String>,
}

impl Raw {
    fn connect(n: &Node, path: &str, extensions: Option<&str>) -> Raw {
        let mut s = TcpStream::connect(n.ws).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let agreed = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_owned())
        });
        Raw {
            s,
            buf: Vec::new(),
            agreed,
        }
    }

    /// The next frame: its first byte and payload.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (hdr, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    ),
                    n if n < 126 => (2, n as usize),
                    _ => (usize::MAX, 0),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let first = self.buf[0];
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return (first, payload);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).expect("a frame");
            assert!(n > 0, "EOF");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text message as JSON, inflating it if RSV1 says so; and whether it
    /// came compressed.
    fn json(&mut self) -> (Value, bool) {
        loop {
            let (first, payload) = self.frame();
            let op = first & 0x0f;
            if op == 0x9 || op == 0xa {
                continue;
            }
            assert_eq!(op, 1, "a text frame, got {first:#x}");
            let zipped = first & 0x40 != 0;
            let text = if zipped { inflate(&payload) } else { payload };
            return (serde_json::from_slice(&text).unwrap(), zipped);
        }
    }

    fn send_text(&mut self, text: &str, compress: bool) {
        let frame = if compress {
            client_frame(0xc1, &deflate(text.as_bytes()))
        } else {
            client_frame(0x81, text.as_bytes())
        };
        self.s.write_all(&frame).unwrap();
    }

    fn close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.frame();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(payload.len() * 4 + 1024);
    let mut at = 0;
    while at < input.len() || out.len() == out.capacity() {
        out.reserve(64 << 10);
        let before = d.total_in();
        d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .unwrap();
        at += (d.total_in() - before) as usize;
    }
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn big_text() -> String {
    "the quick brown fox jumps over the lazy dog. ".repeat(40)
}

#[test]
fn negotiated_clients_get_one_shared_compressed_frame_and_others_plain() {
    let n = Node::start(|_| {});
    // Subscribers on both workers, compressing and not.
    let mut zipped: Vec<Raw> = (0..4)
        .map(|_| Raw::connect(&n, "/ws", Some(OFFER)))
        .collect();
    let mut plain = Raw::connect(&n, "/ws", None);
    assert_eq!(
        zipped[0].agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(plain.agreed, None);
    for c in zipped.iter_mut().chain([&mut plain]) {
        c.json(); // welcome
        c.send_text(r#"{"type":"sub","room":"chat:1"}"#, false);
        assert_eq!(c.json().0["type"], "subscribed");
    }
    let before = metric(n.api, "ringway_deflate_messages_total");
    n.publish("chat:1", json!({ "text": big_text() }));
    let mut frames = Vec::new();
    for c in &mut zipped {
        let (first, payload) = c.frame();
        assert_eq!(first, 0xc1, "FIN, RSV1, text");
        frames.push(payload);
    }
    assert!(
        frames.windows(2).all(|w| w[0] == w[1]),
        "the same bytes for all"
    );
    let v: Value = serde_json::from_slice(&inflate(&frames[0])).unwrap();
    assert_eq!(v["data"]["text"], big_text());
    assert!(
        frames[0].len() * 5 < big_text().len(),
        "{} bytes",
        frames[0].len()
    );
    let (v, was) = plain.json();
    assert!(!was);
    assert_eq!(v["data"]["text"], big_text());
    // Compressed once for the node, whatever the subscribers and workers.
    assert_eq!(
        metric(n.api, "ringway_deflate_messages_total") - before,
        1.0
    );

    // A short message goes uncompressed, to everyone.
    n.publish("chat:1", json!("short"));
    for c in &mut zipped {
        let (v, was) = c.json();
        assert_eq!((v["data"].as_str(), was), (Some("short"), false));
    }
}

#[test]
fn compressed_input_is_inflated_and_bounded() {
    let n = Node::start(|c| {
        c.limits.max_message_size = 64 << 10;
        c.limits.max_frame_size = 64 << 10;
    });
    let mut a = Raw::connect(&n, "/ws", Some(OFFER));
    let mut watcher = Raw::connect(&n, "/ws", Some(OFFER));
    for c in [&mut a, &mut watcher] {
        c.json();
        c.send_text(r#"{"type":"sub","room":"r"}"#, false);
        c.json();
    }
    // A compressed publish, in one frame and in fragments (RSV1 on the first).
    let msg = json!({"type": "pub", "room": "r", "data": big_text()}).to_string();
    a.send_text(&msg, true);
    let z = deflate(msg.as_bytes());
    let mut frags = client_frame(0x41, &z[..z.len() / 2]);
    frags.extend(client_frame(0x80, &z[z.len() / 2..]));
    a.s.write_all(&frags).unwrap();
    for _ in 0..2 {
        let (v, _) = watcher.json();
        assert_eq!(v["data"], big_text());
    }
    assert!(metric(n.api, "ringway_inflate_messages_total") >= 2.0);

    // A bomb: 10 MiB of spaces inflating past the 64 KiB limit: 1009, and nobody
    // else notices.
    let bomb = deflate(&vec![b' '; 10 << 20]);
    assert!(bomb.len() < 64 << 10);
    a.s.write_all(&client_frame(0xc1, &bomb)).unwrap();
    assert_eq!(a.close_code(), 1009);
    let mut b = Raw::connect(&n, "/ws", Some(OFFER));
    b.json();
    b.send_text(r#"{"type":"pub","room":"r","data":"still here"}"#, true);
    assert_eq!(watcher.json().0["data"], "still here");

    // Compressed invalid UTF-8 is caught once inflated (1007); garbage too.
    b.s.write_all(&client_frame(0xc1, &deflate(&[0xff, 0xfe])))
        .unwrap();
    assert_eq!(b.close_code(), 1007);
    let mut c = Raw::connect(&n, "/ws", Some(OFFER));
    c.json();
    c.s.write_all(&client_frame(0xc1, &[0xff; 16])).unwrap();
    assert_eq!(c.close_code(), 1007);
    // RSV1 from a client that did not negotiate: 1002.
    let mut d = Raw::connect(&n, "/ws", None);
    d.json();
    d.s.write_all(&client_frame(0xc1, &deflate(b"{}"))).unwrap();
    assert_eq!(d.close_code(), 1002);
}

#[test]
fn small_windows_rooms_turned_off_and_compression_off() {
    let n = Node::start(|c| {
        c.compression.min_bytes = 64;
        c.compression.off = vec!["img:".into()];
    });
    let mut small = Raw::connect(
        &n,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=8"),
    );
    assert!(
        small
            .agreed
            .as_deref()
            .is_some_and(|a| a.ends_with("server_max_window_bits=8")),
        "{:?}",
        small.agreed
    );
    let mut full = Raw::connect(&n, "/ws", Some(OFFER));
    for c in [&mut small, &mut full] {
        c.json();
        for room in ["r", "img:1"] {
            c.send_text(&json!({"type": "sub", "room": room}).to_string(), false);
            c.json();
        }
    }
    // Within 256 bytes: compressed for both. Longer: plain for the small window.
    n.publish("r", json!("x".repeat(150)));
    assert!(small.json().1 && full.json().1);
    n.publish("r", json!("y".repeat(1000)));
    let (v, was) = small.json();
    assert_eq!((v["data"].as_str().map(str::len), was), (Some(1000), false));
    assert!(full.json().1);
    // A room whose prefix is off: plain for everyone, replays included.
    let (epoch, _) = n.publish("img:1", json!("z".repeat(1000)));
    assert!(!small.json().1 && !full.json().1);
    let mut late = Raw::connect(&n, "/ws", Some(OFFER));
    late.json();
    late.send_text(
        &json!({"type": "sub", "room": "img:1", "since": {"epoch": epoch, "seq": 0}}).to_string(),
        false,
    );
    assert_eq!(late.json().0["recovered"], true);
    let (v, was) = late.json();
    assert_eq!(
        (v["seq"].as_u64(), was),
        (Some(1), false),
        "the replay is plain"
    );
    // A long message to a full-window client is compressed, however long.
    n.publish("r", json!("w".repeat(200_000)));
    assert!(full.json().1);
    assert!(!small.json().1);

    let off = Node::start(|c| c.compression.enabled = false);
    let r = Raw::connect(&off, "/ws", Some(OFFER));
    assert_eq!(r.agreed, None);
}

#[test]
fn a_flood_of_messages_that_inflate_large_is_closed_like_any_flood() {
    // A hostile probe's find: ~1 KB frames inflating to 700 KB each were never
    // closed (each one larger than half the byte burst ended its own overrun) and
    // were inflated before the rate check.
    let n = Node::start(|_| {});
    let mut bad = Raw::connect(&n, "/ws", Some(OFFER));
    bad.json();
    let body = format!(r#"{{"type":"ping","pad":"{}"}}"#, "a".repeat(700_000));
    let frame = client_frame(0xc1, &deflate(body.as_bytes()));
    assert!(frame.len() < 2000);
    let mut w = bad.s.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_secs(6)
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                if w.write_all(&frame).is_err() {
                    break;
                }
            }
        })
    };
    let t = std::time::Instant::now();
    let code = bad.close_code();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(code, 4029);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    flood.join().unwrap();
    // Refused messages were not inflated: far fewer than were sent.
    let inflated = metric(n.api, "ringway_inflate_messages_total");
    assert!(inflated < 50.0, "{inflated} messages inflated");
}
