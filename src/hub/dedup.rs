//! Idempotent publishes, sans-IO: the keys an owner has stamped recently, so that a
//! repeat (a client retrying after a lost ack, an app retrying a timed-out POST) is
//! answered with the first publish's seq instead of being delivered again.
//!
//! A key is scoped to its room and its sender (the publisher's user; anonymous
//! clients share one scope, the API another), so one sender cannot suppress another's
//! messages by guessing their keys. Keys are kept for `window` and at most `cap` at
//! once per worker (the oldest are forgotten first, counted). They live with the
//! owner: when a room moves to another owner (a new epoch), its keys do not follow.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::id::Ms;
use crate::protocol::Epoch;

/// Who a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// An identified publisher (a client's token `sub`, or the user an API call
    /// names).
    User(&'a str),
    /// An anonymous client.
    Anonymous,
    /// The HTTP API, naming no user.
    Api,
}

/// One room's keys: `scope \0 key` → the stamp it got, and when.
type RoomKeys = HashMap<Arc<str>, (Epoch, u64, Ms)>;

/// Recently stamped idempotency keys of one worker's owned rooms.
#[derive(Debug)]
pub struct Dedup {
    /// Keys by room.
    stamped: HashMap<Arc<str>, RoomKeys>,
    /// Keys held (over every room).
    len: usize,
    /// The same keys, oldest first: `(when, room, scoped key)` (an entry is stale
    /// when `stamped` has another time for its key, or no longer has it).
    order: VecDeque<(Ms, Arc<str>, Arc<str>)>,
    window: Ms,
    cap: usize,
    /// Keys forgotten before their window ended, to stay under `cap`.
    pub forgotten: u64,
}

impl Dedup {
    /// Keys kept for `window` ms, at most `cap` at once.
    pub fn new(window: Ms, cap: usize) -> Self {
        Self {
            stamped: HashMap::new(),
            len: 0,
            order: VecDeque::new(),
            window,
            cap,
            forgotten: 0,
        }
    }

    /// A key with its scope, as the history log keeps it. Unambiguous: user ids
    /// hold no NUL, and a user's scope always begins `u:`.
    pub fn scoped(scope: Scope<'_>, key: &str) -> String {
        match scope {
            Scope::User(u) => format!("u:{u}\0{key}"),
            Scope::Anonymous => format!("anonymous\0{key}"),
            Scope::Api => format!("api\0{key}"),
        }
    }

    /// Remember a key read back from the history log (`scoped` as
    /// [`Dedup::scoped`] made it), stamped at `at`. Keys must come oldest first.
    pub fn restore(&mut self, room: &str, scoped: &str, epoch: Epoch, seq: u64, at: Ms) {
        self.insert(room, scoped, epoch, seq, at);
    }

    /// The seq `key` got in `room`'s current `epoch`, if it was stamped within the
    /// window.
    pub fn seen(
        &mut self,
        room: &str,
        scope: Scope<'_>,
        key: &str,
        epoch: Epoch,
        now: Ms,
    ) -> Option<u64> {
        self.expire(now);
        let keys = self.stamped.get(room)?;
        match keys.get(Self::scoped(scope, key).as_str()) {
            Some(&(e, seq, _)) if e == epoch => Some(seq),
            _ => None,
        }
    }

    /// Remember that `key` got `seq` in `room`'s `epoch`.
    pub fn stamped(
        &mut self,
        room: &str,
        scope: Scope<'_>,
        key: &str,
        epoch: Epoch,
        seq: u64,
        now: Ms,
    ) {
        self.insert(room, &Self::scoped(scope, key), epoch, seq, now);
    }

    fn insert(&mut self, room: &str, scoped: &str, epoch: Epoch, seq: u64, now: Ms) {
        if self.cap == 0 || self.window == 0 {
            return;
        }
        let room: Arc<str> = match self.stamped.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        let scoped: Arc<str> = Arc::from(scoped);
        let keys = self.stamped.entry(room.clone()).or_default();
        if keys.insert(scoped.clone(), (epoch, seq, now)).is_none() {
            self.len += 1;
        }
        self.order.push_back((now, room, scoped));
        while self.len > self.cap {
            if self.pop_oldest().is_some_and(|at| at + self.window > now) {
                self.forgotten += 1;
            }
        }
    }

    /// Remove `(room, scoped)` if it was stamped at `at` (else the entry is stale).
    fn remove_if(&mut self, at: Ms, room: &str, scoped: &str) -> bool {
        let Some(keys) = self.stamped.get_mut(room) else {
            return false;
        };
        if keys.get(scoped).is_none_or(|&(_, _, t)| t != at) {
            return false;
        }
        keys.remove(scoped);
        self.len -= 1;
        if keys.is_empty() {
            self.stamped.remove(room);
        }
        true
    }

