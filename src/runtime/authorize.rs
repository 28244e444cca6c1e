//! The authorization callback on a worker: a request for a room the app decides
//! (`hooks.authorize_rooms`) goes on at once with a cached answer, or is parked (its
//! text copied) while the node's calling threads ask the app; the connection keeps
//! being served meanwhile. The answer comes back as a letter and releases the parked
//! requests in order. The cache and the parking are `hooks::authorize::Gate`
//! (sans-IO); this is the glue.

use std::collections::HashMap;

use super::mailbox::Letter;
use super::worker::State;
use crate::conn::ConnKey;
use crate::conn::outq::Out;
use crate::hooks::authorize::{self, Action, Check, Gate, Key, Verdict};
use crate::protocol::{self, ErrorCode};
use serde_json::value::RawValue;

/// Requests of one connection waiting for the app at once; more are refused with
/// `unavailable`.
pub const MAX_PARKED_PER_CONN: u32 = 32;

/// Answers cached per worker.
pub const MAX_CACHED: usize = 100_000;

/// A request waiting for the app: its connection and its text (parsed again once
/// answered).
#[derive(Debug)]
pub struct Parked {
    conn: ConnKey,
    text: Box<[u8]>,
}

/// The worker's side of the callback.
#[derive(Debug)]
pub struct Permits {
    gate: Gate<Parked>,
    /// Requests parked per connection.
    parked: HashMap<ConnKey, u32>,
}

impl Default for Permits {
    fn default() -> Self {
        Self {
            gate: Gate::new(MAX_CACHED),
            parked: HashMap::new(),
        }
    }
}

/// Where a request stands with the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Not asked yet: ask if its room needs it.
    Ask,
    /// The app allowed it (or failed, failing open).
    Allowed,
    /// The app refused it.
    Refused,
    /// The app did not answer usably, and failures refuse (fail closed).
    Unanswered,
}

/// What to do with a request now.
pub enum Gatekeep {
    /// Carry it out.
    Go,
    /// Answered already (refused, parked, or too many parked).
    Done,
}

impl State {
    /// Whether the request `text` from `key` (a subscribe, publish or send to `room`,
    /// or a presence question, which asks as a subscribe) may go on now.
    pub fn authorize(
        &mut self,
        key: ConnKey,
        room: &str,
        action: Action,
        pass: Pass,
        text: &[u8],
        reference: Option<&RawValue>,
    ) -> Gatekeep {
        let Some(authorizer) = self.shared.authorizer.clone() else {
            return Gatekeep::Go;
        };
        let refuse = |this: &mut Self, answered: bool| {
            let what = match action {
                Action::Subscribe => "subscribe",
                Action::Publish => "publish",
                Action::Send => "send direct messages",
            };
            let reason = if answered {
                format!("the app does not allow you to {what} in this room")
            } else {
                format!(
                    "the app could not be asked whether you may {what} in this room; retry later"
                )
            };
            let frame = protocol::error_frame(ErrorCode::Forbidden, &reason, Some(room), reference);
            this.conns.enqueue(key, Out::Own(frame));
            Gatekeep::Done
        };
        match pass {
            Pass::Allowed => return Gatekeep::Go,
            Pass::Refused => return refuse(self, true),
            Pass::Unanswered => return refuse(self, false),
            Pass::Ask => {}
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return Gatekeep::Done;
        };
        let user = conn.user();
        let own = user.is_some() && protocol::personal_room_user(room) == user.as_deref();
        if own || !authorizer.covers(room) {
            return Gatekeep::Go;
        }
        let parked = self.permits.parked.get(&key).copied().unwrap_or(0);
        if parked >= MAX_PARKED_PER_CONN {
            let frame = protocol::error_frame(
                ErrorCode::Unavailable,
                "too many requests waiting for the app's authorization; wait for their answers",
                Some(room),
                reference,
            );
            self.conns.enqueue(key, Out::Own(frame));
            return Gatekeep::Done;
        }
        let id = self.conns.conn_id(key).to_string();
        let gate_key = Key {
            who: match &user {
                Some(u) => Box::from(&**u),
                None => format!(" conn {id}").into_boxed_str(),
            },
            room: Box::from(room),
            action,
        };
        let waiter = || Parked {
            conn: key,
            text: Box::from(text),
        };
        let now = self.now();
        match self.permits.gate.check(&gate_key, now, waiter) {
            Check::Allowed => {
                authorizer
                    .stats
                    .cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Gatekeep::Go
            }
            Check::Denied => {
                authorizer
                    .stats
                    .cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                refuse(self, true)
            }
            Check::Waiting => {
                *self.permits.parked.entry(key).or_default() += 1;
                Gatekeep::Done
            }
            Check::Ask => {
                *self.permits.parked.entry(key).or_default() += 1;
                let claims = self.conns.get_mut(key).and_then(|c| {
                    let g = c.grant.as_deref()?;
                    Some(g.claims.as_deref().map_or_else(
                        || serde_json::json!({"sub": &*g.user, "exp": g.exp}).to_string(),
                        str::to_owned,
                    ))
                });
                let body = authorize::body(
                    &self.shared.config.node_id,
                    &id,
                    user.as_deref(),
                    room,
                    action,
                    claims.as_deref(),
                );
                let mailbox = self.shared.mailboxes[self.id].clone();
                authorizer.ask(
                    body,
                    Box::new(move |verdict| {
                        mailbox.send(Letter::Authorized {
                            key: gate_key,
                            verdict,
                        });
                    }),
                );
                Gatekeep::Done
            }
        }
    }

    /// The app answered for `key`: carry out or refuse what waited on it, in order.
    pub fn on_authorized(&mut self, key: &Key, verdict: &Verdict) {
        let now = self.now();
        let released = self.permits.gate.answer(key, verdict, now);
        let fail_open = self
            .shared
            .authorizer
            .as_ref()
            .is_some_and(|a| a.fail_open());
        let pass = match verdict {
            Verdict::Allow { .. } => Pass::Allowed,
            Verdict::Deny { .. } => Pass::Refused,
            Verdict::Failed { .. } if fail_open => Pass::Allowed,
            Verdict::Failed { .. } => Pass::Unanswered,
        };
        for p in released {
            if let Some(n) = self.permits.parked.get_mut(&p.conn) {
                *n -= 1;
                if *n == 0 {
                    self.permits.parked.remove(&p.conn);
                }
            }
            let open = self
                .conns
                .get_mut(p.conn)
                .is_some_and(|c| c.phase == crate::conn::Phase::Open);
            if open {
                self.handle_request(p.conn, &p.text, pass);
            }
        }
    }
}
