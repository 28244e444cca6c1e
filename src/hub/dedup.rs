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

/// Recently stamped idempotency keys of one worker's owned rooms.
#[derive(Debug)]
pub struct Dedup {
    /// `room \0 scope \0 key` → the stamp it got, and when.
    stamped: HashMap<Arc<str>, (Epoch, u64, Ms)>,
    /// The same keys, oldest first (an entry is stale when `stamped` has another
    /// time for its key).
    order: VecDeque<(Ms, Arc<str>)>,
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
            order: VecDeque::new(),
            window,
            cap,
            forgotten: 0,
        }
    }

    /// One string per (room, scope, key). Unambiguous: room names and user ids
    /// hold no NUL, and a user's scope always begins `u:`.
    fn name(room: &str, scope: Scope<'_>, key: &str) -> String {
        format!("{room}\0{}", Self::scoped(scope, key))
    }

    /// A key with its scope, as the history log keeps it.
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
        self.insert(format!("{room}\0{scoped}"), epoch, seq, at);
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
        match self.stamped.get(Self::name(room, scope, key).as_str()) {
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
        self.insert(Self::name(room, scope, key), epoch, seq, now);
    }

    fn insert(&mut self, name: String, epoch: Epoch, seq: u64, now: Ms) {
        if self.cap == 0 || self.window == 0 {
            return;
        }
        let name: Arc<str> = Arc::from(name);
        self.stamped.insert(name.clone(), (epoch, seq, now));
        self.order.push_back((now, name));
        while self.stamped.len() > self.cap {
            if self.pop_oldest().is_some_and(|at| at + self.window > now) {
                self.forgotten += 1;
            }
        }
    }

    /// Forget the oldest key; returns when it was stamped (`None`: none left).
    fn pop_oldest(&mut self) -> Option<Ms> {
        while let Some((at, name)) = self.order.pop_front() {
            if self.stamped.get(&name).is_some_and(|&(_, _, t)| t == at) {
                self.stamped.remove(&name);
                return Some(at);
            }
        }
        None
    }

    fn expire(&mut self, now: Ms) {
        while let Some((at, _)) = self.order.front() {
            if at + self.window > now {
                break;
            }
            if let Some((at, name)) = self.order.pop_front()
                && self.stamped.get(&name).is_some_and(|&(_, _, t)| t == at)
            {
                self.stamped.remove(&name);
            }
        }
    }

    /// Take out the keys of the rooms `wanted` picks (for handing the rooms to
    /// their next owner): `room → [(scoped key, epoch, seq, stamped at)]`.
    pub fn take_rooms(
        &mut self,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> HashMap<String, Vec<(String, Epoch, u64, Ms)>> {
        let mut out: HashMap<String, Vec<(String, Epoch, u64, Ms)>> = HashMap::new();
        self.stamped.retain(|name, &mut (epoch, seq, at)| {
            let Some((room, scoped)) = name.split_once('\0') else {
                return true;
            };
            if !wanted(room) {
                return true;
            }
            out.entry(room.to_owned())
                .or_default()
                .push((scoped.to_owned(), epoch, seq, at));
            false // its entry in `order` is stale now
        });
        out
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.stamped.len()
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