    /// Forget the oldest key; returns when it was stamped (`None`: none left).
    fn pop_oldest(&mut self) -> Option<Ms> {
        while let Some((at, room, scoped)) = self.order.pop_front() {
            if self.remove_if(at, &room, &scoped) {
                return Some(at);
            }
        }
        None
    }

    fn expire(&mut self, now: Ms) {
        while let Some((at, _, _)) = self.order.front() {
            if at + self.window > now {
                break;
            }
            if let Some((at, room, scoped)) = self.order.pop_front() {
                self.remove_if(at, &room, &scoped);
            }
        }
        // Entries of keys taken out with their rooms are stale: drop them when
        // they outnumber the live ones, so the queue stays bounded by the cap.
        if self.order.len() > 2 * self.len + 64 {
            let stamped = &self.stamped;
            self.order.retain(|(at, room, scoped)| {
                stamped
                    .get(room)
                    .and_then(|k| k.get(scoped))
                    .is_some_and(|&(_, _, t)| t == *at)
            });
        }
    }

    /// The keys of `room` (for its standby's copy): `[(scoped key, epoch, seq,
    /// stamped at)]`, in no order.
    pub fn room_keys(&self, room: &str) -> Vec<(String, Epoch, u64, Ms)> {
        self.stamped.get(room).map_or_else(Vec::new, |keys| {
            keys.iter()
                .map(|(k, &(e, s, at))| (k.to_string(), e, s, at))
                .collect()
        })
    }

    /// Take out the keys of the rooms `wanted` picks (for handing the rooms to
    /// their next owner): `room → [(scoped key, epoch, seq, stamped at)]`.
    pub fn take_rooms<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Vec<(String, Epoch, u64, Ms)>> {
        let mut out = HashMap::new();
        for room in wanted {
            if let Some(keys) = self.stamped.remove(room) {
                self.len -= keys.len();
                let keys = keys
                    .into_iter()
                    .map(|(k, (e, s, at))| (k.to_string(), e, s, at))
                    .collect();
                out.insert(room.to_owned(), keys);
            }
        }
        out
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(1);

    #[test]
    fn a_key_is_known_within_its_window_room_scope_and_epoch() {
        let mut d = Dedup::new(1_000, 100);
        assert_eq!(d.seen("r", Scope::User("a"), "k", E, 0), None);
        d.stamped("r", Scope::User("a"), "k", E, 7, 0);
        assert_eq!(d.seen("r", Scope::User("a"), "k", E, 999), Some(7));
        assert_eq!(
            d.seen("r", Scope::User("b"), "k", E, 10),
            None,
            "another sender"
        );
        assert_eq!(d.seen("r", Scope::Anonymous, "k", E, 10), None);
        assert_eq!(d.seen("r", Scope::Api, "k", E, 10), None);
        assert_eq!(
            d.seen("s", Scope::User("a"), "k", E, 10),
            None,
            "another room"
        );
        assert_eq!(
            d.seen("r", Scope::User("a"), "k", Epoch(2), 10),
            None,
            "a new epoch"
        );
        assert_eq!(
            d.seen("r", Scope::User("a"), "k", E, 1_000),
            None,
            "the window ended"
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn names_cannot_be_confused_across_scopes() {
        let mut d = Dedup::new(1_000, 100);
        d.stamped("r", Scope::Api, "k", E, 1, 0);
        d.stamped("r", Scope::Anonymous, "k", E, 2, 0);
        assert_eq!(d.seen("r", Scope::User("api"), "k", E, 1), None);
        assert_eq!(d.seen("r", Scope::User("anonymous"), "k", E, 1), None);
        // The rule the names rest on: room names and user ids hold no NUL.
        assert!(!crate::protocol::valid_user("a\0b"));
        assert!(!crate::protocol::valid_room("r\0u:a", 64));
    }

    #[test]
    fn over_the_cap_the_oldest_keys_go_first_and_are_counted() {
        let mut d = Dedup::new(10_000, 3);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            d.stamped("r", Scope::Api, k, E, i as u64 + 1, i as Ms);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.forgotten, 1);
        assert_eq!(d.seen("r", Scope::Api, "a", E, 5), None);
        assert_eq!(d.seen("r", Scope::Api, "d", E, 5), Some(4));
    }

    #[test]
    fn a_key_stamped_again_in_a_new_epoch_is_not_dropped_by_its_old_entry() {
        let mut d = Dedup::new(100, 10);
        d.stamped("r", Scope::Api, "k", E, 1, 0);
        d.stamped("r", Scope::Api, "k", Epoch(2), 1, 50);
        assert_eq!(d.seen("r", Scope::Api, "k", Epoch(2), 120), Some(1));
        assert_eq!(d.seen("r", Scope::Api, "k", Epoch(2), 150), None);
    }
}
