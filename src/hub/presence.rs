//! A room's roster, kept by its owner, sans-IO: which users are subscribed, with how
//! many connections each, across workers and nodes.
//!
//! Entries are keyed by subscriber (node, worker, connection), so the same
//! subscription reported twice (a re-subscribe racing an ownership move) counts once,
//! and a lost node's entries can be dropped together. Join and leave events are
//! debounced: a user who reconnects within the window produces no events at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::id::Ms;

/// One subscribed connection, anywhere in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Node index (in the mesh's sorted node list; 0 on a single node).
    pub node: u16,
    /// Worker on that node.
    pub worker: u16,
    /// Packed connection key on that worker.
    pub conn: u64,
}

/// Users of one room.
#[derive(Debug, Default)]
pub struct Roster {
    members: HashMap<Member, Arc<str>>,
    counts: BTreeMap<Arc<str>, u32>,
    /// Users whose presence is what was last announced.
    announced: HashSet<Arc<str>>,
    /// Users whose count crossed zero since the last announcement, and since when.
    changed: HashSet<Arc<str>>,
    changed_since: Option<Ms>,
}

/// A debounced presence change.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// The user.
    pub user: Arc<str>,
    /// `true` for join, `false` for leave.
    pub joined: bool,
}

impl Roster {
    /// Add a member (idempotent).
    pub fn add(&mut self, m: Member, user: Arc<str>, now: Ms) {
        if self.members.contains_key(&m) {
            return;
        }
        self.members.insert(m, user.clone());
        let c = self.counts.entry(user.clone()).or_insert(0);
        *c += 1;
        if *c == 1 {
            self.touch(user, now);
        }
    }

