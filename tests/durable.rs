//! History on disk (`--data-dir`): a node killed with SIGKILL and started again
//! answers resumes `recovered:true` with every acknowledged message, whatever its
//! worker count, and a log cut short mid-record costs only that record.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{Client, Process, free_port, http};
use serde_json::{Value, json};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringway-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn addrs() -> (SocketAddr, SocketAddr) {
    let a = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    (a(free_port()), a(free_port()))
}

fn node(ws: SocketAddr, api: SocketAddr, dir: &Path, workers: &str) -> Process {
    node_with(ws, api, dir, workers, &[])
}

fn node_with(
    ws: SocketAddr,
    api: SocketAddr,
    dir: &Path,
    workers: &str,
    extra: &[&str],
) -> Process {
    let dir = dir.display().to_string();
    let mut args = vec![
        "--data-dir",
        &dir,
        "--workers",
        workers,
        "--rate-limit",
        "0",
    ];
    args.extend_from_slice(extra);
    Process::start_at(ws, api, &args)
}

/// A config file that sets `rooms.fsync`.
fn fsync_config(dir: &Path, policy: &str) -> String {
    let path = dir.with_extension(format!("{policy}.toml"));
    std::fs::write(&path, format!("[rooms]\nfsync = \"{policy}\"\n")).unwrap();
    path.display().to_string()
}

fn publish(api: SocketAddr, room: &str, data: Value) -> (String, u64) {
    let body = json!({"room": room, "data": data}).to_string();
    let (status, body) = http(api, "POST", "/v1/publish", &body);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    (
        v["epoch"].as_str().unwrap().to_owned(),
        v["seq"].as_u64().unwrap(),
    )
}

/// Resume `room` after `seq` of `epoch`: the `subscribed` answer and the `n`
/// messages replayed after it.
fn resume(url: &str, room: &str, epoch: &str, seq: u64, n: usize) -> (Value, Vec<Value>) {
    let mut c = Client::connect(url);
    c.send(json!({"type": "sub", "room": room, "since": {"epoch": epoch, "seq": seq}}));
    let sub = c.recv();
    assert_eq!(sub["type"], "subscribed", "{sub}");
    let msgs = (0..n).map(|_| c.recv()).collect();
    (sub, msgs)
}

