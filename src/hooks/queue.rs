//! The webhook queue, sans-IO: events waiting to be sent, bounded by count. When the
//! app is down for long the oldest are dropped first (counted): a node never grows
//! without bound for an app that does not answer.

use std::collections::VecDeque;

/// An event waiting, with when it was queued (ns, the process's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The event, JSON.
    pub json: String,
    /// When it was queued.
    pub at_ns: u64,
}

/// Events in the order they happened.
#[derive(Debug)]
pub struct Queue {
    events: VecDeque<Queued>,
    cap: usize,
    /// Events dropped (the oldest, over `cap`).
    pub dropped: u64,
}

impl Queue {
    /// At most `cap` events.
    pub fn new(cap: usize) -> Self {
        Self {
            events: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Queue an event, dropping the oldest over the cap.
    pub fn push(&mut self, json: String, at_ns: u64) {
        if self.events.len() >= self.cap {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(Queued { json, at_ns });
    }

    /// Whether a batch should go now: `max` events are waiting, or the oldest has
    /// waited `linger_ns`.
    pub fn ready(&self, max: usize, linger_ns: u64, now_ns: u64) -> bool {
        match self.events.front() {
            None => false,
            Some(first) => {
                self.events.len() >= max || now_ns.saturating_sub(first.at_ns) >= linger_ns
            }
        }
    }

    /// When the oldest event's linger ends (`None`: nothing waits).
    pub fn due(&self, linger_ns: u64) -> Option<u64> {
        self.events.front().map(|e| e.at_ns + linger_ns)
    }

    /// Take the oldest `max` events.
    pub fn take(&mut self, max: usize) -> Vec<Queued> {
        let n = max.min(self.events.len());
        self.events.drain(..n).collect()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_over_the_cap_and_are_counted() {
        let mut q = Queue::new(3);
        for i in 0..5 {
            q.push(format!("e{i}"), i);
        }
        assert_eq!(q.dropped, 2);
        let got: Vec<String> = q.take(10).into_iter().map(|e| e.json).collect();
        assert_eq!(got, ["e2", "e3", "e4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_batch_goes_when_full_or_when_its_oldest_waited_long_enough() {
        let mut q = Queue::new(100);
        assert!(!q.ready(3, 50, 0));
        q.push("a".into(), 10);
        q.push("b".into(), 20);
        assert!(!q.ready(3, 50, 30));
        assert_eq!(q.due(50), Some(60));
        assert!(q.ready(3, 50, 60), "the oldest waited 50");
        q.push("c".into(), 40);
        assert!(q.ready(3, 50, 41), "full");
        assert_eq!(q.take(2).len(), 2);
        assert_eq!(q.len(), 1);
    }
}
