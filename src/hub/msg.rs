//! What routers say to each other: [`Mail`] between the workers of one node,
//! [`PeerMsg`] between nodes (carried by the mesh), and the [`Reply`] a request gets.
//!
//! Both vocabularies belong to the hub: the runtime moves mail between threads and
//! the mesh moves peer messages between nodes, but neither looks inside.

use std::sync::Arc;

use bytes::Bytes;

use crate::ws::deflate::Lazy;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::gather::{Part, Query};
use super::id::{Arrival, ConnKey, Ms, Subscriber, Ticket};
use super::room::SubAck;
use crate::protocol::{Cursor, Epoch};

/// Who published a message and how to know it again; travels with the message to
/// its room's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The publisher's user: `from` in every subscriber's `msg`. `None` for
    /// anonymous clients and for API publishes that name nobody.
    pub from: Option<String>,
    /// The publisher's idempotency key: a repeat within the window is stamped once.
    pub idempotency_key: Option<String>,
    /// Published by a client (not the API).
    pub client: bool,
}

impl Origin {
    /// The sender a key belongs to (see `hub::dedup`).
    pub fn scope(&self) -> super::dedup::Scope<'_> {
        use super::dedup::Scope;
        match (&self.from, self.client) {
            (Some(user), _) => Scope::User(user),
            (None, true) => Scope::Anonymous,
            (None, false) => Scope::Api,
        }
    }
}

/// What a publish got from its room's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The seq (the first publish's, for a repeat).
    pub seq: u64,
    /// A repeat of an idempotency key: not delivered again.
    pub duplicate: bool,
}

/// A message between the workers of one node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Mail {
    /// To a room's home worker: a connection on worker `from` subscribes.
    Subscribe {
        /// Room name.
        room: Arc<str>,
        /// Subscriber's worker.
        from: usize,
        /// Subscriber's key on that worker.
        conn: ConnKey,
        /// Which of the connection's subscriptions this is (echoed in the answer).
        attempt: u32,
        /// Resume point, if any.
        since: Option<Cursor>,
        /// The subscriber's user, for presence.
        user: Option<Arc<str>>,
    },
    /// From a room's home worker: the answer to `Subscribe`.
    SubAck {
        /// Room name.
        room: Arc<str>,
        /// Subscriber's key on the receiving worker.
        conn: ConnKey,
        /// The subscription answered.
        attempt: u32,
        /// Epoch, seq and replay.
        ack: SubAck,
    },
    /// To a room's home worker: a connection on worker `from` left the room.
    Leave {
        /// Room name.
        room: Arc<str>,
        /// The worker.
        from: usize,
        /// The connection's key there.
        conn: ConnKey,
        /// Whether it was an identified user (the roster has it).
        user: bool,
        /// Worker `from` has no local subscriber left.
        last: bool,
    },
    /// To a room's owner: publish.
    Publish {
        /// Room name.
        room: Arc<str>,
        /// Payload, verbatim JSON.
        data: Box<RawValue>,
        /// Conflation key, if the message has one.
        key: Option<Box<str>>,
        /// Who sent it.
        origin: Box<Origin>,
        /// Who wants the assigned epoch and seq.
        reply: Option<Ticket>,
        /// When the message reached this node.
        at: Arrival,
    },
    /// From a room's owner: the stamp a publish got.
    Published {
        /// Request id on the receiving worker.
        req: u64,
        /// Epoch and seq.
        stamp: Stamp,
    },
    /// From a room's owner (or home worker): a stamped message for this worker's
    /// subscribers.
    Deliver {
        /// Room name.
        room: Arc<str>,
        /// The message's seq (0: not a room message, e.g. a presence change).
        seq: u64,
        /// The encoded frame, shared by every subscriber.
        frame: Bytes,
        /// Its compressed variant, made once for the node.
        packed: Lazy,
        /// Conflation tag (room and key).
        tag: u64,
        /// When the message reached this node.
        at: Arrival,
    },
    /// To a room's home worker: the roster, please.
    PresenceQuery {
        /// Room name.
        room: Arc<str>,
        /// Who asks.
        ticket: Ticket,
    },
    /// The answer to `PresenceQuery`.
    Presence {
        /// Who asked.
        ticket: Ticket,
        /// The `presence` JSON.
        json: String,
    },
    /// To a room's home worker: the history after `since`, please.
    HistoryQuery {
        /// Room name.
        room: Arc<str>,
        /// List messages after this seq.
        since: u64,
        /// At most this many.
        limit: usize,
        /// Who asks.
        ticket: Ticket,
    },
    /// The answer to `HistoryQuery`.
    History {
        /// Who asked.
        ticket: Ticket,
        /// The history JSON.
        json: String,
    },
    /// To every other worker: answer this question (see `hub::gather`).
    Gather {
        /// Who asks.
        ticket: Ticket,
        /// The question.
        query: Query,
    },
    /// A worker's answer to `Gather`.
    Part {
        /// Who asked.
        ticket: Ticket,
        /// The answering worker.
        worker: usize,
        /// Its answer.
        part: Part,
    },
    /// From a room's home worker: the room moved to another owner; subscribe this
    /// worker's subscribers again (they get `subscribed` with the new epoch).
    Rehome {
        /// Room name.
        room: Arc<str>,
    },
}

