//! Publisher back-pressure: a room whose subscribers read slower than its publisher
//! writes stops reading the publisher instead of queueing until the subscribers'
//! queues overflow (and they are closed as slow consumers).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Node, WAIT, client_frame, metric};
use serde_json::json;
use tungstenite::Message;

const MESSAGES: u64 = 6_000;

/// A node with the rate limits off, 1,024-frame queues and 8 KB kernel send
/// buffers (a reader falls behind soon), and `more`.
fn node(more: impl FnOnce(&mut ringway::Config)) -> Node {
    Node::start(move |c| {
        c.limits.messages_per_second = 0;
        c.limits.bytes_per_second = 0;
        c.limits.max_queue_messages = 1024;
        c.limits.send_buffer_bytes = 8192;
        more(c);
    })
}

/// The connection is still served: an application ping gets its pong (after
/// whatever was queued before it).
fn answers(c: &mut Client) {
    c.send(json!({"type": "ping", "ref": "still here"}));
    while c.recv()["type"] != "pong" {}
}

/// What a slow subscriber saw: the seqs it got, and the close code if closed.
struct Got {
    seqs: Vec<u64>,
    closed: Option<u16>,
}

/// Four subscribers read in turn by one thread, a message each every 200 µs (a
/// fraction of what the publisher writes), so all four are equally slow, with the
/// same small socket buffers on both sides; and a publisher writing `MESSAGES` as
/// fast as it can.
fn flood(backpressure_frames: usize) -> (Vec<Got>, f64) {
    let node = node(|c| {
        c.limits.backpressure_frames = backpressure_frames;
        // A paused publisher's input must never read as an unfinished message.
        c.limits.message_timeout_ms = 1000;
        c.heartbeat.tick_ms = 100;
    });
    let url = node.url("/ws");
    let mut subscribers: Vec<Client> = (0..4).map(|_| Client::with_window(&url, 16384)).collect();
    for c in &mut subscribers {
        assert_eq!(c.sub("flood")["seq"], 0);
    }
    let reader = std::thread::spawn(move || {
        let mut got: Vec<Got> = (0..4)
            .map(|_| Got {
                seqs: Vec::new(),
                closed: None,
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let mut reading = false;
            for (c, g) in subscribers.iter_mut().zip(&mut got) {
                if g.closed.is_some() || g.seqs.len() as u64 == MESSAGES {
                    continue;
                }
                reading = true;
                loop {
                    match c.ws.read() {
                        Ok(Message::Text(t)) => {
                            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                            if v["type"] == "msg" {
                                g.seqs.push(v["seq"].as_u64().unwrap());
                                break;
                            }
                        }
                        Ok(Message::Close(f)) => {
                            g.closed = f.map(|f| u16::from(f.code));
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => panic!("reading: {e}"),
                    }
                }
            }
            if !reading {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        got
    });
    // The publisher writes everything at once; what the node does not read waits
    // in the kernel.
    let mut publisher = node.client();
    let pad = "p".repeat(100);
    let writer = {
        let mut s: TcpStream = publisher.ws.get_mut().try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                let text = json!({"type": "pub", "room": "flood", "data": {"i": i, "pad": pad}});
                let frame = client_frame(0x81, text.to_string().as_bytes());
                if s.write_all(&frame).is_err() {
                    return;
                }
            }
        })
    };
    let got = reader.join().unwrap();
    writer.join().unwrap();
    let paused = metric(node.api, "ringway_publishers_paused_total");
    // The publisher, paused many times over more than the message timeout, is
    // still served.
    answers(&mut publisher);
    let _ = publisher.ws.close(None);
    (got, paused)
}

#[test]
fn a_room_that_reads_slowly_slows_its_publisher_and_loses_nothing() {
    let (got, paused) = flood(64);
    for (k, g) in got.iter().enumerate() {
        assert_eq!(
            g.closed,
            None,
            "subscriber {k} was closed after {} messages (paused {paused})",
            g.seqs.len()
        );
        assert_eq!(
            g.seqs,
            (1..=MESSAGES).collect::<Vec<_>>(),
            "subscriber {k} got every message, in order"
        );
    }
    assert!(paused > 0.0, "the publisher was paused");
}

#[test]
fn without_back_pressure_the_same_room_overflows() {
    // The counterpart: what the test above would see without it.
    let (got, paused) = flood(0);
    assert_eq!(paused, 0.0);
    let closed: Vec<Option<u16>> = got.iter().map(|g| g.closed).collect();
    assert!(
        closed.contains(&Some(4008)),
        "some subscriber overflowed its 1,024-frame queue: {closed:?}"
    );
}

#[test]
fn a_subscriber_that_stopped_reading_does_not_hold_the_room_back() {
    // One subscriber never reads: it is left to its slow-consumer policy, and the
    // publisher is not held back on its account.
    let node = node(|_| {});
    let mut sleeper = node.client();
    sleeper.sub("lonely");
    let mut publisher: Client = node.client();
    let pad = "s".repeat(100);
    let start = Instant::now();
    for i in 0..3_000 {
        publisher.send(json!({"type": "pub", "room": "lonely", "data": {"i": i, "pad": pad}}));
    }
    answers(&mut publisher);
    assert!(
        start.elapsed() < WAIT,
        "the publisher was held back for {:?}",
        start.elapsed()
    );
    assert_eq!(sleeper.expect_close(), 4008);
}

#[test]
fn a_crowd_of_bulk_publishers_keeps_the_inboxes_short() {
    // Hostile probe: many connections each writing a burst of publishes at once.
    // A publisher that publishes in bulk is not read at all while some worker's
    // inbox is long (not even once per pause), and while they are long a
    // connection is read 4 KiB at a time: the letters in flight stay near the
    // bound instead of one full read per connection, and every message still
    // arrives.
    const PUBLISHERS: usize = 40;
    const EACH: usize = 1_500;
    let node = Node::start(|c| {
        c.limits.messages_per_second = 0;
        c.limits.bytes_per_second = 0;
    });
    let url = node.url("/ws");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = Client::connect(&url);
            assert_eq!(c.sub("crowd")["seq"], 0);
            std::thread::spawn(move || {
                let mut n = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while n < PUBLISHERS * EACH && Instant::now() < deadline {
                    match c.ws.read() {
                        Ok(Message::Text(t)) if t.contains("\"msg\"") => n += 1,
                        Ok(Message::Close(f)) => panic!("subscriber closed: {f:?} after {n}"),
                        Ok(_) => {}
                        Err(e) => panic!("reading after {n}: {e}"),
                    }
                }
                n
            })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (api, done) = (node.api, done.clone());
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(metric(api, "ringway_inbox_letters"));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let mut publishers: Vec<Client> = (0..PUBLISHERS).map(|_| Client::connect(&url)).collect();
    let writers: Vec<_> = publishers
        .iter_mut()
        .enumerate()
        .map(|(p, c)| {
            let mut burst = Vec::new();
            for i in 0..EACH {
                let text = json!({"type": "pub", "room": "crowd", "data": [p, i]});
                burst.extend(client_frame(0x81, text.to_string().as_bytes()));
            }
            let mut s: TcpStream = c.ws.get_mut().try_clone().unwrap();
            std::thread::spawn(move || s.write_all(&burst).unwrap())
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let got: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(
        got,
        vec![PUBLISHERS * EACH; 4],
        "every message reached every subscriber"
    );
    // One full read of each publisher, the node's way before, peaked at 22,000 to
    // 25,000 letters; this way, 1,400 to 1,800.
    assert!(peak < 12_000.0, "inbox letters peaked at {peak}");
    for p in &mut publishers {
        answers(p);
    }
}
