//! The connect callback on a worker: an upgrade without a token, on a node with
//! `hooks.connect_url`, waits (in phase `Identifying`, its socket not read) while the
//! node's calling threads ask the app who it is; the answer comes back as a letter
//! and completes the upgrade, or refuses it. The connection's task waits for that
//! within its handshake time (`runtime::driver`).

use futures_channel::oneshot;

use super::mailbox::Letter;
use super::worker::State;
use crate::conn::{ConnKey, Phase};
use crate::hooks::connect::Identity;
use crate::metrics::Refused;
use crate::ws::handshake::{Accepted, reject};

/// An upgrade waiting for the app.
#[derive(Debug)]
pub struct Identifying {
    accepted: Accepted,
    /// Told once the upgrade is complete or refused.
    done: oneshot::Sender<()>,
    /// What the connection's task awaits (taken by it).
    wait: Option<oneshot::Receiver<()>>,
}

impl State {
    /// Ask the app who the upgrade `a` of `key` is, and park it. Returns `false`
    /// when the upgrade needs no asking (no connect callback, a token, not a client).
    pub(super) fn ask_who(&mut self, key: ConnKey, a: Accepted) -> Result<(), Accepted> {
        let Some(connector) = self.shared.connector.clone() else {
            return Err(a);
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return Err(a);
        };
        conn.phase = Phase::Identifying;
        let peer = conn.peer;
        let mailbox = self.shared.mailboxes[self.id].clone();
        connector.ask(
            peer,
            a.origin.as_deref(),
            &a.passed,
            Box::new(move |identity| {
                mailbox.send(Letter::Identified {
                    conn: key,
                    identity,
                })
            }),
        );
        let (done, wait) = oneshot::channel();
        self.identifying.insert(
            key,
            Identifying {
                accepted: a,
                done,
                wait: Some(wait),
            },
        );
        Ok(())
    }

    /// What the connection's task awaits while the app is asked (once).
    pub(super) fn identify_wait(&mut self, key: ConnKey) -> Option<oneshot::Receiver<()>> {
        self.identifying.get_mut(&key)?.wait.take()
    }

    /// The task gave up waiting (its handshake time ran out), or the connection
    /// went: forget the question (a late answer finds nothing).
    pub(super) fn forget_identify(&mut self, key: ConnKey) {
        self.identifying.remove(&key);
    }

    /// The app answered who `key` is: complete its upgrade, or refuse it.
    pub fn on_identified(&mut self, key: ConnKey, identity: Identity) {
        let Some(p) = self.identifying.remove(&key) else {
            return; // gone, or given up on
        };
        let open = self
            .conns
            .get_mut(key)
            .is_some_and(|c| c.phase == Phase::Identifying);
        if open {
            let verdict = match identity {
                Identity::User(g) => Ok(Some(g)),
                Identity::Anonymous if self.shared.config.allow_anonymous => Ok(None),
                Identity::Anonymous => Err(reject(
                    401,
                    "the app did not name a user for this session, and this node refuses anonymous clients: sign in",
                )),
                Identity::Refused(status) => {
                    Err(reject(status, "the app refused this session: sign in"))
                }
                Identity::Failed(_) => Err(reject(
                    503,
                    "the app could not say who this session is; retry shortly",
                )),
            };
            if let Err(r) = &verdict
                && r.status != 503
            {
                self.conns.stats.refused[Refused::Unauthorized as usize] += 1;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                conn.phase = Phase::Handshake;
            }
            self.complete_upgrade(key, p.accepted, verdict);
        }
        let _ = p.done.send(());
    }
}
