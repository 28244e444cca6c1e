//! What a connection's input amounts to once the driver has framed it: the upgrade
//! (identity, admission, `welcome`, the personal room), WebSocket events, and
//! `ringway.v1` requests, decided by `conn::request` and carried out here with the
//! router.

use serde_json::value::RawValue;
use tracing::debug;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::authorize::{Gatekeep, Pass};
use super::conns::queue_over;
use super::worker::State;
use crate::conn::outq::Out;
use crate::conn::rate::Verdict;
use crate::conn::request::{self, Decision, Facts};
use crate::conn::{ConnKey, Phase};
use crate::hooks;
use crate::hooks::authorize::Action;
use crate::hub::{Arrival, Origin};
use crate::metrics::histogram::now_ns;
use crate::protocol::{self, ErrorCode};
use crate::ws::close;
use crate::ws::frame::{DataKind, Event, encode, encode_close};
use crate::ws::handshake::{Accepted, Endpoint};

impl State {
    /// The client's upgrade request was accepted by the handshake: check who it is
    /// and admit it, or refuse it (the HTTP answer is queued). Returns whether the
    /// connection is open.
    pub fn upgrade(&mut self, key: ConnKey, a: Accepted) -> bool {
        if a.endpoint != Endpoint::Client {
            return self.complete_upgrade(key, a, Ok(None));
        }
        if a.token.is_none() && self.shared.connector.is_some() {
            // No token: the app says who it is (its origin checked first).
            if let Err(r) = self.check_origin(&a) {
                return self.complete_upgrade(key, a, Err(r));
            }
            return match self.ask_who(key, a) {
                Ok(()) => true,
                Err(a) => self.complete_upgrade(key, a, Ok(None)),
            };
        }
        let identity = self.identify(&a);
        self.complete_upgrade(key, a, identity)
    }

    /// Admit the upgrade `a` of `key` as `identity`, or refuse it (the HTTP answer
    /// is queued). Returns whether the connection is open.
    pub(super) fn complete_upgrade(
        &mut self,
        key: ConnKey,
        a: Accepted,
        identity: Result<Option<Box<crate::auth::Grant>>, crate::ws::handshake::Rejected>,
    ) -> bool {
        let admitted = identity.and_then(|grant| {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.grant = grant;
            }
            self.admit(key)
        });
        if let Err(r) = admitted {
            self.conns.stats.handshake_failed(r.status);
            self.conns.refuse(key, r.response);
            return false;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        conn.endpoint = a.endpoint;
        conn.phase = Phase::Open;
        conn.deflate = a.deflate.map_or(0, |d| d.server_window_bits);
        self.conns.stats.upgrades += 1;
        self.conns.enqueue_raw(key, a.response);
        if a.endpoint == Endpoint::Client {
            let id = self.conns.conn_id(key).to_string();
            let user = self.conns.get_mut(key).and_then(|c| c.user());
            let cfg = &self.shared.config;
            let hello = protocol::welcome_frame(
                &id,
                &cfg.node_id,
                cfg.heartbeat.ping_interval_ms,
                user.as_deref(),
            );
            self.conns.enqueue(key, Out::Own(hello));
            if let Some(h) = &self.shared.hooks {
                h.event(&hooks::Event::Connect {
                    conn: &id,
                    user: user.as_deref(),
                });
                if let Some(c) = self.conns.get_mut(key) {
                    c.announced = true;
                }
            }
            if let Some(user) = user {
                // Direct messages arrive through the personal room.
                let room = protocol::personal_room(&user);
                self.subscribe(key, &room, None);
            }
        }
        true
    }

