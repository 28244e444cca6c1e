//! Test harness: a real node on 127.0.0.1:0 and real WebSocket clients (tungstenite,
//! blocking, with read timeouts so a missing message fails the test instead of
//! hanging it).

#![allow(dead_code)]

pub mod app;
pub mod cluster;
pub mod follow;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway::{Config, Server};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long a client waits for any one message before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A node for one test; stopped on drop.
pub struct Node {
    server: Option<Server>,
    pub ws: SocketAddr,
    pub api: SocketAddr,
}

impl Node {
    /// Start with the defaults (two unpinned workers, echo on, ephemeral ports),
    /// adjusted by `tweak`.
    pub fn start(tweak: impl FnOnce(&mut Config)) -> Node {
        let mut c = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            api_listen: "127.0.0.1:0".parse().unwrap(),
            workers: 2,
            pin_workers: false,
            echo: true,
            ..Config::default()
        };
        tweak(&mut c);
        let server = Server::start(c).expect("node starts");
        Node {
            ws: server.ws_addr(),
            api: server.api_addr(),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.ws)
    }

    /// POST JSON to the API; returns (status, body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, String) {
        http(self.api, "POST", path, &body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.api, "GET", path, "")
    }

    /// Publish through the API; returns (epoch, seq).
    pub fn publish(&self, room: &str, data: Value) -> (String, u64) {
        let (status, body) = self.post("/v1/publish", &json!({"room": room, "data": data}));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            v["epoch"].as_str().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
        )
    }

    /// A connected ringway.v1 client (welcome already read).
    pub fn client(&self) -> Client {
        Client::connect(&self.url("/ws"))
    }

    /// Clients until there is one on each of workers 0 and 1.
    pub fn client_on_each_worker(&self) -> (Client, Client) {
        let mut w0 = None;
        let mut w1 = None;
        for _ in 0..200 {
            let c = self.client();
            match c.worker() {
                0 if w0.is_none() => w0 = Some(c),
                1 if w1.is_none() => w1 = Some(c),
                _ => {}
            }
            if let (Some(_), Some(_)) = (&w0, &w1) {
                return (w0.unwrap(), w1.unwrap());
            }
        }
        panic!("200 connections all landed on one worker");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`, through ureq.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    try_http(addr, method, path, body).expect("HTTP request")
}

/// [`http`], with transport errors returned instead of failing the test.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), ureq::Error> {
    try_http_within(addr, method, path, body, WAIT)
}

/// [`try_http`], giving up after `timeout`.
pub fn try_http_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: std::time::Duration,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let res = match method {
        "POST" => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body),
        _ => agent.get(&url).call(),
    };
    let mut res = res?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}

/// A blocking WebSocket client speaking ringway.v1.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub welcome: Value,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let mut ws = raw_connect(url);
        let welcome = recv_json(&mut ws);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        Client { ws, welcome }
    }

    /// A client whose socket receives into a window of `bytes` (the kernel's
    /// smallest is about 2 KB), fixed: a reader that falls behind as soon as the
    /// server sends more than that.
    pub fn with_window(url: &str, bytes: usize) -> Client {
        let addr: SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "ringway.v1".parse().unwrap());
        let (mut ws, _) = tungstenite::client::client(req, stream).expect("WebSocket handshake");
        let welcome = recv_json(&mut ws);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        Client { ws, welcome }
    }

    /// The worker this connection landed on (from `welcome.conn`, "worker.slot.gen").
    pub fn worker(&self) -> u64 {
        let conn = self.welcome["conn"].as_str().unwrap();
        conn.split('.').next().unwrap().parse().unwrap()
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn recv(&mut self) -> Value {
        recv_json(&mut self.ws)
    }

    /// Subscribe and return the `subscribed` reply.
    pub fn sub(&mut self, room: &str) -> Value {
        self.send(json!({"type": "sub", "room": room}));
        let v = self.recv();
        assert_eq!(v["type"], "subscribed", "{v}");
        v
    }

    /// Wait for the server's close frame; returns its code.
    pub fn expect_close(&mut self) -> u16 {
        expect_close(&mut self.ws)
    }
}

/// A WebSocket connection with a read timeout, nothing read yet.
pub fn raw_connect(url: &str) -> WebSocket<TcpStream> {
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let stream = TcpStream::connect(addr).expect("TCP connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    if url.ends_with("/ws") {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "ringway.v1".parse().unwrap());
    }
    let (ws, _resp) = tungstenite::client::client(req, stream).expect("WebSocket handshake");
    ws
}

pub fn recv_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).expect("server sent JSON"),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(e) => panic!("expected a text message, got error {e}"),
        }
    }
}

pub fn expect_close(ws: &mut WebSocket<TcpStream>) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
            Ok(Message::Close(None)) => return u16::from(CloseCode::Status),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got error {e}"),
        }
    }
}

/// Send raw bytes (after a real handshake) and return the close code the server
/// answers with, reading the raw stream.
pub fn raw_bytes_then_close_code(url: &str, bytes: &[u8]) -> u16 {
    let mut ws = raw_connect(url);
    if url.ends_with("/ws") {
        let _ = recv_json(&mut ws);
    }
    let stream = ws.get_mut();
    stream.write_all(bytes).unwrap();
    // Read frames by hand: the server's close frame is unmasked, 0x88 LEN CODE.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read close frame");
        assert!(n > 0, "EOF before a close frame: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let mut i = 0;
        while i + 2 <= buf.len() {
            let len = (buf[i + 1] & 0x7f) as usize;
            let hdr = match len {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            if len >= 126 || i + hdr + len > buf.len() {
                break;
            }
            if buf[i] == 0x88 {
                return u16::from_be_bytes([buf[i + 2], buf[i + 3]]);
            }
            i += hdr + len;
        }
    }
}

/// A masked client frame.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else if payload.len() <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Send a raw HTTP request; return the status code of the answer.
pub fn raw_http_status(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Send a raw request, read until the server closes; returns the whole answer.
pub fn http_raw_text(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

/// Send a raw request, read until the server closes; returns (status, body).
pub fn http_raw_body(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A free TCP port on 127.0.0.1 for a node started later (child processes, mesh
/// addresses).
///
/// Ports come from below the kernel's ephemeral range, handed out by a counter, so
/// two tests running at once never get the same one and no client's source port or
/// in-process node (which bind port 0, in the ephemeral range) can take it between
/// this call and the node's bind. Each port is checked free before it is returned.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low < 12_000 {
        // No room below the ephemeral range on this host: let the kernel choose.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let span = low - 10_000;
    // Start each test binary somewhere else, in case one runs while another lingers.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() * 7919 % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + n % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Why a child node did not start.
#[derive(Debug)]
pub enum Start {
    /// Another process took one of its ports between [`free_port`] and its bind:
    /// starting it elsewhere will work.
    PortTaken(String),
    /// Anything else (it exited for another reason, or runs but does not answer).
    Failed(String),
}

impl Start {
    /// The same reason, its message rewritten.
    pub fn map(self, f: impl FnOnce(String) -> String) -> Start {
        match self {
            Start::PortTaken(e) => Start::PortTaken(f(e)),
            Start::Failed(e) => Start::Failed(f(e)),
        }
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::PortTaken(e) | Start::Failed(e) => f.write_str(e),
        }
    }
}

/// Run `start` (which picks new ports each time it runs again) until it does not
/// lose a port to another process, three times at most; panics on any other failure.
pub fn on_free_ports<T>(mut start: impl FnMut() -> Result<T, Start>) -> T {
    for _ in 0..2 {
        match start() {
            Err(Start::PortTaken(e)) => eprintln!("{e}; starting again on other ports"),
            done => return done.unwrap_or_else(|e| panic!("{e}")),
        }
    }
    start().unwrap_or_else(|e| panic!("{e}"))
}

/// Copy a child's stderr to this test's (shown when the test fails) and keep its
/// start (64 KiB) for [`Process::try_start_at`] to read.
fn echo_stderr(
    child: &mut std::process::Child,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let mut from = child.stderr.take().expect("stderr is piped");
    let kept = Arc::new(Mutex::new(String::new()));
    let keep = kept.clone();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            eprint!("{text}");
            let mut k = keep.lock().unwrap();
            if k.len() < 64 << 10 {
                k.push_str(&text);
            }
        }
    });
    (kept, pump)
}

/// The `ringway` binary as a child process, for what needs a process of its own
/// (signals, exit status, its own RSS). Killed on drop if still running.
pub struct Process {
    pub child: std::process::Child,
    pub ws: SocketAddr,
    pub api: SocketAddr,
}

impl Process {
    /// Start `ringway` with `args` on free loopback ports; waits until /healthz answers.
    /// A node that finds one of these ports taken is started again on others (see
    /// [`free_port`]: on a host without ports below the ephemeral range, another
    /// process can take a port between the check and the node's bind). The node's
    /// stderr is shown with a failing test's output.
    pub fn start(args: &[&str]) -> Process {
        on_free_ports(|| {
            let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            Process::try_start_at(ws, api, args)
        })
    }

    /// Start `ringway` on the given client and API addresses (a restart keeps them).
    pub fn start_at(ws: SocketAddr, api: SocketAddr, args: &[&str]) -> Process {
        Process::try_start_at(ws, api, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Process::start_at`], saying why a node did not start instead of panicking.
    pub fn try_start_at(ws: SocketAddr, api: SocketAddr, args: &[&str]) -> Result<Process, Start> {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args([
                "--listen",
                &ws.to_string(),
                "--api-listen",
                &api.to_string(),
                "--no-pin",
            ])
            .args(args)
            .env("RINGWAY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ringway");
        let (stderr, pump) = echo_stderr(&mut child);
        let mut p = Process { child, ws, api };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            // An HTTP answer, not just a TCP connect: a connect can succeed against a
            // port that is not ours yet (a self-connect to a free ephemeral port).
            let answered = matches!(try_http(api, "GET", "/healthz", ""), Ok((200, _)));
            // Another node on the API port answers too; ours then exits.
            if let Ok(Some(status)) = p.child.try_wait() {
                let _ = pump.join(); // the child is gone: its stderr ends
                let said = stderr.lock().unwrap().trim_end().to_owned();
                let e =
                    format!("ringway did not start on {ws} / {api}: it exited ({status}): {said}");
                return Err(if said.contains("Address already in use") {
                    Start::PortTaken(e)
                } else {
                    Start::Failed(e)
                });
            }
            if answered {
                return Ok(p);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Start::Failed(format!(
                    "ringway did not start: no /healthz answer on {api} within {WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    /// A metric from /metrics (summed over label sets).
    pub fn metric(&self, name: &str) -> f64 {
        metric(self.api, name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A metric from a node's /metrics, summed over its label sets.
pub fn metric(api: SocketAddr, name: &str) -> f64 {
    let (_, text) = http(api, "GET", "/metrics", "");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait until `ok`, at most `WAIT`; fails the test naming `what` otherwise.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Write a node configuration to a fresh temporary file; returns its path.
pub fn write_config(text: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let name = RandomState::new().hash_one(std::time::Instant::now());
    let path =
        std::env::temp_dir().join(format!("ringway-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}
