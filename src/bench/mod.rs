//! `ringway bench`: the bundled load generator.
//!
//! Built like the server (monoio runtimes, one per thread) so the generator is not the
//! bottleneck; its own CPU time is part of every report. One process holds at most
//! about as many sockets as its open-file limit allows, so `--procs K` spreads
//! connections over K child processes (each a copy of this binary), and `--source`
//! spreads them over several loopback source addresses to get past the ~28k
//! ephemeral ports one source address has toward one destination.
//!
//! Scenarios: `idle` (open and hold N connections; the server's memory per
//! connection), `fanout` (S subscribers, a publisher at a rate, optionally a fraction
//! of slow consumers; delivered vs expected and the latency distribution),
//! `connect` (handshakes per second) and `storm` (everyone reconnects at once with
//! backoff and full jitter).

pub(crate) mod chart;
pub(crate) mod children;
pub(crate) mod churn;
pub(crate) mod fanout;
pub(crate) mod hold;
pub(crate) mod idle;
pub(crate) mod nats;
pub(crate) mod progress;
pub(crate) mod scrape;
pub(crate) mod wsclient;

use std::net::{IpAddr, SocketAddr};

use clap::{Args, Subcommand};

/// `ringway bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections and hold them; report connect rate and the server's memory
    /// per connection.
    Idle(idle::IdleArgs),
    /// Subscribers over rooms and a publisher at a rate; report delivered/expected,
    /// deliveries per second and latency percentiles.
    Fanout(fanout::FanoutArgs),
    /// `fanout` with slow consumers: a fraction of subscribers (default 10%) stop
    /// reading once subscribed.
    Slow(fanout::FanoutArgs),
    /// Handshakes per second, holding the connections or closing each at once.
    Connect(churn::ConnectArgs),
    /// Drop every connection at once; all reconnect with exponential backoff and
    /// full jitter; report the time until all are back.
    Storm(churn::StormArgs),
    /// Draw the chart of a scripts/bench-compare.sh run (SVG).
    Chart(chart::ChartArgs),
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's HTTP API (for /metrics), host:port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub api: SocketAddr,
    /// Source addresses to connect from: a list (127.0.0.2,127.0.0.3) or a range
    /// (127.0.0.2-127.0.0.40). Default: let the kernel choose.
    #[arg(long)]
    pub source: Option<String>,
    /// Threads per process [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// What the server speaks: `ringway` (ringway.v1: sub/pub per room),
    /// `broadcast` (a server that sends every message it receives to every client,
    /// like benches/peers/tokio-broadcast) or `nats` (NATS over WebSocket).
    #[arg(long, value_enum, default_value_t = Proto::Ringway)]
    pub proto: Proto,
    /// Read the server's memory from /proc/PID instead of its /metrics (for peers
    /// that have no ringway API). `fanout` and `connect` also report the server's
    /// CPU time (utime + stime) per delivery or per handshake from it.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Child processes to spread the connections over (fanout, connect, storm; idle
    /// has its own --procs).
    #[arg(long = "procs", default_value_t = 1)]
    pub procs: usize,
    /// Internal: run as child I of K.
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: the global index of this child's first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    pub first_index: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// For `wss://` URLs (idle, connect, storm): PEM file with the CA certificate
    /// to trust (the server's own self-signed certificate will do).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Offer permessage-deflate, as browsers do, and inflate what comes compressed.
    #[arg(long)]
    pub compress: bool,
}

/// Server protocols the generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// ringway.v1.
    Ringway,
    /// Echo-to-all broadcast.
    Broadcast,
    /// The NATS protocol over WebSocket (nats-server's `websocket` listener); rooms
    /// are subjects `bench.N`.
    Nats,
}

