//! A room's replay ring: the last N messages, none older than T. Sans-IO: the
//! caller passes `now`.

use std::collections::VecDeque;

use bytes::Bytes;

use super::id::Ms;

/// One remembered message: its seq, when it was published, and its encoded frame.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    at: Ms,
    frame: Bytes,
}

/// Why a resume could not be served from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The cursor's epoch is not the room's: its history was lost since.
    StaleEpoch,
    /// The messages after the cursor are no longer kept (count, age or byte bound).
    OutOfWindow,
    /// The cursor is ahead of the room's latest seq.
    Future,
    /// The replay is too large to send in one answer (across the mesh).
    TooLarge,
}

impl Miss {
    /// Every reason, in label order.
    pub const ALL: [Miss; 4] = [
        Miss::StaleEpoch,
        Miss::OutOfWindow,
        Miss::Future,
        Miss::TooLarge,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Miss::StaleEpoch => "stale_epoch",
            Miss::OutOfWindow => "out_of_window",
            Miss::Future => "future_cursor",
            Miss::TooLarge => "too_large",
        }
    }
}

/// Why messages left a ring before anyone asked for them (counted per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Evicted {
    /// Over `rooms.replay_messages`.
    Count,
    /// Older than `rooms.replay_seconds`.
    Age,
    /// Over `rooms.replay_bytes`.
    RoomBytes,
    /// The node was over `rooms.history_budget_bytes`: the oldest history went first.
    NodeBudget,
}

impl Evicted {
    /// Every reason, in label order.
    pub const ALL: [Evicted; 4] = [
        Evicted::Count,
        Evicted::Age,
        Evicted::RoomBytes,
        Evicted::NodeBudget,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Evicted::Count => "count",
            Evicted::Age => "age",
            Evicted::RoomBytes => "room_bytes",
            Evicted::NodeBudget => "node_budget",
        }
    }
}

/// Messages evicted by each reason (index: `Evicted as usize`).
pub type EvictCounts = [u64; Evicted::ALL.len()];

/// Bounded by count, age and bytes. Seqs in the ring are consecutive.
#[derive(Debug)]
pub struct ReplayRing {
    entries: VecDeque<Entry>,
    max_len: usize,
    max_age: Ms,
    max_bytes: usize,
    /// Bytes of the frames held.
    bytes: usize,
}

