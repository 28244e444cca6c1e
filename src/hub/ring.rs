//! A room's replay ring: the last N messages, none older than T. Sans-IO: the
//! caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One remembered message: its seq, when it was published, and its encoded frame.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    at: Instant,
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

/// Bounded by count and by age. Seqs in the ring are consecutive.
#[derive(Debug)]
pub struct ReplayRing {
    entries: VecDeque<Entry>,
    max_len: usize,
    max_age: Duration,
}

impl ReplayRing {
    /// An empty ring holding at most `max_len` messages for at most `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> Self {
        Self {
            entries: VecDeque::new(),
            max_len,
            max_age,
        }
    }

    /// Remember message `seq` (one more than the previous one pushed).
    pub fn push(&mut self, seq: u64, now: Instant, frame: Bytes) {
        if self.max_len == 0 {
            return;
        }
        debug_assert!(self.entries.back().is_none_or(|e| e.seq + 1 == seq));
        if self.entries.len() == self.max_len {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            seq,
            at: now,
            frame,
        });
    }

    /// Forget messages older than the age bound.
    pub fn evict(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) <= self.max_age {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// The frames after `since` up to `latest`, oldest first, if the ring still
    /// holds every one of them; otherwise why not.
    pub fn after(&mut self, since: u64, latest: u64, now: Instant) -> Result<Vec<Bytes>, Miss> {
        if since > latest {
            return Err(Miss::Future);
        }
        if since == latest {
            return Ok(Vec::new());
        }
        self.evict(now);
        let first = self.entries.front().ok_or(Miss::OutOfWindow)?.seq;
        if since + 1 < first {
            return Err(Miss::OutOfWindow);
        }
        let skip = usize::try_from(since + 1 - first).map_err(|_| Miss::OutOfWindow)?;
        Ok(self
            .entries
            .iter()
            .skip(skip)
            .map(|e| e.frame.clone())
            .collect())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held by the frames in the ring.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.frame.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(n: u64, cap: usize, t0: Instant) -> ReplayRing {
        let mut r = ReplayRing::new(cap, Duration::from_secs(10));
        for s in 1..=n {
            r.push(s, t0, Bytes::from(s.to_string()));
        }
        r
    }

    #[test]
    fn replays_exactly_the_missing_messages() {
        let t0 = Instant::now();
        let mut r = ring_with(10, 4, t0); // holds 7..=10
        let got = r.after(8, 10, t0).unwrap();
        assert_eq!(got, vec![Bytes::from("9"), Bytes::from("10")]);
        assert_eq!(r.after(6, 10, t0).unwrap().len(), 4);
        assert_eq!(r.after(10, 10, t0).unwrap().len(), 0);
        assert_eq!(r.after(5, 10, t0), Err(Miss::OutOfWindow), "6 is gone");
        assert_eq!(r.after(11, 10, t0), Err(Miss::Future));
    }

    #[test]
    fn age_bound_forgets_old_messages() {
        let t0 = Instant::now();
        let mut r = ring_with(3, 10, t0);
        assert!(r.after(0, 3, t0 + Duration::from_secs(5)).is_ok());
        assert!(r.after(0, 3, t0 + Duration::from_secs(11)).is_err());
        assert!(r.is_empty());
    }

    #[test]
    fn zero_capacity_never_recovers_a_gap() {
        let t0 = Instant::now();
        let mut r = ring_with(3, 0, t0);
        assert!(r.after(2, 3, t0).is_err());
        assert_eq!(r.after(3, 3, t0).unwrap().len(), 0);
    }
}
