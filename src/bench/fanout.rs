//! `ringway bench fanout`: S subscribers over R rooms, one publisher at a fixed rate.
//! Every message carries its send time (system-wide monotonic clock); each delivery's
//! latency goes into an hdrhistogram. The report says how many deliveries were
//! expected and how many arrived, so an overloaded server cannot look fast by
//! dropping.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use monoio::io::AsyncWriteRentExt;

use super::{Proto, Target, children, cpu_seconds, nats, parse_sources, scrape, wsclient};

/// `ringway bench fanout` arguments.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Shared options.
    #[command(flatten)]
    pub target: Target,
    /// Subscribers in total.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Rooms the subscribers are spread over (publishes round-robin over them).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Messages per second the publisher sends.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Payload bytes per message (padding after the timestamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Send this JSON document in every message (after the timestamp) instead of
    /// --size bytes of padding: realistic payloads for measuring compression
    /// (`benches/payloads/`).
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    pub payload: Option<std::path::PathBuf>,
    /// Seconds to publish.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Fraction of subscribers (0 to 1) that subscribe and then never read: slow
    /// consumers. They are left out of delivered/expected.
    #[arg(long, default_value_t = 0.0)]
    pub slow_fraction: f64,
    /// Slow consumers read one chunk (up to 64 KiB) every this many milliseconds
    /// instead of never reading again (0: never).
    #[arg(long, default_value_t = 0)]
    pub slow_read_ms: u64,
    /// Spread the subscribers over these nodes of a cluster (comma-separated
    /// WebSocket URLs; subscriber j uses URL j mod N). The publisher stays on --url.
    /// Default: all on --url.
    #[arg(long, value_delimiter = ',', value_name = "URL,URL,...")]
    pub nodes: Vec<String>,
}

/// Per-thread delivery counts and latencies.
struct Tally {
    delivered: u64,
    closed: u64,
    latency_us: Histogram<u64>,
}

