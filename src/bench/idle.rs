//! `ringway bench idle`: open N connections and hold them, then read the server's
//! resident memory from `/metrics` and divide the growth by the connections added.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use super::hold::Holders;
use super::{Target, cpu_seconds, parse_sources, server_memory, wsclient};

/// `ringway bench idle` arguments.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Shared options.
    #[command(flatten)]
    pub target: Target,
    /// Connections to open in total.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections opened per second, in total (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to keep the connections open after the report is printed (for
    /// watching the server, or draining it, with the connections in place).
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
}

/// What one opener (process) achieved.
#[derive(Debug, Clone, Copy, Default)]
struct Opened {
    ok: usize,
    failed: usize,
    seconds: f64,
    /// CPU seconds the opener process used.
    cpu: f64,
}

/// Run the scenario (as the coordinator or as a child).
pub fn run(args: IdleArgs) -> anyhow::Result<()> {
    crate::runtime::probe::raise_nofile();
    if let Some(child) = &args.target.child {
        return run_child(&args, child);
    }
    let (addr, _, _) = args.target.endpoint()?;
    let (rss0, conns0) = server_memory(&args.target)?;
    let cpu0 = cpu_seconds();
    let started = Instant::now();

    let procs = args.target.procs.max(1);
    let mut children = Vec::new();
    for i in 0..procs {
        let share = args.connections / procs + usize::from(i < args.connections % procs);
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("bench").arg("idle");
        cmd.args(["--url", &args.target.url]);
        cmd.args(["--api", &args.target.api.to_string()]);
        if let Some(s) = &args.target.source {
            cmd.args(["--source", s]);
        }
        if let Some(t) = args.target.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        if let Some(pid) = args.target.pid {
            cmd.args(["--pid", &pid.to_string()]);
        }
        if let Some(ca) = &args.target.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        cmd.args(["--connections", &share.to_string()]);
        cmd.args(["--rate", &(args.rate / procs as u64).to_string()]);
        cmd.args(["--hold", &args.hold.to_string()]);
        cmd.args(["--child", &format!("{i}/{procs}")]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("RINGWAY_LOG", "warn");
        children.push(cmd.spawn()?);
    }
    let mut total = Opened::default();
    for child in &mut children {
        let out = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let v: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(v.len() == 5 && v[0] == "READY", "child said {line:?}");
        total.ok += v[1].parse::<usize>()?;
        total.failed += v[2].parse::<usize>()?;
        total.seconds = total.seconds.max(v[3].parse()?);
        total.cpu += v[4].parse::<f64>()?;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server finish processing the last upgrades before reading memory.
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, conns1) = server_memory(&args.target)?;
    // The children's CPU time counts once they are waited for; each reports it.
    let cpu = cpu_seconds() - cpu0 + total.cpu;
    // A peer has no connection gauge: count what this run opened.
    let (conns0, conns1) = match (conns0, conns1) {
        (Some(a), Some(b)) => (a, b),
        _ => (0.0, total.ok as f64),
    };
    let added = conns1 - conns0;
    let per_conn = if added > 0.0 {
        (rss1 - rss0) / added
    } else {
        0.0
    };
    let rate = total.ok as f64 / total.seconds.max(1e-9);
    let _ = addr;
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "idle", "connections": args.connections, "procs": procs,
                "opened": total.ok, "failed": total.failed, "connect_seconds": connect_secs,
                "connects_per_sec": rate, "server_connections_before": conns0,
                "server_connections_after": conns1, "server_rss_before": rss0,
                "server_rss_after": rss1, "server_rss_per_connection": per_conn,
                "bench_cpu_seconds": cpu,
            })
        );
    } else {
        println!(
            "idle: {} of {} connections open ({} failed) in {:.2}s, {:.0} connects/s, {procs} procs",
            total.ok, args.connections, total.failed, total.seconds, rate
        );
        println!(
            "server: {conns0} -> {conns1} connections; RSS {:.1} MiB -> {:.1} MiB",
            rss0 / 1048576.0,
            rss1 / 1048576.0
        );
        println!(
            "server user RSS per idle connection: {per_conn:.0} bytes ({:.2} KiB)",
            per_conn / 1024.0
        );
        println!("bench CPU: {cpu:.2}s");
    }
    if args.hold > 0 {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(args.hold));
    }
    for mut child in children {
        drop(child.stdin.take()); // EOF: the child lets go of its connections
        let _ = child.wait();
    }
    Ok(())
}

