//! Questions for every worker of every node: which rooms have subscribers (and how
//! many), and "close these connections" (`POST /v1/disconnect`).
//!
//! The asking worker sends the [`Query`] to the other workers of its node and to
//! every live peer, whose mesh hands it to all of its workers. Each worker answers
//! with its [`Part`], saying how many workers its node has, so the asker knows when
//! every node is complete. A node that does not answer within the timeout is left
//! out, and the answer says so (`partial`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Hub;
use super::effects::ToConn;
use super::id::{ConnKey, Ms, Ticket};
use super::msg::{Mail, PeerMsg, Reply};
use crate::protocol;

/// A question for every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Rooms with subscribers, after `after` in name order, at most `limit`.
    Rooms {
        /// Exclusive lower bound (the last room of the previous page).
        after: String,
        /// Page size.
        limit: u32,
    },
    /// Close connections: every connection of `user`, or one connection.
    Disconnect {
        /// Whose connections.
        target: Target,
        /// Close code (4000-4999).
        code: u16,
        /// Close reason.
        reason: String,
        /// Whether the client may come back on its own.
        reconnect: bool,
    },
}

/// Which connections a disconnect is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every connection of this user, on every node.
    User(String),
    /// One connection: node index, worker, key (as `welcome.conn` names it).
    Conn {
        /// Node index.
        node: u16,
        /// Worker.
        worker: u16,
        /// Slab key, packed.
        key: u64,
    },
}

/// One worker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Its rooms with their subscriber counts, in name order.
    Rooms(Vec<(String, u32)>),
    /// How many connections it closed.
    Disconnected(u32),
}

/// A question being answered.
#[derive(Debug)]
pub(super) struct Gather {
    query: Query,
    /// Parts received, by node: (the node's worker count, workers heard from).
    nodes: BTreeMap<usize, (usize, Vec<bool>)>,
    /// Nodes expected to answer.
    expected: Vec<usize>,
    deadline: Ms,
    rooms: BTreeMap<String, u64>,
    closed: u64,
}

impl Gather {
    fn done(&self) -> bool {
        self.expected.iter().all(|n| {
            self.nodes
                .get(n)
                .is_some_and(|(_, heard)| heard.iter().all(|&h| h))
        })
    }

    fn add(&mut self, node: usize, worker: usize, workers: usize, part: Part) {
        let (_, heard) = self
            .nodes
            .entry(node)
            .or_insert_with(|| (workers, vec![false; workers]));
        match heard.get_mut(worker) {
            Some(h) if !*h => *h = true,
            _ => return, // twice, or from a worker that cannot be
        }
        match part {
            Part::Rooms(rooms) => {
                for (room, n) in rooms {
                    *self.rooms.entry(room).or_default() += u64::from(n);
                }
            }
            Part::Disconnected(n) => self.closed += u64::from(n),
        }
    }

    /// The answer.
    fn reply(self) -> Reply {
        let missing: Vec<usize> = self
            .expected
            .iter()
            .copied()
            .filter(|n| {
                !self
                    .nodes
                    .get(n)
                    .is_some_and(|(_, heard)| heard.iter().all(|&h| h))
            })
            .collect();
        match self.query {
            Query::Rooms { limit, .. } => {
                let limit = limit as usize;
                let more = self.rooms.len() > limit;
                let rooms: Vec<(String, u64)> = self.rooms.into_iter().take(limit).collect();
                let next = more.then(|| rooms.last().map(|(r, _)| r.clone())).flatten();
                Reply::Rooms {
                    rooms,
                    next,
                    missing,
                }
            }
            Query::Disconnect { .. } => Reply::Disconnected {
                count: self.closed,
                missing,
            },
        }
    }
}

