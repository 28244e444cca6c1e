//! What the app's callbacks cost, measured against a local stand-in app
//! (`tests/common/app.rs`): how many webhook events per second one node delivers,
//! and how much the authorization callback adds to a subscribe.
//!
//! `cargo bench --bench callbacks` (bounded: about 20 s). Numbers, not assertions.

#[path = "../tests/common/app.rs"]
#[allow(dead_code)]
mod app;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use app::App;
use hdrhistogram::Histogram;
use ringway::{Config, Server};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const SECRET: &str = "bench-hook-secret-0123456789";

fn node(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        pin_workers: false,
        ..Config::default()
    };
    c.limits.messages_per_second = 0;
    c.limits.bytes_per_second = 0;
    c.hooks.secret = SECRET.into();
    tweak(&mut c);
    Server::start(c).expect("node starts")
}

fn client(s: &Server) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(s.ws_addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    let url = format!("ws://{}/ws", s.ws_addr());
    let (mut ws, _) = tungstenite::client::client(url, stream).unwrap();
    let _welcome = ws.read().unwrap();
    ws
}

fn recv(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn metric(s: &Server, name: &str) -> f64 {
    let url = format!("http://{}/metrics", s.api_addr());
    let text = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Client publishes to a room in `hooks.publish_rooms` as fast as 2 clients can
/// send them for `secs`; the app counts the events it acknowledged.
fn webhook_throughput(batch_events: usize, secs: u64) {
    let app = App::start(|_| (200, "{}".into()));
    let s = node(|c| {
        c.hooks.url = app.url("/hooks");
        c.hooks.batch_events = batch_events;
        c.hooks.publish_rooms = vec!["chat:*".into()];
        c.hooks.events = vec!["publish".into()];
        c.hooks.queue_events = 1_000_000;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for i in 0..2 {
        let mut ws = client(&s);
        let stop = stop.clone();
        senders.push(std::thread::spawn(move || {
            let frame = json!({"type": "pub", "room": format!("chat:{i}"), "data": {"text": "a chat message of a typical size, about sixty bytes"}}).to_string();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    ws.write(Message::text(frame.clone())).unwrap();
                }
                ws.flush().unwrap();
                sent += 100;
            }
            sent
        }));
    }
    std::thread::sleep(Duration::from_secs(1)); // warm up
    let d0 = metric(&s, "ringway_hooks_delivered_total");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let d1 = metric(&s, "ringway_hooks_delivered_total");
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = senders.into_iter().map(|t| t.join().unwrap()).sum();
    let queued = metric(&s, "ringway_hooks_queue_events");
    let dropped = metric(&s, "ringway_hooks_dropped_total");
    println!(
        "webhooks, batch_events {batch_events}: {:.0} events/s delivered to the app \
         ({} client publishes sent in total, {queued} queued at the end, {dropped} dropped)",
        (d1 - d0) / el,
        sent
    );
    s.shutdown();
}

/// `n` subscribes, one at a time, to fresh rooms (so every one asks the app when
/// `private`), each timed from `sub` to `subscribed`.
fn subscribe_latency(s: &Server, prefix: &str, n: usize) -> Histogram<u64> {
    let mut ws = client(s);
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..n {
        let t = Instant::now();
        ws.send(Message::text(
            json!({"type": "sub", "room": format!("{prefix}{i}")}).to_string(),
        ))
        .unwrap();
        let v = recv(&mut ws);
        assert_eq!(v["type"], "subscribed", "{v}");
        h.record(t.elapsed().as_micros() as u64).unwrap();
        if i % 200 == 199 {
            // Stay under limits.max_subscriptions.
            for j in i - 199..=i {
                ws.send(Message::text(
                    json!({"type": "unsub", "room": format!("{prefix}{j}")}).to_string(),
                ))
                .unwrap();
                recv(&mut ws);
            }
        }
    }
    h
}

fn authorize_latency(n: usize) {
    let app = App::start(|_| (200, r#"{"allow":true}"#.into()));
    let s = node(|c| {
        c.hooks.authorize_url = app.url("/authorize");
        c.hooks.authorize_rooms = vec!["private:*".into()];
    });
    // Alternate the two kinds in rounds, so both see the same machine.
    let (mut open, mut asked) = (
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    );
    for round in 0..5 {
        open.add(subscribe_latency(&s, &format!("public:{round}:"), n / 5))
            .unwrap();
        asked
            .add(subscribe_latency(&s, &format!("private:{round}:"), n / 5))
            .unwrap();
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    println!(
        "subscribe round trip, {n} each: rooms the app decides p50 {} µs p99 {} µs; \
         other rooms p50 {} µs p99 {} µs; added p50 {} µs p99 {} µs ({} calls to the app)",
        q(&asked, 0.5),
        q(&asked, 0.99),
        q(&open, 0.5),
        q(&open, 0.99),
        q(&asked, 0.5) as i64 - q(&open, 0.5) as i64,
        q(&asked, 0.99) as i64 - q(&open, 0.99) as i64,
        app.received().len()
    );
    s.shutdown();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (secs, n) = if quick { (1, 100) } else { (5, 2000) };
    webhook_throughput(100, secs);
    webhook_throughput(1000, secs);
    authorize_latency(n);
}