fn run_child(args: &IdleArgs, spec: &str) -> anyhow::Result<()> {
    let (i, k) = spec
        .split_once('/')
        .and_then(|(i, k)| Some((i.parse::<usize>().ok()?, k.parse::<usize>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--child takes I/K"))?;
    let all = parse_sources(args.target.source.as_deref())?;
    // Child i takes every k-th source when there are enough to go round.
    let sources: Vec<_> = if all.len() >= k {
        all.iter().copied().skip(i).step_by(k).collect()
    } else {
        all
    };
    let (addr, host, path) = args.target.endpoint()?;
    let progress = super::progress::start(format!("child {i}/{k} "), ["opened", "failed", ""]);
    let release = Arc::new(AtomicBool::new(false));
    let threads = args.target.thread_count();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        let n = args.connections / threads + usize::from(t < args.connections % threads);
        let rate = args.rate / threads as u64;
        let (sources, host, path, release, tx) = (
            sources.clone(),
            host.clone(),
            path.clone(),
            release.clone(),
            tx.clone(),
        );
        // A safety net: children never outlive the coordinator's hold by long.
        let hold = Duration::from_secs(args.hold + 120);
        handles.push(std::thread::spawn(move || {
            super::runtime().block_on(open_and_hold(
                n, rate, t, sources, addr, host, path, release, hold, tx,
            ));
        }));
    }
    drop(tx);
    let mut total = Opened::default();
    for o in rx.iter().take(threads) {
        total.ok += o.ok;
        total.failed += o.failed;
    }
    total.seconds = started.elapsed().as_secs_f64();
    drop(progress); // opened: nothing more to report while holding
    println!(
        "READY {} {} {:.3} {:.3}",
        total.ok,
        total.failed,
        total.seconds,
        cpu_seconds()
    );
    // Hold until the coordinator closes our stdin (or the hold time ends).
    let r = release.clone();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        r.store(true, Ordering::Relaxed);
    });
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn open_and_hold(
    n: usize,
    rate: u64,
    thread: usize,
    sources: Vec<Option<IpAddr>>,
    addr: SocketAddr,
    host: String,
    path: String,
    release: Arc<AtomicBool>,
    hold: Duration,
    done: std::sync::mpsc::Sender<Opened>,
) {
    let start = Instant::now();
    // Held from the moment each opens: opening may outlast the idle timeout.
    let mut held = Holders::default();
    let mut opened = Opened::default();
    let mut first_error = None;
    for j in 0..n {
        if rate > 0 {
            let due = Duration::from_secs_f64(j as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                monoio::time::sleep(wait).await;
            }
        }
        let source = sources[(j * 7 + thread) % sources.len()];
        let result = wsclient::open(source, addr, &host, &path).await;
        match result {
            Ok(s) => {
                held.hold(s);
                opened.ok += 1;
                super::progress::PROGRESS.add(0, 1);
            }
            Err(e) => {
                opened.failed += 1;
                super::progress::PROGRESS.add(1, 1);
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!(
            "bench idle: {} connections failed; first error: {e}",
            opened.failed
        );
    }
    let _ = done.send(opened);
    let deadline = Instant::now() + hold;
    let mut closed = 0;
    while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
        if held.closed() > closed {
            eprintln!(
                "bench idle: the server closed {} held connections",
                held.closed() - closed
            );
            closed = held.closed();
        }
        monoio::time::sleep(Duration::from_millis(100)).await;
    }
    held.let_go().await;
}
