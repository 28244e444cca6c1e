//! The client protocol `ringway.v1`, sans-IO: JSON text messages with a `"type"` field.
//!
//! Client → server: `sub {room, since?}`, `unsub {room}`, `pub {room, data, key?}`,
//! `send {user, data}`, `presence {room}`, `refresh {token}`, `ping`.
//! Server → client: `welcome`, `subscribed`, `unsubscribed`, `msg`, `presence`,
//! `join`/`leave`, `refresh_needed`, `refreshed`, `reconnect`, `pong`, `error`, each
//! encoded here (one encoder per message).
//!
//! Parsing borrows from the frame: `data` stays a [`RawValue`] slice of the input and
//! is copied once, into the single encoded frame every subscriber shares. Any message
//! may carry a `"ref"`; errors echo it so a client can match them to requests.
//! The full reference with an example session is `docs/PROTOCOL.md`.

mod encode;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

pub use encode::{
    ack_frame, disconnect_frame, error_frame, history_json, msg_frame, pong_frame,
    presence_change_frame, presence_frame, reconnect_frame, refresh_needed_frame, refreshed_frame,
    roster_json, subscribed_frame, unsubscribed_frame, welcome_frame,
};

/// A room's history generation. A new epoch means the history before it is gone and a
/// resuming client must re-sync. Travels as 16 hex digits (a u64 does not fit a JSON
/// number).
///
/// (Its serde form, a bare u64, is for the mesh's binary encoding only: in JSON an
/// epoch is always written as hex, by hand.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Epoch {
    /// Parse the 16-hex-digit form.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Epoch)
    }
}

/// Where a resuming client left off: the last message it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The room epoch of that message.
    pub epoch: Epoch,
    /// Its sequence number.
    pub seq: u64,
}

/// A validated client request.
#[derive(Debug)]
pub enum ClientMsg<'a> {
    /// Subscribe, optionally resuming after a cursor.
    Sub {
        /// Room name (validated).
        room: Cow<'a, str>,
        /// Resume point.
        since: Option<Cursor>,
    },
    /// Unsubscribe.
    Unsub {
        /// Room name (validated).
        room: Cow<'a, str>,
    },
    /// Publish `data` (any JSON value) to a room.
    Pub {
        /// Room name (validated).
        room: Cow<'a, str>,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Optional conflation key: under the `conflate` policy a slow subscriber
        /// keeps only the newest message per key.
        key: Option<Cow<'a, str>>,
        /// Optional idempotency key: a repeat is stamped once.
        idempotency_key: Option<Cow<'a, str>>,
    },
    /// Direct message to a user.
    Send {
        /// The user id.
        user: Cow<'a, str>,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Optional idempotency key: a repeat is delivered once.
        idempotency_key: Option<Cow<'a, str>>,
    },
    /// Ask for a room's roster.
    Presence {
        /// Room name (validated).
        room: Cow<'a, str>,
    },
    /// Replace the connection's token.
    Refresh {
        /// The new token.
        token: Cow<'a, str>,
    },
    /// Application-level ping; answered with `pong`.
    Ping,
}

/// A parsed request with its optional client reference.
#[derive(Debug)]
pub struct Request<'a> {
    /// What the client asked.
    pub msg: ClientMsg<'a>,
    /// The client's `ref`, echoed in replies about this request.
    pub reference: Option<&'a RawValue>,
}

/// Error codes carried in `error` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// A `type` ringway does not know.
    UnknownType,
    /// A required field is missing or has the wrong type.
    BadField,
    /// Room name empty, too long or with characters outside the allowed set.
    BadRoom,
    /// Binary frames are not part of ringway.v1.
    Unsupported,
    /// The request is valid but this node does not offer it yet.
    NotAvailable,
    /// `unsub` for a room the connection is not in.
    NotSubscribed,
    /// Room names with the `user:` prefix are reserved for direct messages.
    Reserved,
    /// The connection is at `limits.max_subscriptions`.
    TooManySubscriptions,
    /// The connection sends faster than `limits.messages_per_second`.
    RateLimited,
    /// The token does not allow this room (or the room requires a token).
    Forbidden,
    /// A `refresh` token is invalid, expired, or for another user.
    BadToken,
    /// The request needed an answer from another node that did not come in time,
    /// or the node is too busy to wait for one; retry.
    Unavailable,
}

impl ErrorCode {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::NotAvailable => "not_available",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::Reserved => "reserved",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// Why a request was refused, with the `ref` to echo when the request had one.
#[derive(Debug)]
pub struct Refusal<'a> {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: Cow<'static, str>,
    /// The client's `ref`, if it could be read.
    pub reference: Option<&'a RawValue>,
    /// The request's room, when it named a valid one (the error is about another
    /// field).
    pub room: Option<Cow<'a, str>>,
}

