//! The simulated world at rest: every link healed, every node up, every queue
//! empty and time past the leases and the replay window; then the invariants that
//! hold only there (see the module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::client::{At, Ledger, Sub, record};
use super::world::{TICK, World};
use crate::hub::ConnKey;
use crate::hub::presence::Member;
use crate::hub::rendezvous;
use crate::hub::topology::home_worker;

impl World {
    /// Heal everything, let every queue empty and time pass, then check the
    /// invariants that hold at rest.
    pub fn settle_and_check(&mut self) -> Result<(), String> {
        // A crash is recovered from (its rooms' standbys took over) before the
        // node starts again.
        for _ in 0..100 {
            while self.crashes && self.deliver_one() {}
            if !self.crashes || !self.electing() {
                break;
            }
            self.advance(TICK);
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].stop_at.is_some() {
                // A drain runs its course: the node handles what reaches it first.
                while self.planned && self.deliver_one() {}
                self.stop(n);
            }
            self.restart(n);
        }
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                self.heal(a, b);
            }
        }
        let closing: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].closing)
            .collect();
        for c in closing {
            self.disconnect(c);
        }
        // A request held for a handoff (up to the grace, or the join wait of a node
        // that just started) is handled that much later.
        let wait = self.cfg.replay_ms.max(self.cfg.presence_lease_ms)
            + 2 * TICK
            + self.cfg.presence_debounce_ms
            + self.cfg.moved_grace_ms.max(self.cfg.join_ms);
        let until = self.now + wait;
        loop {
            while self.deliver_one() {
                if let Some(v) = self.violation.take() {
                    return Err(v);
                }
            }
            // Server closes (the per-user cap) end their connections.
            let closing: Vec<usize> = (0..self.clients.len())
                .filter(|&c| self.clients[c].closing)
                .collect();
            for c in closing {
                self.disconnect(c);
            }
            if self.now >= until && self.quiet() {
                break;
            }
            self.advance(TICK);
        }
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        self.check_at_rest()?;
        self.check_rooms_query()
    }

    /// At rest, a rooms query from any worker counts every node's subscribers.
    fn check_rooms_query(&mut self) -> Result<(), String> {
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for client in &self.clients {
            if client.at.is_some() {
                for room in client.rooms.keys() {
                    *expected.entry(room.clone()).or_default() += 1;
                }
            }
        }
        let (n, w) = (
            self.rng.usize(..self.nodes.len()),
            self.rng.usize(..self.workers),
        );
        self.next_req += 1;
        self.rooms_answer = None;
        let query = crate::hub::Query::Rooms {
            after: String::new(),
            limit: 1000,
        };
        self.nodes[n].hubs[w].handle_query(query, self.next_req, 10_000, self.now);
        self.drain(n, w);
        while self.deliver_one() {}
        let Some((rooms, missing)) = self.rooms_answer.take() else {
            return Err("a rooms query at rest was not answered".into());
        };
        let got: BTreeMap<String, u64> = rooms.into_iter().collect();
        if got != expected || !missing.is_empty() {
            return Err(format!(
                "at rest, the rooms query says {got:?} (missing nodes {missing:?}), the clients {expected:?}"
            ));
        }
        Ok(())
    }

    /// Whether a worker runs an election for a room's next term.
    pub(super) fn electing(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .any(|n| n.hubs.iter().any(|h| h.elections() > 0))
    }

    pub(super) fn quiet(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .all(|n| n.hubs.iter().all(|h| h.acks_owed() == 0))
            && self.mail.values().all(VecDeque::is_empty)
            && self.inbox.values().all(VecDeque::is_empty)
            && self
                .links
                .values()
                .all(|l| l.flight.iter().all(VecDeque::is_empty))
    }

    fn check_at_rest(&self) -> Result<(), String> {
        let nodes = self.nodes.len();
        let all = (1u64 << nodes) - 1;
        // Nothing waits for a handoff at rest.
        for (n, node) in self.nodes.iter().enumerate() {
            for (w, hub) in node.hubs.iter().enumerate() {
                if hub.parked() > 0 {
                    return Err(format!(
                        "node {n} worker {w} still holds {} requests at rest",
                        hub.parked()
                    ));
                }
            }
        }
        // Every owned room keeps its copy on its standby, up to date; every copy
        // is a standby's for a room its owner has (none is left behind).
        let replicated = self.cfg.replicate && nodes >= 3;
        for (n, node) in self.nodes.iter().enumerate() {
            for (w, hub) in node.hubs.iter().enumerate() {
                for (room, r) in hub.owned_rooms() {
                    if r.standby.held() > 0 {
                        return Err(format!(
                            "node {n} owns {room} with {} messages held at rest",
                            r.standby.held()
                        ));
                    }
                    if !replicated {
                        continue;
                    }
                    let want = rendezvous::owner(room, &self.seeds, all & !(1 << n));
                    let (epoch, seq) = r.position();
                    let copy = self.nodes[want].hubs[home_worker(room, self.workers)].copy_of(room);
                    if r.standby.node() != Some(want)
                        || copy != Some((n, epoch.0, r.standby.term(), seq))
                    {
                        return Err(format!(
                            "node {n} owns {room} at ({:x}, {seq}) term {} with standby {:?}; node {want} should keep its copy and has {copy:?}",
                            epoch.0,
                            r.standby.term(),
                            r.standby.node()
                        ));
                    }
                }
                for (room, (owner, epoch, term, _)) in hub.copies_held() {
                    let live = self.nodes[owner].hubs[home_worker(room, self.workers)]
                        .owned_room(room)
                        .is_some_and(|r| {
                            r.position().0.0 == epoch
                                && r.standby.term() == term
                                && r.standby.node() == Some(n)
                        });
                    if !live {
                        return Err(format!(
                            "node {n} worker {w} keeps a copy of {room} for node {owner} (epoch {epoch:x} term {term}) that no owner stands behind"
                        ));
                    }
                }
            }
        }
        // Who is subscribed where.
        let mut subs: BTreeMap<&str, Vec<(usize, At, Sub)>> = BTreeMap::new();
        for (c, client) in self.clients.iter().enumerate() {
            let Some(at) = client.at else { continue };
            for (room, sub) in &client.rooms {
                subs.entry(room).or_default().push((c, at, *sub));
            }
        }
        for (&room, list) in &subs {
            let owner_node = rendezvous::owner(room, &self.seeds, all);
            let home = home_worker(room, self.workers);
            let owners: Vec<(usize, usize)> = (0..nodes)
                .flat_map(|n| (0..self.workers).map(move |w| (n, w)))
                .filter(|&(n, w)| self.nodes[n].hubs[w].owned_room(room).is_some())
                .collect();
            if owners != [(owner_node, home)] {
                return Err(format!(
                    "{room} is owned by {owners:?}, not by its rendezvous owner ({owner_node}, {home})"
                ));
            }
            let r = self.nodes[owner_node].hubs[home]
                .owned_room(room)
                .expect("checked above");
            let (epoch, seq) = r.position();
            for &(c, at, sub) in list {
                if sub
                    != (Sub::Live {
                        epoch: epoch.0,
                        seq,
                    })
                {
                    return Err(format!(
                        "client {c} at {at:?} is at {sub:?} in {room}, the owner at ({:x}, {seq})",
                        epoch.0
                    ));
                }
            }
            let workers: BTreeSet<usize> = list
                .iter()
                .filter(|(_, at, _)| at.node == owner_node)
                .map(|(_, at, _)| at.worker)
                .collect();
            let interested: BTreeSet<usize> = r.interested().collect();
            if workers != interested {
                return Err(format!(
                    "{room}: the owner registers workers {interested:?}, subscribers are on {workers:?}"
                ));
            }
            let peers: u64 = list
                .iter()
                .filter(|(_, at, _)| at.node != owner_node)
                .fold(0, |m, (_, at, _)| m | 1 << at.node);
            if peers != r.peer_mask() {
                return Err(format!(
                    "{room}: the owner forwards to nodes {:b}, subscribers are on {peers:b}",
                    r.peer_mask()
                ));
            }
            for n in (0..nodes).filter(|&n| n != owner_node) {
                let has = peers & (1 << n) != 0;
                let mirror = self.nodes[n].hubs[home]
                    .mirrored_rooms()
                    .find(|(m, _)| *m == room)
                    .map(|(_, o)| o);
                match (has, mirror) {
                    (true, Some(o)) if o == owner_node => {}
                    (false, None) => {}
                    _ => {
                        return Err(format!(
                            "{room}: node {n} (subscribers: {has}) mirrors it from {mirror:?}, the owner is {owner_node}"
                        ));
                    }
                }
            }
            let members: BTreeSet<(u16, u16, u64, String)> = r
                .roster
                .members()
                .map(|(m, u)| (m.node, m.worker, m.conn, u.to_owned()))
                .collect();
            let expected: BTreeSet<(u16, u16, u64, String)> = list
                .iter()
                .filter_map(|(c, at, _)| {
                    let user = self.clients[*c].user.clone()?;
                    let m = Member {
                        node: at.node as u16,
                        worker: at.worker as u16,
                        conn: at.key.pack(),
                    };
                    Some((m.node, m.worker, m.conn, user))
                })
                .collect();
            if members != expected {
                return Err(format!(
                    "{room}: the roster is {members:?}, the identified subscribers {expected:?}"
                ));
            }
        }
        // Nothing outlives its reason.
        for n in 0..nodes {
            for w in 0..self.workers {
                let hub = &self.nodes[n].hubs[w];
                for (room, live, pending) in hub.local_rooms() {
                    let here: BTreeSet<ConnKey> = subs
                        .get(room)
                        .into_iter()
                        .flatten()
                        .filter(|(_, at, _)| at.node == n && at.worker == w)
                        .map(|(_, at, _)| at.key)
                        .collect();
                    let indexed: BTreeSet<ConnKey> = live.iter().copied().collect();
                    let pending: Vec<ConnKey> = pending.iter().map(|(k, _)| *k).collect();
                    if !pending.is_empty() || indexed != here {
                        return Err(format!(
                            "worker ({n}, {w}) indexes {room} as live {indexed:?} pending {pending:?}, its subscribers are {here:?}"
                        ));
                    }
                }
                for (room, _) in hub.owned_rooms() {
                    if !subs.contains_key(room) {
                        return Err(format!(
                            "worker ({n}, {w}) still owns {room}, with no subscriber and its history past the window"
                        ));
                    }
                }
                for (room, _) in hub.mirrored_rooms() {
                    let here = subs
                        .get(room)
                        .is_some_and(|l| l.iter().any(|(_, at, _)| at.node == n));
                    if !here {
                        return Err(format!("node {n} mirrors {room} with no subscriber there"));
                    }
                }
                let identified: BTreeSet<ConnKey> = self
                    .by_conn
                    .iter()
                    .filter(|(at, c)| {
                        at.node == n
                            && at.worker == w
                            && self.clients[**c].user.is_some()
                            && !self.clients[**c].rooms.is_empty()
                    })
                    .map(|(at, _)| at.key)
                    .collect();
                if hub.users_len() != identified.len() {
                    return Err(format!(
                        "worker ({n}, {w}) remembers {} users for {} identified subscribers",
                        hub.users_len(),
                        identified.len()
                    ));
                }
                if !hub.is_quiet() {
                    return Err(format!("worker ({n}, {w}) has effects nobody polled"));
                }
            }
        }
        Ok(())
    }
}

/// A history answer agrees with every stamp seen (the same message at each seq,
/// from its publisher) and lists consecutive seqs.
pub(super) fn check_history(ledger: &mut Ledger, room: &str, json: &str) -> Result<(), String> {
    let h: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let Some(epoch) = h["epoch"].as_str() else {
        return match h["messages"].as_array() {
            Some(m) if m.is_empty() => Ok(()),
            _ => Err("messages without an epoch".into()),
        };
    };
    let epoch = u64::from_str_radix(epoch, 16).map_err(|e| e.to_string())?;
    let mut last = None;
    for m in h["messages"].as_array().ok_or("no messages array")? {
        let seq = m["seq"].as_u64().ok_or("a message without seq")?;
        if last.is_some_and(|l: u64| seq != l + 1) {
            return Err(format!("seq {seq} after {last:?}"));
        }
        last = Some(seq);
        let data = m["data"]["id"]
            .as_u64()
            .ok_or("a message without data.id")?;
        record(ledger, room, epoch, seq, data)?;
        if let Some(by) = ledger.from.get(&data)
            && m["from"].as_str() != by.as_deref()
        {
            return Err(format!(
                "message {data} from {:?}, published by {by:?}",
                m["from"]
            ));
        }
    }
    Ok(())
}