    /// Remove a member (absent: nothing happens).
    pub fn remove(&mut self, m: &Member, now: Ms) {
        let Some(user) = self.members.remove(m) else {
            return;
        };
        if let Some(c) = self.counts.get_mut(&user) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&user);
                self.touch(user, now);
            }
        }
    }

    /// Remove every member on `node`.
    pub fn remove_node(&mut self, node: u16, now: Ms) {
        let gone: Vec<Member> = self
            .members
            .keys()
            .filter(|m| m.node == node)
            .copied()
            .collect();
        for m in gone {
            self.remove(&m, now);
        }
    }

    fn touch(&mut self, user: Arc<str>, now: Ms) {
        self.changed.insert(user);
        self.changed_since.get_or_insert(now);
    }

    /// The users whose presence was last announced (for a handoff).
    pub fn announced(&self) -> Vec<String> {
        let mut users: Vec<String> = self.announced.iter().map(|u| u.to_string()).collect();
        users.sort_unstable();
        users
    }

    /// Take over what the room's previous owner had announced (a handoff): its
    /// subscribers subscribe here again within the debounce window, and only those
    /// who do not come back are announced as leaving (those who joined meanwhile, as
    /// joining).
    pub fn inherit(&mut self, announced: impl IntoIterator<Item = String>, now: Ms) {
        for user in announced {
            let user: Arc<str> = Arc::from(user);
            self.announced.insert(user.clone());
            self.touch(user, now);
        }
    }

    /// When the changes waiting for their debounce window began.
    pub fn changed_since(&self) -> Option<Ms> {
        self.changed_since
    }

    /// Whether there are changes waiting for their debounce window.
    pub fn has_changes(&self) -> bool {
        self.changed_since.is_some()
    }

    /// Changes that have settled for `debounce`: users whose presence now differs
    /// from what was last announced. Flapping inside the window cancels out.
    pub fn settle(&mut self, now: Ms, debounce: Ms) -> Vec<Change> {
        match self.changed_since {
            Some(t) if now.saturating_sub(t) >= debounce => {}
            _ => return Vec::new(),
        }
        self.changed_since = None;
        let mut out = Vec::new();
        for user in std::mem::take(&mut self.changed) {
            let present = self.counts.contains_key(&user);
            if present != self.announced.contains(&user) {
                if present {
                    self.announced.insert(user.clone());
                } else {
                    self.announced.remove(&user);
                }
                out.push(Change {
                    user,
                    joined: present,
                });
            }
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }

    /// Every member and its user.
    pub fn members(&self) -> impl Iterator<Item = (&Member, &str)> {
        self.members.iter().map(|(m, u)| (m, &**u))
    }

    /// Connections of `user` on the roster.
    pub fn count(&self, user: &str) -> u32 {
        self.counts.get(user).copied().unwrap_or(0)
    }

    /// Users and their connection counts, sorted by user.
    pub fn users(&self) -> impl Iterator<Item = (&str, u32)> {
        self.counts.iter().map(|(u, &c)| (&**u, c))
    }

    /// Whether nobody is on the roster.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `{"type":"presence","room":…,"users":[{"user":…,"connections":n}],"connections":n}`.
    pub fn json(&self, room: &str) -> String {
        crate::protocol::roster_json(room, self.users(), self.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: u16, conn: u64) -> Member {
        Member {
            node,
            worker: 0,
            conn,
        }
    }

    #[test]
    fn counts_connections_per_user_and_ignores_duplicates() {
        let t: Ms = 1_000;
        let mut r = Roster::default();
        r.add(m(0, 1), "alice".into(), t);
        r.add(m(1, 1), "alice".into(), t);
        r.add(m(1, 1), "alice".into(), t); // the same subscription reported twice
        r.add(m(1, 2), "bob".into(), t);
        assert_eq!(
            r.users().collect::<Vec<_>>(),
            vec![("alice", 2), ("bob", 1)]
        );
        r.remove_node(1, t);
        assert_eq!(r.users().collect::<Vec<_>>(), vec![("alice", 1)]);
        r.remove(&m(0, 1), t);
        r.remove(&m(0, 1), t);
        assert!(r.is_empty());
    }

    #[test]
    fn events_are_debounced_and_flaps_cancel() {
        let t: Ms = 1_000;
        let d: Ms = 500;
        let mut r = Roster::default();
        r.add(m(0, 1), "alice".into(), t);
        assert!(r.settle(t, d).is_empty(), "not settled yet");
        let ch = r.settle(t + d, d);
        assert_eq!(
            ch,
            vec![Change {
                user: "alice".into(),
                joined: true
            }]
        );
        // Leaves and comes back inside the window: nothing to announce.
        r.remove(&m(0, 1), t + d);
        r.add(m(0, 2), "alice".into(), t + d);
        assert!(r.settle(t + d * 3, d).is_empty());
        r.remove(&m(0, 2), t + d * 3);
        assert!(!r.settle(t + d * 4, d)[0].joined);
    }

    #[test]
    fn a_handed_over_roster_announces_only_who_did_not_come_back() {
        let (t, d) = (1_000, 300);
        let mut r = Roster::default();
        r.inherit(["ann".to_string(), "bob".to_string()], t);
        r.add(m(1, 1), "ann".into(), t + 10); // ann's subscription followed the room
        r.add(m(1, 2), "cy".into(), t + 20); // cy joined meanwhile
        let mut ch = r.settle(t + d, d);
        ch.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            ch,
            [
                Change {
                    user: "bob".into(),
                    joined: false
                },
                Change {
                    user: "cy".into(),
                    joined: true
                }
            ]
        );
        assert_eq!(r.announced(), ["ann", "cy"]);
    }

    #[test]
    fn json_lists_users_sorted() {
        let t: Ms = 1_000;
        let mut r = Roster::default();
        r.add(m(0, 1), "zed".into(), t);
        r.add(m(0, 2), "amy".into(), t);
        let v: serde_json::Value = serde_json::from_str(&r.json("chat:1")).unwrap();
        assert_eq!(v["users"][0]["user"], "amy");
        assert_eq!(v["connections"], 2);
    }
}
