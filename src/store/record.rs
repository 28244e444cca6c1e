//! The segment log's records, sans-IO: how a stamped message is written to disk and
//! read back, and what a file that ends in a torn or corrupt record yields.
//!
//! A record is a length, a CRC32C of the body, and the body:
//!
//! ```text
//! u32 len | u32 crc32c(body) | body = u8 kind | u64 epoch | u64 seq | u64 at_ms
//!                                    | u16 room_len | room | u32 frame_len | frame
//!                                    | u16 key_len | key
//! ```
//!
//! little-endian. `frame` is the message's encoded WebSocket frame, as the room's
//! ring holds it, so a restarted node replays exactly the bytes it sent. A record
//! with an empty frame carries no message, only the room's position (its epoch and
//! latest seq): each new segment begins with one per room the worker owns, so a
//! room keeps its place in the sequence after its messages' segments are deleted.
//! `key` is the message's idempotency key with its scope (empty: none), so a repeat
//! after a restart is still answered with the first seq; a record with an empty
//! frame and a key keeps just that (recovery writes them for messages that left the
//! replay window but not the idempotency window). A *gone* record (its own kind)
//! says the worker handed the room to another node: what came before it in the log
//! is no longer this node's to restore. A *term* record (its own kind, the term in
//! the `seq` field, no frame or key) says the worker went on with the room's epoch
//! under that term (`hub::replica`): a restart asks for a later one.
//!
//! Reading a segment stops at the first record that does not check out. If no good
//! record can be found anywhere after it (a crash while the last write was under
//! way: a record cut short, or zeros where the file was extended), the segment is
//! *torn*: everything before it is good and the rest is dropped. If a good record
//! follows (its CRC checks out), the segment is *corrupt*: the disk, or someone,
//! changed bytes in the middle; what came before is kept, the rest is skipped, and
//! the caller names the file in an error.

/// Bytes of a record's header (length and CRC).
pub const HEADER: usize = 8;

/// The largest body a record may have (a message frame is bounded by
/// `limits.max_message_size`, checked at most 2 GiB by the configuration).
pub const MAX_BODY: usize = 1 << 31;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stamped message, a room's position, or an idempotency key.
    Message,
    /// The room was handed to another node here (no frame, no key).
    Gone,
    /// The room goes on under the term in `seq` (no frame, no key).
    Term,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::Gone => 2,
            Kind::Term => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Gone),
            3 => Some(Kind::Term),
            _ => None,
        }
    }
}

/// One stamped message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The room.
    pub room: &'a str,
    /// Its epoch.
    pub epoch: u64,
    /// The message's seq.
    pub seq: u64,
    /// When it was stamped, Unix milliseconds (its age bounds the replay window).
    pub at_ms: u64,
    /// The encoded frame (empty: a position or key record).
    pub frame: &'a [u8],
    /// The idempotency key with its scope (empty: none).
    pub key: &'a str,
    /// What the record says.
    pub kind: Kind,
}

impl Record<'_> {
    /// Append the record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len =
            1 + 8 + 8 + 8 + 2 + self.room.len() + 4 + self.frame.len() + 2 + self.key.len();
        out.reserve(HEADER + body_len);
        let start = out.len();
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the CRC, once the body is in
        out.push(self.kind.byte());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.extend_from_slice(&(self.room.len() as u16).to_le_bytes());
        out.extend_from_slice(self.room.as_bytes());
        out.extend_from_slice(&(self.frame.len() as u32).to_le_bytes());
        out.extend_from_slice(self.frame);
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        let crc = crc32c::crc32c(&out[start + HEADER..]);
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }
}

/// How a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At a record boundary, the last record whole.
    Clean,
    /// In a record cut short by a crash: keep the first `valid` bytes (truncate).
    Torn {
        /// Bytes of whole, good records.
        valid: usize,
    },
    /// At a record that does not check out with good bytes after it: the first
    /// `valid` bytes are good, the rest is skipped.
    Corrupt {
        /// Bytes of whole, good records before the bad one.
        valid: usize,
    },
}

/// Every good record of a segment's bytes, in order, and how the segment ended.
pub fn scan(bytes: &[u8]) -> (Vec<Record<'_>>, End) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match read_one(&bytes[at..]) {
            Ok((record, used)) => {
                records.push(record);
                at += used;
            }
            Err(_) => {
                let end = if good_record_after(bytes, at + 1) {
                    End::Corrupt { valid: at }
                } else {
                    End::Torn { valid: at }
                };
                return (records, end);
            }
        }
    }
    (records, End::Clean)
}

/// Whether a whole, good record starts anywhere at or after `from` (only looked
/// for once a segment is damaged).
fn good_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|i| read_one(&bytes[i..]).is_ok())
}

/// Why a record could not be read.
enum Bad {
    /// The bytes end inside it.
    Short,
    /// It does not check out.
    Invalid,
}

