//! The mesh: TCP links between the nodes of a cluster, so a fleet behaves like one
//! server without an external broker.
//!
//! ```text
//!   node n1                                   node n2
//!   workers ──(frames for n2)──▶ slot[n2] queue ─▶ writer ══TCP══▶ reader ─▶ home worker of the room
//!   home worker ◀─ reader ◀══TCP══ writer ◀─ slot[n1] queue ◀── workers
//! ```
//!
//! - Membership is static: `node_id` plus `mesh.peers`. Of each pair, the node whose
//!   id sorts first dials; the other accepts. One link per pair.
//! - A link starts with `Hello` both ways and an HMAC proof of the shared secret
//!   (`auth`); unknown nodes, other clusters and wrong secrets are refused with a
//!   `Refuse` frame naming the cause.
//! - Each side sends `Ping` when it has sent nothing for `heartbeat_ms`; a link silent
//!   for `dead_after_ms` is dead. The dialer reconnects with exponential backoff and
//!   full jitter.
//! - Workers queue encoded frames for a peer on the peer's bounded slot (frames and
//!   bytes); a writer thread drains it in batches. A peer that cannot keep up loses
//!   room messages, not the link: past half the bound a room message is dropped
//!   ([`Mesh::send_deliver`]) and the worker tells the peer which room lagged, whose
//!   subscribers there resume from their cursors (the owner's replay fills the gap).
//!   Only when the other messages alone fill the bound is the link cut: the peer
//!   reconnects and re-registers, and its clients re-sync.
//! - Links run on plain threads (two per live link, one manager per peer). A cluster
//!   has a handful of links, each carrying many messages, so the per-connection
//!   economy of the io_uring workers buys nothing here, and blocking I/O keeps the
//!   state machine obvious.
//!
//! The rooms logic on top (owners, interest, rehoming) is the router's (`hub`); this
//! module only moves its messages and reports links going up and down to a [`Sink`],
//! in order: every message a link delivered is handed over before the report that
//! it went down, and the report that it came up before its first message.

pub(crate) mod auth;
pub(crate) mod hello;
pub(crate) mod link;
pub mod wire;

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::config::{self, Config, ConfigError};
use crate::hub::rendezvous;

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id.
    pub id: String,
    /// Mesh address (`HOST:PORT`); empty for this node.
    pub addr: String,
    /// Rendezvous seed.
    pub seed: u64,
}

/// Counters of one link (monotonic unless named as a gauge).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames written to the peer.
    pub frames_out: AtomicU64,
    /// Bytes written to the peer.
    pub bytes_out: AtomicU64,
    /// Frames read from the peer.
    pub frames_in: AtomicU64,
    /// Bytes read from the peer.
    pub bytes_in: AtomicU64,
    /// `Deliver` frames written (room traffic forwarded to the peer).
    pub delivers_out: AtomicU64,
    /// `Deliver` frames read.
    pub delivers_in: AtomicU64,
    /// Sessions established.
    pub connects: AtomicU64,
    /// Links cut because the peer's queue was over its bound.
    pub overflows: AtomicU64,
    /// Room messages dropped because the peer's queue was over half its bound (the
    /// peer was told, per room, and resumes from its cursors).
    pub lagged: AtomicU64,
    /// Frames not sent because the link was down.
    pub dropped: AtomicU64,
    /// Round-trip time of the last heartbeat, microseconds (gauge; 0 before the
    /// first answer).
    pub rtt_us: AtomicU64,
}

/// Where a link's messages go (the runtime routes them to its workers). Called from
/// the link threads.
pub trait Sink: Send + Sync {
    /// A room message from node `peer`, received at `at`.
    fn message(&self, peer: usize, msg: crate::hub::PeerMsg, at: crate::hub::Arrival);
    /// The link to node `peer` came up or went down; `session` numbers the link's
    /// sessions (frames sent with [`Mesh::send`] name the session their sender saw).
    fn link(&self, peer: usize, up: bool, session: u64);
}

/// An authenticated stream, with whatever bytes its hello left in the decoder.
type Session = (std::net::TcpStream, wire::Decoder);

