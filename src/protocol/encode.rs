//! Server → client messages, each written straight into a complete WebSocket text
//! frame (see [`TextFrameWriter`]): one serialization, no copy afterwards.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{Epoch, ErrorCode};
use crate::ws::frame::TextFrameWriter;

/// Append `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    serde_json::to_writer(&mut *out, s).expect("serializing a str into a Vec");
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{"type":"msg","room":…,"seq":…,"from":…?,"key":…?,"data":…}`: the frame every
/// subscriber shares. `from` is the publisher's user as the node knows it (never
/// what a client wrote).
pub fn msg_frame(
    room: &str,
    seq: u64,
    from: Option<&str>,
    key: Option<&str>,
    data: &RawValue,
) -> Bytes {
    let key_len = key.map_or(0, |k| k.len() + 8);
    let from_len = from.map_or(0, |f| f.len() + 9);
    let mut w =
        TextFrameWriter::with_capacity(40 + room.len() + key_len + from_len + data.get().len());
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"msg","room":"#);
    string(out, room);
    out.extend_from_slice(br#","seq":"#);
    number(out, seq);
    if let Some(from) = from {
        out.extend_from_slice(br#","from":"#);
        string(out, from);
    }
    if let Some(key) = key {
        out.extend_from_slice(br#","key":"#);
        string(out, key);
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data.get().as_bytes());
    out.push(b'}');
    w.finish()
}

/// `{"type":"welcome","conn":…,"node":…,"user":…?,"heartbeat":ms}`.
pub fn welcome_frame(conn: &str, node: &str, heartbeat_ms: u64, user: Option<&str>) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(100);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"welcome","conn":"#);
    string(out, conn);
    out.extend_from_slice(br#","node":"#);
    string(out, node);
    if let Some(user) = user {
        out.extend_from_slice(br#","user":"#);
        string(out, user);
    }
    out.extend_from_slice(br#","heartbeat":"#);
    number(out, heartbeat_ms);
    out.push(b'}');
    w.finish()
}

/// `{"type":"subscribed","room":…,"epoch":…,"seq":…,"recovered":…}`.
pub fn subscribed_frame(room: &str, epoch: Epoch, seq: u64, recovered: bool) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(100 + room.len());
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"subscribed","room":"#);
    string(out, room);
    out.extend_from_slice(br#","epoch":""#);
    out.extend_from_slice(epoch.to_string().as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    number(out, seq);
    out.extend_from_slice(if recovered {
        br#","recovered":true}"#.as_slice()
    } else {
        br#","recovered":false}"#.as_slice()
    });
    w.finish()
}

/// `{"type":"ack","room":…,"epoch":…,"seq":…,"duplicate":true?,"ref":…}`: a
/// publish (or `send`) with a `ref` was stamped by the room's owner; `duplicate`
/// when its idempotency key had been seen, and `seq` is then the first one's.
pub fn ack_frame(
    room: &str,
    epoch: Epoch,
    seq: u64,
    duplicate: bool,
    reference: Option<&RawValue>,
) -> Bytes {
    let ref_len = reference.map_or(0, |r| r.get().len() + 7);
    let mut w = TextFrameWriter::with_capacity(90 + room.len() + ref_len);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"ack","room":"#);
    string(out, room);
    out.extend_from_slice(br#","epoch":""#);
    out.extend_from_slice(epoch.to_string().as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    number(out, seq);
    if duplicate {
        out.extend_from_slice(br#","duplicate":true"#);
    }
    if let Some(r) = reference {
        out.extend_from_slice(br#","ref":"#);
        out.extend_from_slice(r.get().as_bytes());
    }
    out.push(b'}');
    w.finish()
}

/// `{"type":"disconnect","code":…,"reason":…,"reconnect":…}`: the app closes this
/// connection (`POST /v1/disconnect`); the close frame with `code` follows.
/// `reconnect: false` asks the client not to come back on its own.
pub fn disconnect_frame(code: u16, reason: &str, reconnect: bool) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(80 + reason.len());
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"disconnect","code":"#);
    number(out, u64::from(code));
    out.extend_from_slice(br#","reason":"#);
    string(out, reason);
    out.extend_from_slice(if reconnect {
        br#","reconnect":true}"#.as_slice()
    } else {
        br#","reconnect":false}"#.as_slice()
    });
    w.finish()
}

/// A room's history for the app (`GET /v1/history/{room}`):
/// `{"room","epoch","seq","oldest","messages":[{"seq","from"?,"key"?,"data"}],"more"}`.
/// `position` is the room's epoch and latest seq (`None`: nobody owns the room now,
/// it has no history), `oldest` the seq of the oldest message still held, `frames`
/// the stored `msg` frames to list, oldest first. At most `limit` messages and about
/// `max_bytes` of them; `more` says whether some were left out.
pub fn history_json<'f>(
    room: &str,
    position: Option<(Epoch, u64)>,
    oldest: Option<u64>,
    frames: impl Iterator<Item = &'f Bytes>,
    limit: usize,
    max_bytes: usize,
) -> String {
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        seq: u64,
        #[serde(borrow)]
        from: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        key: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"room":"#);
    string(&mut out, room);
    match position {
        Some((epoch, seq)) => {
            out.extend_from_slice(br#","epoch":""#);
            out.extend_from_slice(epoch.to_string().as_bytes());
            out.extend_from_slice(br#"","seq":"#);
            number(&mut out, seq);
        }
        None => out.extend_from_slice(br#","epoch":null,"seq":0"#),
    }
    match oldest {
        Some(o) => {
            out.extend_from_slice(br#","oldest":"#);
            number(&mut out, o);
        }
        None => out.extend_from_slice(br#","oldest":null"#),
    }
    out.extend_from_slice(br#","messages":["#);
    let (mut n, mut more) = (0, false);
    for frame in frames {
        if n == limit || out.len() >= max_bytes {
            more = true;
            break;
        }
        let Ok(m) = serde_json::from_slice::<Stored<'_>>(crate::ws::frame::server_payload(frame))
        else {
            continue; // every stored frame is a msg this node encoded
        };
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"seq":"#);
        number(&mut out, m.seq);
        if let Some(from) = m.from {
            out.extend_from_slice(br#","from":"#);
            string(&mut out, &from);
        }
        if let Some(key) = m.key {
            out.extend_from_slice(br#","key":"#);
            string(&mut out, &key);
        }
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(m.data.get().as_bytes());
        out.push(b'}');
        n += 1;
    }
    out.extend_from_slice(if more {
        br#"],"more":true}"#.as_slice()
    } else {
        br#"],"more":false}"#.as_slice()
    });
    String::from_utf8(out).expect("JSON built from strings and JSON")
}

/// `{"type":"unsubscribed","room":…}`.
pub fn unsubscribed_frame(room: &str) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(40 + room.len());
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"unsubscribed","room":"#);
    string(out, room);
    out.push(b'}');
    w.finish()
}

/// `{"type":"reconnect","after_ms":…}`: the node is going away; reconnect after
/// this long (to another node, or this one once restarted) and resume.
pub fn reconnect_frame(after_ms: u64) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(40);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"reconnect","after_ms":"#);
    number(out, after_ms);
    out.push(b'}');
    w.finish()
}

/// A roster (`{"type":"presence",…}`, as the room's owner wrote it) with the
/// request's `ref` added when it had one.
pub fn presence_frame(json: &str, reference: Option<&RawValue>) -> Bytes {
    let body = json.trim_end();
    let mut w = TextFrameWriter::with_capacity(body.len() + 16);
    let out = w.payload();
    match (reference, body.strip_suffix('}')) {
        (Some(r), Some(open)) => {
            out.extend_from_slice(open.as_bytes());
            out.extend_from_slice(br#","ref":"#);
            out.extend_from_slice(r.get().as_bytes());
            out.push(b'}');
        }
        _ => out.extend_from_slice(body.as_bytes()),
    }
    w.finish()
}

/// `{"type":"refresh_needed","exp":…}`: the token expires at `exp`; send a new one.
pub fn refresh_needed_frame(exp: u64) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(48);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"refresh_needed","exp":"#);
    number(out, exp);
    out.push(b'}');
    w.finish()
}

/// `{"type":"refreshed","exp":…}`: the new token is in force until `exp`.
pub fn refreshed_frame(exp: u64) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(40);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"refreshed","exp":"#);
    number(out, exp);
    out.push(b'}');
    w.finish()
}

/// `{"type":"presence","room":…,"users":[{"user":…,"connections":n}],"connections":n}`:
/// a room's roster (users sorted by the caller).
pub fn roster_json<'a>(
    room: &str,
    users: impl Iterator<Item = (&'a str, u32)>,
    connections: usize,
) -> String {
    let mut out = Vec::with_capacity(64 + room.len());
    out.extend_from_slice(br#"{"type":"presence","room":"#);
    string(&mut out, room);
    out.extend_from_slice(br#","users":["#);
    for (i, (user, n)) in users.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"user":"#);
        string(&mut out, user);
        out.extend_from_slice(br#","connections":"#);
        number(&mut out, u64::from(n));
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"connections":"#);
    number(&mut out, connections as u64);
    out.push(b'}');
    // Only JSON strings and numbers were written: valid UTF-8.
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// `{"type":"join"|"leave","room":…,"user":…}`: a user's first connection joined the
/// room, or its last left.
pub fn presence_change_frame(room: &str, user: &str, joined: bool) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(48 + room.len() + user.len());
    let out = w.payload();
    out.extend_from_slice(if joined {
        br#"{"type":"join","room":"#.as_slice()
    } else {
        br#"{"type":"leave","room":"#.as_slice()
    });
    string(out, room);
    out.extend_from_slice(br#","user":"#);
    string(out, user);
    out.push(b'}');
    w.finish()
}

/// `{"type":"pong"}`, with the request's `ref` if it had one.
pub fn pong_frame(reference: Option<&RawValue>) -> Bytes {
    let mut w = TextFrameWriter::with_capacity(32);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"pong""#);
    if let Some(r) = reference {
        out.extend_from_slice(br#","ref":"#);
        out.extend_from_slice(r.get().as_bytes());
    }
    out.push(b'}');
    w.finish()
}

/// `{"type":"error","code":…,"reason":…,"room":…?,"ref":…?}`: `room` names the room
/// the refused request was about, `ref` echoes the request's.
pub fn error_frame(
    code: ErrorCode,
    reason: &str,
    room: Option<&str>,
    reference: Option<&RawValue>,
) -> Bytes {
    let room_len = room.map_or(0, |r| r.len() + 10);
    let mut w = TextFrameWriter::with_capacity(64 + reason.len() + room_len);
    let out = w.payload();
    out.extend_from_slice(br#"{"type":"error","code":""#);
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(br#"","reason":"#);
    string(out, reason);
    if let Some(room) = room {
        out.extend_from_slice(br#","room":"#);
        string(out, room);
    }
    if let Some(r) = reference {
        out.extend_from_slice(br#","ref":"#);
        out.extend_from_slice(r.get().as_bytes());
    }
    out.push(b'}');
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON payload of a server frame (short frames: 2-byte header).
    fn json(frame: &Bytes) -> serde_json::Value {
        let start = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    #[test]
    fn frames_carry_the_contract_json() {
        let data = RawValue::from_string(r#"{"text":"hi \"there\""}"#.into()).unwrap();
        let m = json(&msg_frame("chat:42", 18, None, None, &data));
        let k = json(&msg_frame("t", 1, Some("alice"), Some("AAPL"), &data));
        assert_eq!(k["key"], "AAPL");
        assert_eq!(k["from"], "alice");
        assert!(m.get("from").is_none());
        let a = json(&ack_frame("t", Epoch(0xab), 7, true, Some(&data)));
        assert_eq!(
            (a["type"].as_str(), a["epoch"].as_str(), a["seq"].as_u64()),
            (Some("ack"), Some("00000000000000ab"), Some(7))
        );
        assert_eq!(
            (a["duplicate"].as_bool(), &a["ref"]["text"]),
            (Some(true), &serde_json::json!("hi \"there\""))
        );
        let frames = [
            msg_frame("r", 4, Some("alice"), None, &data),
            msg_frame("r", 5, None, Some("k"), &data),
        ];
        let h: serde_json::Value = serde_json::from_str(&history_json(
            "r",
            Some((Epoch(0xab), 5)),
            Some(4),
            frames.iter(),
            10,
            1 << 20,
        ))
        .unwrap();
        assert_eq!(
            h,
            serde_json::json!({"room": "r", "epoch": "00000000000000ab", "seq": 5, "oldest": 4,
                "messages": [{"seq": 4, "from": "alice", "data": {"text": "hi \"there\""}},
                             {"seq": 5, "key": "k", "data": {"text": "hi \"there\""}}], "more": false})
        );
        let h: serde_json::Value =
            serde_json::from_str(&history_json("r", None, None, frames.iter(), 1, 1 << 20))
                .unwrap();
        assert_eq!(
            (
                h["epoch"].is_null(),
                h["messages"].as_array().unwrap().len(),
                &h["more"]
            ),
            (true, 1, &serde_json::json!(true))
        );
        let d = json(&disconnect_frame(4010, "bye", false));
        assert_eq!(
            (d["code"].as_u64(), d["reconnect"].as_bool()),
            (Some(4010), Some(false))
        );
        assert_eq!(json(&reconnect_frame(1500))["after_ms"], 1500);
        assert_eq!(
            m,
            serde_json::json!({"type":"msg","room":"chat:42","seq":18,"data":{"text":"hi \"there\""}})
        );
        let s = json(&subscribed_frame(
            "chat:42",
            Epoch(0x9f2c41d07ab3e511),
            17,
            false,
        ));
        assert_eq!(
            s,
            serde_json::json!({"type":"subscribed","room":"chat:42","epoch":"9f2c41d07ab3e511","seq":17,"recovered":false})
        );
        let e = json(&error_frame(ErrorCode::BadJson, "bad \"x\"", None, None));
        assert_eq!(e["reason"], "bad \"x\"");
        let r = RawValue::from_string("7".into()).unwrap();
        let f = json(&error_frame(
            ErrorCode::Forbidden,
            "no",
            Some("chat:1"),
            Some(&r),
        ));
        assert_eq!(
            (f["room"].as_str(), f["ref"].as_u64()),
            (Some("chat:1"), Some(7))
        );
        let w = json(&welcome_frame("0.1.1", "n1", 25000, None));
        let j = json(&presence_change_frame("r", "al\"ice", false));
        assert_eq!(
            j,
            serde_json::json!({"type":"leave","room":"r","user":"al\"ice"})
        );
        let roster: serde_json::Value =
            serde_json::from_str(&roster_json("r", [("a", 2), ("b", 1)].into_iter(), 3)).unwrap();
        assert_eq!(
            roster,
            serde_json::json!({"type":"presence","room":"r","users":[{"user":"a","connections":2},{"user":"b","connections":1}],"connections":3})
        );
        assert_eq!(w["heartbeat"], 25000);
        let r = RawValue::from_string("\"abc\"".into()).unwrap();
        assert_eq!(json(&pong_frame(Some(&r)))["ref"], "abc");
    }
}