/// The flat wire shape: every field optional, checked in [`parse`]. (Serde's tagged
/// enums buffer their input, which would defeat the borrowed `RawValue`.)
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
    since: Option<WireCursor>,
    #[serde(rename = "ref", borrow)]
    reference: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireCursor {
    epoch: String,
    seq: u64,
}

/// Parse one text message. `max_room` is the longest room name accepted.
pub fn parse(text: &[u8], max_room: usize) -> Result<Request<'_>, Refusal<'_>> {
    let mut wire: Wire<'_> = serde_json::from_slice(text).map_err(|e| {
        // JSON with a field of the wrong type is a bad field, answered with its
        // `ref` so that the client can match the error to its request.
        #[derive(Deserialize)]
        struct Loose<'a> {
            #[serde(rename = "ref", borrow, default)]
            reference: Option<&'a RawValue>,
        }
        match serde_json::from_slice::<Loose<'_>>(text) {
            Ok(loose) if text.trim_ascii_start().starts_with(b"{") => Refusal {
                code: ErrorCode::BadField,
                reason: Cow::Owned(format!("a field has the wrong type: {e}")),
                reference: loose.reference,
                room: None,
            },
            _ => Refusal {
                code: ErrorCode::BadJson,
                reason: Cow::Owned(format!("invalid JSON message: {e}")),
                reference: None,
                room: None,
            },
        }
    })?;
    let r = wire.reference;
    let Some(kind) = wire.kind.take() else {
        return Err(Refusal {
            code: ErrorCode::BadField,
            reason: Cow::Borrowed("missing \"type\""),
            reference: r,
            room: None,
        });
    };
    // An error about another field names the room, when it is a valid one.
    let named = wire.room.clone().filter(|room| valid_room(room, max_room));
    let msg = message(&kind, wire, max_room).map_err(|e| Refusal { room: named, ..e })?;
    Ok(Request { msg, reference: r })
}

/// The message of `kind` in `wire`, checked.
fn message<'a>(kind: &str, wire: Wire<'a>, max_room: usize) -> Result<ClientMsg<'a>, Refusal<'a>> {
    let r = wire.reference;
    let refuse = |code, reason: &'static str, reference| Refusal {
        code,
        reason: Cow::Borrowed(reason),
        reference,
        room: None,
    };
    Ok(match kind {
        "sub" => ClientMsg::Sub {
            room: check_room(wire.room, max_room, r)?,
            since: match wire.since {
                None => None,
                Some(c) => Some(Cursor {
                    epoch: Epoch::parse(&c.epoch).ok_or_else(|| {
                        refuse(ErrorCode::BadField, "since.epoch must be 16 hex digits", r)
                    })?,
                    seq: c.seq,
                }),
            },
        },
        "unsub" => ClientMsg::Unsub {
            room: check_room(wire.room, max_room, r)?,
        },
        "pub" => ClientMsg::Pub {
            room: check_room(wire.room, max_room, r)?,
            data: check_data(wire.data, "pub needs \"data\"", r)?,
            key: match wire.key {
                Some(k) if !valid_key(&k) => {
                    return Err(refuse(ErrorCode::BadField, KEY_RULE, r));
                }
                k => k,
            },
            idempotency_key: check_idempotency(wire.idempotency_key, r)?,
        },
        "send" => ClientMsg::Send {
            user: match wire.user {
                None => return Err(refuse(ErrorCode::BadField, "send needs \"user\"", r)),
                Some(u) if !valid_user(&u) => {
                    return Err(refuse(ErrorCode::BadField, USER_RULE, r));
                }
                Some(u) => u,
            },
            data: check_data(wire.data, "send needs \"data\"", r)?,
            idempotency_key: check_idempotency(wire.idempotency_key, r)?,
        },
        "presence" => ClientMsg::Presence {
            room: check_room(wire.room, max_room, r)?,
        },
        "refresh" => ClientMsg::Refresh {
            token: wire
                .token
                .ok_or_else(|| refuse(ErrorCode::BadField, "refresh needs \"token\"", r))?,
        },
        "ping" => ClientMsg::Ping,
        _ => {
            return Err(Refusal {
                code: ErrorCode::UnknownType,
                reason: Cow::Owned(format!(
                    "unknown type {:?}; expected sub, unsub, pub, send, presence, refresh or ping",
                    truncate(kind, 32)
                )),
                reference: r,
                room: None,
            });
        }
    })
}

/// Room names: 1 to `max` bytes of `A-Z a-z 0-9 _ - . : / @ # = +`. A plain charset
/// keeps names safe in logs, metrics and URLs (`/v1/presence/{room}`).
pub fn valid_room(room: &str, max: usize) -> bool {
    !room.is_empty()
        && room.len() <= max
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@#=+".contains(&b))
}

