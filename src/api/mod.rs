//! The HTTP API, for app services and operators: publish, direct messages,
//! presence, metrics, health. With `auth.api_key` set, every route but the health
//! checks needs `Authorization: Bearer <key>`.
//!
//! Every worker accepts on the API address too (its handle of the one shared listening
//! socket), so the API scales with the workers and needs no thread of its own. A
//! publish is handed to the router like any client publish; the response carries the
//! epoch and seq the owner gave it. Every phase of a request has a deadline, the key
//! is checked before a body is read, and connections are capped (`[api]`).
//!
//! | route                | answer |
//! |----------------------|--------|
//! | `POST /v1/publish`   | `{"room","data","key"?}` → `{"epoch","seq"}` |
//! | `POST /v1/send`      | `{"user","data"}` → `{"epoch","seq"}` of the room `user:<id>` |
//! | `GET /v1/presence/R` | the cluster-wide roster of room R |
//! | `GET /v1/cluster`    | this node and its peers' link state |
//! | `GET /v1/rooms/R`    | `{"room","owner"}`: the node that owns room R now |
//! | `GET /v1/rooms`      | rooms with subscribers across the cluster and their counts, paged (`after`, `limit`) |
//! | `GET /v1/history/R`  | room R's history after `since`, at most `limit` messages, from its owner |
//! | `POST /v1/disconnect`| `{"user"}` or `{"conn","node"?}` with `code`, `reason`, `reconnect` → closes them on every node |
//! | `GET /metrics`       | Prometheus text, summed over workers |
//! | `GET /healthz`       | 200 while the process runs |
//! | `GET /readyz`        | 200, or 503 while draining |

pub mod http;

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::warn;

use crate::hub::{Origin, Query, Reply, Stamp, Target};
use crate::metrics::{self, ProcessStats};
use crate::protocol;
use crate::runtime::mailbox::Letter;
use crate::runtime::worker::{Answer, Worker};
use http::{Head, Parsed, Response};

/// Accept API connections on this worker forever.
pub async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // TCP_NODELAY comes from the listener (`listener::bind_shared`).
                let open = w.shared.api_connections.fetch_add(1, Ordering::Relaxed);
                if open >= w.shared.config.api.max_connections {
                    w.shared.api_connections.fetch_sub(1, Ordering::Relaxed);
                    let busy = Response::error(
                        503,
                        "too many API connections (api.max_connections); retry",
                    )
                    .encode(false);
                    let linger = {
                        let mut st = w.state.borrow_mut();
                        let ok = st.refusing < crate::runtime::driver::MAX_REFUSING;
                        st.refusing += usize::from(ok);
                        ok
                    };
                    if linger {
                        let w = w.clone();
                        monoio::spawn(async move {
                            crate::runtime::driver::refuse(&stream, &busy).await;
                            w.state.borrow_mut().refusing -= 1;
                        });
                    }
                    continue;
                }
                let w = w.clone();
                monoio::spawn(async move {
                    serve(&w, stream).await;
                    w.shared.api_connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: say so at most once a second.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!(
                        worker = w.id,
                        "API accept failed: {e}. If this is 'Too many open files', raise the \
                         open-file limit (LimitNOFILE / ulimit -n) or lower limits.max_connections"
                    );
                    last_warning = Some(std::time::Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read more bytes into `buf`'s spare room before `deadline`; `false` on EOF, an
/// error or the deadline.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    // Read into the spare capacity: a plain `read(Vec)` writes from index 0 and
    // would overwrite the bytes already received.
    let len = buf.len();
    let cap = buf.capacity();
    let wait = deadline.saturating_duration_since(Instant::now());
    let read = stream.read(std::mem::take(buf).slice_mut(len..cap));
    match monoio::time::timeout(wait, read).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            matches!(res, Ok(n) if n > 0)
        }
        Err(_) => false, // the read is cancelled and its buffer dropped
    }
}

