//! What a client's request amounts to, sans-IO: the connection's facts (its token,
//! its rooms, whether it was refused before) and the configuration decide whether a
//! parsed `ringway.v1` request is carried out, answered with an error, or ends the
//! connection. The caller carries the decision out (the router does the rest).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::auth::Grant;
use crate::config::Config;
use crate::protocol::{self, ClientMsg, Cursor, ErrorCode};
use crate::ws::close;

/// What the caller knows about the connection.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'c> {
    /// Its token's grant (`None`: anonymous).
    pub grant: Option<&'c Grant>,
    /// The rooms it is subscribed to.
    pub rooms: &'c [Arc<str>],
    /// A request was refused for permissions before (the next refusal closes).
    pub denied: bool,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Subscribe (the room is new to the connection and within its limit).
    Subscribe {
        /// The room.
        room: Cow<'a, str>,
        /// Resume point.
        since: Option<Cursor>,
    },
    /// Unsubscribe (it was subscribed).
    Unsubscribe {
        /// The room.
        room: Cow<'a, str>,
    },
    /// Publish to a room, or (`send`) to a user's personal room.
    Publish {
        /// The room.
        room: Cow<'a, str>,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Conflation key.
        key: Option<Cow<'a, str>>,
        /// Idempotency key.
        idempotency_key: Option<Cow<'a, str>>,
    },
    /// Ask for a room's roster.
    Presence {
        /// The room.
        room: Cow<'a, str>,
    },
    /// Swap the token.
    Refresh {
        /// The new token.
        token: Cow<'a, str>,
    },
    /// Answer with this frame (a pong, or an error); the connection stays.
    Answer(Bytes),
    /// Refused for permissions (an `error` `forbidden` frame to send); remember the
    /// refusal: the next one closes.
    Denied(Bytes),
    /// Close with this code and reason (a repeated refusal).
    Close(u16, &'static str),
}

/// What a request needs from the token.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Subscribe,
    Publish,
    Send,
}

/// Decide what `msg` (with the request's `ref`) amounts to for a connection with
/// `facts`, under `config`.
pub fn decide<'a>(
    msg: ClientMsg<'a>,
    reference: Option<&'a RawValue>,
    facts: Facts<'_>,
    config: &Config,
) -> Decision<'a> {
    let refuse = |code, reason: &str, room: Option<&str>| {
        Decision::Answer(protocol::error_frame(code, reason, room, reference))
    };
    let own_room = |room: &str| {
        let user = facts.grant.map(|g| &*g.user);
        user.is_some() && protocol::personal_room_user(room) == user
    };
    let personal = |room: &str| protocol::personal_room_user(room).is_some();
    const RESERVED: &str = "rooms named user:* are reserved for direct messages";
    match msg {
        ClientMsg::Sub { room, since } => {
            if personal(&room) && !own_room(&room) {
                return refuse(ErrorCode::Reserved, RESERVED, Some(&room));
            }
            // A user's own room needs no pattern in the token: it is theirs.
            if !own_room(&room)
                && let Some(d) = permission(&room, Access::Subscribe, reference, facts, config)
            {
                return d;
            }
            if facts.rooms.iter().any(|r| **r == *room) {
                return refuse(
                    ErrorCode::BadField,
                    "already subscribed to this room",
                    Some(&room),
                );
            }
            let max = config.limits.max_subscriptions;
            if facts.rooms.len() >= max {
                return refuse(
                    ErrorCode::TooManySubscriptions,
                    &format!(
                        "at most {max} subscriptions per connection; unsubscribe from a room first"
                    ),
                    Some(&room),
                );
            }
            Decision::Subscribe { room, since }
        }
        ClientMsg::Unsub { room } => {
            if !facts.rooms.iter().any(|r| **r == *room) {
                return refuse(
                    ErrorCode::NotSubscribed,
                    "not subscribed to this room",
                    Some(&room),
                );
            }
            Decision::Unsubscribe { room }
        }
        ClientMsg::Pub {
            room,
            data,
            key,
            idempotency_key,
        } => {
            if personal(&room) {
                return refuse(ErrorCode::Reserved, RESERVED, Some(&room));
            }
            if let Some(d) = permission(&room, Access::Publish, reference, facts, config) {
                return d;
            }
            Decision::Publish {
                room,
                data,
                key,
                idempotency_key,
            }
        }
        ClientMsg::Send {
            user,
            data,
            idempotency_key,
        } => {
            let room = protocol::personal_room(&user);
            if !protocol::valid_room(&room, config.limits.max_room_name) {
                return refuse(ErrorCode::BadField, protocol::USER_RULE, Some(&room));
            }
            if let Some(d) = permission(&room, Access::Send, reference, facts, config) {
                return d;
            }
            Decision::Publish {
                room: Cow::Owned(room),
                data,
                key: None,
                idempotency_key,
            }
        }
        ClientMsg::Presence { room } => {
            // A personal room's roster says whether its user is online: only for that
            // user (and the API).
            if personal(&room) && !own_room(&room) {
                return refuse(
                    ErrorCode::Forbidden,
                    "the presence of a personal room is for its own user only",
                    Some(&room),
                );
            }
            if !own_room(&room)
                && let Some(d) = permission(&room, Access::Subscribe, reference, facts, config)
            {
                return d;
            }
            Decision::Presence { room }
        }
        ClientMsg::Refresh { token } => Decision::Refresh { token },
        ClientMsg::Ping => Decision::Answer(protocol::pong_frame(reference)),
    }
}

