//! The HTTP API, for app services and operators: publish, direct messages,
//! presence, metrics, health. With `auth.api_key` set, every route but the health
//! checks needs `Authorization: Bearer <key>`.
//!
//! Every worker accepts on the API address too (SO_REUSEPORT), so the API scales with
//! the workers and needs no thread of its own. A publish is handed to the room's owner
//! like any client publish; the response carries the epoch and seq it got.
//!
//! | route                | answer |
//! |----------------------|--------|
//! | `POST /v1/publish`   | `{"room","data","key"?}` → `{"epoch","seq"}` |
//! | `POST /v1/send`      | `{"user","data"}` → `{"epoch","seq"}` of the room `user:<id>` |
//! | `GET /v1/presence/R` | the cluster-wide roster of room R |
//! | `GET /v1/cluster`    | this node and its peers' link state |
//! | `GET /v1/rooms/R`    | `{"room","owner"}`: the node that owns room R now |
//! | `GET /metrics`       | Prometheus text, summed over workers |
//! | `GET /healthz`       | 200 while the process runs |
//! | `GET /readyz`        | 200, or 503 while draining |

pub mod http;

use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::warn;

use crate::metrics::{self, ProcessStats};
use crate::protocol::{self, Epoch};
use crate::runtime::mailbox::Mail;
use crate::runtime::worker::{Reply, Worker};
use http::{Parsed, Response};

/// Accept API connections on this worker forever.
pub async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(w.clone(), stream));
            }
            Err(e) => {
                warn!("API accept failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one keep-alive connection.
async fn serve(w: Rc<Worker>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (request, used) = loop {
            match http::parse(&buf) {
                Parsed::Complete(r, n) => break (r, n),
                Parsed::Error(status, reason) => {
                    let bytes = Response::error(status, reason).encode(false);
                    let _ = stream.write_all(bytes).await;
                    return;
                }
                Parsed::Partial => {
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(4096);
                    }
                    // Read into the spare capacity: a plain `read(Vec)` writes from
                    // index 0 and would overwrite the bytes already received.
                    let len = buf.len();
                    let cap = buf.capacity();
                    let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
                    buf = slice.into_inner();
                    match res {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            }
        };
        buf.drain(..used);
        let response = route(&w, &request).await;
        let (res, _) = stream.write_all(response.encode(request.keep_alive)).await;
        if res.is_err() || !request.keep_alive {
            return;
        }
    }
}

async fn route(w: &Rc<Worker>, req: &http::Request) -> Response {
    let path = req.path.as_str();
    let open = matches!(path, "/healthz" | "/readyz");
    if !open && !authorized(&w.shared.config.auth.api_key, req.authorization.as_deref()) {
        return Response::error(401, "this API needs Authorization: Bearer <auth.api_key>");
    }
    match (req.method.as_str(), path) {
        ("POST", "/v1/publish") => publish(w, &req.body).await,
        ("POST", "/v1/send") => send(w, &req.body).await,
        ("GET", p) if p.starts_with("/v1/presence/") => {
            presence(w, &p["/v1/presence/".len()..]).await
        }
        ("GET", "/v1/cluster") => Response::json(200, cluster(w)),
        ("GET", p) if p.starts_with("/v1/rooms/") => room_owner(w, &p["/v1/rooms/".len()..]),
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: scrape(w).await.into_bytes(),
        },
        ("GET", "/healthz") => Response::text(200, "ok\n"),
        ("GET", "/readyz") => {
            if w.shared.draining() {
                Response::text(503, "draining\n")
            } else {
                Response::text(200, "ready\n")
            }
        }
        (_, "/v1/publish" | "/v1/send" | "/v1/cluster" | "/metrics" | "/healthz" | "/readyz") => {
            Response::error(405, "method not allowed for this path")
        }
        (_, p) if p.starts_with("/v1/presence/") => {
            Response::error(405, "method not allowed for this path")
        }
        _ => Response::error(
            404,
            "no such route; see GET /healthz, /readyz, /metrics, /v1/cluster, /v1/presence/{room}, /v1/rooms/{room}, POST /v1/publish, /v1/send",
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
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
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
struct SendBody<'a> {
    user: String,
    #[serde(borrow)]
    data: &'a RawValue,
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
    let room = format!("user:{}", body.user);
    stamp(w, &room, body.data, None).await
}

async fn presence(w: &Rc<Worker>, encoded: &str) -> Response {
    let room = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    let max = w.shared.config.limits.max_room_name;
    if !protocol::valid_room(&room, max) {
        return Response::error(400, "not a valid room name");
    }
    let (req, rx) = w.request();
    let ticket = crate::mesh::wire::Ticket {
        worker: w.id as u16,
        id: req as u64,
    };
    w.state.borrow_mut().presence(&room, ticket);
    w.flush_dirty();
    match rx.await {
        Ok(Reply::Presence(json)) => Response::json(200, json + "\n"),
        _ => Response::error(503, "the room's owner did not answer; retry"),
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    room: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    key: Option<String>,
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
    stamp(w, &body.room, body.data, body.key.as_deref()).await
}

/// Publish and wait for the owner's epoch and seq.
async fn stamp(w: &Rc<Worker>, room: &str, data: &RawValue, key: Option<&str>) -> Response {
    let (req, rx) = w.request();
    let at = crate::metrics::histogram::now_ns();
    let stamped = w.state.borrow_mut().publish(room, data, key, Some(req), at);
    let (epoch, seq) = match stamped {
        Some(done) => {
            w.state.borrow_mut().forget_request(req);
            done
        }
        None => {
            w.flush_dirty();
            match rx.await {
                Ok(Reply::Published(epoch, seq)) => (epoch, seq),
                _ => return Response::error(503, "the room's owner did not answer; retry"),
            }
        }
    };
    w.flush_dirty();
    published(epoch, seq)
}

fn published(epoch: Epoch, seq: u64) -> Response {
    Response::json(200, format!("{{\"epoch\":\"{epoch}\",\"seq\":{seq}}}\n"))
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
        mailbox.send(Mail::StatsRequest { from: w.id, req });
        waiting.push(rx);
    }
    for rx in waiting {
        if let Ok(Reply::Stats(s)) = rx.await {
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
    text
}