    /// One WebSocket event from an open connection.
    pub fn on_event(&mut self, key: ConnKey, event: Event<'_>) {
        match event {
            Event::Message(kind, payload) => self.on_message(key, kind, payload.as_slice(), false),
            Event::Ping(payload) => {
                // Pings cost a pong: they count against the rate like messages (a
                // refused one goes unanswered).
                let endpoint = self.conns.get_mut(key).map(|c| c.endpoint);
                if endpoint == Some(Endpoint::Client) && !self.within_rate(key, payload.len()) {
                    return;
                }
                let pong = encode(OpCode::Control(Control::Pong), payload);
                // A pong may answer only the latest of several pings (RFC 6455
                // §5.5.3): at the queue's bound, one still waiting at its back is
                // replaced, so a burst of pings does not overflow the queue of a
                // client that reads (each ping is answered otherwise).
                let limits = &self.shared.config.limits;
                if let Some(conn) = self.conns.get_mut(key)
                    && queue_over(
                        &conn.outq,
                        pong.len(),
                        limits.max_queue_messages,
                        limits.max_queue_bytes,
                    )
                {
                    conn.outq.drop_last_if(is_pong);
                }
                self.conns.enqueue(key, Out::Own(pong));
            }
            Event::Compressed(kind, payload) => self.on_compressed(key, kind, payload.as_slice()),
            Event::Pong(_) | Event::Fragment => {}
            Event::Close(reason) => {
                // Answer with the peer's code (RFC 6455 §5.5.1), then shut down.
                let frame = match reason {
                    Some((code, _)) => encode_close(code, ""),
                    None => encode(OpCode::Control(Control::Close), &[]),
                };
                self.conns.closed_by_peer(key, frame);
            }
        }
    }

    /// A complete data message. `rated`: it was already counted against the rate
    /// limits (a compressed message is, before it is inflated).
    fn on_message(&mut self, key: ConnKey, kind: DataKind, payload: &[u8], rated: bool) {
        self.conns.stats.messages_in += 1;
        let Some(endpoint) = self.conns.get_mut(key).map(|c| c.endpoint) else {
            return;
        };
        match (endpoint, kind) {
            (Endpoint::Echo, _) => {
                let op = match kind {
                    DataKind::Text => OpCode::Data(Data::Text),
                    DataKind::Binary => OpCode::Data(Data::Binary),
                };
                self.conns.enqueue(key, Out::Own(encode(op, payload)));
            }
            (Endpoint::Client, DataKind::Text) => {
                if rated || self.within_rate(key, payload.len()) {
                    self.handle_request(key, payload, Pass::Ask);
                }
            }
            (Endpoint::Client, DataKind::Binary) => {
                // Refused, but counted like any message: an error answered per frame
                // must not be free.
                if !rated && !self.within_rate(key, payload.len()) {
                    return;
                }
                let frame = protocol::error_frame(
                    ErrorCode::Unsupported,
                    "ringway.v1 messages are JSON text frames; binary frames are not accepted",
                    None,
                    None,
                );
                self.conns.enqueue(key, Out::Own(frame));
            }
        }
    }

    /// A permessage-deflate message: counted against the rate limits as it came
    /// (a refused one is not inflated), inflated in the worker's scratch (bounded by
    /// `limits.max_message_size` as it grows: 1009 past it), what it inflated to
    /// charged to the byte rate, its UTF-8 checked (1007), then as any message.
    fn on_compressed(&mut self, key: ConnKey, kind: DataKind, compressed: &[u8]) {
        let echo = self.conns.get_mut(key).map(|c| c.endpoint) == Some(Endpoint::Echo);
        if !echo && !self.within_rate(key, compressed.len()) {
            return;
        }
        let max = self.shared.config.limits.max_message_size;
        let mut inflater = self.inflater.take().unwrap_or_default();
        match inflater.inflate(compressed, max) {
            Ok(plain) => {
                let d = &mut self.conns.stats.deflate;
                d.inflated += 1;
                d.inflated_in += compressed.len() as u64;
                d.inflated_out += plain.len() as u64;
                let rates = self.shared.config.limits.rates();
                if let Some(c) = self.conns.get_mut(key) {
                    c.rate
                        .charge(plain.len().saturating_sub(compressed.len()), &rates);
                }
                if kind == DataKind::Text && std::str::from_utf8(plain).is_err() {
                    self.conns
                        .close(key, close::INVALID_DATA, "invalid UTF-8 in text");
                } else {
                    self.on_message(key, kind, plain, !echo);
                }
            }
            Err(v) => {
                debug!(conn = %self.conns.conn_id(key), code = v.code, reason = v.reason, "closing on bad compressed input");
                self.conns.close(key, v.code, v.reason);
            }
        }
        self.inflater = Some(inflater);
    }

