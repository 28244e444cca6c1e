//! How a fan-out to many subscribers goes out: one pass along the worker's line of
//! connections with output, that work arriving meanwhile joins (`runtime::flush`).

mod common;

use std::io::ErrorKind;

use common::{Client, Node};
use serde_json::json;
use tungstenite::Message;

/// Subscribers in the room: enough that a pass along them takes milliseconds.
const SUBSCRIBERS: usize = 3000;

/// A message published while a pass for an earlier one is under way reaches the
/// subscribers still ahead in that pass, in it: the last in line has it before the
/// first, which gets it only in the next pass. When a whole pass was written before
/// input was read again, the second message waited for the pass to end and then
/// went out in subscription order, first subscriber first.
#[test]
fn a_message_published_during_a_pass_joins_it() {
    let node = Node::start(|c| {
        c.workers = 1;
        c.limits.messages_per_second = 0;
    });
    let url = node.url("/ws");
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut c = Client::connect(&url);
            c.sub("line");
            c
        })
        .collect();
    let mut publisher = Client::connect(&url);
    // 8 KiB each, so that every write costs a copy: the pass is long.
    let big = "x".repeat(8 << 10);
    publisher.send(json!({"type": "pub", "room": "line", "data": {"n": 1, "pad": big}}));
    let first = subs[0].recv();
    assert_eq!(first["data"]["n"], 1, "{first}");
    // The pass for message 1 has begun (the first in line has it): publish 2.
    publisher.send(json!({"type": "pub", "room": "line", "data": {"n": 2}}));
    let second = subs[0].recv();
    assert_eq!(second["data"]["n"], 2, "{second}");

    // The first in line has message 2 now: the last must have had it already.
    let last = subs.last_mut().unwrap();
    last.ws.get_ref().set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    loop {
        match last.ws.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                got.push(v["data"]["n"].as_u64().unwrap());
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("the last subscriber's connection failed: {e}"),
        }
    }
    assert_eq!(
        got,
        [1, 2],
        "when the first subscriber got message 2 (published during the pass that \
         brought message 1), the last one in line had only {got:?}"
    );
    // Everyone gets both, in order.
    last.ws.get_ref().set_nonblocking(false).unwrap();
    for (i, s) in subs.iter_mut().enumerate().skip(1).take(SUBSCRIBERS - 2) {
        let a = s.recv();
        let b = s.recv();
        assert_eq!(
            (&a["data"]["n"], &b["data"]["n"]),
            (&json!(1), &json!(2)),
            "subscriber {i}"
        );
    }
}