/// Serve one keep-alive connection: every phase has a deadline (the wait for a
/// request, its head, its body), the key is checked before a body is read, and
/// nothing is buffered beyond one request's limits.
async fn serve(w: &Rc<Worker>, mut stream: TcpStream) {
    let api = w.shared.config.api.clone();
    let max_body = w.shared.config.limits.max_message_size + (64 << 10);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        // A fresh connection has head_timeout_ms for its whole first head; between
        // keep-alive requests it may idle for idle_timeout_ms, then the head that
        // follows has head_timeout_ms from its first byte.
        let head_deadline = if first {
            Instant::now() + ms(api.head_timeout_ms)
        } else {
            let idle = Instant::now() + ms(api.idle_timeout_ms);
            if buf.is_empty() && !fill(&mut stream, &mut buf, idle).await {
                return; // an idle keep-alive connection: closed quietly
            }
            Instant::now() + ms(api.head_timeout_ms)
        };
        first = false;
        let (head, used) = loop {
            match http::parse_head(&buf) {
                Parsed::Complete(h, n) => break (h, n),
                Parsed::Error(status, reason) => {
                    let _ = stream
                        .write_all(Response::error(status, reason).encode(false))
                        .await;
                    return;
                }
                Parsed::Partial => {
                    if !fill(&mut stream, &mut buf, head_deadline).await {
                        let late = Response::error(408, "request head not completed in time");
                        let _ = stream.write_all(late.encode(false)).await;
                        return;
                    }
                }
            }
        };
        let open = matches!(head.path.as_str(), "/healthz" | "/readyz");
        if !open && !authorized(&w.shared.config.auth.api_key, head.authorization.as_deref()) {
            // Refused before its body is read: a stranger's body is never buffered.
            let no = Response::error(401, "this API needs Authorization: Bearer <auth.api_key>");
            let _ = stream.write_all(no.encode(false)).await;
            return;
        }
        if head.content_length > max_body {
            let big = Response::error(413, "body larger than limits.max_message_size + 64 KiB");
            let _ = stream.write_all(big.encode(false)).await;
            return;
        }
        let end = used + head.content_length;
        let body_deadline = Instant::now() + ms(api.body_timeout_ms);
        while buf.len() < end {
            buf.reserve(end - buf.len());
            if !fill(&mut stream, &mut buf, body_deadline).await {
                let late = Response::error(408, "request body not completed in time");
                let _ = stream.write_all(late.encode(false)).await;
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..end).skip(used).collect();
        if buf.capacity() > 64 << 10 {
            buf.shrink_to(4096); // a large body does not stay allocated while idle
        }
        let response = route(w, &head, &body).await;
        let (res, _) = stream.write_all(response.encode(head.keep_alive)).await;
        if res.is_err() || !head.keep_alive {
            return;
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn route(w: &Rc<Worker>, req: &Head, body: &[u8]) -> Response {
    let path = req.path.as_str();
    // What routes a message waits while the node joins its cluster (its router does
    // not know its peers' rooms yet); at most mesh.join_timeout_ms after start.
    match (req.method.as_str(), path) {
        ("POST", "/v1/publish") => {
            w.shared.joined().await;
            publish(w, body).await
        }
        ("POST", "/v1/send") => {
            w.shared.joined().await;
            send(w, body).await
        }
        ("GET", p) if p.starts_with("/v1/presence/") => {
            w.shared.joined().await;
            presence(w, &p["/v1/presence/".len()..]).await
        }
        ("GET", "/v1/rooms") => {
            w.shared.joined().await;
            rooms(w, req.query.as_deref()).await
        }
        ("POST", "/v1/disconnect") => {
            w.shared.joined().await;
            disconnect(w, body).await
        }
        ("GET", p) if p.starts_with("/v1/history/") => {
            w.shared.joined().await;
            history(w, &p["/v1/history/".len()..], req.query.as_deref()).await
        }
        ("GET", "/v1/cluster") => Response::json(200, cluster(w)),
        ("GET", p) if p.starts_with("/v1/rooms/") => room_owner(w, &p["/v1/rooms/".len()..]),
        ("GET", "/metrics") => {
            Response::with_type(200, "text/plain; version=0.0.4", scrape(w).await)
        }
        ("GET", "/healthz") => Response::text(200, "ok\n"),
        ("GET", "/readyz") => {
            if w.shared.draining() {
                Response::text(503, "draining\n")
            } else if w.shared.joining() {
                Response::text(503, "joining the cluster\n")
            } else {
                Response::text(200, "ready\n")
            }
        }
        (
            _,
            "/v1/publish" | "/v1/send" | "/v1/disconnect" | "/v1/rooms" | "/v1/cluster"
            | "/metrics" | "/healthz" | "/readyz",
        ) => Response::error(405, "method not allowed for this path"),
        (_, p)
            if ["/v1/presence/", "/v1/history/", "/v1/rooms/"]
                .iter()
                .any(|prefix| p.starts_with(prefix)) =>
        {
            Response::error(405, "method not allowed for this path")
        }
        _ => Response::error(
            404,
            "no such route; see GET /healthz, /readyz, /metrics, /v1/cluster, /v1/rooms, /v1/rooms/{room}, /v1/presence/{room}, /v1/history/{room}, POST /v1/publish, /v1/send, /v1/disconnect",
        ),
    }
}

/// Whether the request carries the API key (constant-time comparison). Without a
/// configured key every request is allowed (the API is then loopback-only; see
/// `Config::validate`).
fn authorized(key: &str, header: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    if key.is_empty() {
        return true;
    }
    let Some(given) = header.and_then(crate::auth::bearer) else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(key.as_bytes()))
}

fn cluster(w: &Rc<Worker>) -> String {
    match &w.shared.mesh {
        Some(m) => m.describe() + "\n",
        None => format!(
            "{{\"node\":{},\"peers\":[]}}\n",
            serde_json::to_string(&w.shared.config.node_id).unwrap_or_default()
        ),
    }
}

/// `{"room","owner"}`: the node that owns a room as this node sees the cluster now.
fn room_owner(w: &Rc<Worker>, encoded: &str) -> Response {
    let room = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    if !protocol::valid_room(&room, w.shared.config.limits.max_room_name) {
        return Response::error(400, "not a valid room name");
    }
    let owner = match &w.shared.mesh {
        Some(m) => m.nodes[m.owner(&room)].id.clone(),
        None => w.shared.config.node_id.clone(),
    };
    Response::json(
        200,
        serde_json::json!({"room": &*room, "owner": owner}).to_string() + "\n",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody<'a> {
    user: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The sender an API call names (trusted: the API is the app) and its idempotency
/// key, checked.
fn api_origin(from: Option<String>, idempotency_key: Option<String>) -> Result<Origin, Response> {
    if from.as_deref().is_some_and(|f| !protocol::valid_user(f)) {
        return Err(Response::error(
            400,
            "from: user ids are 1 to 100 bytes of A-Z a-z 0-9 _ - . : / @ # = +",
        ));
    }
    if idempotency_key
        .as_deref()
        .is_some_and(|k| !protocol::valid_key(k))
    {
        return Err(Response::error(400, protocol::IDEMPOTENCY_RULE));
    }
    Ok(Origin {
        from,
        idempotency_key,
        client: false,
    })
}

async fn send(w: &Rc<Worker>, body: &[u8]) -> Response {
    let body: SendBody<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Response::error(
                400,
                &format!("body must be {{\"user\": string, \"data\": any JSON}}: {e}"),
            );
        }
    };
    if !protocol::valid_user(&body.user) {
        return Response::error(400, protocol::USER_RULE);
    }
    if let Err(reason) = protocol::valid_data(body.data) {
        return Response::error(400, &reason);
    }
    let origin = match api_origin(body.from, body.idempotency_key) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let room = protocol::personal_room(&body.user);
    stamp(w, &room, body.data, None, origin).await
}

/// Rooms listed by one `GET /v1/rooms` at most (and by default 100).
const ROOMS_LIMIT: u32 = 1000;

/// How long a question for every node waits for their answers: half the API's.
fn gather_ms(w: &Worker) -> u64 {
    (w.shared.config.api.reply_timeout_ms / 2).max(1)
}

/// Node ids for the indexes a gathered answer names.
fn node_names(w: &Worker, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&n| match &w.shared.mesh {
            Some(m) => m
                .nodes
                .get(n)
                .map_or_else(|| n.to_string(), |x| x.id.clone()),
            None => w.shared.config.node_id.clone(),
        })
        .collect()
}

/// Ask every worker of every node, and wait for the answer.
async fn gather(w: &Rc<Worker>, query: Query) -> Option<Reply> {
    let (req, rx) = w.request();
    {
        let mut st = w.state.borrow_mut();
        let now = st.now();
        st.hub.handle_query(query, req, gather_ms(w), now);
        st.run_hub();
    }
    w.flush_dirty();
    match answer(w, req, rx).await {
        Some(Answer::Hub(reply)) => Some(reply),
        _ => None,
    }
}

/// `GET /v1/rooms?after=&limit=`: rooms with subscribers across the cluster, in
/// name order, with their subscriber counts; `next` is the `after` of the next page.
async fn rooms(w: &Rc<Worker>, query: Option<&str>) -> Response {
    let (mut after, mut limit) = (String::new(), 100u32);
    let mut seen = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = |what: &str| Response::error(400, &format!("{k}={v}: {what}"));
        if seen.contains(&k) {
            return bad("given twice; give each parameter once");
        }
        seen.push(k.clone());
        match &*k {
            "after" => after = v.into_owned(),
            "limit" => match v.parse() {
                Ok(n) if (1..=ROOMS_LIMIT).contains(&n) => limit = n,
                _ => return bad(&format!("give 1 to {ROOMS_LIMIT}")),
            },
            _ => return bad("unknown parameter; this route takes after and limit"),
        }
    }
    match gather(w, Query::Rooms { after, limit }).await {
        Some(Reply::Rooms {
            rooms,
            next,
            missing,
        }) => {
            let rooms: Vec<serde_json::Value> = rooms
                .into_iter()
                .map(|(room, n)| serde_json::json!({"room": room, "subscribers": n}))
                .collect();
            let body = serde_json::json!({"rooms": rooms, "next": next, "missing": node_names(w, &missing)});
            Response::json(200, body.to_string() + "\n")
        }
        _ => Response::error(503, "the workers did not answer; retry"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    conn: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reconnect: bool,
}

/// `POST /v1/disconnect`: close every connection of a user, or one connection (as
/// `welcome` named it: `conn` and `node`), on every node; each gets a `disconnect`
/// message, then the close code (4010 by default).
async fn disconnect(w: &Rc<Worker>, body: &[u8]) -> Response {
    const SHAPE: &str = "body must be {\"user\": string} or {\"conn\": \"w.s.g\", \"node\"?: id}, with \"code\"? (4000-4999), \"reason\"?, \"reconnect\"? (false)";
    let b: DisconnectBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, &format!("{SHAPE}: {e}")),
    };
    let code = b.code.unwrap_or(crate::ws::close::KICKED);
    if !(4000..=4999).contains(&code) {
        return Response::error(400, "code must be 4000 to 4999 (an application close code)");
    }
    let reason = b
        .reason
        .unwrap_or_else(|| "disconnected by the app".to_owned());
    if reason.len() > 120 {
        return Response::error(
            400,
            "reason must be at most 120 bytes (it travels in the close frame)",
        );
    }
    let target = match (b.user, b.conn) {
        (Some(user), None) if protocol::valid_user(&user) => Target::User(user),
        (Some(_), None) => return Response::error(400, protocol::USER_RULE),
        (None, Some(conn)) => {
            let node = match (&b.node, &w.shared.mesh) {
                (None, None) => 0,
                (None, Some(m)) => m.me,
                (Some(id), None) if *id == w.shared.config.node_id => 0,
                (Some(id), Some(m)) => match m.nodes.iter().position(|n| n.id == *id) {
                    Some(i) => i,
                    None => return Response::error(400, "node: not a node of this cluster"),
                },
                (Some(_), None) => return Response::error(400, "node: not this node's id"),
            };
            let parts: Vec<Option<u32>> = conn.split('.').map(|p| p.parse().ok()).collect();
            let [Some(worker), Some(slot), Some(generation)] = parts[..] else {
                return Response::error(
                    400,
                    "conn must be as welcome names it: worker.slot.generation",
                );
            };
            Target::Conn {
                node: node as u16,
                worker: worker as u16,
                key: crate::hub::ConnKey { slot, generation }.pack(),
            }
        }
        _ => return Response::error(400, SHAPE),
    };
    let query = Query::Disconnect {
        target,
        code,
        reason,
        reconnect: b.reconnect,
    };
    match gather(w, query).await {
        Some(Reply::Disconnected { count, missing }) => {
            let body =
                serde_json::json!({"disconnected": count, "missing": node_names(w, &missing)});
            Response::json(200, body.to_string() + "\n")
        }
        _ => Response::error(503, "the workers did not answer; retry"),
    }
}