/// A message between nodes, about rooms. (The link's own frames, hello and
/// heartbeats, are the mesh's.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// To a room's owner: a connection on the sending node subscribes.
    Subscribe {
        /// Room name.
        room: String,
        /// The subscriber.
        who: Subscriber,
        /// Which of the subscriber's subscriptions this is (echoed in the answer).
        attempt: u32,
        /// Resume point `(epoch, seq)`.
        since: Option<(u64, u64)>,
        /// The subscriber's user, for presence.
        user: Option<String>,
    },
    /// From a room's owner: the answer to `Subscribe`.
    SubAck {
        /// Room name.
        room: String,
        /// The subscriber.
        who: Subscriber,
        /// The subscription answered.
        attempt: u32,
        /// The room's epoch.
        epoch: u64,
        /// Latest seq: live messages follow it.
        seq: u64,
        /// Whether the resume point was honoured.
        recovered: bool,
        /// Encoded frames to replay, oldest first.
        replay: Vec<Bytes>,
        /// Refused: the user is over its cluster-wide connection cap.
        refused: bool,
    },
    /// To a room's owner: a subscriber left; with `node_left`, the sending node has
    /// no subscriber left for the room (withdraw its interest and its roster).
    Leave {
        /// Room name.
        room: String,
        /// The subscriber that left, if one did.
        who: Option<Subscriber>,
        /// The sending node has no local subscriber left.
        node_left: bool,
    },
    /// To a room's owner: stamp and fan out this message.
    Publish {
        /// Room name.
        room: String,
        /// The payload, verbatim JSON.
        data: String,
        /// Conflation key.
        key: Option<String>,
        /// Who sent it.
        origin: Origin,
        /// Who wants the epoch and seq.
        reply: Option<Ticket>,
        /// The node that asked, when the sender only relays the publish (it gave
        /// the room to the receiver and the asker had not heard yet): answer there.
        via: Option<u16>,
    },
    /// From a room's owner: the stamp a publish got.
    Published {
        /// The asker.
        ticket: Ticket,
        /// Epoch and seq.
        stamp: Stamp,
        /// To a node that relayed the publish: the asker's node, to pass it on to.
        via: Option<u16>,
    },
    /// From a room's owner: one client frame for the receiver's local subscribers.
    Deliver {
        /// Room name.
        room: String,
        /// The message's seq (0: not a room message).
        seq: u64,
        /// Conflation tag.
        tag: u64,
        /// The encoded WebSocket frame.
        frame: Bytes,
    },
    /// To a room's owner: the roster, please.
    PresenceQuery {
        /// Room name.
        room: String,
        /// The asker.
        ticket: Ticket,
    },
    /// From a room's (former) owner to the nodes it served: it no longer owns the
    /// room (its view of the cluster moved it elsewhere). A node whose mirror
    /// subscribed with the sender has its subscribers subscribe again, so none stays
    /// on a stream that ended. (Nodes do not always see the same links: a node cut
    /// off from the new owner would otherwise never hear of the move.)
    Moved {
        /// Room name.
        room: String,
    },
    /// From a room's owner: the roster as the JSON the client receives.
    Presence {
        /// The asker.
        ticket: Ticket,
        /// `{"type":"presence",...}` text.
        json: String,
    },
    /// To a room's owner: its history after `since`, please.
    HistoryQuery {
        /// Room name.
        room: String,
        /// List messages after this seq.
        since: u64,
        /// At most this many.
        limit: u32,
        /// The asker.
        ticket: Ticket,
    },
    /// From a room's owner: the history JSON the app receives.
    History {
        /// The asker.
        ticket: Ticket,
        /// `GET /v1/history` JSON.
        json: String,
    },
    /// To every worker of the receiving node: answer this question (see
    /// `hub::gather`).
    Gather {
        /// The asker.
        ticket: Ticket,
        /// The question.
        query: Query,
    },
    /// One worker's answer to `Gather`.
    Part {
        /// The asker.
        ticket: Ticket,
        /// The answering worker.
        worker: u16,
        /// How many workers its node has (the asker waits for all).
        workers: u16,
        /// Its answer.
        part: Part,
    },
    /// From a room's owner: messages of the room for the receiver were dropped (its
    /// link was over its queue bound). The receiver's subscribers subscribe again
    /// from their cursors, and the replay fills the gap: only a room whose gap left
    /// the replay window re-syncs.
    Lagged {
        /// Room name.
        room: String,
    },
    /// From a room's owner to the room's next owner: the room, to go on from where
    /// the sender stopped (same epoch, the next seq). The sender no longer owns it.
    Handoff(Box<Handoff>),
    /// From each worker of a node that is leaving the cluster (draining), to every
    /// worker of every peer, before its handoffs: take the sender out of the view
    /// (its rooms go to their next owners, which wait for its handoffs).
    Leaving {
        /// The sender's workers (each says `HandoffDone` when it is through).
        workers: u16,
    },
    /// From each worker of a node, to every worker of a peer, after a link came up
    /// or after `Leaving`: every room this worker had to hand the receiver was
    /// handed (it is ahead on the link). Rooms the receiver waited to start can
    /// start.
    HandoffDone {
        /// The sending worker.
        worker: u16,
        /// The sender's workers (the receiver waits for all).
        workers: u16,
        /// After `Leaving` (else after the link came up).
        leaving: bool,
    },
    /// From a room's owner to its standby: the room as it is, to keep a copy of
    /// (`hub::replica`). Replaces any copy the standby had.
    Seed(Box<Handoff>),
    /// From a room's owner to its standby: one stamped message to add to the copy.
    /// The owner delivers it and answers its publisher once the standby has it.
    Replicate {
        /// Room name.
        room: String,
        /// The room's epoch.
        epoch: u64,
        /// The owner's term (see `hub::replica`).
        term: u64,
        /// The message's seq.
        seq: u64,
        /// The encoded frame.
        frame: Bytes,
        /// The publisher's idempotency key (scoped), if it gave one.
        key: Option<String>,
    },
    /// From a standby to the room's owner: the copy holds every message up to
    /// `seq` (cumulative), or (`ok: false`) it refuses the owner's term.
    Replicated {
        /// Room name.
        room: String,
        /// The room's epoch.
        epoch: u64,
        /// The owner's term.
        term: u64,
        /// Every message up to this one is in the copy.
        seq: u64,
        /// `false`: the standby no longer takes this owner's messages (it promised
        /// a later term to another node, or has no copy).
        ok: bool,
    },
    /// To a room's standby: forget the copy (the room was forgotten, handed over,
    /// or has another standby).
    Unseed {
        /// Room name.
        room: String,
        /// The room's epoch.
        epoch: u64,
    },
    /// From a node that would continue a room's epoch under a new term (its owner
    /// changing standby, a standby whose owner was lost, a node that adopted the
    /// room): may it?
    Vote {
        /// Room name.
        room: String,
        /// The room's epoch.
        epoch: u64,
        /// The term asked for.
        term: u64,
        /// The latest seq the asker holds.
        seq: u64,
    },
    /// The answer to `Vote`.
    Voted {
        /// Room name.
        room: String,
        /// The room's epoch.
        epoch: u64,
        /// The term asked for.
        term: u64,
        /// Granted: the voter takes no message of an earlier term for the room.
        granted: bool,
        /// Refused for now (the voter's view gives the room to another node);
        /// asking again later may succeed.
        retry: bool,
    },
}

