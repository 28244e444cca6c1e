//! The connection task: a thin loop around the sans-IO handshake, frame decoder and
//! client protocol.
//!
//! ```text
//!   accept ─▶ Handshake ──(101)──▶ Open ──(close frame / violation / refusal)──▶ Closing ─▶ removed
//!              │ under handshake_timeout          no timer               under close_timeout
//! ```
//!
//! Each wake-up is `readable()` (an io_uring POLL_ADD, no buffer held while idle),
//! then non-blocking `recv`s into the worker's scratch buffer. Only the tail of an
//! unfinished frame is copied into the connection's own `partial` buffer.
//!
//! Cancel-safety: the only `.await` points are `readable()` and the timeouts around
//! whole phases. Bytes are read only after readiness, synchronously, and processed
//! before the next `.await`, so dropping the task at any await loses no data.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tracing::debug;

use super::outq::Out;
use super::rate::{RateLimiter, Verdict};
use super::tls::Received;
use super::{Conn, ConnKey, Phase};
use serde_json::value::RawValue;

use crate::mesh::wire::Ticket;
use crate::metrics::Disconnect;
use crate::metrics::histogram::now_ns;
use crate::protocol::{self, ClientMsg, ErrorCode};
use crate::runtime::worker::{State, Worker};
use crate::ws::close;
use crate::ws::frame::{DataKind, Event, Limits as FrameLimits, encode};
use crate::ws::handshake::reject;
use crate::ws::handshake::{self, Endpoint, Outcome};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// What reading did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Keep reading.
    More,
    /// The peer closed its side (or the socket failed).
    Eof,
}

/// Drive one accepted connection through its handshake, then hand it to the
/// open-phase task.
///
/// Each phase is its own task so that the one that lives as long as the connection
/// stays small: the handshake and closing tasks carry timers (a monoio `Sleep` is
/// 640 bytes) but exist only during those phases; the open-phase task holds the
/// worker, the stream, the key and one pending `readable()`, nothing else.
pub async fn run(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let sndbuf = w.shared.config.limits.send_buffer_bytes;
    if sndbuf > 0 {
        // SAFETY: the fd belongs to `stream`, which outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &sndbuf);
    }
    let admitted = {
        let mut st = w.state.borrow_mut();
        let rate = RateLimiter::new(&st.shared.config.limits.rates(), st.now_ms());
        let tls = match &st.shared.tls {
            Some(cfg) => match super::tls::Tls::new(cfg) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    debug!("cannot start a TLS session: {e}");
                    return;
                }
            },
            None => None,
        };
        // Counted from the first byte: a socket that never finishes its upgrade
        // holds a place under the caps like an open connection.
        match st.admit_socket(peer.ip()) {
            Ok(limit) => {
                let key = st.insert(|generation| {
                    let mut conn = Conn::new(stream.as_raw_fd(), peer.ip(), generation, rate);
                    conn.tls = tls;
                    conn
                });
                Ok((key, limit))
            }
            Err(refusal) => {
                st.stats.accepted += 1;
                st.stats.handshake_failed(refusal.status);
                st.stats.disconnected(Disconnect::Handshake);
                // TLS clients cannot read a plain HTTP answer: they are just closed.
                let linger = tls.is_none() && st.refusing < MAX_REFUSING;
                st.refusing += usize::from(linger);
                Err(linger.then_some(refusal.response))
            }
        }
    };
    let (key, limit) = match admitted {
        Ok(admitted) => admitted,
        Err(Some(response)) => {
            refuse(&stream, &response).await;
            w.state.borrow_mut().refusing -= 1;
            return;
        }
        Err(None) => return,
    };
    match monoio::time::timeout(limit, read_while(&w, &stream, key, Phase::Handshake)).await {
        Ok(Read::Eof) => w.state.borrow_mut().remove(key),
        Ok(Read::More) => {
            monoio::spawn(open_phase(w, stream, key));
        }
        Err(_elapsed) => {
            {
                let mut st = w.state.borrow_mut();
                st.stats.handshake_failed(408);
                let refusal = reject(408, "upgrade request not completed in time");
                st.enqueue_raw(key, refusal.response);
                st.finish(key, None, Disconnect::Handshake);
            }
            w.flush_dirty();
            closing_phase(w, stream, key).await;
        }
    }
}

/// Refused connections lingering at once per worker to deliver their answer; past
/// this (a flood) they are closed at once.
pub(crate) const MAX_REFUSING: usize = 256;