/// Messages listed by one `GET /v1/history` at most (and by default 100).
const HISTORY_LIMIT: usize = 1000;

async fn history(w: &Rc<Worker>, encoded: &str, query: Option<&str>) -> Response {
    let room = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    if !protocol::valid_room(&room, w.shared.config.limits.max_room_name) {
        return Response::error(400, "not a valid room name");
    }
    let (mut since, mut limit) = (0u64, 100usize);
    let mut seen = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = |what: &str| Response::error(400, &format!("{k}={v}: {what}"));
        if seen.contains(&k) {
            return bad("given twice; give each parameter once");
        }
        seen.push(k.clone());
        match &*k {
            "since" => match v.parse() {
                Ok(n) => since = n,
                Err(_) => return bad("give the last seq you have (0 for all)"),
            },
            "limit" => match v.parse() {
                Ok(n) if (1..=HISTORY_LIMIT).contains(&n) => limit = n,
                _ => return bad(&format!("give 1 to {HISTORY_LIMIT}")),
            },
            _ => return bad("unknown parameter; this route takes since and limit"),
        }
    }
    let (req, rx) = w.request();
    {
        let mut st = w.state.borrow_mut();
        let now = st.now();
        st.hub.handle_history(&room, since, limit, req, now);
        st.run_hub();
    }
    w.flush_dirty();
    match answer(w, req, rx).await {
        Some(Answer::Hub(Reply::History(json))) => Response::json(200, json + "\n"),
        _ => Response::error(503, "the room's owner did not answer; retry"),
    }
}

