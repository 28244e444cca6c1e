//! A node's start-up as an operator sees it: addresses it refuses to share, what it
//! logs and how, and the connection cap it announces.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, http, metric};

/// Run `ringway` with `args` until it exits (at most 10 s); returns (status, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringway");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn a_second_process_on_the_nodes_port_is_refused_naming_the_holder() {
    let first = Process::start(&["--node-id", "first"]);
    let pid = first.child.id().to_string();
    let api = format!("127.0.0.1:{}", free_port());
    let (status, err) = run_to_exit(
        &[
            "--listen",
            &first.ws.to_string(),
            "--api-listen",
            &api,
            "--node-id",
            "intruder",
        ],
        &[],
    );
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {}", first.ws)),
        "{err}"
    );
    assert!(err.contains(&format!("process {pid} (ringway)")), "{err}");
    assert!(
        err.contains("another address for --listen (listen)"),
        "{err}"
    );
    // The API address too.
    let ws = format!("127.0.0.1:{}", free_port());
    let (status, err) = run_to_exit(
        &["--listen", &ws, "--api-listen", &first.api.to_string()],
        &[],
    );
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains(&format!("process {pid} (ringway)")), "{err}");
    assert!(
        err.contains("another address for --api-listen (api_listen)"),
        "{err}"
    );
    // And the mesh's.
    let (ws, api) = (free_port(), free_port());
    let (status, err) = run_to_exit(
        &[
            "--listen",
            &format!("127.0.0.1:{ws}"),
            "--api-listen",
            &format!("127.0.0.1:{api}"),
            "--node-id",
            "n1",
            "--mesh-secret",
            "a-mesh-secret-of-at-least-32-bytes-0123",
            "--mesh-listen",
            &first.ws.to_string(),
            "--peer",
            &format!("n2=127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {}", first.ws)),
        "{err}"
    );
    assert!(
        err.contains("another address for --mesh-listen (mesh.listen)"),
        "{err}"
    );
    // The first node answers every request itself, with its own id.
    for _ in 0..20 {
        let (code, body) = http(first.api, "GET", "/v1/cluster", "");
        assert_eq!(code, 200);
        assert!(body.contains("\"first\""), "{body}");
    }
}

#[test]
fn one_address_for_two_listeners_is_refused_with_one_clear_line() {
    let addr = format!("127.0.0.1:{}", free_port());
    // RUST_BACKTRACE is set in CI and on developer machines: errors must still be one
    // line, not a backtrace.
    let (status, err) = run_to_exit(
        &["--listen", &addr, "--api-listen", &addr],
        &[("RUST_BACKTRACE", "1")],
    );
    assert_eq!(status, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: invalid configuration: listen and api_listen are both"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}

/// Start a node with `args` (stderr piped), wait until it answers, check
/// `ringway_max_connections`, stop it with SIGINT; returns its stderr.
fn start_check_stop(args: &[&str], cap: f64) -> String {
    let ws = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["--listen", &ws, "--api-listen", &api, "--no-pin"])
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let api_addr = api.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        common::try_http(api_addr, "GET", "/healthz", ""),
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(api_addr, "ringway_max_connections"), cap);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn logs_are_plain_when_piped_and_json_on_request() {
    let text = start_check_stop(&["--max-connections", "50"], 50.0);
    assert!(text.contains("listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes into a pipe: {text}"
    );
    assert!(text.contains("up to 50 client connections"), "{text}");

    // JSON: one object per line with level, target and message.
    let text = start_check_stop(&["--max-connections", "60", "--log-format", "json"], 60.0);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{text}");
    for l in &lines {
        assert!(l["level"].is_string() && l["target"].is_string(), "{l}");
    }
    // The announced cap is the real one.
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("up to 60 client connections")),
        "{text}"
    );
}