impl Hub {
    /// Ask every worker of every live node `query`, for this worker's request `req`;
    /// the answer comes through `poll_reply` once all have answered or after
    /// `timeout` ms.
    pub(super) fn gather(&mut self, query: Query, req: u64, timeout: Ms, now: Ms) {
        let ticket = Ticket {
            worker: self.id as u16,
            id: req,
        };
        let me = self.node();
        let peers: Vec<usize> = (0..self.topo.nodes())
            .filter(|&n| n != me && self.topo.is_live(n))
            .collect();
        let mut expected = peers.clone();
        expected.push(me);
        self.gathers.insert(
            req,
            Gather {
                query: query.clone(),
                nodes: BTreeMap::new(),
                expected,
                deadline: now + timeout,
                rooms: BTreeMap::new(),
                closed: 0,
            },
        );
        for w in (0..self.topo.workers()).filter(|&w| w != self.id) {
            self.out.mail.push_back((
                w,
                Mail::Gather {
                    ticket,
                    query: query.clone(),
                },
            ));
        }
        let mask = peers.iter().fold(0, |m, &p| m | (1 << p));
        if mask != 0 {
            self.out.peers.push_back((
                mask,
                PeerMsg::Gather {
                    ticket,
                    query: query.clone(),
                },
            ));
        }
        let part = self.answer_query(&query);
        self.on_part(me, ticket, self.id, self.topo.workers(), part);
    }

    /// This worker's part of `query` (a disconnect is carried out here).
    pub(super) fn answer_query(&mut self, query: &Query) -> Part {
        match query {
            Query::Rooms { after, limit } => {
                let mut rooms: Vec<(String, u32)> = self
                    .local
                    .iter()
                    .filter(|(room, _)| ***room > **after)
                    .map(|(room, l)| (room.to_string(), (l.live.len() + l.pending.len()) as u32))
                    .collect();
                rooms.sort_unstable();
                rooms.truncate(*limit as usize + 1);
                Part::Rooms(rooms)
            }
            Query::Disconnect {
                target,
                code,
                reason,
                reconnect,
            } => {
                let keys: Vec<ConnKey> = match target {
                    Target::User(user) => {
                        let room = protocol::personal_room(user);
                        self.local.get(room.as_str()).map_or(Vec::new(), |l| {
                            l.live
                                .iter()
                                .copied()
                                .chain(l.pending.iter().map(|&(k, _)| k))
                                .collect()
                        })
                    }
                    Target::Conn { node, worker, key } => {
                        if usize::from(*node) == self.node() && usize::from(*worker) == self.id {
                            vec![ConnKey::unpack(*key)]
                        } else {
                            Vec::new()
                        }
                    }
                };
                for &key in &keys {
                    self.out.conns.push_back(ToConn::Kick {
                        key,
                        code: *code,
                        reason: reason.clone(),
                        reconnect: *reconnect,
                    });
                }
                Part::Disconnected(keys.len() as u32)
            }
        }
    }

    /// A part arrived from `worker` of `node` (which has `workers` workers).
    pub(super) fn on_part(
        &mut self,
        node: usize,
        ticket: Ticket,
        worker: usize,
        workers: usize,
        part: Part,
    ) {
        let Some(g) = self.gathers.get_mut(&ticket.id) else {
            return; // answered already (timed out)
        };
        g.add(node, worker, workers, part);
        if g.done() {
            self.finish_gather(ticket.id);
        }
    }

    /// Send a part where it belongs: to the asking worker, here or on its node.
    pub(super) fn send_part(&mut self, to_node: usize, ticket: Ticket, part: Part) {
        let (me, workers) = (self.node(), self.topo.workers());
        if to_node == me {
            let w = usize::from(ticket.worker);
            if w == self.id {
                self.on_part(me, ticket, self.id, workers, part);
            } else {
                self.out.mail.push_back((
                    w,
                    Mail::Part {
                        ticket,
                        worker: self.id,
                        part,
                    },
                ));
            }
        } else {
            self.send_peer(
                to_node,
                PeerMsg::Part {
                    ticket,
                    worker: self.id as u16,
                    workers: workers as u16,
                    part,
                },
            );
        }
    }

    fn finish_gather(&mut self, req: u64) {
        if let Some(g) = self.gathers.remove(&req) {
            self.out.replies.push_back((req, g.reply()));
        }
    }

    /// Answer the questions whose time is up with what came.
    pub(super) fn expire_gathers(&mut self, now: Ms) {
        let late: Vec<u64> = self
            .gathers
            .iter()
            .filter(|(_, g)| g.deadline <= now)
            .map(|(&req, _)| req)
            .collect();
        for req in late {
            self.finish_gather(req);
        }
    }

    /// When the next question times out.
    pub(super) fn next_gather_deadline(&self) -> Option<Ms> {
        self.gathers.values().map(|g| g.deadline).min()
    }
}