async fn presence(w: &Rc<Worker>, encoded: &str) -> Response {
    let room = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    let max = w.shared.config.limits.max_room_name;
    if !protocol::valid_room(&room, max) {
        return Response::error(400, "not a valid room name");
    }
    let (req, rx) = w.request();
    {
        let mut st = w.state.borrow_mut();
        let now = st.now();
        st.hub.handle_presence(&room, req, now);
        st.run_hub();
    }
    w.flush_dirty();
    match answer(w, req, rx).await {
        Some(Answer::Hub(Reply::Presence(json))) => Response::json(200, json + "\n"),
        _ => Response::error(503, "the room's owner did not answer; retry"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    room: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

async fn publish(w: &Rc<Worker>, body: &[u8]) -> Response {
    let body: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Response::error(
                400,
                &format!("body must be {{\"room\": string, \"data\": any JSON}}: {e}"),
            );
        }
    };
    let max = w.shared.config.limits.max_room_name;
    if !protocol::valid_room(&body.room, max) {
        return Response::error(
            400,
            &format!("room names are 1 to {max} bytes of A-Z a-z 0-9 _ - . : / @ # = +"),
        );
    }
    if body.key.as_deref().is_some_and(|k| !protocol::valid_key(k)) {
        return Response::error(400, protocol::KEY_RULE);
    }
    if let Err(reason) = protocol::valid_data(body.data) {
        return Response::error(400, &reason);
    }
    let origin = match api_origin(body.from, body.idempotency_key) {
        Ok(o) => o,
        Err(r) => return r,
    };
    stamp(w, &body.room, body.data, body.key.as_deref(), origin).await
}

/// Publish and wait for the owner's epoch and seq.
async fn stamp(
    w: &Rc<Worker>,
    room: &str,
    data: &RawValue,
    key: Option<&str>,
    origin: Origin,
) -> Response {
    crate::runtime::backpressure::wait_for_room(w, room).await;
    let (req, rx) = w.request();
    {
        let at = crate::hub::Arrival::at_ns(crate::metrics::histogram::now_ns());
        let mut st = w.state.borrow_mut();
        let now = st.now();
        st.hub
            .handle_publish(room, data, key, origin, Some(req), at, now);
        st.run_hub();
    }
    // When this worker owns the room the answer is already there.
    w.flush_dirty();
    match answer(w, req, rx).await {
        Some(Answer::Hub(Reply::Published(s))) => published(s),
        _ => Response::error(503, "the room's owner did not answer; retry"),
    }
}

/// Wait for another worker's (or node's) answer to request `req`, at most
/// `api.reply_timeout_ms`; on timeout the request is forgotten (a late answer is
/// dropped) and `None` returned.
async fn answer(
    w: &Rc<Worker>,
    req: u64,
    rx: futures_channel::oneshot::Receiver<Answer>,
) -> Option<Answer> {
    let limit = ms(w.shared.config.api.reply_timeout_ms);
    match monoio::time::timeout(limit, rx).await {
        Ok(Ok(reply)) => Some(reply),
        Ok(Err(_)) => None,
        Err(_) => {
            w.state.borrow_mut().forget_request(req);
            None
        }
    }
}

fn published(s: Stamp) -> Response {
    let (epoch, seq) = (s.epoch, s.seq);
    let duplicate = if s.duplicate {
        ",\"duplicate\":true"
    } else {
        ""
    };
    Response::json(
        200,
        format!("{{\"epoch\":\"{epoch}\",\"seq\":{seq}{duplicate}}}\n"),
    )
}

/// Gather every worker's counters and render them.
async fn scrape(w: &Rc<Worker>) -> String {
    let mut all = vec![w.state.borrow().snapshot()];
    let mut waiting = Vec::new();
    for (i, mailbox) in w.shared.mailboxes.iter().enumerate() {
        if i == w.id {
            continue;
        }
        let (req, rx) = w.request();
        mailbox.send(Letter::StatsRequest { from: w.id, req });
        waiting.push((req, rx));
    }
    for (req, rx) in waiting {
        if let Some(Answer::Stats(s)) = answer(w, req, rx).await {
            all.push(*s);
        }
    }
    all.sort_by_key(|s| s.worker);
    let process = ProcessStats {
        max_connections: w.shared.max_connections as u64,
        ..ProcessStats::read()
    };
    let mut text = metrics::render(&all, process);
    if let Some(mesh) = &w.shared.mesh {
        mesh.render(&mut text);
    }
    if let Some(hooks) = &w.shared.hooks {
        hooks.render(&mut text);
    }
    if let Some(a) = &w.shared.authorizer {
        a.render(&mut text);
    }
    if let Some(c) = &w.shared.connector {
        c.render(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::authorized;

    #[test]
    fn the_key_is_checked_with_any_case_of_bearer() {
        assert!(authorized("", None));
        assert!(authorized("k3y", Some("Bearer k3y")));
        assert!(authorized("k3y", Some("bearer k3y")));
        assert!(!authorized("k3y", Some("Bearer k3z")));
        assert!(!authorized("k3y", Some("Basic k3y")));
        assert!(!authorized("k3y", None));
    }
}
