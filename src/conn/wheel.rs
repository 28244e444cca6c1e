//! A hashed timer wheel for connection deadlines, sans-IO: the caller advances it
//! with the current tick and decides what each due entry means.
//!
//! One wheel per worker replaces a timer per connection (a monoio `Sleep` is 640
//! bytes; an entry here is 12: a tick and a key). Entries are lazy: nothing is ever
//! searched for or removed. When a connection's deadline moves later (traffic
//! arrived), the caller schedules it again when the old entry comes due; when it
//! moves earlier, the caller adds an entry and remembers its tick, so the older one
//! is recognised as stale when it comes due and dropped then (see `conn::timers`).

/// Ticks since the worker started. u32 at 1 tick per 100 ms lasts 13 years.
pub type Tick = u32;

/// Slots of the wheel. Deadlines further away than this many ticks go round the
/// wheel and are re-scheduled by the caller when their slot comes up early.
const SLOTS: usize = 512;

/// The wheel. `K` is the entry (a connection key).
#[derive(Debug)]
pub struct Wheel<K> {
    slots: Vec<Vec<(Tick, K)>>,
    /// The last tick processed.
    now: Tick,
    /// Entries scheduled.
    len: usize,
}

impl<K: Copy> Default for Wheel<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy> Wheel<K> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            now: 0,
            len: 0,
        }
    }

    /// Schedule `key` for tick `at` (a tick in the past fires at the next advance);
    /// returns the tick it will fire at.
    pub fn schedule(&mut self, key: K, at: Tick) -> Tick {
        let at = at.max(self.now.wrapping_add(1));
        self.slots[at as usize % SLOTS].push((at, key));
        self.len += 1;
        at
    }

    /// Entries scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Advance to tick `to`, handing every entry due by then to `due` (with the tick
    /// it was scheduled for). Entries scheduled further ahead stay in place.
    pub fn advance(&mut self, to: Tick, mut due: impl FnMut(&mut Self, K, Tick)) {
        while self.now < to {
            self.now += 1;
            let slot = self.now as usize % SLOTS;
            let mut entries = std::mem::take(&mut self.slots[slot]);
            let mut i = 0;
            while i < entries.len() {
                let (at, key) = entries[i];
                if at <= self.now {
                    entries.swap_remove(i);
                    self.len -= 1;
                    due(self, key, at);
                } else {
                    i += 1;
                }
            }
            // Keep what is not due yet (later laps) and reuse the allocation.
            let added = std::mem::replace(&mut self.slots[slot], entries);
            self.slots[slot].extend(added);
        }
    }

    /// The last tick processed.
    pub fn now(&self) -> Tick {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_each_entry_once_at_its_tick() {
        let mut w = Wheel::new();
        w.schedule(1u32, 3);
        w.schedule(2, 3);
        w.schedule(3, 10);
        let mut fired = Vec::new();
        w.advance(2, |_, k, _| fired.push(k));
        assert!(fired.is_empty());
        w.advance(3, |_, k, at| fired.push(k * 100 + at));
        fired.sort();
        assert_eq!(fired, vec![103, 203]);
        fired.clear();
        w.advance(20, |_, k, _| fired.push(k));
        assert_eq!(fired, vec![3]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_survive_earlier_laps() {
        let mut w = Wheel::new();
        let far = SLOTS as Tick * 2 + 5;
        w.schedule(7u32, far);
        let mut fired = Vec::new();
        w.advance(far - 1, |_, k, _| fired.push(k));
        assert!(fired.is_empty(), "not before its tick");
        w.advance(far, |_, k, _| fired.push(k));
        assert_eq!(fired, vec![7]);
    }

    #[test]
    fn rescheduling_from_the_callback_is_lazy_and_exact() {
        // A connection whose deadline keeps moving: re-scheduled when it comes due.
        let mut w = Wheel::new();
        w.schedule(1u32, 5);
        let mut real_deadline = 12;
        let mut fired_at = None;
        w.advance(30, |w, k, at| {
            if at < real_deadline {
                w.schedule(k, real_deadline);
                real_deadline = 12; // unchanged
            } else {
                fired_at = Some(at);
            }
        });
        assert_eq!(fired_at, Some(12));
    }

    #[test]
    fn past_ticks_fire_on_the_next_advance() {
        let mut w = Wheel::new();
        w.advance(50, |_, _: u32, _| {});
        w.schedule(9, 10);
        let mut fired = Vec::new();
        w.advance(51, |_, k, _| fired.push(k));
        assert_eq!(fired, vec![9]);
    }
}
