//! WebSocket frames, sans-IO: a decoder for client frames and encoders for server
//! frames, over tungstenite's public [`FrameHeader`].
//!
//! The decoder works on the caller's buffer: it parses one frame at the front, unmasks
//! the payload in place and hands back a borrowed slice, so a complete frame costs no
//! copy and no allocation. Only a message split into fragments is assembled into a
//! `Vec` (held in a `Box` that exists only while the fragments arrive). Every rule of
//! RFC 6455 that a server must enforce is checked here, before anything acts on the
//! input: masking, reserved bits and opcodes, control-frame size and fragmentation,
//! continuation order, frame and message size, close payloads and UTF-8.

use std::io::Cursor;

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::close;
use super::utf8::Utf8Validator;

/// Largest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;
/// Room a server (unmasked) frame header needs at most.
const MAX_SERVER_HEADER: usize = 10;

/// Why the peer's input is rejected: the close code to send and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// Close code (1002 protocol, 1007 invalid data, 1009 too big).
    pub code: u16,
    /// Reason sent in the close frame (short, no user data).
    pub reason: &'static str,
}

impl Violation {
    const fn protocol(reason: &'static str) -> Self {
        Self {
            code: close::PROTOCOL,
            reason,
        }
    }
}

/// Data message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text (validated).
    Text,
    /// Binary.
    Binary,
}

/// A data message's payload: borrowed from the input when it came in one frame,
/// assembled when it came in fragments.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Unmasked in place in the caller's buffer.
    Borrowed(&'a [u8]),
    /// Joined from several fragments.
    Assembled(Vec<u8>),
}

impl Payload<'_> {
    /// The bytes of the message.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Assembled(v) => v,
        }
    }
}