impl ReplayRing {
    /// An empty ring holding at most `max_len` messages of at most `max_bytes` in
    /// all, for at most `max_age` milliseconds.
    pub fn new(max_len: usize, max_age: Ms, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max_len,
            max_age,
            max_bytes,
            bytes: 0,
        }
    }

    /// Remember message `seq` (one more than the previous one pushed), evicting the
    /// oldest messages over the count or byte bound (counted in `evicted`). A
    /// message larger than the byte bound is not kept at all.
    pub fn push(&mut self, seq: u64, now: Ms, frame: Bytes, evicted: &mut EvictCounts) {
        if self.max_len == 0 {
            return;
        }
        debug_assert!(self.entries.back().is_none_or(|e| e.seq + 1 == seq));
        if frame.len() > self.max_bytes {
            // Keeping it would break the run of consecutive seqs after an older one:
            // the whole history goes, which is what a resume across it needs anyway.
            evicted[Evicted::RoomBytes as usize] += self.entries.len() as u64 + 1;
            self.entries.clear();
            self.bytes = 0;
            return;
        }
        while self.entries.len() >= self.max_len {
            self.pop_oldest();
            evicted[Evicted::Count as usize] += 1;
        }
        while self.bytes + frame.len() > self.max_bytes {
            self.pop_oldest();
            evicted[Evicted::RoomBytes as usize] += 1;
        }
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            seq,
            at: now,
            frame,
        });
    }

    /// Forget messages older than the age bound.
    pub fn evict(&mut self, now: Ms, evicted: &mut EvictCounts) {
        while let Some(front) = self.entries.front() {
            if now.saturating_sub(front.at) <= self.max_age {
                break;
            }
            self.pop_oldest();
            evicted[Evicted::Age as usize] += 1;
        }
    }

    /// Drop the oldest message; returns its bytes (0 when empty).
    pub fn pop_oldest(&mut self) -> usize {
        match self.entries.pop_front() {
            Some(e) => {
                self.bytes -= e.frame.len();
                e.frame.len()
            }
            None => 0,
        }
    }

    /// When the oldest message still held was published.
    pub fn oldest_at(&self) -> Option<Ms> {
        self.entries.front().map(|e| e.at)
    }

    /// The frames after `since` up to `latest`, oldest first, if the ring still
    /// holds every one of them; otherwise why not.
    pub fn after(
        &mut self,
        since: u64,
        latest: u64,
        now: Ms,
        evicted: &mut EvictCounts,
    ) -> Result<Vec<Bytes>, Miss> {
        if since > latest {
            return Err(Miss::Future);
        }
        if since == latest {
            return Ok(Vec::new());
        }
        self.evict(now, evicted);
        let first = self.entries.front().ok_or(Miss::OutOfWindow)?.seq;
        if since + 1 < first {
            return Err(Miss::OutOfWindow);
        }
        let skip = usize::try_from(since + 1 - first).map_err(|_| Miss::OutOfWindow)?;
        Ok(self
            .entries
            .iter()
            .skip(skip)
            .take_while(|e| e.seq <= latest)
            .map(|e| e.frame.clone())
            .collect())
    }

    /// The messages held after `since`, oldest first, with their seqs (as many as
    /// are still held: the caller compares the first seq with `since + 1`).
    pub fn held_after(&self, since: u64) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        let skip = match self.entries.front() {
            Some(first) if since >= first.seq => (since + 1 - first.seq) as usize,
            _ => 0,
        };
        self.entries.iter().skip(skip).map(|e| (e.seq, &e.frame))
    }

    /// The newest messages held whose frames fit in `max_bytes` together, oldest
    /// first: `(seq, stamped at, frame)`.
    pub fn newest(&self, max_bytes: usize) -> Vec<(u64, Ms, Bytes)> {
        let mut room = max_bytes;
        let mut out: Vec<(u64, Ms, Bytes)> = self
            .entries
            .iter()
            .rev()
            .take_while(|e| {
                let fits = e.frame.len() <= room;
                room = room.saturating_sub(e.frame.len());
                fits
            })
            .map(|e| (e.seq, e.at, e.frame.clone()))
            .collect();
        out.reverse();
        out
    }

    /// The seq of the oldest message held.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held by the frames in the ring.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(n: u64, cap: usize, t0: Ms) -> ReplayRing {
        let mut r = ReplayRing::new(cap, 10_000, 1 << 20);
        for s in 1..=n {
            r.push(
                s,
                t0,
                Bytes::from(s.to_string()),
                &mut EvictCounts::default(),
            );
        }
        r
    }

    #[test]
    fn replays_exactly_the_missing_messages() {
        let t0: Ms = 1_000;
        let mut r = ring_with(10, 4, t0); // holds 7..=10
        let e = &mut EvictCounts::default();
        let got = r.after(8, 10, t0, e).unwrap();
        assert_eq!(got, vec![Bytes::from("9"), Bytes::from("10")]);
        assert_eq!(r.after(6, 10, t0, e).unwrap().len(), 4);
        assert_eq!(r.after(10, 10, t0, e).unwrap().len(), 0);
        assert_eq!(r.after(5, 10, t0, e), Err(Miss::OutOfWindow), "6 is gone");
        assert_eq!(r.after(11, 10, t0, e), Err(Miss::Future));
    }

    #[test]
    fn age_bound_forgets_old_messages() {
        let t0: Ms = 1_000;
        let mut r = ring_with(3, 10, t0);
        let e = &mut EvictCounts::default();
        assert!(r.after(0, 3, t0 + 5_000, e).is_ok());
        assert!(r.after(0, 3, t0 + 11_000, e).is_err());
        assert!(r.is_empty() && r.bytes() == 0);
        assert_eq!(e[Evicted::Age as usize], 3);
    }

    #[test]
    fn zero_capacity_never_recovers_a_gap() {
        let t0: Ms = 1_000;
        let mut r = ring_with(3, 0, t0);
        let e = &mut EvictCounts::default();
        assert!(r.after(2, 3, t0, e).is_err());
        assert_eq!(r.after(3, 3, t0, e).unwrap().len(), 0);
    }

    #[test]
    fn the_byte_bound_keeps_the_newest_that_fit() {
        let t0: Ms = 1_000;
        let mut r = ReplayRing::new(100, 10_000, 25);
        let e = &mut EvictCounts::default();
        for s in 1..=5 {
            r.push(s, t0, Bytes::from(vec![b'x'; 10]), e);
        }
        assert_eq!((r.bytes(), e[Evicted::RoomBytes as usize]), (20, 3));
        assert_eq!(r.after(3, 5, t0, e).unwrap().len(), 2);
        assert_eq!(r.after(2, 5, t0, e), Err(Miss::OutOfWindow));
        // One message over the bound: nothing can be kept across it.
        r.push(6, t0, Bytes::from(vec![b'y'; 30]), e);
        assert!(r.is_empty() && r.bytes() == 0);
        assert_eq!(r.after(5, 6, t0, e), Err(Miss::OutOfWindow));
        r.push(7, t0, Bytes::from(vec![b'z'; 5]), e);
        assert_eq!(r.after(6, 7, t0, e).unwrap().len(), 1);
        assert_eq!(r.pop_oldest(), 5);
        assert_eq!(r.bytes(), 0);
    }
}
