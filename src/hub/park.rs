//! Requests held while a handoff of their room may still come, and the node's
//! answer to a request about a room it gave away (see `hub::handoff` for when and
//! why). Held requests replay in arrival order per source; none waits past
//! `moved_grace_ms` (`mesh.dead_after_ms`).

use std::sync::Arc;

use super::Hub;
use super::id::{Arrival, ConnKey, Ms, Subscriber};
use super::msg::{Mail, PeerMsg};
use super::room::OwnedRoom;

/// An input held until a handoff may have come.
#[derive(Debug)]
pub(super) enum Parked {
    /// A subscription, publish or leave from a peer node.
    Peer {
        peer: usize,
        msg: PeerMsg,
        at: Arrival,
    },
    /// A subscription, publish or leave from this node, as the home worker gets it
    /// (`Mail::Subscribe`, `Publish`, `Leave`).
    Local(Mail),
}

/// The bit of an input's source in `parked_rooms`: a peer node, or this node.
pub(super) fn source_bit(from: Option<usize>) -> u64 {
    1 << from.unwrap_or(63).min(63)
}

impl Parked {
    pub(super) fn source(&self) -> Option<usize> {
        match self {
            Parked::Peer { peer, .. } => Some(*peer),
            _ => None,
        }
    }

    pub(super) fn room(&self) -> Option<&str> {
        match self {
            Parked::Peer { msg, .. } => match msg {
                PeerMsg::Subscribe { room, .. }
                | PeerMsg::Publish { room, .. }
                | PeerMsg::Leave { room, .. } => Some(room),
                _ => None,
            },
            Parked::Local(mail) => match mail {
                Mail::Subscribe { room, .. }
                | Mail::Leave { room, .. }
                | Mail::Publish { room, .. } => Some(room),
                _ => None,
            },
        }
    }
}

/// What to do with an input about a room this worker does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Handle it (start the room if it comes to that).
    Go,
    /// Hold it: a handoff may be on its way.
    Park,
    /// This worker gave the room to that node.
    Redirect(usize),
}

impl Hub {
    /// What to do with an input about `room` (from node `from`, or this node) that
    /// would start it here.
    pub(super) fn admit(&self, room: &str, from: Option<usize>, now: Ms) -> Admit {
        if self.repl.promoting(room) {
            // This node's copy may continue the room: wait for the election.
            return Admit::Park;
        }
        let waiting = self.handoffs.awaiting_any();
        if from.is_none()
            && !waiting
            && self.handoffs.parked.is_empty()
            && self.handoffs.handed.is_empty()
        {
            return Admit::Go; // the common case: nothing moves
        }
        let held = self.owned.get(room).map(OwnedRoom::is_from_log);
        if held == Some(false) || (held == Some(true) && !waiting) {
            return Admit::Go;
        }
        let forced = self.forced(now);
        let owner = self.topo.owner(room);
        if forced {
            // Waited long enough for a handoff. Where this node's view gives the
            // room to another live node (not the asker, whose view says this one),
            // send the request there rather than start a second copy here.
            return match from {
                Some(peer) if owner != self.node() && owner != peer => Admit::Redirect(owner),
                _ => Admit::Go,
            };
        }
        // A room handed to a node that has said it is leaving since comes back.
        let returning = self
            .handoffs
            .handed
            .get(room)
            .is_some_and(|&(to, _)| self.handoffs.leaving & (1 << to) != 0);
        if held.is_some() || returning || self.is_parked(room, from, now) {
            // (A copy read back from the log waits too: the node that owned the
            // room while this one was away may hand over a newer one.)
            return Admit::Park;
        }
        if let Some(peer) = from {
            if let Some(&(to, _)) = self.handoffs.handed.get(room)
                && self.topo.is_live(to)
            {
                return Admit::Redirect(to);
            }
            if owner != self.node() {
                // This node's view gives the room to another node: if it is leaving,
                // that one is where the room went; if not, the asker's view is ahead
                // of this one's and the event that moves the room here is on its way.
                return if self.topo.leaving() && owner != peer {
                    Admit::Redirect(owner)
                } else {
                    Admit::Park
                };
            }
        }
        if owner == self.node() && waiting {
            Admit::Park
        } else {
            Admit::Go
        }
    }

    /// Screen a request from node `peer` about a room this worker does not own:
    /// hold it while a handoff of the room may come, answer `Moved` to a
    /// subscription for a room given away, relay a publish to where it went.
    /// Returns what is to be handled now.
    pub(super) fn screen(
        &mut self,
        peer: usize,
        msg: PeerMsg,
        at: Arrival,
        now: Ms,
    ) -> Option<PeerMsg> {
        let admit = match &msg {
            PeerMsg::Subscribe { room, .. } => self.admit(room, Some(peer), now),
            PeerMsg::Publish { room, via, .. } => match self.admit(room, Some(peer), now) {
                // Relayed once already: not again (its asker is known only to the
                // relaying node); wait, and past the wait stamp it here.
                Admit::Redirect(_) if via.is_some() && self.forced(now) => Admit::Go,
                Admit::Redirect(_) if via.is_some() => Admit::Park,
                other => other,
            },
            // A withdrawal cancels the held subscriptions it withdraws, and waits
            // behind the rest.
            PeerMsg::Leave {
                room,
                who,
                node_left,
            } => {
                self.withdraw_peer(room, peer, *who, *node_left);
                if self.is_parked(room, Some(peer), now) {
                    Admit::Park
                } else {
                    Admit::Go
                }
            }
            _ => Admit::Go,
        };
        match (admit, msg) {
            (Admit::Go, msg) => Some(msg),
            (Admit::Park, msg) => {
                self.park(Parked::Peer { peer, msg, at }, now);
                None
            }
            // Given away: the asker subscribes again when its view agrees.
            (Admit::Redirect(_), PeerMsg::Subscribe { room, .. }) => {
                self.send_peer(peer, PeerMsg::Moved { room });
                None
            }
            // Relay it; the new owner answers the asker through this node.
            (Admit::Redirect(to), mut msg) => {
                if let PeerMsg::Publish { via, .. } = &mut msg {
                    *via = Some(peer as u16);
                }
                self.send_peer(to, msg);
                None
            }
        }
    }