/// Answer a connection refused before its upgrade was read (node or address at its
/// cap) and close it gracefully: write the answer, shut our side, and read (and
/// discard) what the client sends for up to a second. Closing a socket with unread
/// input makes the kernel send a reset, which can destroy the answer in flight.
pub(crate) async fn refuse(stream: &TcpStream, response: &[u8]) {
    let fd = stream.as_raw_fd();
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let _ = nix::sys::socket::send(fd, response, flags);
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
    let drain = async {
        let mut sink = [0u8; 1024];
        loop {
            if stream.readable(false).await.is_err() {
                return;
            }
            match recv(fd, &mut sink, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return,
                Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The open connection: wait for input, act on it, until the close handshake starts
/// or the peer goes away. This is the task an idle connection is made of.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: rustc stores an
/// `async fn`'s arguments twice in its state (unresumed and moved into locals,
/// rust-lang/rust#62958), which cost 96 bytes per idle connection here.
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn open_phase(w: Rc<Worker>, stream: TcpStream, key: ConnKey) -> impl Future<Output = ()> {
    async move {
        loop {
            match w.state.borrow_mut().conn_mut(key).map(|c| c.phase) {
                Some(Phase::Open) => {}
                Some(Phase::Closing) => break,
                None => return,
                Some(Phase::Handshake) => {
                    // The handshake task hands over only open connections.
                    debug_assert!(false, "open phase entered during the handshake");
                    w.state.borrow_mut().remove(key);
                    return;
                }
            }
            if stream.readable(false).await.is_err() || on_readable(&w, key) == Read::Eof {
                w.state.borrow_mut().remove(key);
                return;
            }
        }
        monoio::spawn(closing_phase(w, stream, key));
    }
}

/// Closing: wait for the peer's close (or EOF), discarding input, but not forever;
/// then forget the connection (dropping the stream closes the socket).
async fn closing_phase(w: Rc<Worker>, stream: TcpStream, key: ConnKey) {
    let limit = Duration::from_millis(w.shared.config.limits.close_timeout_ms);
    if monoio::time::timeout(limit, read_while(&w, &stream, key, Phase::Closing))
        .await
        .is_err()
    {
        w.state
            .borrow_mut()
            .stats
            .disconnected(Disconnect::CloseTimeout);
    }
    w.state.borrow_mut().remove(key);
}

/// Read and process input while the connection stays in `phase`.
async fn read_while(w: &Rc<Worker>, stream: &TcpStream, key: ConnKey, phase: Phase) -> Read {
    loop {
        let now = match w.state.borrow_mut().conn_mut(key) {
            Some(conn) => conn.phase,
            None => return Read::Eof,
        };
        if now != phase {
            return Read::More;
        }
        if stream.readable(false).await.is_err() {
            return Read::Eof;
        }
        if on_readable(w, key) == Read::Eof {
            return Read::Eof;
        }
    }
}

/// Drain the socket into the scratch buffer and act on what arrived.
fn on_readable(w: &Rc<Worker>, key: ConnKey) -> Read {
    let mut scratch = w.scratch.borrow_mut();
    let mut result = Read::More;
    loop {
        let (fd, closing) = match w.state.borrow_mut().conn_mut(key) {
            Some(c) => (c.fd, c.phase == Phase::Closing),
            None => return Read::Eof,
        };
        match recv(fd, &mut scratch[..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                result = Read::Eof;
                break;
            }
            Ok(n) => {
                let mut st = w.state.borrow_mut();
                st.stats.bytes_in += n as u64;
                let now = st.current_tick();
                if let Some(conn) = st.conn_mut(key) {
                    conn.last_seen = now;
                }
                if !closing {
                    let tls = st.conn_mut(key).and_then(|c| c.tls.take());
                    match tls {
                        None => process(&mut st, key, &mut scratch[..n]),
                        Some(mut tls) => {
                            let mut plain = w.plain.borrow_mut();
                            let got = tls.receive(&scratch[..n], &mut plain, |bytes| {
                                process(&mut st, key, bytes)
                            });
                            let wants = tls.session.wants_write();
                            if let Some(conn) = st.conn_mut(key) {
                                conn.tls = Some(tls);
                            }
                            if wants {
                                st.mark_dirty(key);
                            }
                            match got {
                                Received::More => {}
                                Received::Closed => result = Read::Eof,
                                Received::Failed(e) => {
                                    debug!("TLS error: {e}");
                                    st.stats.handshake_failed(400);
                                    st.finish(key, None, Disconnect::Handshake);
                                    result = Read::Eof;
                                }
                            }
                            if result == Read::Eof {
                                break;
                            }
                        }
                    }
                }
                if n < scratch.len() {
                    break; // most likely drained; readiness tells us when there is more
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => break,
            Err(_) => {
                result = Read::Eof;
                break;
            }
        }
    }
    drop(scratch);
    w.flush_dirty();
    result
}

/// Act on newly received bytes: prepend what was left over, consume whole frames,
/// keep the unfinished tail.
fn process(st: &mut State, key: ConnKey, bytes: &mut [u8]) {
    let Some(conn) = st.conn_mut(key) else {
        return;
    };
    let before = conn.partial.capacity() + conn.decoder.buffered();
    let mut held = std::mem::take(&mut conn.partial);
    let using_held = !held.is_empty();
    let (consumed, total) = if using_held {
        held.extend_from_slice(bytes);
        (consume(st, key, &mut held), held.len())
    } else {
        (consume(st, key, bytes), bytes.len())
    };
    if consumed < total {
        let rest = if using_held {
            held.drain(..consumed);
            held
        } else {
            bytes[consumed..].to_vec()
        };
        if let Some(conn) = st.conn_mut(key) {
            conn.partial = rest;
        }
    } // else nothing left over: `held` is dropped, the connection holds no buffer
    st.account_partial(key, before);
}

/// Consume as much of `buf` as forms complete requests or frames; returns how much.
fn consume(st: &mut State, key: ConnKey, buf: &mut [u8]) -> usize {
    let limits = FrameLimits {
        max_frame: st.shared.config.limits.max_frame_size,
        max_message: st.shared.config.limits.max_message_size,
    };
    let mut off = 0;
    loop {
        let Some(phase) = st.conn_mut(key).map(|c| c.phase) else {
            return buf.len();
        };
        match phase {
            Phase::Closing => return buf.len(),
            Phase::Handshake => match handshake::handle(&buf[off..], &st.shared.handshake) {
                Outcome::Incomplete => return off,
                Outcome::Accept(a) => {
                    let identity = if a.endpoint == Endpoint::Client {
                        st.identify(&a)
                    } else {
                        Ok(None)
                    };
                    let admitted = identity.and_then(|grant| {
                        if let Some(conn) = st.conn_mut(key) {
                            conn.grant = grant;
                        }
                        st.admit(key)
                    });
                    if let Err(r) = admitted {
                        st.stats.handshake_failed(r.status);
                        st.enqueue_raw(key, r.response);
                        st.finish(key, None, Disconnect::Handshake);
                        return buf.len();
                    }
                    off += a.consumed;
                    if let Some(conn) = st.conn_mut(key) {
                        conn.endpoint = a.endpoint;
                        conn.phase = Phase::Open;
                    }
                    st.stats.upgrades += 1;
                    st.enqueue_raw(key, a.response);
                    if a.endpoint == Endpoint::Client {
                        let id = st.conn_id(key).to_string();
                        let user = st.conn_mut(key).and_then(|c| c.user());
                        let cfg = &st.shared.config;
                        let hello = protocol::welcome_frame(
                            &id,
                            &cfg.node_id,
                            cfg.heartbeat.ping_interval_ms,
                            user.as_deref(),
                        );
                        st.enqueue(key, Out::Own(hello));
                        if let Some(user) = user {
                            // Direct messages arrive through the personal room.
                            st.subscribe(key, &format!("user:{user}"), None, None);
                        }
                    }
                }
                Outcome::Get {
                    path,
                    query,
                    origin,
                    head,
                } => {
                    let asked = crate::client::Asked {
                        path: &path,
                        query: query.as_deref(),
                        origin: origin.as_deref(),
                        head,
                    };
                    let now_ms = st.now_ms();
                    let shared = st.shared.clone();
                    let gate = crate::client::DemoGate {
                        limiter: &mut st.demo_gate,
                        now_ms,
                    };
                    let response = crate::client::serve(&shared, asked, gate);
                    st.enqueue_raw(key, response);
                    st.finish(key, None, Disconnect::Handshake);
                    return buf.len();
                }
                Outcome::Reject(r) => {
                    debug!(status = r.status, "upgrade refused");
                    st.stats.handshake_failed(r.status);
                    st.enqueue_raw(key, r.response);
                    st.finish(key, None, Disconnect::Handshake);
                    return buf.len();
                }
            },
            Phase::Open => {
                let Some(conn) = st.conn_mut(key) else {
                    return buf.len();
                };
                match conn.decoder.decode(&mut buf[off..], limits) {
                    Ok(None) => return off,
                    Ok(Some((n, event))) => {
                        off += n;
                        on_event(st, key, event);
                    }
                    Err(v) => {
                        debug!(peer = %conn.peer, code = v.code, reason = v.reason, "closing on bad input");
                        st.close(key, v.code, v.reason);
                        return buf.len();
                    }
                }
            }
        }
    }
}

fn on_event(st: &mut State, key: ConnKey, event: Event<'_>) {
    match event {
        Event::Message(kind, payload) => {
            st.stats.messages_in += 1;
            let endpoint = match st.conn_mut(key) {
                Some(c) => c.endpoint,
                None => return,
            };
            match (endpoint, kind) {
                (Endpoint::Echo, _) => {
                    let op = match kind {
                        DataKind::Text => OpCode::Data(Data::Text),
                        DataKind::Binary => OpCode::Data(Data::Binary),
                    };
                    st.enqueue(key, Out::Own(encode(op, payload.as_slice())));
                }
                (Endpoint::Client, DataKind::Text) => on_request(st, key, payload.as_slice()),
                (Endpoint::Client, DataKind::Binary) => {
                    let frame = protocol::error_frame(
                        ErrorCode::Unsupported,
                        "ringway.v1 messages are JSON text frames; binary frames are not accepted",
                        None,
                        None,
                    );
                    st.enqueue(key, Out::Own(frame));
                }
            }
        }
        Event::Ping(payload) => {
            // Pings cost a pong: they count against the rate like messages (a refused
            // one goes unanswered).
            let endpoint = st.conn_mut(key).map(|c| c.endpoint);
            if endpoint == Some(Endpoint::Client) && !within_rate(st, key, payload.len()) {
                return;
            }
            st.enqueue(
                key,
                Out::Own(encode(OpCode::Control(Control::Pong), payload)),
            );
        }
        Event::Pong(_) | Event::Fragment => {}
        Event::Close(reason) => {
            // Answer with the peer's code (RFC 6455 §5.5.1), then shut down.
            let frame = match reason {
                Some((code, _)) => crate::ws::frame::encode_close(code, ""),
                None => encode(OpCode::Control(Control::Close), &[]),
            };
            st.finish(key, Some(frame), Disconnect::ClientClose);
        }
    }
}

/// Whether the connection may send another message (or ping) of `len` bytes now.
/// Over its rate it is refused: the first refusal of an overrun is answered with an
/// error, and an overrun that lasts `limits.rate_close_after_ms` closes it with 4029
/// (see `conn::rate`).
fn within_rate(st: &mut State, key: ConnKey, len: usize) -> bool {
    let rates = st.shared.config.limits.rates();
    if rates.messages_per_second == 0 && rates.bytes_per_second == 0 {
        return true;
    }
    let now = st.now_ms();
    let Some(conn) = st.conn_mut(key) else {
        return false;
    };
    match conn.rate.check(now, len, &rates) {
        Verdict::Allow => true,
        Verdict::Refuse { notify, bytes } => {
            st.stats.rate_refused += 1;
            if notify {
                let reason = if bytes {
                    format!(
                        "over {} bytes per second (limits.bytes_per_second); slow down or you will be disconnected",
                        rates.bytes_per_second
                    )
                } else {
                    format!(
                        "over {} messages per second (limits.messages_per_second); slow down or you will be disconnected",
                        rates.messages_per_second
                    )
                };
                st.enqueue(
                    key,
                    Out::Own(protocol::error_frame(
                        ErrorCode::RateLimited,
                        &reason,
                        None,
                        None,
                    )),
                );
            }
            false
        }
        Verdict::Close => {
            st.stats.rate_refused += 1;
            st.close(key, close::RATE_LIMITED, "rate limit exceeded");
            false
        }
    }
}

/// One ringway.v1 request.
fn on_request(st: &mut State, key: ConnKey, text: &[u8]) {
    if !within_rate(st, key, text.len()) {
        return;
    }
    let max_room = st.shared.config.limits.max_room_name;
    let request = match protocol::parse(text, max_room) {
        Ok(r) => r,
        Err(refusal) => {
            let frame =
                protocol::error_frame(refusal.code, &refusal.reason, None, refusal.reference);
            st.enqueue(key, Out::Own(frame));
            return;
        }
    };
    let reference = request.reference;
    let refuse = |st: &mut State, code, reason: &str, room: &str| {
        st.enqueue(
            key,
            Out::Own(protocol::error_frame(code, reason, Some(room), reference)),
        );
    };
    match request.msg {
        ClientMsg::Sub { room, since } => {
            if is_reserved(&room) && !is_own_room(st, key, &room) {
                return refuse(st, ErrorCode::Reserved, RESERVED, &room);
            }
            if !permitted(st, key, &room, Access::Subscribe, reference) {
                return;
            }
            st.subscribe(key, &room, since, reference);
        }
        ClientMsg::Unsub { room } => {
            if st.unsubscribe(key, &room) {
                st.enqueue(key, Out::Own(protocol::unsubscribed_frame(&room)));
            } else {
                refuse(
                    st,
                    ErrorCode::NotSubscribed,
                    "not subscribed to this room",
                    &room,
                );
            }
        }
        ClientMsg::Pub {
            room,
            data,
            key: msg_key,
        } => {
            if is_reserved(&room) {
                return refuse(st, ErrorCode::Reserved, RESERVED, &room);
            }
            if !permitted(st, key, &room, Access::Publish, reference) {
                return;
            }
            st.publish(&room, data, msg_key.as_deref(), None, now_ns());
        }
        ClientMsg::Send { user, data } => {
            let room = format!("user:{user}");
            if !protocol::valid_room(&room, st.shared.config.limits.max_room_name) {
                return refuse(st, ErrorCode::BadField, protocol::USER_RULE, &room);
            }
            if !permitted(st, key, &room, Access::Send, reference) {
                return;
            }
            st.publish(&room, data, None, None, now_ns());
        }
        ClientMsg::Presence { room } => {
            // A personal room's roster says whether its user is online: only for
            // that user (and the API).
            if is_reserved(&room) && !is_own_room(st, key, &room) {
                return refuse(
                    st,
                    ErrorCode::Forbidden,
                    "the presence of a personal room is for its own user only",
                    &room,
                );
            }
            if !permitted(st, key, &room, Access::Subscribe, reference) {
                return;
            }
            let Some(req) = st.request_for(key, reference) else {
                return refuse(
                    st,
                    ErrorCode::Unavailable,
                    "too many requests waiting for an answer on this node; retry",
                    &room,
                );
            };
            let ticket = Ticket {
                worker: st.id as u16,
                id: req as u64,
            };
            st.presence(&room, ticket);
        }
        ClientMsg::Ping => st.enqueue(key, Out::Own(protocol::pong_frame(reference))),
        ClientMsg::Refresh { token } => st.refresh(key, &token, reference),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Access {
    Subscribe,
    Publish,
    Send,
}

/// Whether the connection's token (or lack of one) allows `room`; refuses with an
/// error reply, and closes with 4003 at the second refusal.
fn permitted(
    st: &mut State,
    key: ConnKey,
    room: &str,
    access: Access,
    reference: Option<&RawValue>,
) -> bool {
    let requires = st.shared.config.auth.room_requires_auth(room);
    let anonymous_ok = st.shared.config.allow_anonymous;
    let Some(conn) = st.conn_mut(key) else {
        return false;
    };
    let reason = match (&conn.grant, access) {
        (None, Access::Send) if !anonymous_ok => Some("sending needs a token"),
        (None, _) if requires => Some("this room requires a token"),
        (None, _) => None,
        (Some(g), Access::Subscribe) if !g.may_subscribe(room) => {
            Some("your token does not allow subscribing to this room")
        }
        (Some(g), Access::Publish | Access::Send) if !g.may_publish(room) => {
            Some("your token does not allow publishing to this room")
        }
        (Some(_), _) => None,
    };
    let Some(reason) = reason else {
        return true;
    };
    if conn.denied {
        st.close(
            key,
            close::FORBIDDEN,
            "repeated requests outside the token's permissions",
        );
    } else {
        conn.denied = true;
        st.enqueue(
            key,
            Out::Own(protocol::error_frame(
                ErrorCode::Forbidden,
                reason,
                Some(room),
                reference,
            )),
        );
    }
    false
}

fn is_own_room(st: &mut State, key: ConnKey, room: &str) -> bool {
    let user = st.conn_mut(key).and_then(|c| c.user());
    user.is_some_and(|u| room.strip_prefix("user:") == Some(&*u))
}

const RESERVED: &str = "rooms named user:* are reserved for direct messages";

fn is_reserved(room: &str) -> bool {
    room.starts_with("user:")
}

#[cfg(test)]
pub(crate) fn open_phase_size() -> usize {
    fn size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(open_phase)
}