/// A room given to its next owner (see [`PeerMsg::Handoff`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// Room name.
    pub room: String,
    /// Its epoch (unchanged by the move).
    pub epoch: u64,
    /// The latest seq stamped: the receiver stamps the next.
    pub seq: u64,
    /// Its history, oldest first: `(seq, age in ms, frame)`, consecutive and
    /// ending at `seq` (the oldest are left out to fit one mesh frame).
    pub messages: Vec<(u64, Ms, Bytes)>,
    /// Idempotency keys stamped in the epoch: `(scoped key, seq, age in ms)`.
    pub keys: Vec<(String, u64, Ms)>,
    /// Users whose presence in the room was last announced (so the move announces
    /// no joins, only the changes it did not carry).
    pub announced: Vec<String>,
    /// The sender read the room back from its log and nobody used it since: any
    /// live copy wins over it.
    pub from_log: bool,
    /// The sender's term for the room (0: the epoch was never replicated).
    pub term: u64,
    /// Publishes stamped but not yet acknowledged (held for the sender's standby).
    /// The receiver answers each, through the sender, once its own standby has
    /// the room.
    pub answers: Vec<Answer>,
}

/// A publish answer owed: `(seq, ticket, via, duplicate)`; `via` is the asker's
/// node in the list of the node that handed the room over (else a worker of that
/// node asked).
pub type Answer = (u64, Ticket, Option<u16>, bool);