/// Run the scenario.
pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    crate::runtime::probe::raise_nofile();
    anyhow::ensure!(
        !args.target.url.starts_with("wss://"),
        "bench fanout speaks ws:// only; measure TLS with bench idle, connect or storm"
    );
    let (addr, host, path) = args.target.endpoint()?;
    let sources = parse_sources(args.target.source.as_deref())?;
    let threads = args.target.thread_count();
    let rooms = args.rooms.max(1);
    let proto = args.target.proto;
    let before = (proto == Proto::Ringway)
        .then(|| scrape::get(args.target.api, "/metrics").ok())
        .flatten();

    anyhow::ensure!(
        (0.0..=1.0).contains(&args.slow_fraction),
        "--slow-fraction must be between 0 and 1"
    );
    // Subscriber j is slow when j % slow_every == 0 (0: none).
    let slow_every = if args.slow_fraction > 0.0 {
        (1.0 / args.slow_fraction).round().max(1.0) as usize
    } else {
        0
    };
    let is_slow = |j: usize| slow_every > 0 && j.is_multiple_of(slow_every);
    let slow_read = Duration::from_millis(args.slow_read_ms);
    anyhow::ensure!(
        proto != Proto::Broadcast || rooms == 1,
        "--proto broadcast has a single audience: use --rooms 1"
    );
    let spread = Spread {
        threads,
        rooms,
        slow_every,
        slow_read,
        proto,
        sources,
        endpoints: if args.nodes.is_empty() {
            vec![(addr, host.clone(), path.clone())]
        } else {
            args.nodes
                .iter()
                .map(|url| {
                    Target {
                        url: url.clone(),
                        ..args.target.clone()
                    }
                    .endpoint()
                })
                .collect::<anyhow::Result<_>>()?
        },
    };
    if args.target.child.is_some() {
        // A child of `--procs`: subscribe this share, report, hold until told, count.
        let local = spread.start(args.target.first_index, args.subscribers);
        children::say(&format!("READY {}", local.subscribed));
        children::wait_stop();
        let (delivered, closed, hist) = local.finish()?;
        children::say(&format!(
            "RESULT {delivered} {closed} {}",
            children::encode(&hist)
        ));
        return Ok(());
    }
    let (subscribers, subs) = if args.target.procs > 1 {
        let k = args.target.procs;
        let mut kids = children::spawn_shares(k, "subscribers", args.subscribers)?;
        let mut subs = 0;
        for kid in &mut kids {
            let w = kid.expect("READY")?;
            subs += w.get(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        }
        (Subscribers::Kids(kids), subs)
    } else {
        let local = spread.start(0, args.subscribers);
        let subs = local.subscribed;
        (Subscribers::Local(local), subs)
    };
    if subs < args.subscribers {
        eprintln!(
            "bench fanout: only {subs} of {} subscribers subscribed",
            args.subscribers
        );
    }

    // Sample the server every second while publishing.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (api, sampling) = (args.target.api, sampling.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Ok(text) = scrape::get(api, "/metrics") {
                    samples.push((
                        start.elapsed().as_secs_f64(),
                        scrape::metric(&text, "ringway_process_resident_memory_bytes")
                            .unwrap_or(0.0),
                        scrape::metric_sum(&text, "ringway_connections"),
                        scrape::metric_sum(&text, "ringway_dropped_total"),
                        scrape::metric(&text, "ringway_send_queue_bytes").unwrap_or(0.0),
                    ));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let delivered_label = match subscribers {
        Subscribers::Local(_) => "delivered",
        Subscribers::Kids(_) => "", // counted in the children
    };
    let _progress = super::progress::start(String::new(), ["published", delivered_label, ""]);
    // Publish from this thread's own runtime.
    let cpu0 = cpu_seconds();
    let server_cpu0 = args.target.pid.and_then(super::process_cpu_seconds);
    let publish_start = Instant::now();
    let (published, stopped) =
        super::runtime().block_on(publisher(&args, addr, &host, &path, rooms))?;
    let publish_secs = publish_start.elapsed().as_secs_f64();

    // Expected deliveries: each message reaches the reading subscribers of its room.
    let per_room: Vec<u64> = (0..rooms)
        .map(|r| (0..subs).filter(|&j| j % rooms == r && !is_slow(j)).count() as u64)
        .collect();
    let expected: u64 = (0..published)
        .map(|i| per_room[(i % rooms as u64) as usize])
        .sum();
    // Give messages still in flight 2 s to arrive before counting.
    std::thread::sleep(Duration::from_secs(2));
    let (delivered, closed, hist) = subscribers.finish()?;
    let cpu = cpu_seconds() - cpu0;
    let server_cpu = server_cpu0
        .zip(args.target.pid.and_then(super::process_cpu_seconds))
        .map(|(a, b)| b - a);
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let after = (proto == Proto::Ringway)
        .then(|| scrape::get(args.target.api, "/metrics").ok())
        .flatten();
    let grew = |name: &str| match (&before, &after) {
        (Some(b), Some(a)) => scrape::metric_sum(a, name) - scrape::metric_sum(b, name),
        _ => 0.0,
    };
    let slow = grew("ringway_dropped_total");
    // The publisher is one client: over the node's per-connection rate its messages
    // are refused (and it is closed with 4029), which explains missing deliveries.
    let rate_limited = grew("ringway_rate_limited_total");
    let rate_closed = grew("ringway_disconnects_total{reason=\"rate_limited\"}");
    let rate = delivered as f64 / publish_secs;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    // What each delivery cost the server: bytes on the wire, CPU.
    let per = delivered.max(1) as f64;
    let wire_bytes = grew("ringway_bytes_out_total") / per;
    let server_us = server_cpu.map(|s| s * 1e6 / per);
    let packed = (
        grew("ringway_deflate_bytes_in_total"),
        grew("ringway_deflate_bytes_out_total"),
        grew("ringway_deflate_messages_total"),
        grew("ringway_deflate_seconds_total"),
    );
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "fanout", "subscribers": subs, "rooms": rooms, "rate": args.rate,
                "size": args.size, "duration": publish_secs, "published": published,
                "expected": expected, "delivered": delivered, "closed_by_server": closed,
                "server_dropped": slow, "rate_limited": rate_limited, "publisher_stopped": stopped, "deliveries_per_sec": rate,
                "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0},
                "bench_cpu_seconds": cpu, "slow_subscribers": (0..subs).filter(|&j| is_slow(j)).count(),
                "compress": args.target.compress, "wire_bytes_per_delivery": wire_bytes,
                "server_cpu_us_per_delivery": server_us,
                "deflate": {"messages": packed.2, "bytes_in": packed.0, "bytes_out": packed.1, "seconds": packed.3},
                "server_samples": samples.iter().map(|(t, rss, c, d, q)| serde_json::json!({"t": t, "rss": rss, "connections": c, "dropped": d, "queued_bytes": q})).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "fanout: {subs} subscribers, {rooms} room(s), {published} messages at {} msg/s, {} B",
            args.rate, args.size
        );
        println!(
            "delivered {delivered} of {expected} expected ({:.3}%), {:.0} deliveries/s; {closed} subscribers closed by the server, {slow} frames dropped",
            100.0 * delivered as f64 / expected.max(1) as f64,
            rate
        );
        if let Some(why) = &stopped {
            println!("publishing stopped early: {why}");
        }
        if rate_limited > 0.0 {
            let closed = if rate_closed > 0.0 {
                ", then closed it with 4029 for staying over"
            } else {
                ""
            };
            println!(
                "deliveries are missing because the node refused {rate_limited} of the publisher's \
                 messages for its per-client rate limit (ringway_rate_limited_total){closed}: start \
                 the node with --rate-limit 0, or raise limits.messages_per_second and \
                 limits.bytes_per_second above --rate"
            );
        }
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max() as f64 / 1000.0
        );
        println!("bench CPU: {cpu:.2}s over {publish_secs:.1}s");
        match (after.is_some(), server_us) {
            (true, Some(us)) => println!(
                "server: {wire_bytes:.1} bytes on the wire per delivery, {us:.3} µs CPU per delivery"
            ),
            (true, None) => println!("server: {wire_bytes:.1} bytes on the wire per delivery"),
            // A peer (`--proto broadcast` or `nats` with `--pid`): no metrics, but its CPU.
            (false, Some(us)) => println!("server: {us:.3} µs CPU per delivery"),
            (false, None) => {}
        }
        if after.is_some() && packed.2 > 0.0 {
            println!(
                "compressed {} messages: {:.0} -> {:.0} bytes each (ratio {:.2}), {:.1} µs each",
                packed.2,
                packed.0 / packed.2,
                packed.1 / packed.2,
                packed.0 / packed.1.max(1.0),
                packed.3 * 1e6 / packed.2
            );
        }
        if slow_every > 0 {
            println!("server over time (t s, RSS MiB, connections, dropped frames, queued MiB):");
            for (t, rss, c, d, q) in &samples {
                println!(
                    "  {t:5.1}  {:7.1}  {c:6.0}  {d:9.0}  {:6.1}",
                    rss / 1048576.0,
                    q / 1048576.0
                );
            }
        }
    }
    Ok(())
}