/// One thing the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message.
    Message(DataKind, Payload<'a>),
    /// A complete data message compressed with permessage-deflate (RSV1 on its
    /// first frame): inflate it, then check a text message's UTF-8.
    Compressed(DataKind, Payload<'a>),
    /// A ping; answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame: the code and reason, if the peer gave one.
    Close(Option<(u16, &'a str)>),
    /// A non-final fragment was buffered; nothing to act on yet.
    Fragment,
}

/// A data message being received in fragments.
#[derive(Debug)]
struct Fragmented {
    kind: DataKind,
    buf: Vec<u8>,
    utf8: Utf8Validator,
    /// Compressed (its text is checked once inflated).
    compressed: bool,
}

/// Payload limits the decoder enforces (from the config; passed per call so that a
/// connection does not carry copies of them).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload, bytes (larger: 1009).
    pub max_frame: usize,
    /// Largest message, all fragments together, bytes (larger: 1009).
    pub max_message: usize,
    /// permessage-deflate was negotiated: RSV1 may mark a message's first frame.
    pub deflate: bool,
}

/// Decodes client frames. One pointer wide: holds no buffer of its own unless a
/// fragmented message is in progress.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Set from the first fragment of a message until its final fragment.
    frag: Option<Box<Fragmented>>,
}

impl Decoder {
    /// Bytes held for a fragmented message in progress (its buffer's capacity).
    pub fn buffered(&self) -> usize {
        self.frag.as_ref().map_or(0, |f| f.buf.capacity())
    }

    /// Decode the frame at the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame (nothing is
    /// consumed: call again with more bytes appended), or the number of bytes the
    /// frame took and what it said. A frame that the peer announces as too large is
    /// rejected as soon as its header is complete, before its payload is buffered.
    /// After an `Err`, the connection must be failed; the decoder is not reused.
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: Limits,
    ) -> Result<Option<(usize, Event<'a>)>, Violation> {
        let mut cursor = Cursor::new(&*buf);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => return Err(Violation::protocol("reserved opcode")),
        };
        let header_len = cursor.position() as usize;
        self.check_header(&header, len, limits)?;
        let len = len as usize; // bounded by max_frame above
        let total = header_len + len;
        if buf.len() < total {
            return Ok(None);
        }
        let payload = &mut buf[header_len..total];
        if let Some(mask) = header.mask {
            unmask(payload, mask);
        }
        let payload: &'a [u8] = payload;
        let event = match header.opcode {
            OpCode::Control(Control::Ping) => Event::Ping(payload),
            OpCode::Control(Control::Pong) => Event::Pong(payload),
            OpCode::Control(Control::Close) => Event::Close(parse_close(payload)?),
            OpCode::Data(Data::Continue) => self.continuation(payload, header.is_final)?,
            OpCode::Data(Data::Text) => {
                self.first(DataKind::Text, payload, header.is_final, header.rsv1)?
            }
            OpCode::Data(Data::Binary) => {
                self.first(DataKind::Binary, payload, header.is_final, header.rsv1)?
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(Violation::protocol("reserved opcode"));
            }
        };
        Ok(Some((total, event)))
    }

    /// Bytes a frame header alone promises, checked before its payload is buffered.
    fn check_header(
        &self,
        header: &FrameHeader,
        len: u64,
        limits: Limits,
    ) -> Result<(), Violation> {
        if header.rsv2 || header.rsv3 {
            return Err(Violation::protocol(
                "reserved bits set without an extension",
            ));
        }
        if header.rsv1 {
            // permessage-deflate's bit, on the first frame of a data message only.
            let first = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
            if !limits.deflate {
                return Err(Violation::protocol(
                    "reserved bits set without an extension",
                ));
            }
            if !first {
                return Err(Violation::protocol(
                    "RSV1 is allowed only on a message's first frame",
                ));
            }
        }
        if header.mask.is_none() {
            return Err(Violation::protocol("client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final {
                    return Err(Violation::protocol("fragmented control frame"));
                }
                if len > 125 {
                    return Err(Violation::protocol("control frame over 125 bytes"));
                }
            }
            OpCode::Data(data) => {
                if len > limits.max_frame as u64 {
                    return Err(Violation {
                        code: close::TOO_BIG,
                        reason: "frame too large",
                    });
                }
                let so_far = self.frag.as_ref().map_or(0, |f| f.buf.len() as u64);
                if so_far + len > limits.max_message as u64 {
                    return Err(Violation {
                        code: close::TOO_BIG,
                        reason: "message too large",
                    });
                }
                match (data, self.frag.is_some()) {
                    (Data::Continue, false) => {
                        return Err(Violation::protocol("continuation without a message"));
                    }
                    (Data::Text | Data::Binary, true) => {
                        return Err(Violation::protocol("new message inside a fragmented one"));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The first (or only) frame of a data message.
    fn first<'a>(
        &mut self,
        kind: DataKind,
        payload: &'a [u8],
        is_final: bool,
        compressed: bool,
    ) -> Result<Event<'a>, Violation> {
        let mut utf8 = Utf8Validator::default();
        if kind == DataKind::Text && !compressed {
            utf8.feed(payload).map_err(|_| invalid_utf8())?;
        }
        if is_final {
            if compressed {
                return Ok(Event::Compressed(kind, Payload::Borrowed(payload)));
            }
            utf8.finish().map_err(|_| invalid_utf8())?;
            return Ok(Event::Message(kind, Payload::Borrowed(payload)));
        }
        self.frag = Some(Box::new(Fragmented {
            kind,
            buf: payload.to_vec(),
            utf8,
            compressed,
        }));
        Ok(Event::Fragment)
    }

    /// A continuation frame: the whole message once the final fragment is in.
    fn continuation<'a>(&mut self, payload: &[u8], is_final: bool) -> Result<Event<'a>, Violation> {
        // check_header guarantees a fragmented message is in progress.
        let Some(frag) = self.frag.as_mut() else {
            return Err(Violation::protocol("continuation without a message"));
        };
        if frag.kind == DataKind::Text && !frag.compressed {
            frag.utf8.feed(payload).map_err(|_| invalid_utf8())?;
        }
        frag.buf.extend_from_slice(payload);
        if !is_final {
            return Ok(Event::Fragment);
        }
        let Some(frag) = self.frag.take() else {
            return Err(Violation::protocol("continuation without a message"));
        };
        if frag.compressed {
            return Ok(Event::Compressed(frag.kind, Payload::Assembled(frag.buf)));
        }
        frag.utf8.finish().map_err(|_| invalid_utf8())?;
        Ok(Event::Message(frag.kind, Payload::Assembled(frag.buf)))
    }
}

fn invalid_utf8() -> Violation {
    Violation {
        code: close::INVALID_DATA,
        reason: "invalid UTF-8 in text",
    }
}

/// A close payload: empty, or a valid code followed by a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| invalid_utf8())?;
            Ok(Some((code, reason)))
        }
    }
}

