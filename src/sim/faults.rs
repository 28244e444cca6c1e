//! Faults the simulated world suffers: links cut and healed, slow links that drop
//! room messages as the worker does for a peer over half its queue bound, node
//! crashes (with or without a history log) and restarts.

use super::world::{FromPeer, World};
use crate::hub::PeerMsg;

impl World {
    pub(super) fn fault(&mut self) {
        let n = self.nodes.len();
        if n < 2 {
            return;
        }
        let a = self.rng.usize(..n);
        let b = (a + self.rng.usize(1..n)) % n;
        match self.rng.u32(0..13) {
            0..4 => self.cut(a.min(b), a.max(b)),
            4..7 => self.heal(a.min(b), a.max(b)),
            7 => self.crash(a),
            8..10 => self.lag(a, b),
            10 => self.leave(a),
            _ => self.restart(a),
        }
    }

    /// A planned move, one node at a time and each done before the next begins
    /// (nothing in flight): a node that is down starts again with every link back;
    /// else one drains. (Moves that overlap, a drain while another node is still
    /// taking its rooms back, can cost a room in transit its epoch: not checked.)
    pub(super) fn planned_move(&mut self) {
        // Whatever is in flight arrives first (clients keep the queues busy).
        while self.deliver_one() {}
        let n = self.nodes.len();
        if let Some(down) = (0..n).find(|&i| !self.nodes[i].up) {
            self.restart(down);
            for p in (0..n).filter(|&p| p != down) {
                self.heal(down.min(p), down.max(p));
            }
            return;
        }
        if (0..n).any(|i| self.nodes[i].stop_at.is_some()) {
            return;
        }
        let a = self.rng.usize(..n);
        self.leave(a);
    }

    /// A crash, one node at a time and each recovered from before the next: a
    /// node that is down starts again with every link back once everything in
    /// flight arrived and the standbys took over; a cluster that has recovered
    /// (nothing in flight, no election) is *armed*, and the next call crashes a
    /// node with whatever the clients sent since still in flight.
    pub(super) fn one_crash(&mut self) {
        let n = self.nodes.len();
        if self.crash_armed {
            self.crash_armed = false;
            let a = self.rng.usize(..n);
            self.crash(a);
            return;
        }
        // Whatever is in flight arrives first (clients keep the queues busy).
        while self.deliver_one() {}
        if self.electing() {
            // Recovered means the standbys took over: let their elections end.
            self.advance(super::world::TICK);
            return;
        }
        if let Some(down) = (0..n).find(|&i| !self.nodes[i].up) {
            self.restart(down);
            for p in (0..n).filter(|&p| p != down) {
                self.heal(down.min(p), down.max(p));
            }
            return;
        }
        self.crash_armed = true;
    }

    /// A slow link: the next few room messages from one node to another are
    /// dropped as its worker drops them when the peer's queue is over half its
    /// bound (see [`World::send_peer`]).
    fn lag(&mut self, a: usize, b: usize) {
        let n = self.rng.u32(1..20);
        trace!(self, "link {a}->{b} slow for {n} room messages");
        *self.slow.entry((a, b)).or_default() += n;
    }

    /// Put a peer message on the link from `n` to `p`, as the worker's outbox does:
    /// while the link is slow a room message is dropped, the first of each room told
    /// with `Lagged`, until one of the room's messages or subscription answers gets
    /// through.
    pub(super) fn send_peer(&mut self, n: usize, p: usize, msg: &PeerMsg) {
        let (lo, hi) = (n.min(p), n.max(p));
        let out = match msg {
            PeerMsg::Deliver { room, seq, .. } if *seq > 0 => {
                let slow = self.slow.get_mut(&(n, p)).filter(|left| **left > 0);
                match slow {
                    Some(left) => {
                        *left -= 1;
                        if self.lagging.insert((n, p, room.clone())) {
                            Some(PeerMsg::Lagged { room: room.clone() })
                        } else {
                            None
                        }
                    }
                    None => {
                        self.lagging.remove(&(n, p, room.clone()));
                        Some(msg.clone())
                    }
                }
            }
            PeerMsg::SubAck { room, .. } => {
                self.lagging.remove(&(n, p, room.clone()));
                Some(msg.clone())
            }
            _ => Some(msg.clone()),
        };
        if let (Some(out), Some(link)) = (out, self.links.get_mut(&(lo, hi))) {
            link.flight[usize::from(n > p)].push_back(out);
        }
    }

