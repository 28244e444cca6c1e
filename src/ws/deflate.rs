//! permessage-deflate (RFC 7692), sans-IO: the negotiation, and the compressor and
//! decompressor a worker keeps as scratch.
//!
//! ringway always answers `server_no_context_takeover; client_no_context_takeover`.
//! Every server message is compressed on its own, so one compressed frame serves
//! every subscriber that negotiated the extension (see [`Lazy`]), and no connection
//! keeps a compressor. Every client message is compressed on its own too (a server
//! may require it: RFC 7692 §7.1.1.2), so a connection keeps no decompressor
//! between messages either: the worker's one [`Inflater`] inflates each message as
//! it completes (a fragmented one waits, compressed, in the frame decoder).
//!
//! A client may ask for a smaller server window (`server_max_window_bits=N`, 8 to
//! 15). ringway accepts it, and sends such a client a compressed message only when
//! the message is at most 2^N bytes long: with no context takeover no back-reference
//! can reach further than the message itself, so the frame is valid under the small
//! window. Longer messages go to it uncompressed (RSV1 clear, allowed per message).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::close;
use super::frame::Violation;

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// What was agreed with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The largest window the client's decompressor has (`server_max_window_bits`,
    /// 15 unless it asked for less).
    pub server_window_bits: u8,
}

impl Agreed {
    /// Whether a message of `len` bytes may be sent to this client compressed:
    /// always with the full window (ringway's compressor uses 15 bits), and with a
    /// smaller one when the message is no longer than the window.
    pub fn fits(self, len: usize) -> bool {
        self.server_window_bits >= 15 || len <= 1usize << self.server_window_bits
    }
}

/// What ringway needs of an acceptable offer: the server window it asks for.
/// (`server_no_context_takeover` is what ringway does anyway;
/// `client_no_context_takeover` and `client_max_window_bits` say what the client
/// can do, and ringway asks for no context takeover whatever they say.)
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    server_max_window_bits: Option<u8>,
}

/// Choose from the client's `Sec-WebSocket-Extensions` header values (in order):
/// the first acceptable `permessage-deflate` offer, and the response header value
/// that accepts it. Offers with unknown, repeated or ill-valued parameters, and
/// offers that do not parse, are declined (RFC 7692 §5); `None` when none is left.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<(Agreed, String)> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_unquoted(text, ',') {
            let Some(o) = parse_offer(offer) else {
                continue;
            };
            let mut response =
                format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
            let bits = match o.server_max_window_bits {
                Some(n) => {
                    response.push_str(&format!("; server_max_window_bits={n}"));
                    n
                }
                None => 15,
            };
            return Some((
                Agreed {
                    server_window_bits: bits,
                },
                response,
            ));
        }
    }
    None
}

/// One offer (`name; param; param=value`), or `None` if it is not an acceptable
/// permessage-deflate offer.
fn parse_offer(offer: &str) -> Option<Offer> {
    let mut parts = split_unquoted(offer, ';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        if !is_token(key) {
            return None;
        }
        let i = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None, // unknown parameter
        };
        if std::mem::replace(&mut seen[i], true) {
            return None; // repeated parameter
        }
        match (i, value) {
            (0 | 1 | 3, None) => {}
            (2, Some(v)) => o.server_max_window_bits = Some(window_bits(v)?),
            (3, Some(v)) => {
                window_bits(v)?;
            }
            _ => return None, // a value where none is allowed, or none where one is needed
        }
    }
    Some(o)
}

/// A window size: a decimal 8 to 15 without leading zeros.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|n| (8..=15).contains(n))
}

/// A value as a token, or a quoted string whose content is a token (RFC 7692 §7).
fn unquote(v: &str) -> Option<&str> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    is_token(inner).then_some(inner)
}

/// RFC 7230 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Split on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// The tail a sync flush ends with, which the sender strips (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A worker's compressor: compresses one message at a time into a complete
/// server frame with RSV1 set.
pub struct Deflater {
    c: Compress,
    out: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (0 to 9).
    pub fn new(level: u32) -> Self {
        Self {
            c: Compress::new(Compression::new(level), false),
            out: Vec::new(),
        }
    }

