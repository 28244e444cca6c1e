//! The load generator holds what it says: connections `ringway bench` holds answer
//! the server's pings, so a node with a short idle timeout keeps every one of them.
//! (The generator's numbers are benchmarks, not tests; this checks only that what
//! it holds stays held.)

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Node, metric};

const IDLE_CLOSES: &str = "ringway_disconnects_total{reason=\"idle_timeout\"}";

/// Run `ringway bench idle ARGS` against `n`. Once it has printed its report (every
/// connection open, the hold begun), wait `into_hold` and count the node's open
/// connections and idle-timeout closes; then let the run end.
fn bench_idle(n: &Node, args: &[&str], into_hold: Duration) -> (f64, f64) {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["bench", "idle", "--url", &n.url("/ws")])
        .args(["--api", &n.api.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringway bench runs");
    let mut report = String::new();
    let mut out = BufReader::new(bench.stdout.take().unwrap());
    while !report.lines().any(|l| l.starts_with("bench CPU:")) {
        let read = out.read_line(&mut report).unwrap();
        if read == 0 {
            let mut err = String::new();
            bench
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("bench idle ended before its report: {report}{err}");
        }
    }
    std::thread::sleep(into_hold);
    let seen = (
        metric(n.api, "ringway_connections"),
        metric(n.api, IDLE_CLOSES),
    );
    let end = bench.wait_with_output().unwrap();
    assert!(
        end.status.success(),
        "{}",
        String::from_utf8_lossy(&end.stderr)
    );
    eprintln!("{report}{}", String::from_utf8_lossy(&end.stderr));
    seen
}

#[test]
fn held_connections_answer_pings_and_outlive_the_idle_timeout() {
    let n = Node::start(|c| {
        c.heartbeat.ping_interval_ms = 300;
        c.heartbeat.idle_timeout_ms = 2_500;
        c.heartbeat.tick_ms = 100;
    });
    // (`bench connect` holds its connections only while the run reports.) The
    // report comes 2 s after the last connection opened; 4 s into the hold they have
    // been open 6 s, more than twice the idle timeout.
    let args = ["--connections", "40", "--hold", "6"];
    let (open, idle_closes) = bench_idle(&n, &args, Duration::from_secs(4));
    assert_eq!((open, idle_closes), (40.0, 0.0), "(open, idle closes)");
    assert_eq!(metric(n.api, IDLE_CLOSES), 0.0);
}

#[test]
fn connections_are_held_from_the_moment_they_open() {
    let n = Node::start(|c| {
        c.heartbeat.ping_interval_ms = 300;
        c.heartbeat.idle_timeout_ms = 1_500;
        c.heartbeat.tick_ms = 100;
    });
    // Opening takes 3 s, twice the idle timeout: the first connections must answer
    // pings while the last are still opening.
    let args = [
        "--connections",
        "30",
        "--rate",
        "10",
        "--threads",
        "1",
        "--hold",
        "2",
    ];
    let (open, idle_closes) = bench_idle(&n, &args, Duration::ZERO);
    assert_eq!((open, idle_closes), (30.0, 0.0), "(open, idle closes)");
}

#[test]
fn pings_are_answered_when_they_come_not_at_the_next_look() {
    let n = Node::start(|c| {
        c.heartbeat.ping_interval_ms = 250;
        c.heartbeat.idle_timeout_ms = 1_000;
        c.heartbeat.tick_ms = 50;
    });
    // A ping after 250 ms of silence must be answered within 750 ms, whatever the
    // generator's own rhythm.
    let args = ["--connections", "40", "--hold", "3"];
    let (open, idle_closes) = bench_idle(&n, &args, Duration::from_secs(2));
    assert_eq!((open, idle_closes), (40.0, 0.0), "(open, idle closes)");
}
