//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz_targets/`) and by the
//! regression test (`tests/fuzz_regressions.rs`), which replays every kept input
//! (`regressions/<target>/`) on stable Rust in `cargo test`.
//!
//! Each function takes arbitrary bytes and must not panic; the assertions inside are
//! the properties the fuzzer checks.

#![allow(dead_code)]

use ringway::auth::{Verifier, matches, token_from_request};
use ringway::mesh::wire;
use ringway::ws::deflate::{Deflater, Inflater, negotiate};
use ringway::ws::frame::{Decoder, Event, Limits};
use ringway::ws::handshake::{HandshakeConfig, Outcome, handle};
use tungstenite::handshake::machine::TryParse;

/// A harness: arbitrary bytes in, a panic on a violated property.
pub type Harness = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: [(&str, Harness); 9] = [
    ("ws_frame", ws_frame),
    ("handshake", handshake),
    ("client_protocol", client_protocol),
    ("mesh_wire", mesh_wire),
    ("token", token),
    ("api_http", api_http),
    ("deflate_offer", deflate_offer),
    ("inflate", inflate),
    ("segment", segment),
];

/// The segment log reader (`store::record::scan`) on any bytes: no panic; the good
/// records it returns, written again, are exactly the valid prefix it reports, and
/// reading that prefix again is clean.
pub fn segment(data: &[u8]) {
    use ringway::store::record::{End, scan};
    let (records, end) = scan(data);
    let valid = match end {
        End::Clean => data.len(),
        End::Torn { valid } | End::Corrupt { valid } => valid,
    };
    let mut again = Vec::new();
    for r in &records {
        r.encode(&mut again);
    }
    assert_eq!(again, &data[..valid]);
    let (twice, end) = scan(&data[..valid]);
    assert_eq!((twice.len(), end), (records.len(), End::Clean));
}

/// The permessage-deflate offer parser: any header lines (split at `\n`) give no
/// panic; what is agreed is a window of 8 to 15 bits, and the response, offered
/// back, agrees the same.
pub fn deflate_offer(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let Some((agreed, response)) = negotiate(lines.iter().copied()) else {
        return;
    };
    assert!((8..=15).contains(&agreed.server_window_bits));
    let again = negotiate([response.as_bytes()]).map(|a| a.0);
    assert_eq!(again, Some(agreed), "{response}");
}

/// Compressed client messages: frames with RSV1 (whole or in fragments, in chunks
/// the first byte sizes) through the decoder, every compressed message through the
/// worker's inflater with a 16 KiB limit. Whatever the bytes (a client that kept its
/// context although told not to, a bomb, garbage): no panic, never more output
/// than the limit. And the second byte's worth of the input, compressed by the
/// server's deflater, inflates back to itself.
pub fn inflate(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_frame: 4096,
        max_message: 16384,
        deflate: true,
    };
    let mut decoder = Decoder::default();
    let mut inflater = Inflater::default();
    let mut pending: Vec<u8> = Vec::new();
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        pending.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut pending, limits) {
                Ok(Some((n, event))) => {
                    if let Event::Compressed(_, payload) = event
                        && let Ok(out) = inflater.inflate(payload.as_slice(), 16384)
                    {
                        assert!(out.len() <= 16384);
                    }
                    pending.drain(..n);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let mut deflater = Deflater::new(3);
    let packed = deflater.compress(bytes).to_vec();
    let back = inflater
        .inflate(&packed, bytes.len().max(1))
        .expect("round trip");
    assert_eq!(back, bytes);
}

/// The WebSocket frame decoder, fed the way the connection driver feeds it: bytes
/// arrive in chunks (the first input byte sets their size), whole frames are consumed
/// from the front, the unfinished tail waits for more. Every decision consumes at
/// least one byte and no more than it was given.
pub fn ws_frame(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let limits = Limits {
        max_frame: 4096,
        max_message: 16384,
        deflate: chunk & 1 == 1,
    };
    let mut decoder = Decoder::default();
    let mut pending: Vec<u8> = Vec::new();
    for piece in bytes.chunks(chunk) {
        pending.extend_from_slice(piece);
        loop {
            let len = pending.len();
            match decoder.decode(&mut pending, limits) {
                Ok(Some((n, _event))) => {
                    assert!(n > 0 && n <= len, "consumed {n} of {len}");
                    pending.drain(..n);
                }
                Ok(None) => break,
                Err(_violation) => return, // the connection would be closed
            }
        }
    }
}

/// The HTTP upgrade parser, on growing prefixes as bytes trickle in: Incomplete,
/// Accept or Reject, and an accepted request never claims more than it was given.
pub fn handshake(data: &[u8]) {
    let cfg = HandshakeConfig {
        ws_path: "/ws".into(),
        echo: true,
        max_bytes: 2048,
        pass_headers: vec!["cookie".into(), "x-forwarded-for".into()],
        deflate: true,
    };
    let step = (data.len() / 64).max(1);
    for end in (0..=data.len()).step_by(step).chain([data.len()]) {
        if let Outcome::Accept(a) = handle(&data[..end], &cfg) {
            assert!(a.consumed <= end);
        }
    }
}

/// The ringway.v1 request parser: a request or a refusal.
pub fn client_protocol(data: &[u8]) {
    let _ = ringway::protocol::parse(data, 128);
}

/// The mesh frame decoder on chunked input (first byte = chunk size): frames or an
/// error that ends the link; every decoded frame re-encodes to itself.
pub fn mesh_wire(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut d = wire::Decoder::new(1 << 16);
    for piece in bytes.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    let mut again = wire::Decoder::new(1 << 20);
                    again.feed(&wire::encode(&frame));
                    assert_eq!(again.next_frame().unwrap().as_ref(), Some(&frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Token handling: any string verifies or is refused; any request yields a token or
/// none; any pattern matches a room or not.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let v = Verifier::hs256(b"fuzz-secret-0123456789abcdef0123");
    let _ = v.verify(&text, 1_700_000_000, 86_400);
    if let Some((pattern, room)) = text.split_once('\n') {
        let _ = matches(pattern, room);
    }
    if let Ok(Some((_, req))) = tungstenite::handshake::server::Request::try_parse(data) {
        let _ = token_from_request(&req);
    }
}

/// The HTTP API's request-head parser on growing prefixes: partial, a head, or a
/// refusal; a head never claims more bytes than it was given, and its framing is
/// strict (a parsed head's length is the one Content-Length given, in digits).
pub fn api_http(data: &[u8]) {
    use ringway::api::http::{Parsed, parse_head};
    let step = (data.len() / 64).max(1);
    for end in (0..=data.len()).step_by(step).chain([data.len()]) {
        if let Parsed::Complete(head, n) = parse_head(&data[..end]) {
            assert!(n <= end);
            let text = String::from_utf8_lossy(&data[..n]).to_ascii_lowercase();
            // Header lines named Content-Length (not lines whose name merely ends
            // so, like `xcontent-length:`: a fuzzer's find).
            let declared = text
                .split("\r\n")
                .skip(1)
                .filter(|l| {
                    l.split_once(':')
                        .is_some_and(|(k, _)| k.trim() == "content-length")
                })
                .count();
            assert!(declared <= 1, "two Content-Lengths accepted");
            if declared == 0 {
                assert_eq!(head.content_length, 0);
            }
        }
    }
    // And the payload check on anything that parses as JSON.
    if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(data) {
        let _ = ringway::protocol::valid_data(raw);
    }
}
