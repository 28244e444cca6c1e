//! The load generator holds what it says: connections `ringway bench` holds answer
//! the server's pings, so a node with a short idle timeout keeps every one of them.
//! (The generator's numbers are benchmarks, not tests; this checks only that what
//! it holds stays held.)

mod common;

use std::process::Command;

use common::{Node, metric};

#[test]
fn held_connections_answer_pings_and_outlive_the_idle_timeout() {
    let n = Node::start(|c| {
        c.heartbeat.ping_interval_ms = 300;
        c.heartbeat.idle_timeout_ms = 2_500;
        c.heartbeat.tick_ms = 100;
    });
    // (`bench connect` holds its connections only while the run reports.)
    let idle = "ringway_disconnects_total{reason=\"idle_timeout\"}";
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["bench", "idle", "--connections", "40", "--hold", "6"])
        .args(["--url", &n.url("/ws"), "--api", &n.api.to_string()])
        .output()
        .expect("ringway bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        metric(n.api, idle),
        0.0,
        "held connections closed for idle: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