/// XOR the payload with the client's masking key (RFC 6455 §5.3), eight bytes at a
/// time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Write a server (unmasked, final) frame header for `len` payload bytes into the end
/// of `room`, returning where the header starts. `room` must be `MAX_SERVER_HEADER`
/// bytes.
fn header_into(opcode: OpCode, len: usize, room: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let hlen = header.len(len as u64);
    let start = MAX_SERVER_HEADER - hlen;
    let mut out = &mut room[start..];
    // Writing into a slice of exactly the header's length cannot fail.
    header
        .format(len as u64, &mut out)
        .expect("header fits the room computed by FrameHeader::len");
    start
}

/// A complete server frame with this payload, ready to be written to any number of
/// sockets.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut room = [0u8; MAX_SERVER_HEADER];
    let start = header_into(opcode, payload.len(), &mut room);
    let mut v = Vec::with_capacity(MAX_SERVER_HEADER - start + payload.len());
    v.extend_from_slice(&room[start..]);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Builds a text frame whose payload is written in place after room left for the
/// header, so a JSON message is serialized once and never copied.
#[derive(Debug)]
pub struct TextFrameWriter {
    buf: Vec<u8>,
}

impl TextFrameWriter {
    /// An empty frame with capacity for about `payload_hint` payload bytes.
    pub fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_SERVER_HEADER + payload_hint);
        buf.extend_from_slice(&[0u8; MAX_SERVER_HEADER]);
        Self { buf }
    }

    /// The payload so far, for appending.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Finish: write the header in front of the payload.
    pub fn finish(mut self) -> Bytes {
        let len = self.buf.len() - MAX_SERVER_HEADER;
        let mut room = [0u8; MAX_SERVER_HEADER];
        let start = header_into(OpCode::Data(Data::Text), len, &mut room);
        self.buf[start..MAX_SERVER_HEADER].copy_from_slice(&room[start..]);
        Bytes::from(self.buf).slice(start..)
    }
}

/// The payload of a frame this server encoded (unmasked, one frame): what follows
/// its 2, 4 or 10 header bytes.
pub fn server_payload(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(start..).unwrap_or(&[])
}

