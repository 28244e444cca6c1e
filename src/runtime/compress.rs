//! permessage-deflate on a worker's way out: which frames a connection gets
//! compressed, made with the worker's one compressor and counted. Broadcasts are
//! compressed once per node (`ws::deflate::Lazy`), the connection's own frames
//! (replies, replays, echoes) once each.

use bytes::Bytes;

use super::conns::Conns;
use crate::metrics::histogram::now_ns;
use crate::ws::deflate::{Agreed, Deflater};
use crate::ws::frame::server_payload;

/// The room of a `msg` frame's payload (`{"type":"msg","room":"..."`, as
/// `protocol::msg_frame` writes it; room names hold no quote or backslash).
fn msg_room(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(br#"{"type":"msg","room":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// A worker's compressor, made on first use.
#[derive(Debug, Default)]
pub struct Packer {
    deflater: Option<Deflater>,
}

impl Conns {
    /// Whether a frame may go compressed to a connection whose window is `bits`
    /// (0: it did not negotiate compression): a single-frame text or binary message
    /// of at least `compression.min_bytes` that fits the window (see `ws::deflate`).
    pub fn packs(&self, frame: &[u8], bits: u8) -> bool {
        let c = &self.shared.config.compression;
        if bits == 0 || !c.enabled || !matches!(frame.first(), Some(0x81 | 0x82)) {
            return false;
        }
        let len = server_payload(frame).len();
        len >= c.min_bytes
            && Agreed {
                server_window_bits: bits,
            }
            .fits(len)
    }

    /// `frame` compressed (a complete frame with RSV1), counted.
    pub fn pack(&mut self, frame: &[u8]) -> Bytes {
        let level = self.shared.config.compression.level;
        let d = self
            .packer
            .deflater
            .get_or_insert_with(|| Deflater::new(level));
        let t = now_ns();
        let payload = server_payload(frame);
        let packed = d.frame(frame[0] & 0x0f, payload);
        let s = &mut self.stats.deflate;
        s.compressed += 1;
        s.bytes_before += payload.len() as u64;
        s.bytes_after += server_payload(&packed).len() as u64;
        s.nanos += now_ns().saturating_sub(t);
        packed
    }

    /// A connection's own frame as it should go to it: compressed when it packs,
    /// unless it is a room's message (a replay) in a room whose compression is off.
    pub fn own_frame(&mut self, frame: Bytes, bits: u8) -> Bytes {
        let off = msg_room(server_payload(&frame))
            .is_some_and(|room| !self.shared.config.compression.room_on(room));
        if !off && self.packs(&frame, bits) {
            self.pack(&frame)
        } else {
            frame
        }
    }
}