/// Which workers of a node a peer message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One worker.
    Worker(usize),
    /// Every worker.
    Every,
}

impl PeerMsg {
    /// The workers of a node with `workers` workers that handle this message: the
    /// room's home worker, the worker that asked, or (a question for every worker)
    /// all of them.
    pub fn route(&self, workers: usize) -> Route {
        Route::Worker(match self {
            PeerMsg::Gather { .. } | PeerMsg::Leaving { .. } | PeerMsg::HandoffDone { .. } => {
                return Route::Every;
            }
            PeerMsg::Handoff(h) | PeerMsg::Seed(h) => {
                super::topology::home_worker(&h.room, workers)
            }
            PeerMsg::Subscribe { room, .. }
            | PeerMsg::SubAck { room, .. }
            | PeerMsg::Leave { room, .. }
            | PeerMsg::Publish { room, .. }
            | PeerMsg::Deliver { room, .. }
            | PeerMsg::PresenceQuery { room, .. }
            | PeerMsg::HistoryQuery { room, .. }
            | PeerMsg::Moved { room }
            | PeerMsg::Lagged { room }
            | PeerMsg::Replicate { room, .. }
            | PeerMsg::Replicated { room, .. }
            | PeerMsg::Unseed { room, .. }
            | PeerMsg::Vote { room, .. }
            | PeerMsg::Voted { room, .. } => super::topology::home_worker(room, workers),
            PeerMsg::Published { ticket, .. }
            | PeerMsg::Presence { ticket, .. }
            | PeerMsg::History { ticket, .. }
            | PeerMsg::Part { ticket, .. } => usize::from(ticket.worker).min(workers - 1),
        })
    }
}

/// The answer to a request a worker made on behalf of a task or a connection.
#[derive(Debug)]
pub enum Reply {
    /// A publish was stamped.
    Published(Stamp),
    /// A room's roster (`presence` JSON).
    Presence(String),
    /// A room's history (`GET /v1/history` JSON).
    History(String),
    /// Rooms with subscribers across the cluster, in name order.
    Rooms {
        /// Room and subscriber count (connections, on every node).
        rooms: Vec<(String, u64)>,
        /// The last room listed, when more follow (the next page starts after it).
        next: Option<String>,
        /// Nodes that did not answer in time (indexes).
        missing: Vec<usize>,
    },
    /// Connections closed by a disconnect.
    Disconnected {
        /// How many.
        count: u64,
        /// Nodes that did not answer in time (indexes).
        missing: Vec<usize>,
    },
}