fn read_one(b: &[u8]) -> Result<(Record<'_>, usize), Bad> {
    if b.len() < HEADER {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if len > MAX_BODY {
        return Err(Bad::Invalid);
    }
    let Some(body) = b.get(HEADER..HEADER + len) else {
        return Err(Bad::Short);
    };
    if crc32c::crc32c(body) != crc {
        return Err(Bad::Invalid);
    }
    let record = parse_body(body).ok_or(Bad::Invalid)?;
    Ok((record, HEADER + len))
}

fn parse_body(b: &[u8]) -> Option<Record<'_>> {
    let (&kind, b) = b.split_first()?;
    let kind = Kind::from_byte(kind)?;
    let u64_at = |b: &[u8], i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let (epoch, seq, at_ms) = (u64_at(b, 0)?, u64_at(b, 8)?, u64_at(b, 16)?);
    let b = b.get(24..)?;
    let room_len = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let room = std::str::from_utf8(b.get(2..2 + room_len)?).ok()?;
    let b = b.get(2 + room_len..)?;
    let frame_len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let frame = b.get(4..4 + frame_len)?;
    let b = b.get(4 + frame_len..)?;
    let key_len = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(b.get(2..2 + key_len)?).ok()?;
    if b.len() != 2 + key_len {
        return None;
    }
    Some(Record {
        room,
        epoch,
        seq,
        at_ms,
        frame,
        key,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 1..=n {
            let frame = format!(r#"{{"type":"msg","room":"chat:{seq}","seq":{seq},"data":"x"}}"#);
            Record {
                room: "chat:1",
                epoch: 0xab,
                seq,
                at_ms: 1_796_000_000_000 + seq,
                frame: frame.as_bytes(),
                key: if seq == 2 { "api\0k2" } else { "" },
                kind: if seq == 3 { Kind::Gone } else { Kind::Message },
            }
            .encode(&mut out);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = sample(3);
        let (records, end) = scan(&bytes);
        assert_eq!(end, End::Clean);
        assert_eq!(records.len(), 3);
        assert_eq!(
            (records[2].room, records[2].epoch, records[2].seq),
            ("chat:1", 0xab, 3)
        );
        assert!(records[0].frame.starts_with(br#"{"type":"msg""#));
        assert_eq!((records[0].key, records[1].key), ("", "api\0k2"));
        assert_eq!(
            records
                .iter()
                .map(|r| r.kind == Kind::Gone)
                .collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(scan(&[]), (vec![], End::Clean));
    }

    #[test]
    fn a_crash_at_any_byte_leaves_the_whole_records_before_it() {
        let bytes = sample(4);
        let (all, _) = scan(&bytes);
        let ends: Vec<usize> = {
            let mut v = Vec::new();
            let mut at = 0;
            for r in &all {
                let mut one = Vec::new();
                r.encode(&mut one);
                at += one.len();
                v.push(at);
            }
            v
        };
        for cut in 0..bytes.len() {
            let (records, end) = scan(&bytes[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(records.len(), whole, "cut at {cut}");
            let valid = if whole == 0 { 0 } else { ends[whole - 1] };
            let expect = if cut == valid {
                End::Clean
            } else {
                End::Torn { valid }
            };
            assert_eq!(end, expect, "cut at {cut}");
        }
    }

    #[test]
    fn a_changed_byte_is_caught_torn_at_the_end_corrupt_before() {
        let bytes = sample(3);
        let ends: Vec<usize> = {
            let mut at = 0;
            scan(&bytes)
                .0
                .iter()
                .map(|r| {
                    let mut one = Vec::new();
                    r.encode(&mut one);
                    at += one.len();
                    at
                })
                .collect()
        };
        // A flip inside the first record, with good records after it: corrupt.
        let mut b = bytes.clone();
        b[HEADER + 3] ^= 0x40;
        assert_eq!(scan(&b), (vec![], End::Corrupt { valid: 0 }));
        // A flip inside the last record: torn (a crash mid-write looks like this).
        let mut b = bytes.clone();
        let last = b.len() - 2;
        b[last] ^= 0x01;
        let (records, end) = scan(&b);
        assert_eq!(records.len(), 2);
        assert_eq!(end, End::Torn { valid: ends[1] });
        // A length from another world, or one reaching past the end, with good
        // records after it: corrupt, not torn (those records must not be dropped
        // as if a crash had cut them).
        for len in [u32::MAX, (bytes.len() as u32) * 2] {
            let mut b = bytes.clone();
            b[ends[0]..ends[0] + 4].copy_from_slice(&len.to_le_bytes());
            let (records, end) = scan(&b);
            assert_eq!(records.len(), 1);
            assert_eq!(end, End::Corrupt { valid: ends[0] }, "length {len}");
        }
        // Zeros where a record should be (a file extended, then a power loss): torn.
        let mut b = bytes.clone();
        b.extend_from_slice(&[0; 64]);
        let (records, end) = scan(&b);
        assert_eq!(records.len(), 3);
        assert_eq!(end, End::Torn { valid: bytes.len() });
    }
}
