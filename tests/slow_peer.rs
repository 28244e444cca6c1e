//! A peer too slow for the room traffic sent to it loses room messages, not its
//! link: its subscribers resume from their cursors, the owner's replay fills the gap,
//! and none of them is told to re-sync.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::http;
use serde_json::{Value, json};

const CONFIG: &str = "\
[rooms]
replay_messages = 100000
replay_bytes = 268435456
history_budget_bytes = 536870912
[mesh]
queue_bytes = 67108864
max_frame_bytes = 67108864
dead_after_ms = 8000
[limits]
max_message_size = 65536
max_frame_size = 65536
max_queue_bytes = 268435456
max_queue_messages = 1000000
";

fn signal(c: &Cluster, i: usize, sig: nix::sys::signal::Signal) {
    let pid = c.nodes[i].as_ref().unwrap().child.id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn a_stalled_peer_resumes_its_rooms_from_their_cursors() {
    let cl = Cluster::start_with_config(2, CONFIG);
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1], "slow:");
    let mut sub = cl.client(1);
    let s = sub.sub(&room);
    assert_eq!(s["seq"], 0);
    // n2 stops reading (as a peer stuck in GC or swapping would) while n1 publishes
    // more than the kernel's buffers and half of n1's queue to n2 can hold.
    signal(&cl, 1, nix::sys::signal::Signal::SIGSTOP);
    let api = cl.api[0];
    // Until n1 has dropped messages for n2, then a few hundred more: the gap stays
    // well inside the replay window. Bounded in time and count either way.
    let pad = "x".repeat(4_000);
    let lagged = std::sync::atomic::AtomicBool::new(false);
    let published = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (room, pad, lagged) = (room.clone(), pad.clone(), &lagged);
                s.spawn(move || {
                    // Well inside `dead_after_ms` (8 s): n2 stays a live, stalled peer.
                    let deadline = Instant::now() + Duration::from_millis(6000);
                    let (mut n, mut after) = (0u64, 0);
                    while Instant::now() < deadline && n < 20_000 && after < 100 {
                        let body = json!({"room": room, "data": {"t": t, "pad": pad}}).to_string();
                        let (status, answer) = http(api, "POST", "/v1/publish", &body);
                        assert_eq!(status, 200, "{answer}");
                        n += 1;
                        if lagged.load(std::sync::atomic::Ordering::Relaxed) {
                            after += 1;
                        } else if t == 0
                            && n % 100 == 0
                            && common::metric(api, "ringway_mesh_lagged_total") > 0.0
                        {
                            lagged.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>()
    });
    signal(&cl, 1, nix::sys::signal::Signal::SIGCONT);
    assert!(
        cl.metric(0, "ringway_mesh_lagged_total") > 0.0,
        "n1 dropped nothing for n2: the test did not fill the queue ({published} published)"
    );
    // Every message, in order, with no new `subscribed` (no re-sync).
    for seq in 1..=published {
        let m = sub.recv();
        assert_eq!(m["type"], "msg", "{}", short(&m));
        assert_eq!(m["seq"], seq, "{}", short(&m));
    }
    assert_eq!(
        cl.metric(0, "ringway_mesh_overflows_total"),
        0.0,
        "the link was not cut"
    );
    assert!(cl.metric(1, "ringway_lag_resumes_total") > 0.0);
}

fn short(m: &Value) -> String {
    let mut s = m.to_string();
    s.truncate(200);
    s
}