    /// Whether the connection may send another message (or ping) of `len` bytes now.
    /// Over its rate it is refused: the first refusal of an overrun is answered with
    /// an error, and an overrun that lasts `limits.rate_close_after_ms` closes it with
    /// 4029 (see `conn::rate`).
    fn within_rate(&mut self, key: ConnKey, len: usize) -> bool {
        let rates = self.shared.config.limits.rates();
        if rates.messages_per_second == 0 && rates.bytes_per_second == 0 {
            return true;
        }
        let now = self.now_ms();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match conn.rate.check(now, len, &rates) {
            Verdict::Allow => true,
            Verdict::Refuse { notify, bytes } => {
                self.conns.stats.rate_refused += 1;
                if notify {
                    let reason = if bytes {
                        format!(
                            "over {} bytes per second (limits.bytes_per_second); slow down or you will be disconnected",
                            rates.bytes_per_second
                        )
                    } else {
                        format!(
                            "over {} messages per second (limits.messages_per_second); slow down or you will be disconnected",
                            rates.messages_per_second
                        )
                    };
                    let frame = protocol::error_frame(ErrorCode::RateLimited, &reason, None, None);
                    self.conns.enqueue(key, Out::Own(frame));
                }
                false
            }
            Verdict::Close => {
                self.conns.stats.rate_refused += 1;
                self.conns
                    .close(key, close::RATE_LIMITED, "rate limit exceeded");
                false
            }
        }
    }