/// A server's resident memory and connection count, from /proc/PID (when `pid` is
/// given) or from ringway's /metrics.
pub fn server_memory(target: &Target) -> anyhow::Result<(f64, Option<f64>)> {
    if let Some(pid) = target.pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/status: {e}"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        return Ok((kib * 1024.0, None));
    }
    let text = scrape::get(target.api, "/metrics").map_err(|e| {
        anyhow::anyhow!(
            "cannot read the server's /metrics at {} ({e}); pass its API with --api, or --pid for a non-ringway server",
            target.api
        )
    })?;
    Ok((
        scrape::metric(&text, "ringway_process_resident_memory_bytes").unwrap_or(0.0),
        Some(scrape::metric_sum(&text, "ringway_connections")),
    ))
}

impl Target {
    /// Host:port and path of the URL. For `wss://`, also set up TLS for
    /// [`wsclient::open`] (which needs `--tls-ca`).
    pub fn endpoint(&self) -> anyhow::Result<(SocketAddr, String, String)> {
        wsclient::COMPRESS.store(self.compress, std::sync::atomic::Ordering::Relaxed);
        let rest = if let Some(rest) = self.url.strip_prefix("wss://") {
            let ca = self.tls_ca.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "a wss:// URL needs --tls-ca FILE (the CA or the server's certificate, PEM)"
                )
            })?;
            wsclient::set_tls(ca)?;
            rest
        } else {
            self.url.strip_prefix("ws://").ok_or_else(|| {
                anyhow::anyhow!("--url must start with ws:// or wss:// (got {})", self.url)
            })?
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|_| anyhow::anyhow!("--url host must be IP:PORT (got {host})"))?;
        Ok((addr, host.to_owned(), path.to_owned()))
    }

    /// Threads to run.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// Parse `--source`: comma-separated addresses and `a.b.c.x-a.b.c.y` ranges (last
/// octet).
pub fn parse_sources(spec: Option<&str>) -> anyhow::Result<Vec<Option<IpAddr>>> {
    let Some(spec) = spec else {
        return Ok(vec![None]);
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: std::net::Ipv4Addr = a.parse()?;
            let b: std::net::Ipv4Addr = match b.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    let o = a.octets();
                    std::net::Ipv4Addr::new(o[0], o[1], o[2], b.parse()?)
                }
            };
            let (lo, hi) = (u32::from(a), u32::from(b));
            anyhow::ensure!(lo <= hi && hi - lo < 65_536, "bad source range {part}");
            out.extend((lo..=hi).map(|v| Some(IpAddr::V4(v.into()))));
        } else {
            out.push(Some(part.parse()?));
        }
    }
    anyhow::ensure!(!out.is_empty(), "--source names no address");
    Ok(out)
}

/// Run a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Idle(a) => idle::run(a),
        Scenario::Fanout(a) => fanout::run(a),
        Scenario::Slow(mut a) => {
            if a.slow_fraction == 0.0 {
                a.slow_fraction = 0.1;
            }
            fanout::run(a)
        }
        Scenario::Connect(a) => churn::run_connect(a),
        Scenario::Storm(a) => churn::run_storm(a),
        Scenario::Chart(a) => chart::run(a),
    }
}

/// A load-generator thread's runtime: io_uring (epoll as fallback) with a timer, and
/// rings deep enough for thousands of connections per thread (completions for all of
/// them can arrive at once).
pub fn runtime() -> monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(16384)
        .enable_timer()
        .build()
        .expect("the load generator needs a monoio runtime (io_uring or epoll)")
}

/// CPU seconds (user + system) process `pid` has used, from /proc.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some(ticks / 100.0)
}

/// CPU seconds (user + system) used by this process and its waited-for children.
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = u.user_time();
            let s = u.system_time();
            t.tv_sec() as f64
                + t.tv_usec() as f64 / 1e6
                + s.tv_sec() as f64
                + s.tv_usec() as f64 / 1e6
        })
    };
    secs(UsageWho::RUSAGE_SELF) + secs(UsageWho::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_lists_and_ranges() {
        let s = parse_sources(Some("127.0.0.2-127.0.0.4,127.0.0.9")).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(parse_sources(Some("127.0.0.2-5")).unwrap().len(), 4);
        assert_eq!(parse_sources(None).unwrap(), vec![None]);
        assert!(parse_sources(Some("127.0.0.9-127.0.0.2")).is_err());
    }
}