    /// Cut the link `(a, b)`: each direction delivers a random prefix of what was in
    /// flight; both sides hear the link went down.
    fn cut(&mut self, a: usize, b: usize) {
        let Some(link) = self.links.get_mut(&(a, b)) else {
            return;
        };
        if !link.connected {
            return;
        }
        trace!(self, "cut link {a}-{b}");
        let link = self.links.get_mut(&(a, b)).expect("checked");
        link.connected = false;
        let mut flights = std::mem::take(&mut link.flight);
        for (d, flight) in flights.iter_mut().enumerate() {
            let keep = self.rng.usize(..=flight.len());
            let (from, to) = if d == 0 { (a, b) } else { (b, a) };
            for msg in flight.drain(..).take(keep) {
                if self.nodes[to].up {
                    self.arrive(from, to, msg);
                }
            }
        }
        let session = self.links[&(a, b)].session;
        for (node, peer) in [(a, b), (b, a)] {
            if self.nodes[node].up {
                for w in 0..self.workers {
                    self.inbox
                        .entry((node, peer, w))
                        .or_default()
                        .push_back(FromPeer::Link(false, session));
                }
            }
        }
    }

    /// Bring the link `(a, b)` up (when both nodes are).
    pub(super) fn heal(&mut self, a: usize, b: usize) {
        if !(self.nodes[a].up && self.nodes[b].up) {
            return;
        }
        let Some(link) = self.links.get_mut(&(a, b)) else {
            return;
        };
        if link.connected {
            return;
        }
        link.connected = true;
        link.session += 1;
        let session = link.session;
        trace!(self, "heal link {a}-{b} (session {session})");
        for (node, peer) in [(a, b), (b, a)] {
            for w in 0..self.workers {
                self.inbox
                    .entry((node, peer, w))
                    .or_default()
                    .push_back(FromPeer::Link(true, session));
            }
        }
    }

    /// Node `n` drains (SIGTERM): it hands its rooms to their next owners and its
    /// subscribers follow them; it stops a little later.
    pub(super) fn leave(&mut self, n: usize) {
        if !self.nodes[n].up || self.nodes[n].stop_at.is_some() {
            return;
        }
        trace!(self, "node {n} drains");
        let now = self.now;
        for w in 0..self.workers {
            self.nodes[n].hubs[w].handle_drain(now);
            self.drain(n, w);
        }
        self.nodes[n].stop_at = Some(now + self.rng.u64(50..1_500));
    }

    /// A draining node stops: everything it sent arrives (its links close after
    /// the last byte), then it is gone as after a crash (its log stays).
    pub(super) fn stop(&mut self, n: usize) {
        trace!(self, "node {n} stops");
        self.nodes[n].stop_at = None;
        for peer in 0..self.nodes.len() {
            let (lo, hi) = (n.min(peer), n.max(peer));
            let d = usize::from(n > peer);
            let sent: Vec<_> = match self.links.get_mut(&(lo, hi)) {
                Some(link) => link.flight[d].drain(..).collect(),
                None => continue,
            };
            for msg in sent {
                if self.nodes[peer].up {
                    self.arrive(n, peer, msg);
                }
            }
        }
        self.crash(n);
    }

    /// Node `n` dies: everything it held is lost; its clients are disconnected (they
    /// keep their cursors); its peers lose their links to it.
    fn crash(&mut self, n: usize) {
        if !self.nodes[n].up {
            return;
        }
        trace!(self, "crash node {n}");
        self.nodes[n].stop_at = None;
        for peer in 0..self.nodes.len() {
            if peer != n {
                self.cut(n.min(peer), n.max(peer));
            }
        }
        self.nodes[n].up = false;
        self.nodes[n].hubs.clear();
        self.mail.retain(|&(node, _, _), _| node != n);
        self.inbox.retain(|&(node, _, _), _| node != n);
        let gone: Vec<usize> = self
            .by_conn
            .iter()
            .filter(|(at, _)| at.node == n)
            .map(|(_, &c)| c)
            .collect();
        for c in gone {
            self.disconnect(c);
        }
        self.asked.retain(|&(node, _, _), _| node != n);
    }

    /// Node `n` comes back with nothing; links come up with `heal`.
    pub(super) fn restart(&mut self, n: usize) {
        if self.nodes[n].up {
            return;
        }
        trace!(self, "restart node {n}");
        self.nodes[n].hubs = self.fresh_hubs(n);
        self.nodes[n].up = true;
        if self.cfg.durable {
            let now = self.now;
            let rooms = self.nodes[n].disk.recover(
                now,
                (self.cfg.replay_ms, self.cfg.idempotency_window_ms),
                self.workers,
            );
            for (w, rooms) in rooms.into_iter().enumerate() {
                trace!(self, "node {n} worker {w} restores {rooms:?}");
                self.nodes[n].hubs[w].restore(rooms, now);
            }
        }
        let now = self.now;
        for hub in &mut self.nodes[n].hubs {
            hub.start(now);
        }
    }
}
