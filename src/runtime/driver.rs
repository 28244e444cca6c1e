//! The handshake task, and the reading every phase shares: a thin loop around the
//! sans-IO handshake, frame decoder and client protocol.
//!
//! ```text
//!   accept ─▶ Handshake ──(101)──▶ Open ──(close frame / violation / refusal)──▶ Closing ─▶ removed
//!              │ a task, under            the worker's reactor, no task: the wheel
//!              │ handshake_timeout        aborts a close after close_timeout
//! ```
//!
//! A new socket is read at once (accepts are deferred until the client's first
//! bytes), so a request that is all there is upgraded without a poll or a timer;
//! only an unfinished one makes its task wait for readiness (`readable()`, an
//! io_uring POLL_ADD). Once open, the connection leaves its task: the socket goes
//! to the worker's epoll instance (`runtime::reactor`), which calls [`on_readable`]
//! when input arrives. Every read is a non-blocking `recv` into the worker's scratch
//! buffer; only the tail of an unfinished frame is copied into the connection's own
//! `partial` buffer.
//!
//! Cancel-safety: the only `.await` points are `readable()` and the timeouts around
//! whole phases. Bytes are read synchronously (after readiness, or right after the
//! accept) and processed before the next `.await`, so dropping the task at any await
//! loses no data.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tracing::debug;

use super::worker::{State, Worker};
use crate::conn::rate::RateLimiter;
use crate::conn::tls::Received;
use crate::conn::{Conn, ConnKey, Phase};
use crate::metrics::Disconnect;
use crate::ws::frame::Limits as FrameLimits;
use crate::ws::handshake::reject;
use crate::ws::handshake::{self, Outcome};

/// What reading did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Keep reading.
    More,
    /// The peer closed its side (or the socket failed).
    Eof,
}