/// Every identified connection is subscribed to its personal room `user:<id>`,
/// through which direct messages reach it. The `user:` prefix is reserved for them.
pub const PERSONAL_PREFIX: &str = "user:";

/// The personal room of `user`.
pub fn personal_room(user: &str) -> String {
    format!("{PERSONAL_PREFIX}{user}")
}

/// The user whose personal room `room` is, if it is one.
pub fn personal_room_user(room: &str) -> Option<&str> {
    room.strip_prefix(PERSONAL_PREFIX)
}

/// User ids (a token's `sub`, `send`'s `user`): 1 to 100 bytes of the room-name
/// characters, so `user:<id>` is always a valid room name.
pub fn valid_user(user: &str) -> bool {
    user.len() <= 100 && valid_room(user, 100)
}

/// The rule [`valid_user`] checks, for error messages.
pub const USER_RULE: &str = "user ids are 1 to 100 bytes of A-Z a-z 0-9 _ - . : / @ # = +";

/// Conflation keys: 1 to 128 bytes.
pub fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
}

/// The rule [`valid_key`] checks, for error messages.
pub const KEY_RULE: &str = "key must be 1 to 128 bytes";

/// Idempotency keys: 1 to 128 bytes (the same rule as conflation keys).
pub const IDEMPOTENCY_RULE: &str = "idempotency_key must be 1 to 128 bytes";

fn check_idempotency<'a>(
    key: Option<Cow<'a, str>>,
    r: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, Refusal<'a>> {
    match key {
        Some(k) if !valid_key(&k) => Err(Refusal {
            code: ErrorCode::BadField,
            reason: Cow::Borrowed(IDEMPOTENCY_RULE),
            reference: r,
            room: None,
        }),
        k => Ok(k),
    }
}

/// Deepest nesting of arrays and objects accepted in `data`: deeper JSON is valid,
/// but crashes the recursive parsers of common clients.
pub const MAX_DEPTH: usize = 64;

/// Check a payload ringway will forward: at most [`MAX_DEPTH`] levels of nesting.
/// (The text is already valid JSON, so brackets outside strings are structure.)
pub fn valid_data(data: &RawValue) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in data.get().as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "data is nested more than {MAX_DEPTH} levels deep; flatten it"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn check_data<'a>(
    data: Option<&'a RawValue>,
    missing: &'static str,
    r: Option<&'a RawValue>,
) -> Result<&'a RawValue, Refusal<'a>> {
    let Some(data) = data else {
        return Err(Refusal {
            code: ErrorCode::BadField,
            reason: Cow::Borrowed(missing),
            reference: r,
            room: None,
        });
    };
    valid_data(data).map_err(|reason| Refusal {
        code: ErrorCode::BadField,
        reason: Cow::Owned(reason),
        reference: r,
        room: None,
    })?;
    Ok(data)
}

