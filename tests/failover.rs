//! Rooms survive the loss of their owner: every room keeps a copy on a standby
//! node (`mesh.replicate`), which continues the epoch when the owner is killed.
//! Subscribers on the surviving nodes never hear of it, and no acknowledged publish
//! is lost.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::follow::{Seen, followers};
use serde_json::{Value, json};

/// Publish `{"n": 1, 2, ...}` to `room` through `api` every 20 ms until `stop`;
/// returns `(n, epoch, seq)` of each publish the API acknowledged.
fn publish_until(
    api: std::net::SocketAddr,
    room: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, String, u64)>> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            n += 1;
            let body = json!({"room": room, "data": {"n": n}}).to_string();
            // A publish that was on its way to the killed owner is never answered
            // (the node says `unavailable` after 5 s): give up on it sooner, as an
            // app would, and go on (it was not acknowledged).
            let answer =
                common::try_http_within(api, "POST", "/v1/publish", &body, Duration::from_secs(1));
            if let Ok((200, answer)) = answer {
                let v: Value = serde_json::from_str(&answer).unwrap();
                acked.push((
                    n,
                    v["epoch"].as_str().unwrap().to_owned(),
                    v["seq"].as_u64().unwrap(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        acked
    })
}

/// Every subscriber got every acknowledged publish once, in order, with no
/// re-sync: one `subscribed`, in the epoch the publishes were stamped in.
fn check(seen: &[Seen], acked: &[(u64, String, u64)]) {
    assert!(
        acked.len() > 100,
        "only {} publishes acknowledged",
        acked.len()
    );
    let epochs: std::collections::BTreeSet<&str> = acked.iter().map(|a| a.1.as_str()).collect();
    if let Some(i) = acked.iter().position(|a| a.1 != acked[0].1) {
        let around = &acked[i.saturating_sub(3)..(i + 3).min(acked.len())];
        let subscribed: Vec<&Vec<Value>> = seen.iter().map(|s| &s.subscribed).collect();
        panic!("the room changed epoch: {epochs:?}, around {around:?}; subscribed: {subscribed:?}");
    }
    let mut seqs: Vec<u64> = acked.iter().map(|a| a.2).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), acked.len(), "a seq was given twice");
    for (k, s) in seen.iter().enumerate() {
        let who = format!("subscriber {k}");
        assert!(s.gaps.is_empty(), "{who}: gaps {:?}", s.gaps);
        assert_eq!(
            s.subscribed.len(),
            1,
            "{who} was told to subscribe again: {:?}",
            s.subscribed
        );
        assert_eq!(s.subscribed[0]["epoch"].as_str(), epochs.first().copied());
        assert_eq!(s.connections, 1, "{who} lost its connection");
        let got: std::collections::HashSet<u64> = s.data.iter().copied().collect();
        assert_eq!(got.len(), s.data.len(), "{who} got a message twice");
        let lost: Vec<u64> = acked
            .iter()
            .map(|a| a.0)
            .filter(|n| !got.contains(n))
            .collect();
        assert!(lost.is_empty(), "{who} never got acknowledged {lost:?}");
    }
}

#[test]
fn killing_the_owner_mid_stream_loses_nothing_and_nobody_resyncs() {
    let mut cl = Cluster::start(3);
    cl.wait_converged();
    // Owned by n2; subscribers on n1 and n3; publishes through n1's API.
    let room = cl.room_owned_by(1, &[0, 1, 2], "failover:");
    let urls: Vec<String> = (0..3).map(|i| cl.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let followers = followers(&urls, &[0, 2], &room, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let publisher = publish_until(cl.api[0], room.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(1_500));
    // SIGKILL: nothing is handed over, nothing is said.
    cl.kill(1);
    std::thread::sleep(Duration::from_millis(2_000));
    // It comes back and gets its room back (a planned move now).
    cl.boot(1);
    cl.wait_converged();
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    let acked = publisher.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<Seen> = followers.into_iter().map(|f| f.join().unwrap()).collect();
    check(&seen, &acked);
    // The standby took the room over (n1 or n3, whichever ranks next).
    let promoted: f64 = [0, 2]
        .iter()
        .map(|&i| cl.metric(i, "ringway_replica_promotions_total"))
        .sum();
    assert_eq!(promoted, 1.0, "promotions");
}

#[test]
fn killing_the_standby_loses_nothing_either() {
    let mut cl = Cluster::start(3);
    cl.wait_converged();
    let room = cl.room_owned_by(1, &[0, 1, 2], "standby:");
    // The standby is the node that owns the room without n2.
    let standby = cl.owner(&room, &[0, 2]);
    let other = 2 - standby;
    let urls: Vec<String> = (0..3).map(|i| cl.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut follower = followers(&urls, &[other], &room, &stop);
    let follower = follower.remove(0);
    std::thread::sleep(Duration::from_millis(300));
    let publisher = publish_until(cl.api[other], room.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(1_000));
    cl.kill(standby);
    std::thread::sleep(Duration::from_millis(1_000));
    // Only the owner holds the room now: its next standby is the third node.
    let replicated = cl.metric(1, "ringway_rooms_replicated");
    assert!(replicated >= 1.0, "rooms replicated on n2: {replicated}");
    cl.boot(standby);
    cl.wait_converged();
    // Publishes stall while the owner waits to learn that its standby is gone
    // (`mesh.dead_after_ms`): publish long enough after that for the count below.
    std::thread::sleep(Duration::from_millis(2_000));
    stop.store(true, Ordering::Relaxed);
    let acked = publisher.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let seen = follower.join().unwrap();
    check(&[seen], &acked);
    let given_up = cl.metric(1, "ringway_replica_rooms_given_up_total");
    assert_eq!(given_up, 0.0);
}

#[test]
fn with_replication_off_the_owner_answers_at_once() {
    // `mesh.replicate = false`: no copies, no standby; the publish is answered
    // without waiting, and the metrics say the rooms run unreplicated (none).
    let cl = Cluster::start_with_config(3, "[mesh]\nreplicate = false\n");
    cl.wait_converged();
    let room = cl.room_owned_by(1, &[0, 1, 2], "plain:");
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    for n in 0..5 {
        let (_, seq) = cl.publish(0, &room, json!({ "n": n }));
        acked.lock().unwrap().push(seq);
    }
    assert_eq!(*acked.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    for i in 0..3 {
        assert_eq!(cl.metric(i, "ringway_replica_copies"), 0.0);
        assert_eq!(cl.metric(i, "ringway_replica_seeds_total"), 0.0);
    }
}