/// How subscribers are set up in one process.
#[derive(Clone)]
struct Spread {
    threads: usize,
    rooms: usize,
    slow_every: usize,
    slow_read: Duration,
    proto: Proto,
    sources: Vec<Option<IpAddr>>,
    /// Where subscriber j connects: `endpoints[j % len]`.
    endpoints: Vec<(SocketAddr, String, String)>,
}

/// Subscribers running in this process: their threads and their tallies.
struct Local {
    stop: Arc<AtomicBool>,
    rx: std::sync::mpsc::Receiver<(u64, u64, Histogram<u64>)>,
    handles: Vec<std::thread::JoinHandle<()>>,
    threads: usize,
    subscribed: usize,
}

/// Where the subscribers are: here, or in `--procs` children.
enum Subscribers {
    Local(Local),
    Kids(Vec<children::Kid>),
}

impl Spread {
    /// Start subscribers `first .. first + count` (global indices: they decide rooms
    /// and which ones are slow) over this process's threads; returns once all are
    /// subscribed (or failed).
    fn start(&self, first: usize, count: usize) -> Local {
        let threads = self.threads;
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(Barrier::new(threads + 1));
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, Histogram<u64>)>();
        let mut handles = Vec::new();
        for t in 0..threads {
            let (offset, n) = children::share(count, threads, t);
            let (spread, stop, subscribed, ready, tx) = (
                self.clone(),
                stop.clone(),
                subscribed.clone(),
                ready.clone(),
                tx.clone(),
            );
            handles.push(std::thread::spawn(move || {
                let tally = super::runtime().block_on(subscribers(
                    spread,
                    first + offset,
                    n,
                    stop,
                    subscribed,
                    ready,
                ));
                let _ = tx.send((tally.delivered, tally.closed, tally.latency_us));
            }));
        }
        ready.wait();
        let subscribed = subscribed.load(Ordering::Relaxed);
        Local {
            stop,
            rx,
            handles,
            threads,
            subscribed,
        }
    }
}