fn kill(p: &mut Process) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[test]
fn a_node_killed_and_started_again_resumes_every_acknowledged_message() {
    let dir = temp_dir("kill");
    let (ws, api) = addrs();
    let mut p = node(ws, api, &dir, "2");
    // Rooms on both workers, one of them quiet since its first message.
    let rooms: Vec<String> = (0..6).map(|i| format!("chat:{i}")).collect();
    let mut epochs = Vec::new();
    for room in &rooms {
        let (epoch, _) = publish(api, room, json!({"n": 1}));
        epochs.push(epoch);
    }
    for n in 2..=40 {
        let (epoch, seq) = publish(api, &rooms[0], json!({"n": n}));
        assert_eq!((epoch.as_str(), seq), (epochs[0].as_str(), n));
    }
    assert!(p.metric("ringway_store_records_total") >= 45.0);
    kill(&mut p);

    let p = node(ws, api, &dir, "2");
    // A client that had seen up to 25 gets 26..=40, in the same epoch.
    let (sub, msgs) = resume(&p.url(), &rooms[0], &epochs[0], 25, 15);
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(
        (sub["epoch"].as_str(), sub["seq"].as_u64()),
        (Some(epochs[0].as_str()), Some(40))
    );
    let got: Vec<u64> = msgs
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (26..=40).collect::<Vec<_>>());
    assert_eq!(msgs[0]["seq"], 26);
    // Every other room: up to date, same epoch.
    for (room, epoch) in rooms.iter().zip(&epochs).skip(1) {
        let (sub, _) = resume(&p.url(), room, epoch, 1, 0);
        assert_eq!(
            (sub["recovered"].as_bool(), sub["seq"].as_u64()),
            (Some(true), Some(1)),
            "{room}: {sub}"
        );
    }
    // The sequence goes on where it stopped.
    assert_eq!(
        publish(api, &rooms[0], json!({"n": 41})),
        (epochs[0].clone(), 41)
    );
    // History answers from it too.
    let (status, body) = http(
        api,
        "GET",
        &format!("/v1/history/{}?since=38", rooms[0]),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [39, 40, 41], "{body}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rooms_find_their_new_home_worker_when_the_worker_count_changes() {
    let dir = temp_dir("workers");
    let (ws, api) = addrs();
    let mut p = node(ws, api, &dir, "2");
    let rooms: Vec<String> = (0..8).map(|i| format!("news:{i}")).collect();
    let mut epochs = Vec::new();
    for room in &rooms {
        publish(api, room, json!(1));
        let (epoch, seq) = publish(api, room, json!(2));
        assert_eq!(seq, 2);
        epochs.push(epoch);
    }
    kill(&mut p);
    let mut p = node(ws, api, &dir, "1");
    for (room, epoch) in rooms.iter().zip(&epochs) {
        let (sub, msgs) = resume(&p.url(), room, epoch, 0, 2);
        assert_eq!(
            (sub["recovered"].as_bool(), sub["seq"].as_u64()),
            (Some(true), Some(2)),
            "{room}: {sub}"
        );
        assert_eq!(
            (msgs[0]["data"].as_u64(), msgs[1]["data"].as_u64()),
            (Some(1), Some(2))
        );
    }
    kill(&mut p);
    // And back to two.
    let p = node(ws, api, &dir, "2");
    for (room, epoch) in rooms.iter().zip(&epochs) {
        let (sub, _) = resume(&p.url(), room, epoch, 1, 1);
        assert_eq!(sub["recovered"], true, "{room}: {sub}");
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_log_cut_short_mid_record_loses_only_that_record() {
    let dir = temp_dir("torn");
    let (ws, api) = addrs();
    let mut p = node(ws, api, &dir, "1");
    let mut epoch = String::new();
    for n in 1..=10 {
        epoch = publish(api, "chat:t", json!({"n": n})).0;
    }
    kill(&mut p);
    // The crash came in the middle of writing message 10. (A real torn record was
    // never acknowledged: the worker writes before it answers. The test cuts an
    // acknowledged one only because it needs a record to cut.)
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 0
        })
        .expect("a segment");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let p = node(ws, api, &dir, "1");
    let (sub, msgs) = resume(&p.url(), "chat:t", &epoch, 6, 3);
    assert_eq!(
        (sub["recovered"].as_bool(), sub["seq"].as_u64()),
        (Some(true), Some(9)),
        "{sub}"
    );
    let got: Vec<u64> = msgs
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [7, 8, 9]);
    assert_eq!(publish(api, "chat:t", json!({"n": 10})), (epoch, 10));
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_node_on_the_same_directory_is_refused() {
    let dir = temp_dir("lock");
    let (ws, api) = addrs();
    let _p = node(ws, api, &dir, "1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another process holds it") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
}

#[test]
fn a_kill_mid_stream_loses_nothing_that_was_acknowledged_or_seen() {
    kill_mid_stream("interval");
}

#[test]
fn a_kill_mid_stream_with_fsync_always_loses_nothing_either() {
    kill_mid_stream("always");
}

