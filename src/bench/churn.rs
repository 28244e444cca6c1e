//! Connection churn: `connect` (handshakes per second, holding the connections or
//! closing each at once) and `storm` (every connection dropped at once, then all
//! reconnecting with exponential backoff and full jitter, as clients should).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;

use super::hold::Holders;
use super::{Target, children, cpu_seconds, parse_sources, runtime, wsclient};

/// `ringway bench connect` arguments.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Shared options.
    #[command(flatten)]
    pub target: Target,
    /// Handshakes to perform.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Close each connection right after its handshake instead of holding it.
    #[arg(long)]
    pub no_hold: bool,
    /// Handshakes in flight per thread.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// `ringway bench storm` arguments.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Shared options.
    #[command(flatten)]
    pub target: Target,
    /// Connections to open, drop and bring back.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Backoff base, milliseconds: attempt k waits random(0, min(cap, base * 2^k)).
    #[arg(long, default_value_t = 100)]
    pub base_ms: u64,
    /// Backoff cap, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub cap_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Full-jitter exponential backoff: a uniform delay in [0, min(cap, base * 2^attempt)).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

struct Counts {
    ok: u64,
    failed: u64,
    attempts_max: u32,
    took_us: Histogram<u64>,
}

impl Counts {
    fn new() -> Self {
        Self {
            ok: 0,
            failed: 0,
            attempts_max: 0,
            took_us: Histogram::new(3).expect("histogram"),
        }
    }
}

async fn handshake(
    source: Option<IpAddr>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<wsclient::Held> {
    wsclient::open(source, addr, host, path).await
}

/// The progress-line prefix: which child this is, if one.
fn who(target: &Target) -> String {
    target
        .child
        .as_ref()
        .map_or_else(String::new, |c| format!("child {c} "))
}

/// Run `ringway bench connect`.
pub fn run_connect(args: ConnectArgs) -> anyhow::Result<()> {
    crate::runtime::probe::raise_nofile();
    if args.target.procs > 1 && args.target.child.is_none() {
        return connect_over_children(&args);
    }
    let (addr, host, path) = args.target.endpoint()?;
    let sources = parse_sources(args.target.source.as_deref())?;
    let threads = args.target.thread_count();
    let _progress = super::progress::start(who(&args.target), ["handshakes", "failed", ""]);
    let cpu0 = cpu_seconds();
    let server_cpu0 = server_cpu(&args.target);
    let start = Instant::now();
    let release = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, Histogram<u64>)>();
    let mut handles = Vec::new();
    for t in 0..threads {
        let n = args.connections / threads + usize::from(t < args.connections % threads);
        let (sources, host, path, tx, release) = (
            sources.clone(),
            host.clone(),
            path.clone(),
            tx.clone(),
            release.clone(),
        );
        let (hold, conc) = (!args.no_hold, args.concurrency.max(1));
        handles.push(std::thread::spawn(move || {
            runtime().block_on(async move {
                let counts = Rc::new(RefCell::new(Counts::new()));
                // Held from the moment each opens, answering the server's pings.
                let held = Rc::new(RefCell::new(Holders::default()));
                let next = Rc::new(RefCell::new(0usize));
                let mut lanes = Vec::new();
                for _ in 0..conc.min(n.max(1)) {
                    let (counts, held, next, sources, host, path) = (
                        counts.clone(),
                        held.clone(),
                        next.clone(),
                        sources.clone(),
                        host.clone(),
                        path.clone(),
                    );
                    lanes.push(monoio::spawn(async move {
                        loop {
                            let j = {
                                let mut k = next.borrow_mut();
                                if *k >= n {
                                    break;
                                }
                                *k += 1;
                                *k - 1
                            };
                            let began = Instant::now();
                            let source = sources[(j * 7 + t) % sources.len()];
                            match handshake(source, addr, &host, &path).await {
                                Ok(s) => {
                                    super::progress::PROGRESS.add(0, 1);
                                    let mut c = counts.borrow_mut();
                                    c.ok += 1;
                                    let _ = c.took_us.record(began.elapsed().as_micros() as u64);
                                    if hold {
                                        held.borrow_mut().hold(s);
                                    }
                                }
                                Err(_) => {
                                    super::progress::PROGRESS.add(1, 1);
                                    counts.borrow_mut().failed += 1;
                                }
                            }
                        }
                    }));
                }
                for lane in lanes {
                    lane.await;
                }
                {
                    let c = counts.borrow();
                    let _ = tx.send((c.ok, c.failed, c.took_us.clone()));
                }
                while hold && !release.load(Ordering::Relaxed) {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                held.take().let_go().await;
            });
        }));
    }
    drop(tx);
    let (mut ok, mut failed) = (0, 0);
    let mut hist = Histogram::<u64>::new(3)?;
    for (o, f, h) in rx.iter().take(threads) {
        ok += o;
        failed += f;
        hist.add(h)?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Every handshake is done and no connection closed yet: the server's share.
    let server = server_cpu0
        .zip(server_cpu(&args.target))
        .map(|(a, b)| b - a);
    if args.target.child.is_some() {
        let cpu = cpu_seconds() - cpu0;
        children::say(&format!(
            "RESULT {ok} {failed} {secs:.4} {cpu:.4} {}",
            children::encode(&hist)
        ));
        children::wait_stop(); // hold until the coordinator has everyone's result
        release.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        return Ok(());
    }
    release.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let cpu = cpu_seconds() - cpu0;
    report_connect(&args, ok, failed, secs, cpu, server, &hist);
    Ok(())
}

/// The server's CPU seconds so far, when `--pid` names it (a child leaves it to the
/// coordinator).
fn server_cpu(target: &Target) -> Option<f64> {
    target
        .pid
        .filter(|_| target.child.is_none())
        .and_then(super::process_cpu_seconds)
}

/// `connect` over `--procs` children: each does its share; the rate is all handshakes
/// over the slowest child's time.
fn connect_over_children(args: &ConnectArgs) -> anyhow::Result<()> {
    let k = args.target.procs;
    let server_cpu0 = server_cpu(&args.target);
    let mut kids = children::spawn_shares(k, "connections", args.connections)?;
    let (mut ok, mut failed, mut secs, mut cpu) = (0u64, 0u64, 0f64, 0f64);
    let mut hist = Histogram::<u64>::new(3)?;
    for kid in &mut kids {
        let w = kid.expect("RESULT")?;
        anyhow::ensure!(w.len() == 6, "a bench child said {w:?}");
        ok += w[1].parse::<u64>()?;
        failed += w[2].parse::<u64>()?;
        secs = secs.max(w[3].parse()?);
        cpu += w[4].parse::<f64>()?;
        hist.add(children::decode(&w[5])?)?;
    }
    // The children still hold every connection.
    let server = server_cpu0
        .zip(server_cpu(&args.target))
        .map(|(a, b)| b - a);
    for kid in kids {
        kid.wait();
    }
    report_connect(args, ok, failed, secs, cpu, server, &hist);
    Ok(())
}

/// `server_cpu`: the server's CPU seconds over the handshakes (with `--pid`).
fn report_connect(
    args: &ConnectArgs,
    ok: u64,
    failed: u64,
    secs: f64,
    cpu: f64,
    server_cpu: Option<f64>,
    hist: &Histogram<u64>,
) {
    let rate = ok as f64 / secs;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let server_us = server_cpu.map(|s| s * 1e6 / ok.max(1) as f64);
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({"scenario": "connect", "hold": !args.no_hold, "procs": args.target.procs, "handshakes": ok, "failed": failed,
                "seconds": secs, "handshakes_per_sec": rate,
                "handshake_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0},
                "bench_cpu_seconds": cpu, "server_cpu_us_per_handshake": server_us})
        );
    } else {
        let server = server_us.map_or_else(String::new, |us| {
            format!("; server CPU {us:.1} us per handshake")
        });
        println!(
            "connect ({}): {ok} handshakes ({failed} failed) in {secs:.2}s = {rate:.0}/s; handshake p50 {:.2} ms, p99 {:.2} ms; bench CPU {cpu:.2}s{server}",
            if args.no_hold { "close each" } else { "hold" },
            ms(0.5),
            ms(0.99)
        );
    }
}