/// A metric family over the links: name, help, and how to read it.
type Series<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A peer's outbound queue and link state, shared by the workers (producers) and
/// the link's threads.
#[derive(Debug)]
pub struct Slot {
    /// Frames for the peer, each with the session it was meant for.
    tx: Sender<(u64, Bytes)>,
    rx: Receiver<(u64, Bytes)>,
    /// The current session (numbered from 1; a new one at each connect).
    session: AtomicU64,
    queued: AtomicUsize,
    overflow: AtomicBool,
    up: AtomicBool,
    /// A clone of the current session's socket, to cut it from outside.
    socket: Mutex<Option<std::net::TcpStream>>,
    /// Authenticated streams accepted from this peer, for its manager.
    incoming: (Sender<Session>, Receiver<Session>),
    /// Counters.
    pub stats: LinkStats,
}

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct Mesh {
    /// This node's index in `nodes`.
    pub me: usize,
    /// Every node, this one included, sorted by id.
    pub nodes: Vec<Node>,
    seeds: Vec<u64>,
    /// Bit `i` set: node `i` is reachable (this node always is).
    live: AtomicU64,
    /// Bit `i` set: a link to node `i` has come up since this node started, and the
    /// workers were told (this node's bit is always set).
    linked: AtomicU64,
    /// One per node (this node's is unused).
    pub slots: Vec<Slot>,
    /// Mesh settings.
    pub config: config::Mesh,
    stopping: AtomicBool,
}

