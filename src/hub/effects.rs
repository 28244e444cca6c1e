//! What the hub asks its caller to do, in the order it decided it. Each kind has
//! its own FIFO: the order within a kind is what the receivers see; across kinds
//! there is none to keep (they go to different places).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::ws::deflate::Lazy;

use super::id::{Arrival, ConnKey, Ms};
use super::msg::{Mail, PeerMsg, Reply};

/// Something for this worker's connections.
#[derive(Debug)]
pub enum ToConn {
    /// A frame for one connection (`subscribed`, a replay, a roster, an error).
    Send(ConnKey, Bytes),
    /// One frame for every live subscriber of `room` on this worker (see
    /// [`super::Hub::subscribers`]): wrap it once, queue it to each, under the room's
    /// slow-consumer policy.
    Broadcast {
        /// The room.
        room: Arc<str>,
        /// The encoded frame.
        frame: Bytes,
        /// Its compressed variant (permessage-deflate), made by the first worker of
        /// the node that needs it and shared with the others.
        packed: Lazy,
        /// Conflation tag.
        tag: u64,
        /// When the message reached this node, for `ringway_publish_to_write_seconds`
        /// ([`Arrival::UNTIMED`]: a presence change).
        at: Arrival,
    },
    /// Close the connection with this code and reason.
    Close(ConnKey, u16, String),
    /// The app closes the connection (`POST /v1/disconnect`): send it a
    /// `disconnect` message, then close with `code`.
    Kick {
        /// The connection.
        key: ConnKey,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
        /// Whether the client may come back on its own.
        reconnect: bool,
    },
}

/// Something the app hears about (a webhook event), decided by a room's owner.
#[derive(Debug)]
pub enum HubEvent {
    /// A client's message was stamped (rooms in `hooks.publish_rooms`).
    Published {
        /// The room.
        room: Arc<str>,
        /// Its epoch.
        epoch: crate::protocol::Epoch,
        /// The seq.
        seq: u64,
        /// The publisher's user.
        from: Option<String>,
        /// The message.
        data: Box<serde_json::value::RawValue>,
    },
    /// A user's first connection joined the room, or its last one left (rooms in
    /// `hooks.presence_rooms`, debounced).
    Presence {
        /// The room.
        room: Arc<str>,
        /// The user.
        user: Arc<str>,
        /// Joined (or left).
        joined: bool,
    },
}

/// A message the owner stamped, for the worker's log.
#[derive(Debug)]
pub struct Stamped {
    /// The room.
    pub room: Arc<str>,
    /// Its epoch.
    pub epoch: u64,
    /// The seq.
    pub seq: u64,
    /// The encoded frame, as the ring holds it.
    pub frame: Bytes,
    /// Its idempotency key with the key's scope ([`super::dedup::Dedup::scoped`]),
    /// so a repeat after a restart is still recognised.
    pub key: Option<String>,
    /// How long ago it was stamped, ms (0, except for a room handed over by
    /// another node, whose messages keep their age).
    pub age: Ms,
    /// What the record says: a message (or position, or key); the room was handed
    /// to another node (an earlier copy in the log must not be restored); the term
    /// it goes on under (in `seq`).
    pub kind: crate::store::record::Kind,
}

/// Nodes a peer message goes to (bit `i`: node `i`), encoded once for all of them.
pub type PeerSet = u64;

/// The queues. Filled by `handle_*`, drained by `poll_*`.
#[derive(Debug, Default)]
pub struct Effects {
    pub(super) conns: VecDeque<ToConn>,
    pub(super) mail: VecDeque<(usize, Mail)>,
    pub(super) peers: VecDeque<(PeerSet, PeerMsg)>,
    pub(super) replies: VecDeque<(u64, Reply)>,
    pub(super) events: VecDeque<HubEvent>,
    pub(super) stored: VecDeque<Stamped>,
}

impl Effects {
    /// Whether every queue is empty.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.mail.is_empty()
            && self.peers.is_empty()
            && self.replies.is_empty()
            && self.events.is_empty()
            && self.stored.is_empty()
    }
}