/// Run `ringway bench storm`.
pub fn run_storm(args: StormArgs) -> anyhow::Result<()> {
    crate::runtime::probe::raise_nofile();
    if args.target.procs > 1 && args.target.child.is_none() {
        return storm_over_children(&args);
    }
    let (addr, host, path) = args.target.endpoint()?;
    let sources = parse_sources(args.target.source.as_deref())?;
    let threads = args.target.thread_count();
    let opened = Arc::new(Barrier::new(threads + 1));
    let dropped = Arc::new(Barrier::new(threads + 1));
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, u32, Histogram<u64>)>();
    let (base, cap) = (
        Duration::from_millis(args.base_ms),
        Duration::from_millis(args.cap_ms),
    );
    let limit = Duration::from_secs(args.timeout);
    let mut handles = Vec::new();
    for t in 0..threads {
        let n = args.connections / threads + usize::from(t < args.connections % threads);
        let (sources, host, path, tx, opened, dropped) = (
            sources.clone(),
            host.clone(),
            path.clone(),
            tx.clone(),
            opened.clone(),
            dropped.clone(),
        );
        handles.push(std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut held = Vec::with_capacity(n);
                for j in 0..n {
                    let source = sources[(j * 7 + t) % sources.len()];
                    if let Ok(s) = handshake(source, addr, &host, &path).await {
                        held.push(s);
                    }
                }
                let first = held.len();
                opened.wait();
                dropped.wait();
                // Everyone drops at once...
                drop(held);
                let storm = Instant::now();
                let counts = Rc::new(RefCell::new(Counts::new()));
                let mut tasks = Vec::with_capacity(first);
                // ...and every one reconnects with full-jitter exponential backoff.
                for j in 0..first {
                    let (counts, host, path) = (counts.clone(), host.clone(), path.clone());
                    let source = sources[(j * 7 + t) % sources.len()];
                    tasks.push(monoio::spawn(async move {
                        let mut attempt = 0u32;
                        loop {
                            monoio::time::sleep(backoff(attempt, base, cap, fastrand::f64())).await;
                            match handshake(source, addr, &host, &path).await {
                                Ok(s) => {
                                    super::progress::PROGRESS.add(0, 1);
                                    let mut c = counts.borrow_mut();
                                    c.ok += 1;
                                    c.attempts_max = c.attempts_max.max(attempt + 1);
                                    let _ = c.took_us.record(storm.elapsed().as_micros() as u64);
                                    return Some(s);
                                }
                                Err(_) => {
                                    super::progress::PROGRESS.add(1, 1);
                                    counts.borrow_mut().failed += 1;
                                    attempt += 1;
                                    if storm.elapsed() > limit {
                                        return None;
                                    }
                                }
                            }
                        }
                    }));
                }
                let mut back = Vec::with_capacity(first);
                for task in tasks {
                    back.extend(task.await);
                }
                let c = counts.borrow();
                let _ = tx.send((c.ok, c.failed, c.attempts_max, c.took_us.clone()));
                drop(back);
            });
        }));
    }
    drop(tx);
    opened.wait();
    let child = args.target.child.is_some();
    if child {
        // Everyone in every child is connected; drop when the coordinator says.
        children::say("READY");
        children::wait_go();
    }
    let _progress =
        super::progress::start(who(&args.target), ["reconnected", "failed attempts", ""]);
    let cpu0 = cpu_seconds();
    let storm = Instant::now();
    dropped.wait();
    let (mut ok, mut failed, mut attempts) = (0u64, 0u64, 0u32);
    let mut hist = Histogram::<u64>::new(3)?;
    for (o, f, a, h) in rx.iter().take(threads) {
        ok += o;
        failed += f;
        attempts = attempts.max(a);
        hist.add(h)?;
    }
    let all_back = storm.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.join();
    }
    let cpu = cpu_seconds() - cpu0;
    if child {
        children::say(&format!(
            "RESULT {ok} {failed} {attempts} {all_back:.4} {cpu:.4} {}",
            children::encode(&hist)
        ));
        return Ok(());
    }
    report_storm(&args, ok, failed, attempts, all_back, cpu, &hist);
    Ok(())
}