    /// Whether the held input being replayed waited past its deadline.
    pub(super) fn forced(&self, now: Ms) -> bool {
        self.handoffs.replaying.is_some_and(|t| t <= now)
    }

    /// Whether held inputs are being replayed (several inputs in one call).
    pub(super) fn replaying_parked(&self) -> bool {
        self.handoffs.replaying.is_some()
    }

    /// Whether inputs about `room` are held (a later one waits behind them).
    pub(super) fn is_parked(&self, room: &str, from: Option<usize>, now: Ms) -> bool {
        self.handoffs.replaying.is_none_or(|t| t > now)
            && self
                .handoffs
                .parked_rooms
                .get(room)
                .is_some_and(|m| m & source_bit(from) != 0)
    }

    /// Hold `input` until a handoff may have come (replayed by [`Hub::release`]).
    pub(super) fn park(&mut self, input: Parked, now: Ms) {
        // As long as a handoff may still come: at least the grace, and until every
        // wait for a peer's handoffs has ended (at start, a peer whose link is slow
        // to come back may hold the room: `mesh.join_timeout_ms`).
        let until = self.handoffs.replaying.unwrap_or_else(|| {
            let waits = self.handoffs.wait_deadline().unwrap_or(0);
            (now + self.cfg.moved_grace_ms).max(waits)
        });
        if self.handoffs.replaying.is_none() {
            self.stats.parked += 1;
        }
        if let Some(room) = input.room() {
            let bit = source_bit(input.source());
            match self.handoffs.parked_rooms.get_mut(room) {
                Some(m) => *m |= bit,
                None => {
                    self.handoffs.parked_rooms.insert(Arc::from(room), bit);
                }
            }
        }
        self.handoffs.parked.push_back((until, input));
    }

    /// Forget the held inputs `gone` picks.
    pub(super) fn drop_parked(&mut self, gone: impl Fn(&Parked) -> bool) {
        let before = self.handoffs.parked.len();
        self.handoffs.parked.retain(|(_, p)| !gone(p));
        if self.handoffs.parked.len() == before {
            return;
        }
        self.handoffs.parked_rooms.clear();
        for (_, p) in &self.handoffs.parked {
            if let Some(room) = p.room() {
                *self
                    .handoffs
                    .parked_rooms
                    .entry(Arc::from(room))
                    .or_default() |= source_bit(p.source());
            }
        }
    }

    /// A withdrawal (`Leave`) from this node's worker `from` reached the home
    /// worker: held subscriptions of `room` it withdraws are dropped, not replayed.
    /// Replaying them after the withdrawal (a subscription can wait past the
    /// withdrawal's deadline: while a copy of the room is promoted, say) would
    /// subscribe a connection that is gone, and the owner would go on sending to a
    /// worker with nobody to hear it. `last`: the worker has no subscriber of the
    /// room left, so every held subscription from it is withdrawn.
    pub(super) fn withdraw_local(&mut self, room: &str, from: usize, conn: ConnKey, last: bool) {
        self.drop_parked(|p| {
            matches!(p, Parked::Local(Mail::Subscribe { room: r, from: f, conn: c, .. })
                if **r == *room && *f == from && (last || *c == conn))
        });
    }

    /// The same for a withdrawal from node `peer`: of subscriber `who`, or of every
    /// subscriber there (`node_left`).
    pub(super) fn withdraw_peer(
        &mut self,
        room: &str,
        peer: usize,
        who: Option<Subscriber>,
        node_left: bool,
    ) {
        self.drop_parked(|p| {
            matches!(p, Parked::Peer { peer: from, msg: PeerMsg::Subscribe { room: r, who: w, .. }, .. }
                if *from == peer && r == room && (node_left || who == Some(*w)))
        });
    }

    /// Replay every held input (each parks again if it still must wait, keeping its
    /// deadline; one past its deadline is handled).
    pub(super) fn release(&mut self, now: Ms) {
        if self.handoffs.parked.is_empty() || self.handoffs.replaying.is_some() {
            return;
        }
        let held = std::mem::take(&mut self.handoffs.parked);
        self.handoffs.parked_rooms.clear();
        for (until, input) in held {
            if until <= now {
                self.stats.park_timeouts += 1;
            }
            self.handoffs.replaying = Some(until);
            match input {
                Parked::Peer { peer, msg, at } => self.on_peer(peer, msg, at, now),
                Parked::Local(mail) => self.on_mail(mail, now),
            }
            self.handoffs.replaying = None;
        }
    }
}
