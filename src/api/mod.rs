//! The HTTP API, for app services and operators: publish, metrics, health.
//!
//! Every worker accepts on the API address too (SO_REUSEPORT), so the API scales with
//! the workers and needs no thread of its own. A publish is handed to the room's owner
//! like any client publish; the response carries the epoch and seq it got.
//!
//! | route                | answer |
//! |----------------------|--------|
//! | `POST /v1/publish`   | `{"room","data"}` → `{"epoch","seq"}` |
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
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/publish") => publish(w, &req.body).await,
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
        (_, "/v1/publish" | "/metrics" | "/healthz" | "/readyz") => {
            Response::error(405, "method not allowed for this path")
        }
        _ => Response::error(
            404,
            "no such route; see GET /healthz, /readyz, /metrics, POST /v1/publish",
        ),
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
    let (req, rx) = w.request();
    let stamped =
        w.state
            .borrow_mut()
            .publish(&body.room, body.data, body.key.as_deref(), Some(req));
    let (epoch, seq) = match stamped {
        Some(done) => {
            w.state.borrow_mut().forget_request(req);
            done
        }
        None => match rx.await {
            Ok(Reply::Published(epoch, seq)) => (epoch, seq),
            _ => return Response::error(503, "the room's owner did not answer; retry"),
        },
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
    metrics::render(&all, ProcessStats::read())
}