fn check_room<'a>(
    room: Option<Cow<'a, str>>,
    max: usize,
    r: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, Refusal<'a>> {
    let Some(room) = room else {
        return Err(Refusal {
            code: ErrorCode::BadField,
            reason: Cow::Borrowed("missing \"room\""),
            reference: r,
            room: None,
        });
    };
    if !valid_room(&room, max) {
        return Err(Refusal {
            code: ErrorCode::BadRoom,
            reason: Cow::Owned(format!(
                "room names are 1 to {max} bytes of A-Z a-z 0-9 _ - . : / @ # = +"
            )),
            reference: r,
            room: None,
        });
    }
    Ok(room)
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ClientMsg<'_> {
        parse(text.as_bytes(), 64).unwrap().msg
    }

    fn err(text: &str) -> ErrorCode {
        parse(text.as_bytes(), 64).unwrap_err().code
    }

    #[test]
    fn parses_every_client_type() {
        assert!(matches!(
            ok(r#"{"type":"sub","room":"chat:42"}"#),
            ClientMsg::Sub { room, since: None } if room == "chat:42"
        ));
        assert!(matches!(
            ok(r#"{"type":"sub","room":"r","since":{"epoch":"9f2c41d07ab3e511","seq":18}}"#),
            ClientMsg::Sub {
                since: Some(Cursor {
                    epoch: Epoch(0x9f2c41d07ab3e511),
                    seq: 18
                }),
                ..
            }
        ));
        assert!(matches!(
            ok(r#"{"type":"unsub","room":"r"}"#),
            ClientMsg::Unsub { room } if room == "r"
        ));
        match ok(r#"{"type":"pub","room":"r","data":{"text":"hi"}}"#) {
            ClientMsg::Pub {
                room, data, key, ..
            } => {
                assert_eq!(room, "r");
                assert_eq!(data.get(), r#"{"text":"hi"}"#);
                assert!(key.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ok(r#"{"type":"ping"}"#), ClientMsg::Ping));
    }

    #[test]
    fn an_error_about_another_field_names_a_valid_room() {
        let e = parse(br#"{"type":"pub","room":"chat:1","ref":3}"#, 64).unwrap_err();
        assert_eq!(
            (e.code, e.room.as_deref()),
            (ErrorCode::BadField, Some("chat:1"))
        );
        let e = parse(br#"{"type":"pub","room":"a b","data":1}"#, 64).unwrap_err();
        assert_eq!((e.code, e.room.as_deref()), (ErrorCode::BadRoom, None));
        let e = parse(br#"{"type":"pub","data":1}"#, 64).unwrap_err();
        assert_eq!(e.room, None);
    }

    #[test]
    fn ref_is_kept_for_replies() {
        let r = parse(br#"{"type":"nope","ref":7}"#, 64).unwrap_err();
        assert_eq!(r.code, ErrorCode::UnknownType);
        assert_eq!(r.reference.unwrap().get(), "7");
    }

    #[test]
    fn refuses_bad_input_with_a_code() {
        assert_eq!(err("{"), ErrorCode::BadJson);
        assert_eq!(err("[1,2]"), ErrorCode::BadJson);
        assert_eq!(err(r#"{"room":"r"}"#), ErrorCode::BadField);
        assert_eq!(err(r#"{"type":"sub"}"#), ErrorCode::BadField);
        assert_eq!(err(r#"{"type":"sub","room":""}"#), ErrorCode::BadRoom);
        assert_eq!(err(r#"{"type":"sub","room":"a b"}"#), ErrorCode::BadRoom);
        assert_eq!(
            err(&format!(r#"{{"type":"sub","room":"{}"}}"#, "a".repeat(65))),
            ErrorCode::BadRoom
        );
        assert_eq!(err(r#"{"type":"pub","room":"r"}"#), ErrorCode::BadField);
        assert_eq!(
            err(r#"{"type":"sub","room":"r","since":{"epoch":"xyz","seq":1}}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            err(r#"{"type":"sub","room":"r","since":{"epoch":"0000000000000001","seq":-1}}"#),
            ErrorCode::BadField
        );
        // A field of the wrong type is a bad field (PROTOCOL.md), with its ref.
        assert_eq!(err(r#"{"type":7}"#), ErrorCode::BadField);
        let e = parse(br#"{"type":"pub","room":"x","data":1,"key":5,"ref":3}"#, 64).unwrap_err();
        assert_eq!(
            (e.code, e.reference.map(RawValue::get)),
            (ErrorCode::BadField, Some("3"))
        );
        // Not an object, or not JSON: bad JSON.
        assert_eq!(err("\"text\""), ErrorCode::BadJson);
        assert_eq!(err(r#"{"type":"sub",}"#), ErrorCode::BadJson);
    }

    #[test]
    fn every_prefix_of_a_message_is_refused_not_panicking() {
        let text = r#"{"type":"pub","room":"chat:42","data":{"t":"héllo","n":[1,2,{"x":null}]},"ref":"a"}"#;
        for i in 0..text.len() {
            let _ = parse(&text.as_bytes()[..i], 64).unwrap_err();
        }
        assert!(parse(text.as_bytes(), 64).is_ok());
    }

    #[test]
    fn deep_data_bad_users_and_keys_are_refused() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let pubs = |data: &str| format!(r#"{{"type":"pub","room":"r","data":{data}}}"#);
        assert!(parse(pubs(&deep(64)).as_bytes(), 64).is_ok());
        assert_eq!(err(&pubs(&deep(65))), ErrorCode::BadField);
        assert_eq!(err(&pubs(&deep(100_000))), ErrorCode::BadField);
        // Brackets inside strings are not structure.
        let text = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(200), "{".repeat(200));
        assert!(parse(pubs(&text).as_bytes(), 64).is_ok());
        for user in ["", "bob\r\nX: 1", &"u".repeat(101), "a b"] {
            let m = serde_json::json!({"type": "send", "user": user, "data": 1}).to_string();
            assert_eq!(err(&m), ErrorCode::BadField, "{user:?}");
        }
        let long_key =
            serde_json::json!({"type": "pub", "room": "r", "key": "k".repeat(129), "data": 1});
        assert_eq!(err(&long_key.to_string()), ErrorCode::BadField);
    }

    #[test]
    fn epoch_round_trips_as_16_hex_digits() {
        let e = Epoch(0x00ab);
        assert_eq!(e.to_string(), "00000000000000ab");
        assert_eq!(Epoch::parse(&e.to_string()), Some(e));
        assert_eq!(Epoch::parse("ab"), None);
    }
}