impl Local {
    /// Stop the subscribers and add up what they saw.
    fn finish(self) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut hist = Histogram::<u64>::new(3)?;
        let (mut delivered, mut closed) = (0u64, 0u64);
        for (d, c, h) in self.rx.iter().take(self.threads) {
            delivered += d;
            closed += c;
            hist.add(h)?;
        }
        for h in self.handles {
            let _ = h.join();
        }
        Ok((delivered, closed, hist))
    }
}

impl Subscribers {
    /// Stop every subscriber, wherever it runs, and add up what they saw.
    fn finish(self) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
        match self {
            Subscribers::Local(local) => local.finish(),
            Subscribers::Kids(mut kids) => {
                for kid in &mut kids {
                    kid.stop();
                }
                let mut hist = Histogram::<u64>::new(3)?;
                let (mut delivered, mut closed) = (0u64, 0u64);
                for kid in &mut kids {
                    let w = kid.expect("RESULT")?;
                    anyhow::ensure!(w.len() == 4, "a bench child said {w:?}");
                    delivered += w[1].parse::<u64>()?;
                    closed += w[2].parse::<u64>()?;
                    hist.add(children::decode(&w[3])?)?;
                }
                for kid in kids {
                    kid.wait();
                }
                Ok((delivered, closed, hist))
            }
        }
    }
}

