//! Three hubs of one worker each in one test, peer messages carried by hand: the
//! harness of the handoff and failover unit tests.

use std::collections::VecDeque;

use serde_json::value::RawValue;

use super::msg::{PeerMsg, Reply};
use super::{ConnKey, Hub, HubConfig, Origin, ToConn, Topology, rendezvous};

pub(super) struct Net {
    pub(super) hubs: Vec<Hub>,
    /// In flight: `(from, to, message)`.
    pub(super) flight: VecDeque<(usize, usize, PeerMsg)>,
    /// Frames each node's connections got: `(node, conn, frame text)`.
    pub(super) frames: Vec<(usize, ConnKey, String)>,
    /// Answers each node gave: `(node, request, answer)`.
    pub(super) replies: Vec<(usize, u64, Reply)>,
    /// Nodes that crashed: nothing reaches them, nothing leaves them.
    pub(super) down: Vec<bool>,
    pub(super) now: u64,
}

/// A connection key for the tests' subscriber.
pub(super) const A: ConnKey = ConnKey {
    slot: 1,
    generation: 1,
};

/// The nodes' rendezvous seeds (`n0`, `n1`, `n2`).
pub(super) fn seeds() -> Vec<u64> {
    (0..3).map(|i| rendezvous::seed(&format!("n{i}"))).collect()
}

/// The text of a server frame (payloads here are under 126 bytes).
pub(super) fn text(frame: &bytes::Bytes) -> String {
    String::from_utf8_lossy(&frame[2..]).into_owned()
}

impl Net {
    /// Three nodes with `cfg`, every link up, at 10 ms. Node `n`'s epochs count
    /// from `100 * n + 1`.
    pub(super) fn new(cfg: HubConfig) -> Net {
        let hubs = (0..3)
            .map(|n| {
                let mut epoch = 100 * n as u64;
                Hub::new(
                    0,
                    cfg.clone(),
                    Topology::cluster(n, seeds(), 1),
                    Box::new(move || {
                        epoch += 1;
                        epoch
                    }),
                )
            })
            .collect();
        let mut net = Net {
            hubs,
            flight: VecDeque::new(),
            frames: Vec::new(),
            replies: Vec::new(),
            down: vec![false; 3],
            now: 10,
        };
        for n in 0..3 {
            net.hubs[n].start(0);
            for p in (0..3).filter(|&p| p != n) {
                net.hubs[n].handle_link(p, true, 1, 0);
            }
            net.pump(n);
        }
        net.deliver_all();
        net
    }

    /// Carry out what node `n` decided (every input is a batch of one here).
    pub(super) fn pump(&mut self, n: usize) {
        let hub = &mut self.hubs[n];
        hub.flush_acks();
        while let Some(effect) = hub.poll_conn() {
            match effect {
                ToConn::Send(key, frame) => self.frames.push((n, key, text(&frame))),
                ToConn::Broadcast { room, frame, .. } => {
                    for &key in hub.subscribers(&room) {
                        self.frames.push((n, key, text(&frame)));
                    }
                }
                _ => {}
            }
        }
        while let Some((peers, msg)) = hub.poll_peer() {
            for p in (0..3).filter(|p| peers & (1 << p) != 0) {
                self.flight.push_back((n, p, msg.clone()));
            }
        }
        while let Some((req, r)) = hub.poll_reply() {
            self.replies.push((n, req, r));
        }
        while hub.poll_mail().is_some() {}
    }

    /// Deliver the first message in flight from `from` to `to`.
    pub(super) fn deliver(&mut self, from: usize, to: usize) {
        let i = self
            .flight
            .iter()
            .position(|(f, t, _)| (*f, *t) == (from, to))
            .expect("a message in flight");
        let (_, _, msg) = self.flight.remove(i).unwrap();
        let now = self.now;
        self.hubs[to].handle_peer(from, msg, super::Arrival::UNTIMED, now);
        self.pump(to);
    }

    /// Deliver everything in flight, except what `skip` says to drop.
    pub(super) fn deliver_except(&mut self, skip: impl Fn(usize, usize, &PeerMsg) -> bool) {
        while let Some((from, to, msg)) = self.flight.pop_front() {
            if self.down[from] || self.down[to] || skip(from, to, &msg) {
                continue;
            }
            let now = self.now;
            self.hubs[to].handle_peer(from, msg, super::Arrival::UNTIMED, now);
            self.pump(to);
        }
    }

    pub(super) fn deliver_all(&mut self) {
        self.deliver_except(|_, _, _| false);
    }

    /// Messages in flight from `from` to `to`.
    pub(super) fn in_flight(&self, from: usize, to: usize) -> usize {
        self.flight
            .iter()
            .filter(|(f, t, _)| (*f, *t) == (from, to))
            .count()
    }

    /// The link between `a` and `b` goes up or down (as session `session`).
    pub(super) fn link(&mut self, a: usize, b: usize, up: bool, session: u64) {
        let now = self.now;
        for (n, p) in [(a, b), (b, a)] {
            if self.down[n] {
                continue;
            }
            self.hubs[n].handle_link(p, up, session, now);
            self.pump(n);
        }
    }

    /// The link between `a` and `b` drops (what was in flight is lost) and comes
    /// back as session `session`, at 30 ms.
    pub(super) fn flap(&mut self, a: usize, b: usize, session: u64) {
        self.flight
            .retain(|(f, t, _)| !((*f, *t) == (a, b) || (*f, *t) == (b, a)));
        for (n, p) in [(a, b), (b, a)] {
            self.hubs[n].handle_link(p, false, session - 1, 30);
            self.hubs[n].handle_link(p, true, session, 30);
            self.pump(n);
        }
        self.deliver_all();
    }

    /// Node `n` dies: what it sent and what was sent to it is lost.
    pub(super) fn crash(&mut self, n: usize) {
        self.flight.retain(|(f, t, _)| *f != n && *t != n);
        self.down[n] = true;
        let now = self.now;
        for p in (0..3).filter(|&p| p != n) {
            self.hubs[p].handle_link(n, false, 99, now);
            self.pump(p);
        }
    }

    /// Time passes on every live node.
    pub(super) fn tick(&mut self, dt: u64) {
        self.now += dt;
        for n in 0..3 {
            if !self.down[n] {
                let now = self.now;
                self.hubs[n].handle_tick(now);
                self.pump(n);
            }
        }
    }

    /// Connection `key` of node `n` subscribes to `room` (as `user`), and
    /// everything that sets off is delivered.
    pub(super) fn subscribe(&mut self, n: usize, key: ConnKey, room: &str, user: Option<&str>) {
        let now = self.now;
        self.hubs[n].handle_subscribe(key, room, None, user.map(Into::into), now);
        self.pump(n);
        self.deliver_all();
    }

    /// Publish `{"i": i}` to `room` through node `n`'s API (idempotency key `key`,
    /// answered as request `req`); what it sends stays in flight.
    pub(super) fn publish(
        &mut self,
        n: usize,
        room: &str,
        i: u64,
        key: Option<&str>,
        req: Option<u64>,
    ) {
        let data = RawValue::from_string(format!("{{\"i\":{i}}}")).unwrap();
        let origin = Origin {
            from: None,
            idempotency_key: key.map(str::to_owned),
            client: false,
        };
        let now = self.now;
        self.hubs[n].handle_publish(room, &data, None, origin, req, super::Arrival::UNTIMED, now);
        self.pump(n);
    }

    /// The answer to request `req`, if one came.
    pub(super) fn reply(&self, req: u64) -> Option<&Reply> {
        self.replies.iter().find(|r| r.1 == req).map(|r| &r.2)
    }
}