/// A close frame with this code and reason (the reason is cut to fit 123 bytes at a
/// character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Control(Control::Close), &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked, as a browser would send it.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    /// What a decoder made of a byte stream: owned copies of each event.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Msg(DataKind, Vec<u8>),
        Zip(DataKind, Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
        Fail(u16),
    }

    /// Feed `input` in pieces of `step` bytes, the way a socket might deliver it.
    fn run(input: &[u8], step: usize, max: usize) -> Vec<Seen> {
        run_with(input, step, max, false)
    }

    /// [`run`], with permessage-deflate negotiated or not.
    fn run_with(input: &[u8], step: usize, max: usize, deflate: bool) -> Vec<Seen> {
        let mut d = Decoder::default();
        let limits = Limits {
            max_frame: max,
            max_message: max,
            deflate,
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf, limits) {
                    Ok(None) => break,
                    Ok(Some((n, ev))) => {
                        let s = match ev {
                            Event::Message(k, p) => Some(Seen::Msg(k, p.as_slice().to_vec())),
                            Event::Compressed(k, p) => Some(Seen::Zip(k, p.as_slice().to_vec())),
                            Event::Ping(p) => Some(Seen::Ping(p.to_vec())),
                            Event::Pong(p) => Some(Seen::Pong(p.to_vec())),
                            Event::Close(c) => Some(Seen::Close(c.map(|(c, r)| (c, r.to_owned())))),
                            Event::Fragment => None,
                        };
                        seen.extend(s);
                        buf.drain(..n);
                    }
                    Err(v) => {
                        seen.push(Seen::Fail(v.code));
                        return seen;
                    }
                }
            }
        }
        seen
    }

    /// Every test input is decoded whole and one byte at a time, with the same result.
    fn check(input: &[u8], max: usize, expect: &[Seen]) {
        for step in [input.len(), 1, 3, 7] {
            assert_eq!(run(input, step, max), expect, "step {step}");
        }
    }

    #[test]
    fn text_binary_ping_pong_close() {
        let mut input = client_frame(0x81, b"hello");
        input.extend(client_frame(0x82, &[0, 1, 2]));
        input.extend(client_frame(0x89, b"p"));
        input.extend(client_frame(0x8a, b""));
        input.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        check(
            &input,
            1 << 20,
            &[
                Seen::Msg(DataKind::Text, b"hello".to_vec()),
                Seen::Msg(DataKind::Binary, vec![0, 1, 2]),
                Seen::Ping(b"p".to_vec()),
                Seen::Pong(vec![]),
                Seen::Close(Some((1000, "bye".to_owned()))),
            ],
        );
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_was_agreed() {
        // Compressed bytes are not UTF-8: they are not checked until inflated.
        let zipped = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let whole = client_frame(0xc1, &zipped);
        for step in [whole.len(), 1, 3] {
            assert_eq!(
                run_with(&whole, step, 1 << 20, true),
                [Seen::Zip(DataKind::Text, zipped.to_vec())]
            );
            assert_eq!(run_with(&whole, step, 1 << 20, false), [Seen::Fail(1002)]);
        }
        // In fragments: RSV1 on the first only, a ping between them.
        let mut frags = client_frame(0x41, &zipped[..3]);
        frags.extend(client_frame(0x89, b"p"));
        frags.extend(client_frame(0x80, &zipped[3..]));
        for step in [frags.len(), 1, 5] {
            assert_eq!(
                run_with(&frags, step, 1 << 20, true),
                [
                    Seen::Ping(b"p".to_vec()),
                    Seen::Zip(DataKind::Text, zipped.to_vec())
                ]
            );
        }
        // RSV1 on a continuation or a control frame, RSV2/RSV3 anywhere: 1002.
        let mut cont = client_frame(0x41, &zipped[..3]);
        cont.extend(client_frame(0xc0, &zipped[3..]));
        for bad in [
            cont,
            client_frame(0xc9, b"p"),
            client_frame(0xe1, &zipped),
            client_frame(0xd1, &zipped),
        ] {
            assert_eq!(
                run_with(&bad, 1, 1 << 20, true),
                [Seen::Fail(1002)],
                "{bad:02x?}"
            );
        }
        // An uncompressed message still has its UTF-8 checked.
        let invalid = client_frame(0x81, &[0xff]);
        assert_eq!(run_with(&invalid, 1, 1 << 20, true), [Seen::Fail(1007)]);
    }

    #[test]
    fn extended_lengths() {
        for n in [125usize, 126, 127, 65_535, 65_536, 100_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let input = client_frame(0x82, &payload);
            assert_eq!(
                run(&input, 1000, 1 << 20),
                vec![Seen::Msg(DataKind::Binary, payload.clone())],
                "{n}"
            );
        }
    }

    #[test]
    fn fragments_with_interleaved_ping_and_split_code_point() {
        let text = "héllo €uro".as_bytes();
        let mut input = client_frame(0x01, &text[..2]); // splits 'é'
        input.extend(client_frame(0x89, b"mid"));
        input.extend(client_frame(0x00, &text[2..9])); // splits '€'
        input.extend(client_frame(0x80, &text[9..]));
        check(
            &input,
            1 << 20,
            &[
                Seen::Ping(b"mid".to_vec()),
                Seen::Msg(DataKind::Text, text.to_vec()),
            ],
        );
    }

    #[test]
    fn protocol_violations_close_with_1002() {
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let rsv = client_frame(0xc1, b"x");
        let reserved_op = client_frame(0x83, b"");
        let reserved_ctl = client_frame(0x8b, b"");
        let frag_ping = client_frame(0x09, b"");
        let big_ping = client_frame(0x89, &[0u8; 126]);
        let lone_cont = client_frame(0x80, b"x");
        let mut nested = client_frame(0x01, b"a");
        nested.extend(client_frame(0x81, b"b"));
        let close_one_byte = client_frame(0x88, &[0x03]);
        let close_bad_code = client_frame(0x88, &[0x03, 0xec]); // 1004
        for input in [
            unmasked,
            rsv,
            reserved_op,
            reserved_ctl,
            frag_ping,
            big_ping,
            lone_cont,
            nested,
            close_one_byte,
            close_bad_code,
        ] {
            check(&input, 1 << 20, &[Seen::Fail(1002)]);
        }
    }

    #[test]
    fn invalid_utf8_closes_with_1007_even_across_fragments() {
        check(
            &client_frame(0x81, b"\xc0\xaf"),
            1 << 20,
            &[Seen::Fail(1007)],
        );
        let mut input = client_frame(0x01, b"ok\xf4");
        input.extend(client_frame(0x80, b"\x90\x80\x80"));
        check(&input, 1 << 20, &[Seen::Fail(1007)]);
        // Truncated code point at the end of the message.
        check(
            &client_frame(0x81, b"\xe2\x82"),
            1 << 20,
            &[Seen::Fail(1007)],
        );
        // Invalid UTF-8 in a close reason.
        check(
            &client_frame(0x88, b"\x03\xe8\xff"),
            1 << 20,
            &[Seen::Fail(1007)],
        );
    }

    #[test]
    fn oversize_is_1009_before_the_payload_arrives() {
        let input = client_frame(0x82, &[7u8; 2000]);
        // Only the header is fed: the decoder must refuse already.
        assert_eq!(run(&input[..8], 1, 1000), vec![Seen::Fail(1009)]);
        // A message over the limit in small fragments.
        let mut frags = client_frame(0x02, &[1u8; 600]);
        frags.extend(client_frame(0x80, &[1u8; 600]));
        check(&frags, 1000, &[Seen::Fail(1009)]);
    }

    #[test]
    fn unmask_matches_bytewise_xor() {
        let mask = [1, 2, 3, 4];
        for n in 0..40 {
            let orig: Vec<u8> = (0..n as u8).collect();
            let mut fast = orig.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn encoded_frames_parse_back() {
        for n in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; n];
            let mut w = TextFrameWriter::with_capacity(n);
            w.payload().extend_from_slice(&payload);
            let a = w.finish();
            let b = encode(OpCode::Data(Data::Text), &payload);
            assert_eq!(a, b);
            let (h, len) = FrameHeader::parse(&mut Cursor::new(&a[..]))
                .unwrap()
                .unwrap();
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(len as usize, n);
            assert_eq!(a.len(), h.len(len) + n);
        }
        let c = encode_close(1009, &"é".repeat(100));
        assert_eq!(c[1] as usize, 2 + 122); // cut at a char boundary under 123
    }
}
