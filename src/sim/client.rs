//! A simulated client: what it asked for, what it was told, and the checks on every
//! frame it receives.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::hub::ConnKey;

/// Where a client's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At {
    pub node: usize,
    pub worker: usize,
    pub key: ConnKey,
}

/// One room of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// Asked; the owner's answer has not come. `since`: the cursor it resumes from.
    Pending { since: Option<(u64, u64)> },
    /// Streaming: the epoch and the last seq received.
    Live { epoch: u64, seq: u64 },
}

/// A person with a device: a user (or none), its connection (if connected), its
/// rooms there, and the cursor it keeps per room across reconnects.
#[derive(Debug)]
pub struct Client {
    pub user: Option<String>,
    pub at: Option<At>,
    /// Closed by the server, waiting to be removed (as the socket task would).
    pub closing: bool,
    pub rooms: BTreeMap<String, Sub>,
    pub cursors: BTreeMap<String, (u64, u64)>,
    /// `subscribed` answers it never asked for (its stream restarted: a re-sync).
    pub unasked: u32,
}

/// What every stamp anyone saw carried.
#[derive(Debug, Default)]
pub struct Ledger {
    /// `(room, epoch, seq)` → the message (its data id).
    seqs: BTreeMap<(String, u64, u64), u64>,
    /// `(room, epoch, message)` → its seq: a message stamped twice in one epoch (an
    /// idempotent retry not recognised) shows here.
    stamps: BTreeMap<(String, u64, u64), u64>,
    /// Who published each message (`from` in every `msg` must say so).
    pub from: BTreeMap<u64, Option<String>>,
}

impl Client {
    pub fn new(user: Option<String>) -> Self {
        Self {
            user,
            at: None,
            closing: false,
            rooms: BTreeMap::new(),
            cursors: BTreeMap::new(),
            unasked: 0,
        }
    }

    /// A frame from the server; `Err` is a broken invariant.
    pub fn receive(&mut self, frame: &Bytes, ledger: &mut Ledger) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_slice(payload(frame))
            .map_err(|e| format!("a frame that is not JSON: {e}"))?;
        let room = v["room"].as_str().unwrap_or("").to_owned();
        match v["type"].as_str() {
            Some("subscribed") => {
                let epoch = u64::from_str_radix(v["epoch"].as_str().unwrap_or(""), 16)
                    .map_err(|_| format!("subscribed without an epoch: {v}"))?;
                let seq = v["seq"].as_u64().unwrap_or(0);
                let recovered = v["recovered"].as_bool() == Some(true);
                let Some(sub) = self.rooms.get_mut(&room) else {
                    return Err(format!("subscribed to {room}, which it never asked for"));
                };
                if matches!(sub, Sub::Live { .. }) {
                    self.unasked += 1;
                }
                let new = match (*sub, recovered) {
                    (
                        Sub::Pending {
                            since: Some((e, s)),
                        },
                        true,
                    ) => {
                        if e != epoch || s > seq {
                            return Err(format!(
                                "recovered:true for cursor ({e:x}, {s}) but the room is at ({epoch:x}, {seq})"
                            ));
                        }
                        Sub::Live { epoch, seq: s }
                    }
                    (_, true) => {
                        return Err(format!("recovered:true in {room} without a cursor: {v}"));
                    }
                    (_, false) => Sub::Live { epoch, seq },
                };
                *sub = new;
                if let Sub::Live { epoch, seq } = new {
                    self.cursors.insert(room, (epoch, seq));
                }
            }
            Some("msg") => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                let data = v["data"]["id"].as_u64().unwrap_or(u64::MAX);
                let Some(sub) = self.rooms.get_mut(&room) else {
                    return Err(format!(
                        "msg {seq} in {room}, which it is not subscribed to"
                    ));
                };
                let Sub::Live { epoch, seq: last } = *sub else {
                    return Err(format!("msg {seq} in {room} before its subscribed"));
                };
                if seq != last + 1 {
                    return Err(format!(
                        "in {room} epoch {epoch:x}: msg {seq} after {last} (gap, duplicate or reorder)"
                    ));
                }
                record(ledger, &room, epoch, seq, data)?;
                if let Some(by) = ledger.from.get(&data)
                    && v["from"].as_str() != by.as_deref()
                {
                    return Err(format!(
                        "msg {seq} in {room} says it is from {:?}, but {by:?} published it",
                        v["from"]
                    ));
                }
                *sub = Sub::Live { epoch, seq };
                self.cursors.insert(room, (epoch, seq));
            }
            Some("presence" | "join" | "leave" | "error" | "unsubscribed") => {}
            other => return Err(format!("an unknown frame type {other:?}: {v}")),
        }
        Ok(())
    }
}

/// Note that `(room, epoch, seq)` carried message `data`; two messages for one
/// seq of one epoch is the invariant the owner exists to keep.
pub fn record(
    ledger: &mut Ledger,
    room: &str,
    epoch: u64,
    seq: u64,
    data: u64,
) -> Result<(), String> {
    if let Some(before) = ledger.seqs.insert((room.to_owned(), epoch, seq), data)
        && before != data
    {
        return Err(format!(
            "seq {seq} of {room} epoch {epoch:x} was assigned to two messages ({before} and {data})"
        ));
    }
    match ledger.stamps.insert((room.to_owned(), epoch, data), seq) {
        Some(before) if before != seq => Err(format!(
            "message {data} was stamped twice in {room} epoch {epoch:x} (seq {before} and {seq}): a repeat of its idempotency key was delivered again"
        )),
        _ => Ok(()),
    }
}

/// The payload of a server frame (unmasked; 2, 4 or 10 header bytes).
pub fn payload(frame: &[u8]) -> &[u8] {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => &frame[4..],
        Some(127) => &frame[10..],
        _ => &frame[2..],
    }
}