/// Subscribers `first .. first + n` of one thread: connect, subscribe, read until
/// `stop`.
async fn subscribers(
    spread: Spread,
    first: usize,
    n: usize,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicUsize>,
    ready: Arc<Barrier>,
) -> Tally {
    let Spread {
        rooms,
        slow_every,
        slow_read,
        proto,
        sources,
        endpoints,
        ..
    } = spread;
    let tally = Rc::new(RefCell::new(Tally {
        delivered: 0,
        closed: 0,
        latency_us: Histogram::new(3).expect("histogram"),
    }));
    let mut waiting = Vec::new();
    for j in first..first + n {
        let source = sources[j % sources.len()];
        let room = format!("bench:{}", j % rooms);
        let slow = slow_every > 0 && j.is_multiple_of(slow_every);
        // Slow consumers also get a small receive window, so the kernel does not
        // absorb the backlog that the server's queue policy should see.
        let (addr, host, path) = &endpoints[j % endpoints.len()];
        let Ok(mut s) = wsclient::connect_with(source, *addr, slow.then_some(16 << 10)) else {
            continue;
        };
        let Ok(left) = wsclient::upgrade(&mut s, host, path).await else {
            continue;
        };
        let hello = match proto {
            Proto::Ringway => Some(format!(r#"{{"type":"sub","room":"{room}"}}"#).into_bytes()),
            Proto::Nats => Some(nats::subscribe(&format!("bench.{}", j % rooms))),
            Proto::Broadcast => None,
        };
        if let Some(hello) = hello
            && s.write_all(wsclient::text_frame(&hello)).await.0.is_err()
        {
            continue;
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        // A broadcast server has no subscription to confirm: the upgrade is it.
        let tx = match proto {
            Proto::Ringway | Proto::Nats => tx,
            Proto::Broadcast => {
                let _ = tx.send(());
                futures_channel::oneshot::channel().0
            }
        };
        if slow {
            // A slow consumer: wait for `subscribed`, then never read again.
            monoio::spawn(sleeper(s, left, tx, proto, slow_read));
        } else {
            monoio::spawn(subscriber(s, left, tally.clone(), tx, proto));
        }
        waiting.push(rx);
    }
    for rx in waiting {
        if rx.await.is_ok() {
            subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
    // std Barrier blocks this thread, which has nothing else to do until publishing.
    ready.wait();
    while !stop.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = tally.borrow();
    Tally {
        delivered: t.delivered,
        closed: t.closed,
        latency_us: t.latency_us.clone(),
    }
}

async fn subscriber(
    mut s: monoio::net::TcpStream,
    left: Vec<u8>,
    tally: Rc<RefCell<Tally>>,
    subscribed: futures_channel::oneshot::Sender<()>,
    proto: Proto,
) {
    let mut reader = wsclient::FrameReader::new(left);
    let mut subscribed = Some(subscribed);
    let mut nats_stream = nats::Stream::default();
    loop {
        let mut pong_due = false;
        let before = tally.borrow().delivered;
        let record = |payload: &[u8]| {
            if let Some(ts) = find_ts(payload) {
                let now = wsclient::mono_nanos();
                let mut t = tally.borrow_mut();
                t.delivered += 1;
                let _ = t.latency_us.record(now.saturating_sub(ts) / 1000);
                true
            } else {
                false
            }
        };
        let open = reader.drain(|data| match proto {
            Proto::Nats => nats_stream.feed(data, |event| match event {
                nats::Event::Msg(p) => {
                    record(p);
                }
                nats::Event::Pong => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                nats::Event::Ping => pong_due = true,
                nats::Event::Other => {}
            }),
            Proto::Ringway | Proto::Broadcast => {
                if !record(data)
                    && data.starts_with(br#"{"type":"subscribed""#)
                    && let Some(tx) = subscribed.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        // One shared-counter update per read, not per message.
        super::progress::PROGRESS.add(1, tally.borrow().delivered - before);
        if !open {
            tally.borrow_mut().closed += 1;
            return;
        }
        if pong_due
            && s.write_all(wsclient::text_frame(nats::PONG))
                .await
                .0
                .is_err()
        {
            return;
        }
        match reader.fill(&mut s).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A subscriber that stops reading once subscribed (holding its socket open).
async fn sleeper(
    mut s: monoio::net::TcpStream,
    left: Vec<u8>,
    subscribed: futures_channel::oneshot::Sender<()>,
    proto: Proto,
    read_every: Duration,
) {
    let mut reader = wsclient::FrameReader::new(left);
    let mut nats_stream = nats::Stream::default();
    let mut done = proto == Proto::Broadcast;
    while !done {
        reader.drain(|data| match proto {
            Proto::Nats => nats_stream.feed(data, |e| done |= e == nats::Event::Pong),
            _ => done |= data.starts_with(br#"{"type":"subscribed""#),
        });
        if !done && matches!(reader.fill(&mut s).await, Ok(0) | Err(_)) {
            return;
        }
    }
    let _ = subscribed.send(());
    // Hold the socket, reading one chunk now and then or never, until the runtime
    // ends. (Sleeping, not `pending()`: a monoio task that holds no waker and no
    // JoinHandle is freed, socket and all.)
    loop {
        if read_every.is_zero() {
            monoio::time::sleep(Duration::from_secs(3600)).await;
            continue;
        }
        monoio::time::sleep(read_every).await;
        if matches!(reader.fill(&mut s).await, Ok(0) | Err(_)) {
            return;
        }
        reader.drain(|_| {}); // discard what was read
    }
}

/// The `"ts":N` of a published message (inside a ringway `msg` frame's data, or the
/// whole frame from a broadcast server).
///
/// Every delivery goes through here, on the same cores as the server: the search is
/// `memmem`'s (vectorised), and the digits are read without a UTF-8 check, so that a
/// longer frame (ringway's envelope before `data`) costs the load generator little.
fn find_ts(text: &[u8]) -> Option<u64> {
    static TS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""ts":"#));
    if !(text.starts_with(br#"{"type":"msg""#) || text.starts_with(br#"{"ts":"#)) {
        return None;
    }
    let at = TS.find(text)? + 5;
    let mut ts: u64 = 0;
    let mut digits = 0;
    for &b in &text[at..] {
        if !b.is_ascii_digit() {
            break;
        }
        ts = ts.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(ts)
}

async fn publisher(
    args: &FanoutArgs,
    addr: SocketAddr,
    host: &str,
    path: &str,
    rooms: usize,
) -> anyhow::Result<(u64, Option<String>)> {
    let mut s = wsclient::connect_from(None, addr)?;
    wsclient::upgrade(&mut s, host, path).await?;
    if args.target.proto == Proto::Nats {
        let (res, _) = s.write_all(wsclient::text_frame(&nats::connect())).await;
        res?;
    }
    let pad = "x".repeat(args.size.saturating_sub(24));
    let doc = match &args.payload {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --payload {}: {e}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--payload {} is not JSON: {e}", path.display()))?;
            Some(v.to_string())
        }
        None => None,
    };
    let start = Instant::now();
    let end = Duration::from_secs(args.duration);
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(64 << 10);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= end {
            break;
        }
        // Send what is due by now (pacing in 1 ms steps, several messages per write).
        let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
        batch.clear();
        while sent < due && batch.len() < (60 << 10) {
            let room = sent as usize % rooms;
            let data = match &doc {
                Some(doc) => format!(r#"{{"ts":{},"doc":{doc}}}"#, wsclient::mono_nanos()),
                None => format!(r#"{{"ts":{},"p":"{pad}"}}"#, wsclient::mono_nanos()),
            };
            let msg = match args.target.proto {
                Proto::Ringway => {
                    format!(r#"{{"type":"pub","room":"bench:{room}","data":{data}}}"#).into_bytes()
                }
                Proto::Broadcast => data.into_bytes(),
                Proto::Nats => nats::publish(&format!("bench.{room}"), data.as_bytes()),
            };
            batch.extend_from_slice(&wsclient::text_frame(&msg));
            sent += 1;
            super::progress::PROGRESS.add(0, 1);
        }
        if !batch.is_empty() {
            let (res, b) = s.write_all(std::mem::take(&mut batch)).await;
            batch = b;
            if let Err(e) = res {
                // Report what was delivered until then, and why publishing stopped.
                return Ok((
                    sent,
                    Some(format!(
                        "the server closed the publisher's connection after {sent} messages ({e})"
                    )),
                ));
            }
        } else {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok((sent, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_timestamp_in_a_msg() {
        let m = br#"{"type":"msg","room":"bench:0","seq":3,"data":{"ts":12345,"p":"xx"}}"#;
        assert_eq!(find_ts(m), Some(12345));
        assert_eq!(find_ts(br#"{"type":"subscribed"}"#), None);
        assert_eq!(find_ts(br#"{"ts":7,"p":"x"}"#), Some(7));
        assert_eq!(find_ts(br#"{"type":"msg","data":{"ts":}}"#), None);
        assert_eq!(find_ts(br#"{"ts":99999999999999999999999}"#), None);
        assert_eq!(find_ts(br#"{"type":"msg","data":{"ts":12"#), Some(12));
    }
}