/// `None` when the connection's token (or its lack of one) allows `room` for
/// `access`; otherwise the refusal (the second one closes with 4003).
fn permission<'a>(
    room: &str,
    access: Access,
    reference: Option<&'a RawValue>,
    facts: Facts<'_>,
    config: &Config,
) -> Option<Decision<'a>> {
    let requires = config.auth.room_requires_auth(room);
    let reason = match (facts.grant, access) {
        (None, Access::Send) if !config.auth.anonymous_send => {
            Some("direct messages need a token (auth.anonymous_send is off)")
        }
        (None, _) if requires => Some("this room requires a token"),
        (None, _) => None,
        (Some(g), Access::Subscribe) if !g.may_subscribe(room) => {
            Some("your token does not allow subscribing to this room")
        }
        // A token's room patterns are about rooms: any identified user may send a
        // direct message (an authorization callback can decide otherwise).
        (Some(g), Access::Publish) if !g.may_publish(room) => {
            Some("your token does not allow publishing to this room")
        }
        (Some(_), _) => None,
    }?;
    if facts.denied {
        return Some(Decision::Close(
            close::FORBIDDEN,
            "repeated requests outside the token's permissions",
        ));
    }
    Some(Decision::Denied(protocol::error_frame(
        ErrorCode::Forbidden,
        reason,
        Some(room),
        reference,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::RoomClaims;

    fn grant(user: &str, sub: &[&str], publish: &[&str]) -> Grant {
        Grant {
            user: Arc::from(user),
            exp: u64::MAX,
            rooms: Some(Arc::new(RoomClaims {
                sub: sub.iter().map(|s| s.to_string()).collect(),
                publish: publish.iter().map(|s| s.to_string()).collect(),
            })),
            refresh_asked: false,
            claims: None,
        }
    }

    fn run(text: &str, facts: Facts<'_>, config: &Config) -> String {
        let req = protocol::parse(text.as_bytes(), 128).unwrap();
        match decide(req.msg, req.reference, facts, config) {
            Decision::Subscribe { room, .. } => format!("sub {room}"),
            Decision::Unsubscribe { room } => format!("unsub {room}"),
            Decision::Publish { room, .. } => format!("pub {room}"),
            Decision::Presence { room } => format!("presence {room}"),
            Decision::Refresh { .. } => "refresh".into(),
            Decision::Answer(f) | Decision::Denied(f) => {
                let start = if f[1] == 126 { 4 } else { 2 };
                let v: serde_json::Value = serde_json::from_slice(&f[start..]).unwrap();
                format!(
                    "{} {}",
                    v["type"].as_str().unwrap(),
                    v["code"].as_str().unwrap_or("")
                )
            }
            Decision::Close(code, _) => format!("close {code}"),
        }
    }

    #[test]
    fn personal_rooms_are_their_users_own() {
        let c = Config::default();
        let alice = grant("alice", &["*"], &["*"]);
        let rooms = [];
        let f = Facts {
            grant: Some(&alice),
            rooms: &rooms,
            denied: false,
        };
        assert_eq!(
            run(r#"{"type":"sub","room":"user:alice"}"#, f, &c),
            "sub user:alice"
        );
        assert_eq!(
            run(r#"{"type":"sub","room":"user:bob"}"#, f, &c),
            "error reserved"
        );
        assert_eq!(
            run(r#"{"type":"pub","room":"user:bob","data":1}"#, f, &c),
            "error reserved"
        );
        assert_eq!(
            run(r#"{"type":"send","user":"bob","data":1}"#, f, &c),
            "pub user:bob"
        );
        assert_eq!(
            run(r#"{"type":"presence","room":"user:alice"}"#, f, &c),
            "presence user:alice"
        );
        assert_eq!(
            run(r#"{"type":"presence","room":"user:bob"}"#, f, &c),
            "error forbidden"
        );
    }

    #[test]
    fn a_users_own_room_needs_no_pattern_in_the_token() {
        let c = Config::default();
        let alice = grant("alice", &["chat:*"], &["chat:*"]);
        let rooms = [];
        let f = Facts {
            grant: Some(&alice),
            rooms: &rooms,
            denied: false,
        };
        assert_eq!(
            run(r#"{"type":"presence","room":"user:alice"}"#, f, &c),
            "presence user:alice"
        );
        assert_eq!(
            run(r#"{"type":"sub","room":"user:alice"}"#, f, &c),
            "sub user:alice"
        );
        assert_eq!(
            run(r#"{"type":"presence","room":"chat:1"}"#, f, &c),
            "presence chat:1"
        );
        assert_eq!(
            run(r#"{"type":"presence","room":"lobby"}"#, f, &c),
            "error forbidden"
        );
    }

    #[test]
    fn a_second_refusal_closes_with_4003() {
        let c = Config::default();
        let g = grant("alice", &["chat:*"], &["chat:1"]);
        let rooms = [];
        let mut f = Facts {
            grant: Some(&g),
            rooms: &rooms,
            denied: false,
        };
        assert_eq!(
            run(r#"{"type":"pub","room":"chat:1","data":1}"#, f, &c),
            "pub chat:1"
        );
        assert_eq!(
            run(r#"{"type":"pub","room":"chat:2","data":1}"#, f, &c),
            "error forbidden"
        );
        f.denied = true;
        assert_eq!(run(r#"{"type":"sub","room":"admin"}"#, f, &c), "close 4003");
    }

    #[test]
    fn subscriptions_are_checked_against_the_connections_rooms() {
        let mut c = Config::default();
        c.limits.max_subscriptions = 2;
        let rooms: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let f = Facts {
            grant: None,
            rooms: &rooms,
            denied: false,
        };
        assert_eq!(
            run(r#"{"type":"sub","room":"a"}"#, f, &c),
            "error bad_field"
        );
        assert_eq!(
            run(r#"{"type":"sub","room":"c"}"#, f, &c),
            "error too_many_subscriptions"
        );
        assert_eq!(
            run(r#"{"type":"unsub","room":"c"}"#, f, &c),
            "error not_subscribed"
        );
        assert_eq!(run(r#"{"type":"unsub","room":"a"}"#, f, &c), "unsub a");
    }

    #[test]
    fn anonymous_clients_meet_the_rooms_that_need_a_token() {
        let mut c = Config::default();
        c.auth.rooms_require_auth = vec!["private:".into()];
        let rooms = [];
        let f = Facts {
            grant: None,
            rooms: &rooms,
            denied: false,
        };
        assert_eq!(
            run(r#"{"type":"sub","room":"private:1"}"#, f, &c),
            "error forbidden"
        );
        assert_eq!(run(r#"{"type":"sub","room":"open"}"#, f, &c), "sub open");
        c.allow_anonymous = false;
        assert_eq!(
            run(r#"{"type":"send","user":"bob","data":1}"#, f, &c),
            "error forbidden"
        );
    }
}
