//! Rooms keep their epoch and sequence when their owner changes in a planned way: a
//! node that drains (SIGTERM) hands its rooms to their next owners, and a node that
//! comes back gets them handed back. Subscribers on the other nodes never hear of
//! it, and those of the drained node resume elsewhere with `recovered: true`.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::follow::{Seen, followers};
use common::http;
use serde_json::{Value, json};

const CONFIG: &str = "\
[drain]
window_ms = 1000
";

fn sigterm_and_wait(cl: &mut Cluster, i: usize) {
    let mut p = cl.nodes[i].take().unwrap();
    let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success(), "n{} exited with {status}", i + 1);
            return;
        }
        assert!(Instant::now() < deadline, "n{} did not stop", i + 1);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_rolling_restart_loses_nothing_and_nobody_resyncs() {
    let mut cl = Cluster::start_with_config(3, CONFIG);
    cl.wait_converged();
    // Owned by n2 while all are up, so the restarts move it away and back.
    let room = cl.room_owned_by(1, &[0, 1, 2], "roll:");
    let urls: Vec<String> = (0..3).map(|i| cl.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let followers = followers(&urls, &[0, 2], &room, &stop);
    std::thread::sleep(Duration::from_millis(300));
    // 50 publishes a second through a node that is not restarting.
    let restarting = Arc::new(AtomicUsize::new(usize::MAX));
    let acked: Arc<Mutex<Vec<(u64, String, u64)>>> = Arc::default();
    let publisher = {
        let (api, room, stop, restarting, acked) = (
            cl.api.clone(),
            room.clone(),
            stop.clone(),
            restarting.clone(),
            acked.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                let via = (0..3)
                    .map(|k| (n as usize + k) % 3)
                    .find(|&k| k != restarting.load(Ordering::Relaxed))
                    .unwrap();
                let body = json!({"room": room, "data": {"n": n}}).to_string();
                if let Ok((200, answer)) = common::try_http(api[via], "POST", "/v1/publish", &body)
                {
                    let v: Value = serde_json::from_str(&answer).unwrap();
                    let stamp = (
                        n,
                        v["epoch"].as_str().unwrap().to_owned(),
                        v["seq"].as_u64().unwrap(),
                    );
                    acked.lock().unwrap().push(stamp);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Each node in turn, the room's owner first: drain, stop, start again.
    for i in [1, 0, 2] {
        restarting.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100)); // publishes in flight land
        sigterm_and_wait(&mut cl, i);
        std::thread::sleep(Duration::from_millis(500));
        cl.boot(i);
        cl.wait_converged();
        std::thread::sleep(Duration::from_millis(1_000));
        restarting.store(usize::MAX, Ordering::Relaxed);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    // Let the last messages arrive.
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<Seen> = followers.into_iter().map(|f| f.join().unwrap()).collect();

    assert!(
        acked.len() > 100,
        "only {} publishes acknowledged",
        acked.len()
    );
    let epochs: std::collections::BTreeSet<&str> = acked.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(epochs.len(), 1, "the room changed epoch: {epochs:?}");
    let mut seqs: Vec<u64> = acked.iter().map(|a| a.2).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), acked.len(), "a seq was given twice");
    for (k, s) in seen.iter().enumerate() {
        let who = format!("subscriber {k} ({} connections)", s.connections);
        assert!(s.gaps.is_empty(), "{who}: gaps {:?}", s.gaps);
        let first = &s.subscribed[0];
        for later in &s.subscribed[1..] {
            assert_eq!(later["recovered"], true, "{who} had to re-sync: {later}");
            assert_eq!(later["epoch"], first["epoch"], "{who}: {later}");
        }
        let got: std::collections::HashSet<u64> = s.data.iter().copied().collect();
        assert_eq!(got.len(), s.data.len(), "{who} got a message twice");
        let lost: Vec<u64> = acked
            .iter()
            .map(|a| a.0)
            .filter(|n| !got.contains(n))
            .collect();
        assert!(lost.is_empty(), "{who} never got acknowledged {lost:?}");
    }
    // Both subscribers' nodes were restarted: each resumed elsewhere.
    assert!(seen.iter().all(|s| s.connections >= 2), "{seen:?}");
    // n2 got its room back when it returned (the other nodes restarted since, and
    // their counters with them).
    let back = cl.metric(1, "ringway_handoffs_received_total");
    assert!(back >= 1.0, "rooms n2 got back: {back}");
    for i in 0..3 {
        assert_eq!(
            cl.metric(i, "ringway_handoff_parked"),
            0.0,
            "n{} holds requests",
            i + 1
        );
    }
}

#[test]
fn a_publish_to_a_draining_owner_is_stamped_by_the_next_one() {
    let mut cl = Cluster::start_with_config(3, CONFIG);
    cl.wait_converged();
    let room = cl.room_owned_by(1, &[0, 1, 2], "drain:");
    let mut sub = cl.client(0);
    let s = sub.sub(&room);
    let epoch = s["epoch"].clone();
    let (e1, s1) = cl.publish(2, &room, json!({"n": 1}));
    sigterm_and_wait(&mut cl, 1);
    let (e2, s2) = cl.publish(2, &room, json!({"n": 2}));
    assert_eq!(
        (e2.as_str(), s2),
        (e1.as_str(), s1 + 1),
        "same epoch, next seq"
    );
    assert_eq!(epoch, json!(e1));
    for n in 1..=2 {
        let m = common::cluster::next_of(&mut sub, "msg");
        assert_eq!(m["data"]["n"], n, "{m}");
    }
    let (_, body) = http(cl.api[0], "GET", &format!("/v1/history/{room}?since=0"), "");
    assert!(body.contains(&format!("\"epoch\":\"{e1}\"")), "{body}");
}

#[test]
fn a_drained_node_does_not_bring_back_from_its_log_a_room_it_gave_away() {
    let config = "[drain]\nwindow_ms = 500\n[mesh]\njoin_timeout_ms = 300\n";
    let mut cl = Cluster::start_with_config(2, config);
    let base = cl.extra.clone();
    let dirs: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let d = std::env::temp_dir()
                .join(format!("ringway-handoff-gone-{i}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        })
        .collect();
    let boot = |cl: &mut Cluster, i: usize| {
        cl.extra = base.clone();
        cl.extra
            .extend(["--data-dir".to_owned(), dirs[i].display().to_string()]);
        cl.boot(i);
    };
    for i in 0..2 {
        cl.kill(i);
        boot(&mut cl, i);
    }
    cl.wait_converged();
    let room = cl.room_owned_by(0, &[0, 1], "gone:");
    let (epoch, _) = cl.publish(0, &room, json!({"n": 1}));
    cl.publish(0, &room, json!({"n": 2}));
    // n1 drains: the room goes to n2 and n1's log says so.
    sigterm_and_wait(&mut cl, 0);
    let (e, seq) = cl.publish(1, &room, json!({"n": 3}));
    assert_eq!((e.as_str(), seq), (epoch.as_str(), 3));
    sigterm_and_wait(&mut cl, 1);
    // n1 alone again, from its log: the room is not its to continue (n2 stamped
    // seq 3 after n1 let go), so it starts over rather than stamp seq 3 again.
    boot(&mut cl, 0);
    let (e, seq) = cl.publish(0, &room, json!({"n": 4}));
    assert_ne!(
        e, epoch,
        "seq {seq} stamped again in the epoch n2 went on with"
    );
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_drain_announces_no_joins_or_leaves() {
    let config = "[drain]\nwindow_ms = 500\n[rooms]\npresence_events = [\"p:\"]\npresence_debounce_ms = 200\n";
    let mut cl = Cluster::start_with_config(3, config);
    cl.wait_converged();
    let room = cl.room_owned_by(1, &[0, 1, 2], "p:");
    let mut ann = cl.user(0, "ann");
    let mut bob = cl.user(2, "bob");
    ann.sub(&room);
    bob.sub(&room);
    // Both joins are announced once, to both.
    for c in [&mut ann, &mut bob] {
        let mut joined: Vec<String> = (0..2)
            .map(|_| {
                let j = common::cluster::next_of(c, "join");
                j["user"].as_str().unwrap().to_owned()
            })
            .collect();
        joined.sort();
        assert_eq!(joined, ["ann", "bob"]);
    }
    sigterm_and_wait(&mut cl, 1);
    std::thread::sleep(Duration::from_millis(800)); // four debounce windows
    cl.publish(0, &room, json!("after"));
    for c in [&mut ann, &mut bob] {
        let next = c.recv();
        assert_eq!(next["type"], "msg", "the move announced something: {next}");
    }
}

#[test]
fn a_drain_with_more_history_than_the_link_can_queue_hands_over_every_room() {
    // 2 MiB of mesh queue; n1 holds about 6 MiB of history in the rooms it owns.
    let config = "[drain]\nwindow_ms = 500\n[mesh]\nqueue_bytes = 2097152\nmax_frame_bytes = 262144\n\
                  [limits]\nmax_message_size = 65536\nmax_frame_size = 65536\n\
                  [rooms]\nreplay_messages = 1000\nreplay_bytes = 1048576\n";
    let mut cl = Cluster::start_with_config(2, config);
    cl.wait_converged();
    let rooms: Vec<String> = (0..)
        .map(|k| format!("big:{k}"))
        .filter(|r| cl.owner(r, &[0, 1]) == 0)
        .take(60)
        .collect();
    let pad = "x".repeat(10_000);
    for room in &rooms {
        for _ in 0..10 {
            cl.publish(0, room, json!({ "pad": pad }));
        }
    }
    // A subscriber on n2 of the last room keeps its stream through the drain.
    let last = rooms.last().unwrap();
    let mut sub = cl.client(1);
    let s = sub.sub(last);
    assert_eq!(s["seq"], 10);
    sigterm_and_wait(&mut cl, 0);
    let got = cl.metric(1, "ringway_handoffs_received_total");
    assert_eq!(
        got,
        rooms.len() as f64,
        "every room arrived (the link was not cut)"
    );
    let (e, seq) = cl.publish(1, last, json!("after"));
    assert_eq!((json!(e), seq), (s["epoch"].clone(), 11));
    let m = common::cluster::next_of(&mut sub, "msg");
    assert_eq!(m["seq"], 11, "{m}");
}
