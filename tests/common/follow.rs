//! A subscriber that follows a room across nodes: it resumes from its cursor on
//! the next node whenever its node closes the connection, and records what it saw
//! (shared by the cluster tests of moves and failover).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::Message;

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The `n` of every message, in order of arrival.
    pub data: Vec<u64>,
    /// Every `subscribed` answer.
    pub subscribed: Vec<Value>,
    /// Messages whose seq did not follow the previous one.
    pub gaps: Vec<String>,
    /// Connections it made (1 + reconnects after a drain).
    pub connections: usize,
}

/// A follower of `room` per node in `starts`, each on its own thread, until `stop`.
pub fn followers(
    urls: &[String],
    starts: &[usize],
    room: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Seen>> {
    starts
        .iter()
        .map(|&start| {
            let (urls, room, stop) = (urls.to_vec(), room.to_owned(), stop.clone());
            std::thread::spawn(move || follow(urls, start, room, stop))
        })
        .collect()
}

/// Follow `room` from node `start`, moving to the next node (resuming from the
/// cursor) whenever a node closes the connection, until `stop`.
pub fn follow(urls: Vec<String>, start: usize, room: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut cursor: Option<(String, u64)> = None;
    let mut node = start;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(&urls[node]) else {
            node = (node + 1) % urls.len();
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        seen.connections += 1;
        let since = cursor.as_ref().map(|(e, s)| json!({"epoch": e, "seq": s}));
        let mut sub = json!({"type": "sub", "room": room});
        if let Some(since) = since {
            sub["since"] = since;
        }
        if ws.send(Message::text(sub.to_string())).is_err() {
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return seen;
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str() {
                        Some("subscribed") => {
                            // A resume keeps the cursor: what it missed is replayed
                            // after this answer, whose `seq` is the room's latest.
                            // Anything else starts from that latest.
                            let resumed = v["recovered"] == true
                                && cursor.as_ref().is_some_and(|(e, _)| v["epoch"] == **e);
                            if !resumed {
                                cursor = Some((
                                    v["epoch"].as_str().unwrap().to_owned(),
                                    v["seq"].as_u64().unwrap(),
                                ));
                            }
                            seen.subscribed.push(v);
                        }
                        Some("msg") => {
                            let seq = v["seq"].as_u64().unwrap();
                            if let Some((_, last)) = cursor.as_mut() {
                                if seq != *last + 1 {
                                    seen.gaps.push(format!("{seq} after {last}"));
                                }
                                *last = seq;
                            }
                            seen.data.push(v["data"]["n"].as_u64().unwrap());
                        }
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    // Closed (the node drains): resume on the next node.
                    node = (node + 1) % urls.len();
                    break;
                }
            }
        }
    }
    seen
}

pub fn connect(url: &str) -> Option<tungstenite::WebSocket<TcpStream>> {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(url, stream).ok()?;
    // The welcome.
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.contains("\"welcome\"") => return Some(ws),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}