impl Mesh {
    /// The cluster from the configuration; `None` for a single node.
    pub fn from_config(c: &Config) -> Result<Option<Mesh>, ConfigError> {
        let peers = c.mesh.peer_list(&c.node_id)?.others;
        if peers.is_empty() {
            return Ok(None);
        }
        let mut nodes: Vec<Node> = peers
            .into_iter()
            .map(|p| Node {
                seed: rendezvous::seed(&p.id),
                id: p.id,
                addr: p.addr,
            })
            .collect();
        nodes.push(Node {
            id: c.node_id.clone(),
            addr: String::new(),
            seed: rendezvous::seed(&c.node_id),
        });
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let me = nodes
            .iter()
            .position(|n| n.id == c.node_id)
            .expect("pushed above");
        let slots = nodes
            .iter()
            .map(|_| {
                let (tx, rx) = crossbeam_channel::bounded(c.mesh.queue_frames);
                Slot {
                    tx,
                    rx,
                    queued: AtomicUsize::new(0),
                    overflow: AtomicBool::new(false),
                    up: AtomicBool::new(false),
                    session: AtomicU64::new(0),
                    socket: Mutex::new(None),
                    incoming: crossbeam_channel::bounded(4),
                    stats: LinkStats::default(),
                }
            })
            .collect();
        Ok(Some(Mesh {
            me,
            seeds: nodes.iter().map(|n| n.seed).collect(),
            live: AtomicU64::new(1 << me),
            linked: AtomicU64::new(1 << me),
            slots,
            nodes,
            config: c.mesh.clone(),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Every node's rendezvous seed, by index.
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// The live set, as a bit mask over `nodes`.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    /// Whether a link to every peer has come up since this node started (see
    /// `mesh.join_timeout_ms`).
    pub fn linked_to_all(&self) -> bool {
        let all = (1u64 << self.nodes.len()) - 1;
        self.linked.load(Ordering::Acquire) == all
    }

    /// The peers no link has come up to since this node started.
    pub fn never_linked(&self) -> Vec<&str> {
        let linked = self.linked.load(Ordering::Acquire);
        (0..self.nodes.len())
            .filter(|&i| linked & (1 << i) == 0)
            .map(|i| self.nodes[i].id.as_str())
            .collect()
    }

    /// Whether node `i` is reachable now.
    pub fn is_live(&self, i: usize) -> bool {
        self.live() & (1 << i) != 0
    }

    /// The owner of `room` among the live nodes.
    pub fn owner(&self, room: &str) -> usize {
        rendezvous::owner(room, &self.seeds, self.live())
    }

    fn set_live(&self, i: usize, on: bool) {
        if on {
            self.live.fetch_or(1 << i, Ordering::AcqRel);
        } else {
            self.live.fetch_and(!(1 << i), Ordering::AcqRel);
        }
    }

    /// Queue an encoded frame for node `to`, on link session `session`: the session
    /// the sender saw come up (see [`Sink::link`]). A frame for another session than
    /// the current one is dropped (counted), like one for a link that is down: its
    /// sender has not yet heard what happened to the link, and will redo what the
    /// frame was for when it does. (A worker that sent into a session it had not yet
    /// seen begin would leave the peer with state it does not know it created.) When
    /// the queue is over its bound, the link is cut.
    pub fn send(&self, to: usize, frame: Bytes, session: u64) {
        let slot = &self.slots[to];
        if !slot.up.load(Ordering::Acquire)
            || slot.session.load(Ordering::Acquire) != session
            || slot.overflow.load(Ordering::Relaxed)
        {
            slot.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let n = frame.len();
        let over = slot.queued.fetch_add(n, Ordering::AcqRel) + n > self.config.queue_bytes;
        if over || slot.tx.try_send((session, frame)).is_err() {
            slot.queued.fetch_sub(n, Ordering::AcqRel);
            if !slot.overflow.swap(true, Ordering::AcqRel) {
                slot.stats.overflows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %self.nodes[to].id,
                    "mesh link to {} is over its queue bound (mesh.queue_bytes = {}, mesh.queue_frames = {}): cutting it; the peer reconnects and its clients re-sync. If this repeats, the peer or the network is too slow for the traffic",
                    self.nodes[to].id, self.config.queue_bytes, self.config.queue_frames
                );
                slot.cut();
            }
            slot.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue a room message (`Deliver`) for node `to` like [`Mesh::send`], unless
    /// the queue holds half its bound or more: then the message is dropped (counted)
    /// and `false` returned, and the caller tells the peer the room lagged. The other
    /// half of the bound is left to the messages that cannot be dropped.
    pub fn send_deliver(&self, to: usize, frame: Bytes, session: u64) -> bool {
        let slot = &self.slots[to];
        let bytes = slot.queued.load(Ordering::Acquire) + frame.len();
        if slot.up.load(Ordering::Acquire)
            && (bytes > self.config.queue_bytes / 2
                || slot.tx.len() >= self.config.queue_frames / 2)
        {
            slot.stats.lagged.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.send(to, frame, session);
        true
    }

    /// Stop every link (the node is shutting down).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for s in &self.slots {
            s.cut();
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Prometheus text for the links.
    pub fn render(&self, out: &mut String) {
        let gauges: [Series<Slot>; 2] = [
            (
                "ringway_mesh_link_up",
                "1 while the link to the peer is established",
                |s| s.up.load(Ordering::Relaxed) as u64,
            ),
            (
                "ringway_mesh_link_queued_bytes",
                "Bytes waiting in the queue to the peer",
                |s| s.queued.load(Ordering::Relaxed) as u64,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (i, s) in self.slots.iter().enumerate() {
                if i != self.me {
                    let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", self.nodes[i].id, get(s));
                }
            }
        }
        let name = "ringway_mesh_rtt_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Round-trip time of the link's last heartbeat (queueing included)\n# TYPE {name} gauge"
        );
        for (i, s) in self.slots.iter().enumerate() {
            if i != self.me {
                let rtt = s.stats.rtt_us.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {rtt}", self.nodes[i].id);
            }
        }
        let counters: [Series<LinkStats>; 10] = [
            (
                "ringway_mesh_frames_out_total",
                "Frames written to the peer",
                |s| s.frames_out.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_bytes_out_total",
                "Bytes written to the peer",
                |s| s.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_frames_in_total",
                "Frames read from the peer",
                |s| s.frames_in.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_bytes_in_total",
                "Bytes read from the peer",
                |s| s.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_delivers_out_total",
                "Room messages forwarded to the peer (one per message per interested peer)",
                |s| s.delivers_out.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_delivers_in_total",
                "Room messages received from the peer for local subscribers",
                |s| s.delivers_in.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_connects_total",
                "Link sessions established",
                |s| s.connects.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_overflows_total",
                "Links cut because the peer's queue was over its bound",
                |s| s.overflows.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_lagged_total",
                "Room messages dropped because the peer's queue was over half its bound (its subscribers resumed from their cursors)",
                |s| s.lagged.load(Ordering::Relaxed),
            ),
            (
                "ringway_mesh_dropped_total",
                "Frames not sent because the link was down or cut",
                |s| s.dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, s) in self.slots.iter().enumerate() {
                if i != self.me {
                    let v = get(&s.stats);
                    let _ = writeln!(out, "{name}{{peer=\"{}\"}} {v}", self.nodes[i].id);
                }
            }
        }
    }

    /// `{"node":..,"peers":[{"id","addr","up"}]}` for `GET /v1/cluster`.
    pub fn describe(&self) -> String {
        let peers: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.me)
            .map(|(i, n)| {
                serde_json::json!({
                    "id": n.id,
                    "addr": n.addr,
                    "up": self.slots[i].up.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::json!({"node": self.nodes[self.me].id, "peers": peers}).to_string()
    }
}

impl Slot {
    /// Shut the current session's socket (its threads notice and end the session).
    fn cut(&self) {
        if let Some(s) = self.socket.lock().expect("not poisoned").as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether the link is established.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(queue_bytes: usize, queue_frames: usize) -> Mesh {
        let mut c = Config {
            node_id: "n1".into(),
            ..Config::default()
        };
        c.mesh.peers = vec!["n2=127.0.0.1:1".into()];
        c.mesh.queue_bytes = queue_bytes;
        c.mesh.queue_frames = queue_frames;
        Mesh::from_config(&c).unwrap().unwrap()
    }

    #[test]
    fn a_peer_over_its_queue_bound_is_cut_not_buffered() {
        let m = mesh(1000, 100);
        let slot = &m.slots[1];
        m.send(1, Bytes::from_static(b"x"), 1);
        assert_eq!(
            slot.stats.dropped.load(Ordering::Relaxed),
            1,
            "down: dropped"
        );
        slot.up.store(true, Ordering::Release);
        slot.session.store(1, Ordering::Release);
        for _ in 0..4 {
            m.send(1, Bytes::from(vec![0u8; 250]), 1);
        }
        assert_eq!(slot.queued.load(Ordering::Relaxed), 1000);
        assert_eq!(slot.stats.overflows.load(Ordering::Relaxed), 0);
        m.send(1, Bytes::from(vec![0u8; 1]), 1);
        assert_eq!(slot.stats.overflows.load(Ordering::Relaxed), 1);
        assert_eq!(
            slot.queued.load(Ordering::Relaxed),
            1000,
            "nothing more queued"
        );
        m.send(1, Bytes::from(vec![0u8; 1]), 1);
        assert_eq!(slot.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(slot.stats.overflows.load(Ordering::Relaxed), 1, "cut once");
    }

    #[test]
    fn the_frame_count_bounds_too() {
        let m = mesh(1 << 20, 2);
        m.slots[1].up.store(true, Ordering::Release);
        m.slots[1].session.store(1, Ordering::Release);
        for _ in 0..3 {
            m.send(1, Bytes::from_static(b"x"), 1);
        }
        assert_eq!(m.slots[1].stats.overflows.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn nodes_sort_by_id_and_ownership_follows_the_live_set() {
        let mut c = Config {
            node_id: "b".into(),
            ..Config::default()
        };
        c.mesh.peers = vec!["c=h:1".into(), "a=h:2".into()];
        let m = Mesh::from_config(&c).unwrap().unwrap();
        let ids: Vec<&str> = m.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(m.me, 1);
        // Alone, this node owns everything.
        assert!((0..50).all(|i| m.owner(&format!("r{i}")) == 1));
        m.set_live(0, true);
        m.set_live(2, true);
        let owners: std::collections::HashSet<usize> =
            (0..50).map(|i| m.owner(&format!("r{i}"))).collect();
        assert_eq!(owners.len(), 3);
    }
}