/// Drive one accepted connection through its handshake, then hand it to the
/// worker's reactor.
///
/// The handshake task carries timers (a monoio `Sleep` is 640 bytes) but exists
/// only during the upgrade; an open connection has no task at all.
///
/// No `TCP_NODELAY` here: accepted sockets inherit it from the listener
/// (`listener::bind_shared`), which saves a `setsockopt` per connection.
pub async fn run(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
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
            Some(cfg) => match crate::conn::tls::Tls::new(cfg) {
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
                let key = st.conns.insert(|generation| {
                    let mut conn = Conn::new(stream.as_raw_fd(), peer.ip(), generation, rate);
                    conn.tls = tls;
                    conn
                });
                Ok((key, limit))
            }
            Err(refusal) => {
                st.conns.stats.accepted += 1;
                st.conns.stats.handshake_failed(refusal.status);
                st.conns.stats.disconnected(Disconnect::Handshake);
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
    let started = std::time::Instant::now();
    // The request is usually here already (the listener defers accepts until the
    // first bytes, `limits.defer_accept_s`): read before waiting for readiness, and
    // when that settles the upgrade there is no poll to arm and no timer to set.
    let read = match on_readable(&w, key) {
        Read::More if in_phase(&w, key, Phase::Handshake) => {
            monoio::time::timeout(limit, read_while(&w, &stream, key, Phase::Handshake)).await
        }
        first => Ok(first),
    };
    match read {
        Ok(Read::Eof) => w.state.borrow_mut().remove(key),
        Ok(Read::More) => {
            let asking = w.state.borrow_mut().identify_wait(key);
            if let Some(answer) = asking {
                // The app is asked who this is: wait, within the handshake's time.
                let left = limit.saturating_sub(started.elapsed());
                let answered = monoio::time::timeout(left, answer).await.is_ok();
                let phase = {
                    let mut st = w.state.borrow_mut();
                    if !answered {
                        st.forget_identify(key);
                        st.conns.stats.handshake_failed(408);
                        let refusal = reject(408, "the upgrade was not answered in time");
                        st.conns.refuse(key, refusal.response);
                    }
                    // Frames the client sent right behind its request head.
                    process(&mut st, key, &mut []);
                    st.conns.get_mut(key).map(|c| c.phase)
                };
                w.flush_dirty();
                match phase {
                    Some(Phase::Open) => open(w, stream, key),
                    Some(_) => closing_phase(w, stream, key).await,
                    None => {}
                }
                return;
            }
            open(w, stream, key);
        }
        Err(_elapsed) => {
            {
                let mut st = w.state.borrow_mut();
                st.conns.stats.handshake_failed(408);
                let refusal = reject(408, "upgrade request not completed in time");
                st.conns.refuse(key, refusal.response);
            }
            w.flush_dirty();
            closing_phase(w, stream, key).await;
        }
    }
}

/// Full scratch-buffer reads of one connection before its task yields (1 MiB).
const READS_PER_TURN: usize = 16;

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

/// The handshake task is done with the connection. An open one goes to the
/// worker's reactor (its slab entry owns the descriptor from here, see
/// `runtime::reactor`; should the kernel refuse to watch it, out of memory or over
/// `fs.epoll.max_user_watches`, it gets a task of its own instead). One the
/// handshake ended (a refusal, a page) finishes its close in a task, under its own
/// timer: it never had a wheel entry.
fn open(w: Rc<Worker>, stream: TcpStream, key: ConnKey) {
    let phase = w.state.borrow_mut().conns.get_mut(key).map(|c| c.phase);
    match phase {
        Some(Phase::Open) => {}
        Some(Phase::Closing) => {
            monoio::spawn(closing_phase(w, stream, key));
            return;
        }
        _ => {
            w.state.borrow_mut().remove(key);
            return;
        }
    }
    match w.reactor.register(stream.as_raw_fd(), key) {
        Ok(()) => {
            // The runtime lets go of the descriptor without closing it.
            let _fd = std::os::fd::IntoRawFd::into_raw_fd(stream);
        }
        Err(e) => {
            debug!("cannot register a connection with the reactor: {e}; it gets a task");
            monoio::spawn(open_phase(w, stream, key));
        }
    }
}

/// The open connection as a task of its own (when the reactor cannot take it):
/// wait for input, act on it, until the close handshake starts or the peer goes
/// away.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: rustc stores an
/// `async fn`'s arguments twice in its state (unresumed and moved into locals,
/// rust-lang/rust#62958), which cost 96 bytes per idle connection here.
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn open_phase(w: Rc<Worker>, stream: TcpStream, key: ConnKey) -> impl Future<Output = ()> {
    async move {
        loop {
            match w.state.borrow_mut().conns.get_mut(key).map(|c| c.phase) {
                Some(Phase::Open) => {}
                Some(Phase::Closing) => break,
                None => return,
                Some(Phase::Handshake | Phase::Identifying) => {
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
        w.state.borrow_mut().conns.stats.close_timeouts += 1;
    }
    w.state.borrow_mut().remove(key);
}

/// Whether the connection is still there and in `phase`.
fn in_phase(w: &Worker, key: ConnKey, phase: Phase) -> bool {
    w.state.borrow_mut().conns.get_mut(key).map(|c| c.phase) == Some(phase)
}

/// Read and process input while the connection stays in `phase`.
async fn read_while(w: &Rc<Worker>, stream: &TcpStream, key: ConnKey, phase: Phase) -> Read {
    loop {
        let now = match w.state.borrow_mut().conns.get_mut(key) {
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
pub(super) fn on_readable(w: &Rc<Worker>, key: ConnKey) -> Read {
    let mut scratch = w.scratch.borrow_mut();
    let mut result = Read::More;
    let mut reads = 0;
    loop {
        // A client that keeps its socket full must not keep the worker: after a
        // budget of full reads, let the other tasks run (the socket is still
        // readable, so this task comes back at the driver's next turn).
        reads += 1;
        if reads > READS_PER_TURN {
            break;
        }
        let held = w.state.borrow_mut().hold_before_read(key);
        if held && w.stop_reading(key) {
            break; // it publishes and the node is behind: not even one more read
        }
        let (fd, closing, size) = {
            let mut st = w.state.borrow_mut();
            let size = st.read_size(key, scratch.len());
            match st.conns.get_mut(key) {
                Some(c) => (c.fd, c.phase == Phase::Closing, size),
                None => return Read::Eof,
            }
        };
        match recv(fd, &mut scratch[..size], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                result = Read::Eof;
                break;
            }
            Ok(n) => {
                let mut st = w.state.borrow_mut();
                st.conns.stats.bytes_in += n as u64;
                let now = st.conns.stamp();
                if !closing && let Some(conn) = st.conns.get_mut(key) {
                    conn.last_seen = now;
                }
                if !closing {
                    let tls = st.conns.get_mut(key).and_then(|conn| {
                        let before = conn.input_held();
                        let tls = conn.tls.as_deref_mut()?;
                        let mut plain = w.plain.borrow_mut();
                        let (len, got) = tls.receive(&mut scratch[..n], &mut plain);
                        Some((before, len, got, tls.has_output(), plain))
                    });
                    match tls {
                        None => {
                            st.publishes_counted_anew(key);
                            process(&mut st, key, &mut scratch[..n]);
                        }
                        Some((before, len, got, wants, mut plain)) => {
                            // A record cut short counts like a frame cut short.
                            st.account_partial(key, before, false);
                            if wants {
                                st.conns.mark_dirty(key);
                            }
                            if len > 0 {
                                st.publishes_counted_anew(key);
                                process(&mut st, key, &mut plain[..len]);
                            }
                            match got {
                                Received::More => {}
                                Received::Closed => result = Read::Eof,
                                Received::Failed(e) => {
                                    debug!("TLS error: {e}");
                                    st.conns.stats.handshake_failed(400);
                                    st.conns.fail_handshake(key);
                                    result = Read::Eof;
                                }
                            }
                            if result == Read::Eof {
                                break;
                            }
                        }
                    }
                }
                let (phase, paused) = st
                    .conns
                    .get_mut(key)
                    .map_or((None, false), |c| (Some(c.phase), c.paused));
                if paused {
                    // It published to a room whose fan-out is behind.
                    drop(st);
                    w.stop_reading(key);
                    break;
                }
                if n < scratch.len() {
                    break; // most likely drained; readiness tells us when there is more
                }
                if phase == Some(Phase::Identifying) {
                    break; // read no more until the app says who this is
                }
                // More is waiting: write out what this read queued before reading
                // on, so a publisher's burst fans out a buffer at a time instead
                // of piling its frames up in every subscriber's queue (and so a
                // subscriber's queue fills only when its socket does).
                drop(st);
                w.flush_between();
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
    let Some(conn) = st.conns.get_mut(key) else {
        return;
    };
    let before = conn.input_held();
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
        if let Some(conn) = st.conns.get_mut(key) {
            conn.partial = rest;
        }
    } // else nothing left over: `held` is dropped, the connection holds no buffer
    st.account_partial(key, before, consumed > 0);
}

/// Consume as much of `buf` as forms complete requests or frames; returns how much.
fn consume(st: &mut State, key: ConnKey, buf: &mut [u8]) -> usize {
    let mut limits = FrameLimits {
        max_frame: st.shared.config.limits.max_frame_size,
        max_message: st.shared.config.limits.max_message_size,
        deflate: false,
    };
    let mut off = 0;
    loop {
        let Some(phase) = st.conns.get_mut(key).map(|c| c.phase) else {
            return buf.len();
        };
        match phase {
            Phase::Closing => return buf.len(),
            // Bytes behind the request head wait for the app's answer (kept as the
            // unfinished tail); the socket is not read meanwhile, so this is at most
            // what one read brought.
            Phase::Identifying => return off,
            Phase::Handshake => match handshake::handle(&buf[off..], &st.shared.handshake) {
                Outcome::Incomplete => return off,
                Outcome::Accept(a) => {
                    let consumed = a.consumed;
                    if !st.upgrade(key, a) {
                        return buf.len();
                    }
                    off += consumed;
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
                    let response = crate::client::serve(&shared.site, asked, gate);
                    st.conns.answer_page(key, response);
                    return buf.len();
                }
                Outcome::Reject(r) => {
                    debug!(status = r.status, "upgrade refused");
                    st.conns.stats.handshake_failed(r.status);
                    st.conns.refuse(key, r.response);
                    return buf.len();
                }
            },
            Phase::Open => {
                let Some(conn) = st.conns.get_mut(key) else {
                    return buf.len();
                };
                limits.deflate = conn.deflate != 0;
                match conn.decoder.decode(&mut buf[off..], limits) {
                    Ok(None) => return off,
                    Ok(Some((n, event))) => {
                        off += n;
                        st.on_event(key, event);
                    }
                    Err(v) => {
                        debug!(peer = %conn.peer, code = v.code, reason = v.reason, "closing on bad input");
                        st.conns.close(key, v.code, v.reason);
                        return buf.len();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn open_phase_size() -> usize {
    fn size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(open_phase)
}

#[cfg(test)]
mod tests {
    fn fut_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle connection is made of, in bytes (the README quotes these; a
    /// change here is a change in idle memory and must be measured). The
    /// open-phase task is the fallback when the reactor cannot take a socket.
    #[test]
    fn idle_connection_sizes() {
        let conn = std::mem::size_of::<crate::conn::Conn>();
        let task = super::open_phase_size();
        eprintln!(
            "Conn = {conn}, open-phase task = {task}, handshake task = {}, rustls ServerConnection = {}",
            fut_size(super::run),
            std::mem::size_of::<rustls::server::UnbufferedServerConnection>()
        );
        assert!(conn <= 184, "the slab entry grew to {conn} bytes");
        assert!(task <= 208, "the open-phase task grew to {task} bytes");
    }
}