/// `storm` over `--procs` children: all connect, then all drop at once on `GO`; the
/// storm is over when the last child has everyone back.
fn storm_over_children(args: &StormArgs) -> anyhow::Result<()> {
    let k = args.target.procs;
    let mut kids = children::spawn_shares(k, "connections", args.connections)?;
    for kid in &mut kids {
        kid.expect("READY")?;
    }
    for kid in &mut kids {
        kid.go()?;
    }
    let (mut ok, mut failed, mut attempts, mut all_back, mut cpu) = (0u64, 0u64, 0u32, 0f64, 0f64);
    let mut hist = Histogram::<u64>::new(3)?;
    for kid in &mut kids {
        let w = kid.expect("RESULT")?;
        anyhow::ensure!(w.len() == 7, "a bench child said {w:?}");
        ok += w[1].parse::<u64>()?;
        failed += w[2].parse::<u64>()?;
        attempts = attempts.max(w[3].parse()?);
        all_back = all_back.max(w[4].parse()?);
        cpu += w[5].parse::<f64>()?;
        hist.add(children::decode(&w[6])?)?;
    }
    for kid in kids {
        kid.wait();
    }
    report_storm(args, ok, failed, attempts, all_back, cpu, &hist);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report_storm(
    args: &StormArgs,
    ok: u64,
    failed: u64,
    attempts: u32,
    all_back: f64,
    cpu: f64,
    hist: &Histogram<u64>,
) {
    let s = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({"scenario": "storm", "procs": args.target.procs, "connections": args.connections, "reconnected": ok,
                "failed_attempts": failed, "max_attempts": attempts, "all_back_seconds": all_back,
                "back_seconds": {"p50": s(0.5), "p99": s(0.99), "max": hist.max() as f64 / 1e6},
                "base_ms": args.base_ms, "cap_ms": args.cap_ms, "bench_cpu_seconds": cpu})
        );
    } else {
        println!(
            "storm: {ok} of {} reconnected in {all_back:.2}s ({failed} failed attempts, at most {attempts} attempts each); back after p50 {:.2}s, p99 {:.2}s; backoff base {} ms cap {} ms; bench CPU {cpu:.2}s",
            args.connections,
            s(0.5),
            s(0.99),
            args.base_ms,
            args.cap_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, base, cap, 1.0), base);
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(10, base, cap, 1.0), cap, "capped");
        assert_eq!(backoff(60, base, cap, 1.0), cap, "no overflow");
        assert_eq!(
            backoff(3, base, cap, 0.0),
            Duration::ZERO,
            "full jitter starts at zero"
        );
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(400));
    }
}