fn kill_mid_stream(policy: &str) {
    let dir = temp_dir(&format!("stream-{policy}"));
    let config = fsync_config(&dir, policy);
    let extra = ["--config", config.as_str()];
    let (ws, api) = addrs();
    let mut p = node_with(ws, api, &dir, "2", &extra);
    let room = "chat:stream";
    let mut watcher = Client::connect(&p.url());
    let sub = watcher.sub(room);
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    // A publisher at about 200/s until the node dies under it.
    let publisher = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for n in 1..=200u64 {
            let body = json!({"room": room, "data": {"n": n}}).to_string();
            match common::try_http(api, "POST", "/v1/publish", &body) {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    acked.push((v["seq"].as_u64().unwrap(), n));
                }
                _ => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        acked
    });
    // What the subscriber saw before the kill.
    let mut seen = Vec::new();
    while seen.len() < 60 {
        let m = watcher.recv();
        seen.push((m["seq"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap()));
    }
    kill(&mut p);
    let acked = publisher.join().unwrap();
    // The last answers may still be on their way when the node dies.
    assert!(
        acked.len() >= 50 && acked.len() < 200,
        "{} acked",
        acked.len()
    );

    let p = node_with(ws, api, &dir, "2", &extra);
    let last = acked.last().unwrap().0.max(seen.last().unwrap().0);
    let (sub, msgs) = resume(&p.url(), room, &epoch, 0, last as usize);
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"].as_str(), Some(epoch.as_str()));
    let stored: Vec<(u64, u64)> = msgs
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap()))
        .collect();
    for m in acked.iter().chain(&seen) {
        assert!(
            stored.contains(m),
            "{m:?} was acknowledged or delivered, not kept"
        );
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_repeated_idempotency_key_is_still_recognised_after_a_restart() {
    let dir = temp_dir("idem");
    let (ws, api) = addrs();
    let mut p = node(ws, api, &dir, "2");
    let body =
        json!({"room": "orders", "data": {"n": 1}, "idempotency_key": "order-1"}).to_string();
    let (status, first) = http(api, "POST", "/v1/publish", &body);
    assert_eq!(status, 200, "{first}");
    publish(api, "orders", json!({"n": 2}));
    let first: Value = serde_json::from_str(&first).unwrap();
    // Twice: the second start reads the key from what the first one rewrote.
    for _ in 0..2 {
        kill(&mut p);
        p = node(ws, api, &dir, "2");
        let (status, again) = http(api, "POST", "/v1/publish", &body);
        assert_eq!(status, 200, "{again}");
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(
            (&again["epoch"], &again["seq"]),
            (&first["epoch"], &first["seq"])
        );
        assert_eq!(again["duplicate"], true, "{again}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_clean_stop_marks_the_directory_and_a_restart_resumes() {
    let dir = temp_dir("clean");
    let (ws, api) = addrs();
    let d = dir.display().to_string();
    let mut p = Process::start_at(ws, api, &["--data-dir", &d, "--drain-window", "1"]);
    let (epoch, _) = publish(api, "chat:c", json!("a"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        dir.join("clean").exists(),
        "a drained node marks its history clean"
    );
    // And the machine restarts (a planned reboot): the clean stop keeps the epochs.
    fake_reboot(&dir);
    let p = node(ws, api, &dir, "2");
    assert!(!dir.join("clean").exists(), "the mark is used once");
    let (sub, msgs) = resume(&p.url(), "chat:c", &epoch, 0, 1);
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(msgs[0]["data"], "a");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Make the directory look written before another boot of the machine.
fn fake_reboot(dir: &Path) {
    let path = dir.join("boot_id");
    let text = std::fs::read_to_string(&path).unwrap();
    let (_, rest) = text.split_once('\n').unwrap();
    std::fs::write(&path, format!("not-this-boot\n{rest}")).unwrap();
}

#[test]
fn a_crash_of_the_machine_without_fsync_always_starts_new_epochs() {
    let dir = temp_dir("reboot");
    let (ws, api) = addrs();
    let mut p = node(ws, api, &dir, "1");
    let (epoch, _) = publish(api, "chat:r", json!("a"));
    kill(&mut p);
    fake_reboot(&dir);
    let p = node(ws, api, &dir, "1");
    // The last writes may be gone: the seqs handed out are not known, so the room
    // goes on in a new epoch (the client re-syncs), its history still readable.
    let (sub, _) = resume(&p.url(), "chat:r", &epoch, 0, 0);
    assert_eq!(sub["recovered"], false, "{sub}");
    assert_ne!(sub["epoch"].as_str(), Some(epoch.as_str()));
    assert_eq!(sub["seq"], 1, "{sub}");
    let (status, body) = http(api, "GET", "/v1/history/chat:r?since=0", "");
    assert_eq!(status, 200);
    assert!(body.contains(r#""data":"a""#), "{body}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
