//! What the app hears, sans-IO: webhook events and the batch that carries them.
//!
//! A request's body is one batch:
//! `{"node":"n1","batch":7,"events":[{"type":"connect",…},…]}`. Batch numbers grow
//! by one per request a node sends (a retry sends the same number again), and events
//! from one node arrive in the order they happened there.
//!
//! | type          | fields (besides `type`, `time` in Unix ms, `node`) |
//! |---------------|------------------------------------------------------|
//! | `connect`     | `conn`, `user`? |
//! | `disconnect`  | `conn`, `user`?, `reason` (as `ringway_disconnects_total` names it) |
//! | `subscribe`   | `conn`, `user`?, `room` |
//! | `unsubscribe` | `conn`, `user`?, `room` (an explicit `unsub`; a disconnect ends every subscription) |
//! | `publish`     | `room`, `epoch`, `seq`, `from`?, `data` (client publishes to rooms in `hooks.publish_rooms`, from the room's owner) |
//! | `join`/`leave`| `room`, `user` (a user's first connection joined, or last one left, anywhere in the cluster; from the room's owner, debounced like presence events) |

use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::Epoch;

/// The kinds of event, for `hooks.events`.
pub use crate::config::HOOK_EVENTS as KINDS;

/// One event.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A client connected (its upgrade was accepted).
    Connect {
        /// `worker.slot.generation`, as `welcome` names it.
        conn: &'a str,
        /// Its user, if identified.
        user: Option<&'a str>,
    },
    /// A client's connection ended.
    Disconnect {
        /// The connection.
        conn: &'a str,
        /// Its user.
        user: Option<&'a str>,
        /// Why (a `ringway_disconnects_total` reason).
        reason: &'a str,
    },
    /// A client subscribed to a room.
    Subscribe {
        /// The connection.
        conn: &'a str,
        /// Its user.
        user: Option<&'a str>,
        /// The room.
        room: &'a str,
    },
    /// A client unsubscribed.
    Unsubscribe {
        /// The connection.
        conn: &'a str,
        /// Its user.
        user: Option<&'a str>,
        /// The room.
        room: &'a str,
    },
    /// A client's message was stamped (by this node, the room's owner).
    Publish {
        /// The room.
        room: &'a str,
        /// Its epoch.
        epoch: Epoch,
        /// The message's seq.
        seq: u64,
        /// The publisher's user.
        from: Option<&'a str>,
        /// The message.
        data: &'a RawValue,
    },
    /// A user's first connection joined a room, or its last one left.
    Presence {
        /// The room.
        room: &'a str,
        /// The user.
        user: &'a str,
        /// Joined (or left).
        joined: bool,
    },
}

impl Event<'_> {
    /// Its `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Connect { .. } => "connect",
            Event::Disconnect { .. } => "disconnect",
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe { .. } => "unsubscribe",
            Event::Publish { .. } => "publish",
            Event::Presence { joined: true, .. } => "join",
            Event::Presence { joined: false, .. } => "leave",
        }
    }

    /// The event as JSON, stamped with `time` (Unix ms) and `node`.
    pub fn json(&self, time: u64, node: &str) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            time: u64,
            node: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            conn: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            room: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            epoch: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            seq: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            from: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a RawValue>,
        }
        let mut out = Out {
            kind: self.kind(),
            time,
            node,
            conn: None,
            user: None,
            room: None,
            reason: None,
            epoch: None,
            seq: None,
            from: None,
            data: None,
        };
        match *self {
            Event::Connect { conn, user } => (out.conn, out.user) = (Some(conn), user),
            Event::Disconnect { conn, user, reason } => {
                (out.conn, out.user, out.reason) = (Some(conn), user, Some(reason));
            }
            Event::Subscribe { conn, user, room } | Event::Unsubscribe { conn, user, room } => {
                (out.conn, out.user, out.room) = (Some(conn), user, Some(room));
            }
            Event::Publish {
                room,
                epoch,
                seq,
                from,
                data,
            } => {
                out.room = Some(room);
                out.epoch = Some(epoch.to_string());
                out.seq = Some(seq);
                out.from = from;
                out.data = Some(data);
            }
            Event::Presence { room, user, .. } => (out.room, out.user) = (Some(room), Some(user)),
        }
        serde_json::to_string(&out).expect("serializing strings and numbers")
    }
}

/// The body of one request: `events` (each already JSON) as batch `batch` of `node`.
pub fn batch_body(node: &str, boot: u64, batch: u64, events: &[String]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(64 + node.len() + len);
    out.extend_from_slice(b"{\"node\":");
    serde_json::to_writer(&mut out, node).expect("a str serializes");
    out.extend_from_slice(b",\"boot\":");
    out.extend_from_slice(boot.to_string().as_bytes());
    out.extend_from_slice(b",\"batch\":");
    out.extend_from_slice(batch.to_string().as_bytes());
    out.extend_from_slice(b",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn events_carry_what_the_table_says() {
        let data = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let cases = [
            (
                Event::Connect {
                    conn: "0.1.1",
                    user: Some("alice"),
                },
                json!({"type": "connect", "time": 5, "node": "n1", "conn": "0.1.1", "user": "alice"}),
            ),
            (
                Event::Disconnect {
                    conn: "0.1.1",
                    user: None,
                    reason: "client_close",
                },
                json!({"type": "disconnect", "time": 5, "node": "n1", "conn": "0.1.1", "reason": "client_close"}),
            ),
            (
                Event::Subscribe {
                    conn: "0.1.1",
                    user: None,
                    room: "chat:1",
                },
                json!({"type": "subscribe", "time": 5, "node": "n1", "conn": "0.1.1", "room": "chat:1"}),
            ),
            (
                Event::Publish {
                    room: "chat:1",
                    epoch: Epoch(10),
                    seq: 3,
                    from: Some("bob"),
                    data: &data,
                },
                json!({"type": "publish", "time": 5, "node": "n1", "room": "chat:1", "epoch": "000000000000000a", "seq": 3, "from": "bob", "data": {"text": "hi"}}),
            ),
            (
                Event::Presence {
                    room: "chat:1",
                    user: "bob",
                    joined: false,
                },
                json!({"type": "leave", "time": 5, "node": "n1", "room": "chat:1", "user": "bob"}),
            ),
        ];
        for (event, want) in cases {
            assert_eq!(parse(&event.json(5, "n1")), want);
        }
    }

    #[test]
    fn a_batch_is_one_json_object() {
        let e = Event::Connect {
            conn: "0.1.1",
            user: None,
        }
        .json(1, "n\"1");
        let body = batch_body("n\"1", 5, 7, &[e.clone(), e]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((&v["node"], &v["batch"]), (&json!("n\"1"), &json!(7)));
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(
            batch_body("n1", 1796197034748, 1, &[]),
            br#"{"node":"n1","boot":1796197034748,"batch":1,"events":[]}"#
        );
    }
}
