//! A room as its owner sees it: the sequence counter, the epoch, the replay ring and
//! the set of workers with local subscribers. Sans-IO.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::id::Ms;
use super::presence::Roster;
use super::replicate::Standby;
use super::ring::{EvictCounts, Miss, ReplayRing};
use crate::protocol::{self, Cursor, Epoch};

/// What a subscriber gets back from the owner.
#[derive(Debug)]
pub struct SubAck {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The latest seq at the moment of subscribing: live messages start after it.
    pub seq: u64,
    /// Whether the cursor was honoured (replay covers the gap exactly).
    pub recovered: bool,
    /// Why a cursor was not honoured (`None` when it was, or without a cursor).
    pub miss: Option<Miss>,
    /// Frames to replay, oldest first (empty unless `recovered`).
    pub replay: Vec<Bytes>,
    /// The subscription is refused: the user is over `auth.max_connections_per_user`
    /// across the cluster (only for personal rooms).
    pub refused: bool,
}

/// A set of small indexes (workers), as bits.
#[derive(Debug, Default, Clone)]
pub struct WorkerSet(Vec<u64>);

impl WorkerSet {
    /// Add or remove `w`.
    pub fn set(&mut self, w: usize, on: bool) {
        let (word, bit) = (w / 64, w % 64);
        if self.0.len() <= word {
            if !on {
                return;
            }
            self.0.resize(word + 1, 0);
        }
        if on {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    /// The members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

/// Owner-side state of one room.
#[derive(Debug)]
pub struct OwnedRoom {
    epoch: Epoch,
    seq: u64,
    ring: ReplayRing,
    /// Workers of this node with at least one local subscriber.
    interested: WorkerSet,
    /// Peer nodes with at least one subscriber, as a bit mask over the mesh's nodes.
    peers: u64,
    /// Identified subscribers, for presence.
    pub roster: Roster,
    /// Not forgotten before this time even when idle (a room read back from the
    /// log waits for its subscribers to come back).
    keep_until: Ms,
    /// Read back from the log and not used since: a handoff from the room's live
    /// owner replaces it (this copy is older).
    from_log: bool,
    /// Its standby and the messages held for it (`hub::replicate`).
    pub standby: Standby,
}

impl OwnedRoom {
    /// A new room with a fresh random epoch (its history starts now), keeping at
    /// most `replay_len` messages and `replay_bytes` bytes for `replay_age`.
    pub fn new(epoch: Epoch, replay_len: usize, replay_age: Ms, replay_bytes: usize) -> Self {
        Self {
            epoch,
            seq: 0,
            ring: ReplayRing::new(replay_len, replay_age, replay_bytes),
            interested: WorkerSet::default(),
            peers: 0,
            roster: Roster::default(),
            keep_until: 0,
            from_log: false,
            standby: Standby::default(),
        }
    }

    /// A room read back from the log at `(epoch, seq)`, its history bounded by
    /// `(len, age, bytes)` as a new room's, holding `messages` (`(seq, at, frame)`,
    /// consecutive and ending at `seq`), kept until `keep_until` even when idle.
    pub fn restored(
        (epoch, seq): (Epoch, u64),
        (len, age, bytes): (usize, Ms, usize),
        messages: impl Iterator<Item = (u64, Ms, Bytes)>,
        keep_until: Ms,
        evicted: &mut EvictCounts,
    ) -> Self {
        let mut room = Self::new(epoch, len, age, bytes);
        room.seq = seq;
        room.keep_until = keep_until;
        for (s, at, frame) in messages {
            room.ring.push(s, at, frame, evicted);
        }
        room
    }

    /// Stamp a message: next seq, one encoded frame, remembered for replay.
    pub fn publish(
        &mut self,
        room: &str,
        data: &RawValue,
        from: Option<&str>,
        key: Option<&str>,
        now: Ms,
        evicted: &mut EvictCounts,
    ) -> (u64, Bytes) {
        self.from_log = false;
        self.seq += 1;
        let frame = protocol::msg_frame(room, self.seq, from, key, data);
        self.ring.push(self.seq, now, frame.clone(), evicted);
        (self.seq, frame)
    }

    /// Answer a subscription, resuming after `since` when the history allows.
    pub fn subscribe(
        &mut self,
        since: Option<Cursor>,
        now: Ms,
        evicted: &mut EvictCounts,
    ) -> SubAck {
        self.from_log = false;
        // Messages held for the standby reach the subscriber when released.
        let latest = self.standby.released(self.seq);
        let replay = since.map(|c| {
            if c.epoch == self.epoch {
                self.ring.after(c.seq, latest, now, evicted)
            } else {
                Err(Miss::StaleEpoch)
            }
        });
        let (recovered, miss, replay) = match replay {
            None => (false, None, Vec::new()),
            Some(Ok(frames)) => (true, None, frames),
            Some(Err(m)) => (false, Some(m), Vec::new()),
        };
        SubAck {
            epoch: self.epoch,
            seq: latest,
            recovered,
            miss,
            replay,
            refused: false,
        }
    }

    /// Mark the room as read back from the log (see [`OwnedRoom::is_from_log`]).
    pub fn set_from_log(&mut self) {
        self.from_log = true;
    }

    /// Read back from the log and neither published to nor subscribed to since.
    pub fn is_from_log(&self) -> bool {
        self.from_log
    }

    /// The newest messages of its history that fit in `max_bytes`, oldest first:
    /// `(seq, stamped at, frame)` (for a handoff).
    pub fn newest(
        &mut self,
        max_bytes: usize,
        now: Ms,
        evicted: &mut EvictCounts,
    ) -> Vec<(u64, Ms, Bytes)> {
        self.ring.evict(now, evicted);
        self.ring.newest(max_bytes)
    }

    /// The newest messages up to `upto` whose frames fit in `max_bytes`, oldest
    /// first: `(seq, stamped at, frame)` (for a standby's seed).
    pub fn history_upto(&self, upto: u64, max_bytes: usize) -> Vec<(u64, Ms, Bytes)> {
        let mut all = self.ring.newest(usize::MAX);
        all.retain(|e| e.0 <= upto);
        let mut room = max_bytes;
        let keep = all
            .iter()
            .rev()
            .take_while(|e| {
                let fits = e.2.len() <= room;
                room = room.saturating_sub(e.2.len());
                fits
            })
            .count();
        all.split_off(all.len() - keep)
    }

    /// The current epoch and latest seq.
    pub fn position(&self) -> (Epoch, u64) {
        (self.epoch, self.seq)
    }

    /// Mark worker `w` as having (or no longer having) local subscribers.
    pub fn set_interest(&mut self, w: usize, on: bool) {
        self.interested.set(w, on);
    }

    /// Workers with local subscribers.
    pub fn interested(&self) -> impl Iterator<Item = usize> + '_ {
        self.interested.iter()
    }

    /// Mark peer node `n` as having (or no longer having) subscribers.
    pub fn set_peer(&mut self, n: usize, on: bool) {
        if on {
            self.peers |= 1 << n;
        } else {
            self.peers &= !(1 << n);
        }
    }

    /// Peer nodes with subscribers, as a bit mask.
    pub fn peer_mask(&self) -> u64 {
        self.peers
    }

    /// Peer nodes with subscribers.
    pub fn peers(&self) -> impl Iterator<Item = usize> + use<> {
        let mask = self.peers;
        (0..64).filter(move |n| mask & (1 << n) != 0)
    }

    /// Whether the room can be forgotten: nobody listens and no history is kept.
    /// Forgetting it loses its history, so the next incarnation gets a new epoch.
    pub fn is_idle(&mut self, now: Ms, evicted: &mut EvictCounts) -> bool {
        self.ring.evict(now, evicted);
        now >= self.keep_until
            && self.ring.is_empty()
            && self.interested.is_empty()
            && self.peers == 0
            && self.roster.is_empty()
            && self.standby.held() == 0
    }

    /// The room's history after `since` for the app (`GET /v1/history`): at most
    /// `limit` messages and about `max_bytes` of them, as JSON.
    pub fn history_json(
        &mut self,
        room: &str,
        since: u64,
        limit: usize,
        max_bytes: usize,
        now: Ms,
        evicted: &mut EvictCounts,
    ) -> String {
        self.ring.evict(now, evicted);
        let latest = self.standby.released(self.seq);
        protocol::history_json(
            room,
            Some((self.epoch, latest)),
            self.ring.oldest_seq(),
            self.ring
                .held_after(since)
                .take_while(|(seq, _)| *seq <= latest)
                .map(|(_, frame)| frame),
            limit,
            max_bytes,
        )
    }

    /// Bytes of replay history held.
    pub fn history_bytes(&self) -> usize {
        self.ring.bytes()
    }

    /// When the oldest message of its history was published.
    pub fn oldest_at(&self) -> Option<Ms> {
        self.ring.oldest_at()
    }

    /// Drop the oldest message of its history (the node is over its budget);
    /// returns its bytes.
    pub fn evict_oldest(&mut self) -> usize {
        self.ring.pop_oldest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Box<RawValue> {
        RawValue::from_string("{}".into()).unwrap()
    }

    #[test]
    fn resume_same_epoch_inside_window_replays_gap() {
        let t: Ms = 1_000;
        let mut r = OwnedRoom::new(Epoch(7), 16, 60_000, 1 << 20);
        for _ in 0..5 {
            r.publish("x", &data(), None, None, t, &mut EvictCounts::default());
        }
        let ack = r.subscribe(
            Some(Cursor {
                epoch: Epoch(7),
                seq: 3,
            }),
            t,
            &mut EvictCounts::default(),
        );
        assert!(ack.recovered);
        assert_eq!((ack.seq, ack.replay.len()), (5, 2));
        let fresh = r.subscribe(None, t, &mut EvictCounts::default());
        assert!(!fresh.recovered && fresh.replay.is_empty() && fresh.seq == 5);
    }

    #[test]
    fn stale_epoch_or_gap_outside_window_is_not_recovered() {
        let t: Ms = 1_000;
        let mut r = OwnedRoom::new(Epoch(7), 2, 60_000, 1 << 20);
        for _ in 0..5 {
            r.publish("x", &data(), None, None, t, &mut EvictCounts::default());
        }
        assert!(
            !r.subscribe(
                Some(Cursor {
                    epoch: Epoch(8),
                    seq: 5
                }),
                t,
                &mut EvictCounts::default()
            )
            .recovered
        );
        assert!(
            !r.subscribe(
                Some(Cursor {
                    epoch: Epoch(7),
                    seq: 1
                }),
                t,
                &mut EvictCounts::default()
            )
            .recovered
        );
        assert!(
            r.subscribe(
                Some(Cursor {
                    epoch: Epoch(7),
                    seq: 3
                }),
                t,
                &mut EvictCounts::default()
            )
            .recovered
        );
    }

    #[test]
    fn interest_bitset() {
        let mut r = OwnedRoom::new(Epoch(1), 0, 0, 0);
        r.set_interest(0, true);
        r.set_interest(70, true);
        assert_eq!(r.interested().collect::<Vec<_>>(), vec![0, 70]);
        r.set_interest(0, false);
        r.set_interest(70, false);
        assert!(r.is_idle(1_000, &mut EvictCounts::default()));
    }
}