    /// Carry out a request (`pass`: where it stands with the app's authorization;
    /// a request parked for it comes back here once answered).
    pub(crate) fn handle_request(&mut self, key: ConnKey, text: &[u8], pass: Pass) {
        let max_room = self.shared.config.limits.max_room_name;
        let req = match protocol::parse(text, max_room) {
            Ok(r) => r,
            Err(refusal) => {
                let frame = protocol::error_frame(
                    refusal.code,
                    &refusal.reason,
                    refusal.room.as_deref(),
                    refusal.reference,
                );
                self.conns.enqueue(key, Out::Own(frame));
                return;
            }
        };
        let reference = req.reference;
        let shared = self.shared.clone();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let user = conn.user();
        let facts = Facts {
            grant: conn.grant.as_deref(),
            rooms: &conn.rooms,
            denied: conn.denied,
        };
        let decision = request::decide(req.msg, reference, facts, &shared.config);
        let asks = match &decision {
            Decision::Subscribe { room, .. } | Decision::Presence { room } => {
                Some((room.as_ref(), Action::Subscribe))
            }
            Decision::Publish { room, .. } if protocol::personal_room_user(room).is_some() => {
                Some((room.as_ref(), Action::Send))
            }
            Decision::Publish { room, .. } => Some((room.as_ref(), Action::Publish)),
            _ => None,
        };
        if let Some((room, action)) = asks
            && let Gatekeep::Done = self.authorize(key, room, action, pass, text, reference)
        {
            return;
        }
        match decision {
            Decision::Subscribe { room, since } => {
                self.announce(key, &room, true);
                self.subscribe(key, &room, since);
            }
            Decision::Unsubscribe { room } => {
                self.announce(key, &room, false);
                self.unsubscribe(key, &room);
            }
            Decision::Publish {
                room,
                data,
                key: msg_key,
                idempotency_key,
            } => {
                // Anonymous clients share one key space (a retry after a reconnect
                // comes on another connection, with nothing to tie it to the first
                // but its key): their keys must be unguessable (README).
                let idempotency_key = idempotency_key.map(std::borrow::Cow::into_owned);
                let origin = Origin {
                    from: user.map(|u| u.to_string()),
                    idempotency_key,
                    client: true,
                };
                // With a `ref`, the client wants an ack once the owner stamped it.
                let reply = match reference {
                    None => None,
                    Some(r) => match self.request_for(key, Some(r), &room) {
                        Some(req) => Some(req),
                        None => {
                            let frame = protocol::error_frame(
                                ErrorCode::Unavailable,
                                "too many requests waiting for an answer on this node; retry",
                                Some(&room),
                                reference,
                            );
                            self.conns.enqueue(key, Out::Own(frame));
                            return;
                        }
                    },
                };
                let now = self.now();
                self.hub.handle_publish(
                    &room,
                    data,
                    msg_key.as_deref(),
                    origin,
                    reply,
                    Arrival::at_ns(now_ns()),
                    now,
                );
                self.run_hub();
                self.pace_publisher(key, &room);
            }
            Decision::Presence { room } => self.presence(key, &room, reference),
            Decision::Refresh { token } => self.refresh(key, &token, reference),
            Decision::Answer(frame) => self.conns.enqueue(key, Out::Own(frame)),
            Decision::Denied(frame) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.denied = true;
                }
                self.conns.enqueue(key, Out::Own(frame));
            }
            Decision::Close(code, reason) => {
                debug!(conn = %self.conns.conn_id(key), code, reason, "closing");
                self.conns.close(key, code, reason);
            }
        }
    }

    /// Tell the app (webhooks) that a connection subscribed to or left `room`.
    fn announce(&mut self, key: ConnKey, room: &str, subscribed: bool) {
        let Some(h) = self.shared.hooks.clone() else {
            return;
        };
        let id = self.conns.conn_id(key).to_string();
        let user = self.conns.get_mut(key).and_then(|c| c.user());
        let (conn, user) = (id.as_str(), user.as_deref());
        h.event(&if subscribed {
            hooks::Event::Subscribe { conn, user, room }
        } else {
            hooks::Event::Unsubscribe { conn, user, room }
        });
    }

    /// Join a room: the router answers through the owner.
    fn subscribe(&mut self, key: ConnKey, room: &str, since: Option<protocol::Cursor>) {
        let now = self.now();
        let Some(user) = self.conns.get_mut(key).map(|c| c.user()) else {
            return;
        };
        let name = self.hub.handle_subscribe(key, room, since, user, now);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.rooms.push(name);
        }
        self.run_hub();
    }

    /// Leave a room the connection is subscribed to.
    fn unsubscribe(&mut self, key: ConnKey, room: &str) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(i) = conn.rooms.iter().position(|r| &**r == room) else {
            return;
        };
        let name = conn.rooms.swap_remove(i);
        let identified = conn.grant.is_some();
        self.hub.handle_leave(key, &name, identified, now);
        self.run_hub();
        self.conns
            .enqueue(key, Out::Own(protocol::unsubscribed_frame(&name)));
    }

    /// Ask for a room's roster; the answer comes back with the request's `ref`.
    fn presence(&mut self, key: ConnKey, room: &str, reference: Option<&RawValue>) {
        let Some(req) = self.request_for(key, reference, room) else {
            let frame = protocol::error_frame(
                ErrorCode::Unavailable,
                "too many requests waiting for an answer on this node; retry",
                Some(room),
                reference,
            );
            self.conns.enqueue(key, Out::Own(frame));
            return;
        };
        let now = self.now();
        self.hub.handle_presence(room, req, now);
        self.run_hub();
    }

    /// `refresh`: swap the connection's token for a newer one of the same user.
    pub fn refresh(
        &mut self,
        key: ConnKey,
        token: &str,
        reference: Option<&serde_json::value::RawValue>,
    ) {
        let verdict = if self.shared.verifier.is_none() && self.shared.site.demo.is_none() {
            Err("this node has no token key configured".to_owned())
        } else {
            self.verify_token(token).map_err(|e| e.to_string())
        };
        let current = self.conns.get_mut(key).and_then(|c| c.user());
        let result = verdict.and_then(|g| match &current {
            Some(u) if *u == g.user => Ok(g),
            Some(_) => {
                Err("the new token is for another user; reconnect to change users".to_owned())
            }
            None => Err("this connection is anonymous; reconnect with a token".to_owned()),
        });
        match result {
            Ok(g) => {
                let exp = g.exp;
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.grant = Some(Box::new(g));
                    conn.denied = false;
                }
                // The wheel entry is recomputed when it comes due; a token that ends
                // sooner than that needs an earlier look.
                let now = self.conns.wheel.now();
                self.conns.reschedule_if_sooner(key, now + 1);
                let frame = crate::protocol::refreshed_frame(exp);
                self.conns.enqueue(key, Out::Own(frame));
            }
            Err(reason) => {
                let frame =
                    protocol::error_frame(protocol::ErrorCode::BadToken, &reason, None, reference);
                self.conns.enqueue(key, Out::Own(frame));
            }
        }
    }
}

/// Whether a queued frame is a pong of ours (control frames are never compressed,
/// so the first byte says it: FIN and opcode 0xA; a broadcast is a data frame).
fn is_pong(frame: &[u8]) -> bool {
    frame.first() == Some(&0x8A)
}
