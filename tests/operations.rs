//! Operations: `ringway check`, the kernel profile, the install script, the example
//! config and the local cluster script.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn ringway(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(args)
        .env("RINGWAY_LOG", "warn")
        .output()
        .expect("run ringway");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_passes_a_target_this_host_fits() {
    let (code, text) = ringway(&["check", "--connections", "1000"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("config: valid"), "{text}");
    assert!(text.contains("open files (RLIMIT_NOFILE)"), "{text}");
}

#[test]
fn check_fails_a_target_that_does_not_fit_and_names_the_fix() {
    // No host of this project's kind has a hard open-file limit of 100 million.
    let (code, text) = ringway(&["check", "--connections", "100000000"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL open files"), "{text}");
    assert!(text.contains("LimitNOFILE="), "{text}");
    assert!(text.contains("does NOT fit"), "{text}");
}

#[test]
fn check_rejects_an_invalid_config_naming_the_key() {
    let path = std::env::temp_dir().join(format!("ringway-check-{}.toml", std::process::id()));
    std::fs::write(&path, "[limits]\nmax_frame_size = 100\n").unwrap();
    let (code, text) = ringway(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("max_frame_size"), "{text}");
    // The file given before the subcommand is the one checked too.
    let (code, text) = ringway(&["--config", path.to_str().unwrap(), "check"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("max_frame_size"), "{text}");
}

#[test]
fn apply_sysctl_dry_run_reports_every_key_and_changes_nothing() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apply-sysctl.sh");
    let before = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let out = Command::new("bash")
        .arg(script)
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for key in [
        "fs.file-max",
        "fs.nr_open",
        "net.core.somaxconn",
        "net.ipv4.tcp_mem",
        "net.ipv4.ip_local_reserved_ports",
        "kernel.io_uring_disabled",
    ] {
        assert!(text.contains(key), "{key} missing:\n{text}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap(),
        before
    );
}

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ringway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `scripts/apply-sysctl.sh --dry-run` against a /proc/sys of our own holding one
/// value for ip_local_reserved_ports.
fn apply_sysctl_with_reserved_ports(live: &str) -> String {
    let proc_sys = Scratch::new("proc-sys");
    let dir = proc_sys.0.join("net/ipv4");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ip_local_reserved_ports"), live).unwrap();
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/apply-sysctl.sh"))
        .arg("--dry-run")
        .env("PROC_SYS", &proc_sys.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn apply_sysctl_compares_port_lists_as_the_kernel_prints_them() {
    // The profile says 7400,8080,8081; the kernel prints that as 7400,8080-8081.
    let text = apply_sysctl_with_reserved_ports("7400,8080-8081\n");
    assert!(
        text.contains("ok         net.ipv4.ip_local_reserved_ports = 7400,8080-8081\n"),
        "{text}"
    );
    let text = apply_sysctl_with_reserved_ports("8080\n");
    assert!(
        text.contains("would set  net.ipv4.ip_local_reserved_ports: 8080 -> 7400,8080-8081\n"),
        "{text}"
    );
    let text = apply_sysctl_with_reserved_ports("\n");
    assert!(
        text.contains("would set  net.ipv4.ip_local_reserved_ports: (empty) -> 7400,8080-8081\n"),
        "{text}"
    );
}

/// What a path looks like, to tell whether a dry run touched it.
fn snapshot(paths: &[&str]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| match std::fs::symlink_metadata(p) {
            Ok(m) => format!(
                "{p}: {} bytes, mode {:o}, owner {}:{}, mtime {}.{}",
                m.len(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
            Err(e) => format!("{p}: {e}"),
        })
        .collect()
}

#[test]
fn install_dry_run_names_everything_it_would_do_and_changes_nothing() {
    let watched = [
        "/etc/ringway",
        "/etc/ringway/ringway.toml",
        "/etc/ringway/ringway.env",
        "/usr/local/bin/ringway",
        "/var/lib/ringway",
        "/etc/systemd/system/ringway.service",
        "/etc/sysctl.d/99-ringway.conf",
        "/etc/security/limits.d/ringway.conf",
    ];
    let sysctls = || {
        ["net/core/somaxconn", "net/ipv4/ip_local_reserved_ports"]
            .map(|k| std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap())
    };
    let user = || {
        Command::new("getent")
            .args(["passwd", "ringway"])
            .output()
            .unwrap()
            .stdout
    };
    let before = (snapshot(&watched), user(), sysctls());

    // The binary this test run built, so the dry run need not build one.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_ringway"))
        .parent()
        .and_then(Path::parent)
        .unwrap();
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/install.sh"))
        .arg("--dry-run")
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for thing in [
        "user ringway",
        "/etc/ringway/ringway.toml",
        "/etc/ringway/ringway.env",
        "/usr/local/bin/ringway",
        "/var/lib/ringway",
        "/etc/systemd/system/ringway.service",
        "/etc/sysctl.d/99-ringway.conf",
        "/etc/security/limits.d/ringway.conf",
        "net.ipv4.ip_local_reserved_ports",
        "ringway check --config",
        "config: valid",
        "verdict ",
        "dry run: nothing was changed",
        "systemctl enable --now ringway",
    ] {
        assert!(text.contains(thing), "{thing:?} missing:\n{text}");
    }
    assert_eq!((snapshot(&watched), user(), sysctls()), before, "{text}");
}

#[test]
fn the_example_config_loads() {
    let example = format!("{ROOT}/ops/ringway.example.toml");
    let (code, text) = ringway(&["check", "--connections", "1000", "--config", &example]);
    // The host part may fail on a small machine; the config must be valid.
    assert!(text.contains("config: valid"), "exit {code}: {text}");
}

#[test]
fn the_example_config_names_every_setting() {
    let example = std::fs::read_to_string(format!("{ROOT}/ops/ringway.example.toml")).unwrap();
    // A line setting `key`, commented out or not.
    let sets = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let has_line = |line: &str| {
        example
            .lines()
            .any(|l| l.trim_start_matches(['#', ' ']) == line)
    };
    let config = serde_json::to_value(ringway::Config::default()).unwrap();
    let mut missing = Vec::new();
    for (key, value) in config.as_object().unwrap() {
        let Some(table) = value.as_object() else {
            if !sets(key) {
                missing.push(key.clone());
            }
            continue;
        };
        if !has_line(&format!("[{key}]")) {
            missing.push(format!("[{key}]"));
        }
        for (sub, v) in table {
            let found = if v.is_array() && !sets(sub) {
                has_line(&format!("[[{key}.{sub}]]"))
            } else {
                sets(sub)
            };
            if !found {
                missing.push(format!("{key}.{sub}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ops/ringway.example.toml does not show: {missing:?}"
    );
    assert!(
        has_line("demo = false"),
        "the example must turn the demo off"
    );
}

/// The processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid pgrp ...: comm may hold spaces.
                    let after = &s[s.rfind(')')? + 1..];
                    after.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

#[test]
fn cluster_local_stops_at_once_with_the_error_of_a_node_that_cannot_start() {
    let logs = Scratch::new("cluster-local");
    let output = logs.0.join("output.txt");
    let started = Instant::now();
    // Output to a file, not a pipe: a node left running would hold a pipe open.
    let mut child = Command::new("bash")
        .arg(format!("{ROOT}/scripts/cluster-local.sh"))
        .args(["2", "--no-such-flag"])
        .env("RINGWAY_BIN", env!("CARGO_BIN_EXE_ringway"))
        .env("LOG_DIR", &logs.0)
        .env("WS_BASE", common::free_port().to_string())
        .env("API_BASE", common::free_port().to_string())
        .env("MESH_BASE", common::free_port().to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::fs::File::create(logs.0.join("stderr.txt")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let left = group_members(pgid);
    if status.is_none() || !left.is_empty() {
        // Ours to stop: the script and the nodes it started, by their process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&output).unwrap()
        + &std::fs::read_to_string(logs.0.join("stderr.txt")).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running after 20 s:\n{text}"));
    assert!(left.is_empty(), "processes left behind: {left:?}\n{text}");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("unexpected argument '--no-such-flag'"),
        "the node's own error is not shown:\n{text}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?} to give up:\n{text}"
    );
}