    /// The compressed payload of `payload` (no context taken over from earlier
    /// messages, the sync tail stripped).
    pub fn compress(&mut self, payload: &[u8]) -> &[u8] {
        self.c.reset();
        self.out.clear();
        self.out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if self.out.capacity() - self.out.len() < 64 {
                self.out.reserve(self.out.capacity().max(256));
            }
            let before = self.c.total_in();
            // Compressing into a Vec cannot fail (flate2 reports only buffer errors,
            // which the loop avoids by growing the Vec).
            let _ = self
                .c
                .compress_vec(input, &mut self.out, FlushCompress::Sync);
            let used = (self.c.total_in() - before) as usize;
            input = &input[used..];
            if input.is_empty() && self.out.ends_with(&TAIL) && self.out.len() < self.out.capacity()
            {
                break;
            }
        }
        let n = self.out.len() - TAIL.len();
        if n == 0 {
            // An empty message: one empty stored block, as RFC 7692 §7.2.3.6 shows.
            self.out.truncate(0);
            self.out.push(0x00);
            return &self.out;
        }
        &self.out[..n]
    }

    /// A complete server frame (FIN, RSV1, `opcode`) carrying `payload` compressed.
    pub fn frame(&mut self, opcode: u8, payload: &[u8]) -> Bytes {
        let body = self.compress(payload);
        let mut f = Vec::with_capacity(body.len() + 10);
        f.push(0x80 | 0x40 | (opcode & 0x0f));
        match body.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(body);
        Bytes::from(f)
    }
}

/// A compressed variant of a broadcast frame, built by the first worker that needs
/// it and shared by every subscriber of every worker that negotiated compression
/// (`None` inside: not worth compressing, or compression is off for the room).
#[derive(Debug, Clone, Default)]
pub struct Lazy(Arc<OnceLock<Option<Bytes>>>);

impl Lazy {
    /// The compressed frame, made by `make` on first use.
    pub fn get_or_make(&self, make: impl FnOnce() -> Option<Bytes>) -> Option<&Bytes> {
        self.0.get_or_init(make).as_ref()
    }
}

/// A worker's decompressor: inflates one complete client message at a time.
pub struct Inflater {
    d: Decompress,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            d: Decompress::new(false),
            out: Vec::new(),
        }
    }
}

/// Output grown per step while inflating: a bomb is caught within one step of the
/// limit.
const STEP: usize = 64 << 10;

/// Scratch kept between messages at most; a larger buffer is given back.
const KEEP: usize = 1 << 20;

impl Inflater {
    /// Inflate one message; more than `max` bytes of output fail it with 1009 as soon
    /// as they appear, corrupt data with 1007. The result lives until the next call.
    pub fn inflate(&mut self, compressed: &[u8], max: usize) -> Result<&[u8], Violation> {
        self.d.reset(false);
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
        self.out.clear();
        'parts: for part in [compressed, &TAIL[..]] {
            let mut input = part;
            loop {
                if self.out.len() > max {
                    return Err(Violation {
                        code: close::TOO_BIG,
                        reason: "message too large once inflated",
                    });
                }
                let room = (max + 1 - self.out.len()).min(STEP);
                if self.out.capacity() - self.out.len() < room {
                    self.out.reserve_exact(room);
                }
                let before = self.d.total_in();
                let status = self
                    .d
                    .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| Violation {
                        code: close::INVALID_DATA,
                        reason: "invalid compressed data",
                    })?;
                let used = (self.d.total_in() - before) as usize;
                input = &input[used..];
                let full = self.out.len() == self.out.capacity();
                if status == Status::StreamEnd {
                    // A message may end with a final block (BFINAL, RFC 7692
                    // §7.2.3.4): DEFLATE stops there, and what follows (the tail
                    // added above, the RFC example's padding byte) is not read.
                    break 'parts;
                }
                if input.is_empty() && !full {
                    break;
                }
                if used == 0 && !full && status != Status::Ok {
                    return Err(Violation {
                        code: close::INVALID_DATA,
                        reason: "invalid compressed data",
                    });
                }
            }
        }
        if self.out.len() > max {
            return Err(Violation {
                code: close::TOO_BIG,
                reason: "message too large once inflated",
            });
        }
        Ok(&self.out)
    }

    /// Bytes of scratch held.
    pub fn held(&self) -> usize {
        self.out.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(h: &str) -> Option<(u8, String)> {
        negotiate([h.as_bytes()]).map(|(a, r)| (a.server_window_bits, r))
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn the_offers_browsers_and_libraries_send_are_accepted() {
        // Chromium, Python websockets, Node ws (their defaults).
        for h in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            "permessage-deflate; client_max_window_bits=15",
        ] {
            let (bits, resp) = agreed(h).unwrap_or_else(|| panic!("{h}"));
            assert!(resp.starts_with(BOTH), "{resp}");
            assert!(bits >= 12);
        }
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=10"),
            Some((10, format!("{BOTH}; server_max_window_bits=10")))
        );
        assert_eq!(
            agreed("PERMESSAGE-DEFLATE; Server_No_Context_Takeover"),
            Some((15, BOTH.into()))
        );
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=\"9\""),
            Some((9, format!("{BOTH}; server_max_window_bits=9")))
        );
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_taken() {
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; =5",
            "permessage-deflate; server_max_window_bits=\"1 0\"",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(agreed(bad), None, "{bad:?}");
            let two = format!("{bad}, permessage-deflate; server_max_window_bits=11");
            assert_eq!(agreed(&two).map(|a| a.0), Some(11), "{two:?}");
        }
        // Offers across several header lines, in order.
        let got = negotiate([
            b"foo".as_slice(),
            b"permessage-deflate; unknown=1",
            b"permessage-deflate",
        ]);
        assert_eq!(got.map(|a| a.0.server_window_bits), Some(15));
        assert_eq!(negotiate([&[0xff, 0xfe][..]]), None);
        // An unterminated quote spoils what follows it in that header line.
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=\"10, permessage-deflate"),
            None
        );
    }

    #[test]
    fn the_parser_survives_every_prefix_of_a_header() {
        let h = "permessage-deflate; server_max_window_bits=\"12\"; client_max_window_bits, permessage-deflate";
        for end in 0..=h.len() {
            if h.is_char_boundary(end) {
                let _ = agreed(&h[..end]);
            }
        }
        assert_eq!(agreed(h).map(|a| a.0), Some(12));
    }

    #[test]
    fn compress_then_inflate_round_trips_with_the_rfc_framing() {
        let mut d = Deflater::new(6);
        let mut i = Inflater::default();
        // RFC 7692 §7.2.3.1: "Hello" with no context takeover.
        assert_eq!(
            d.compress(b"Hello"),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(
            i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100)
                .unwrap(),
            b"Hello"
        );
        for len in [0, 1, 125, 126, 300, 4096, 70_000, 300_000] {
            let msg: Vec<u8> = (0..len)
                .map(|n| b"{\"text\":\"hello world\"}"[n % 22])
                .collect();
            let c = d.compress(&msg).to_vec();
            assert_eq!(i.inflate(&c, len.max(1)).unwrap(), &msg[..], "len {len}");
            let f = d.frame(1, &msg);
            assert_eq!(f[0], 0xc1);
        }
        // Random bytes do not compress but still round-trip.
        let noise: Vec<u8> = (0..50_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let c = d.compress(&noise).to_vec();
        assert_eq!(i.inflate(&c, noise.len()).unwrap(), &noise[..]);
    }

    #[test]
    fn messages_ending_in_a_final_block_inflate() {
        let mut i = Inflater::default();
        // RFC 7692 §7.2.3.4: "Hello" in a block with BFINAL set.
        assert_eq!(
            i.inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 5)
                .unwrap(),
            b"Hello"
        );
        // A final stored block; what follows a final block is not read (DEFLATE
        // ends there), as RFC 7692 §7.2.2's decompression does.
        assert_eq!(
            i.inflate(&[0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i'], 5)
                .unwrap(),
            b"hi"
        );
        assert_eq!(
            i.inflate(&[0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i', 0x00, 0x17], 5)
                .unwrap(),
            b"hi"
        );
        assert_eq!(
            i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 5)
                .unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_invalid() {
        let mut d = Deflater::new(9);
        let zeros = vec![0u8; 8 << 20];
        let bomb = d.compress(&zeros).to_vec();
        assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
        let mut i = Inflater::default();
        let e = i.inflate(&bomb, 1 << 20).unwrap_err();
        assert_eq!(e.code, close::TOO_BIG);
        assert!(i.held() <= (1 << 20) + 2 * STEP, "held {}", i.held());
        let e = i.inflate(&[0xff, 0xff, 0xff, 0xff, 0x12], 100).unwrap_err();
        assert_eq!(e.code, close::INVALID_DATA);
        // The inflater is fine afterwards.
        assert_eq!(
            i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 5)
                .unwrap(),
            b"Hello"
        );
        // Exactly at the limit passes; one byte over fails.
        let c = d.compress(&[b'a'; 1000]).to_vec();
        assert!(i.inflate(&c, 1000).is_ok());
        assert_eq!(i.inflate(&c, 999).unwrap_err().code, close::TOO_BIG);
    }

    #[test]
    fn a_small_window_client_gets_only_what_fits_it() {
        let a = Agreed {
            server_window_bits: 8,
        };
        assert!(a.fits(256) && !a.fits(257));
        let full = Agreed {
            server_window_bits: 15,
        };
        assert!(full.fits(1 << 20), "the full window takes any length");
        // What ringway sends such a client: a message within its window, compressed
        // with the full window, inflates under a small window (flate2 offers 9 bits
        // at least: 512 bytes; for 8 the argument is the same, no back-reference
        // reaches before the start of the message).
        let mut d = Deflater::new(6);
        let msg: Vec<u8> = (0..256).map(|n| b"abcabcabd"[n % 9]).collect();
        let c = d.compress(&msg).to_vec();
        let mut small = Decompress::new_with_window_bits(false, 9);
        let mut out = Vec::with_capacity(512);
        let mut input = c.clone();
        input.extend_from_slice(&TAIL);
        small
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, msg);
    }
}
