//! Connection lifecycle on a worker: admission limits at the upgrade, heartbeats on
//! the timer wheel, and graceful drain.
//!
//! Drain timeline (SIGTERM or SIGINT, window W):
//!
//! ```text
//!  t=0   stop accepting; /readyz -> 503; upgrades in flight get 503
//!        every client: {"type":"reconnect","after_ms":T_i}, T_i spread over [0, W)
//!  t=T_i client i is closed with 1012 (paced: every 100 ms, the clients due by then)
//!  t=W   whatever is left is shut down; the worker stops; the process exits 0
//!        (a worker whose connections have all gone stops before W)
//! ```

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::socket::{Shutdown, shutdown};
use tracing::info;

use super::wheel::Tick;
use super::worker::{State, Worker, abort};
use crate::auth::{Grant, Refused as AuthRefused};
use crate::conn::outq::Out;
use crate::conn::{ConnKey, Phase};
use crate::metrics::{Disconnect, Refused};
use crate::protocol;
use crate::ws::close;
use crate::ws::frame::encode;
use crate::ws::handshake::{Accepted, Rejected, reject};
use tungstenite::protocol::frame::coding::{Control, OpCode};

/// Pace of the drain: one batch of closes per step.
const DRAIN_STEP: Duration = Duration::from_millis(100);

impl State {
    /// Admit an upgrade: refuse when draining, when the node is at its connection
    /// cap, or when the client's address is at its cap. On success the connection
    /// is counted and its heartbeat scheduled.
    pub fn admit(&mut self, key: ConnKey) -> Result<(), Rejected> {
        let shared = self.shared.clone();
        let Some(peer) = self.conn_mut(key).map(|c| c.peer) else {
            return Err(reject(400, "connection gone"));
        };
        if shared.draining() {
            self.stats.refused[Refused::Draining as usize] += 1;
            return Err(reject(
                503,
                "this node is restarting; reconnect to another node or retry shortly",
            ));
        }
        let before = shared.connections.fetch_add(1, Ordering::Relaxed);
        if before >= shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            self.stats.refused[Refused::NodeFull as usize] += 1;
            return Err(reject(
                503,
                "this node is at its connection limit; retry later or elsewhere",
            ));
        }
        let per_ip = shared.config.limits.max_connections_per_ip;
        if per_ip > 0 {
            let mut map = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(peer).or_insert(0);
            if *n as usize >= per_ip {
                drop(map);
                shared.connections.fetch_sub(1, Ordering::Relaxed);
                self.stats.refused[Refused::PerIp as usize] += 1;
                return Err(reject(429, "too many connections from this address"));
            }
            *n += 1;
        }
        let per_user = shared.config.auth.max_connections_per_user;
        let user = self.conn_mut(key).and_then(|c| c.user());
        if let (true, Some(user)) = (per_user > 0, user) {
            let mut map = shared.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(user).or_insert(0);
            if *n as usize >= per_user {
                drop(map);
                self.release_counts(peer, None);
                self.stats.refused[Refused::PerUser as usize] += 1;
                return Err(reject(
                    429,
                    "this user has too many open connections; close one first",
                ));
            }
            *n += 1;
        }
        let now = self.wheel.now();
        let ping = self.ticks(self.shared.config.heartbeat.ping_interval_ms);
        if let Some(conn) = self.conn_mut(key) {
            conn.counted = true;
            conn.last_seen = now;
        }
        self.wheel.schedule(key, now + ping);
        self.schedule_expiry(key);
        Ok(())
    }

    /// Undo [`State::admit`]'s counting when a counted connection goes.
    /// Check who the client is before admitting it: its `Origin` against
    /// `auth.origins`, and its token (required unless anonymous clients are allowed).
    pub fn identify(&mut self, accepted: &Accepted) -> Result<Option<Box<Grant>>, Rejected> {
        let auth = &self.shared.config.auth;
        if let Some(origin) = &accepted.origin
            && !auth.origins.is_empty()
            && !auth.origins.iter().any(|o| o == origin)
        {
            self.stats.refused[Refused::Origin as usize] += 1;
            return Err(reject(
                403,
                &format!("origin {origin} is not allowed here (auth.origins)"),
            ));
        }
        let verdict = match (&accepted.token, &self.shared.verifier) {
            (Some(t), Some(v)) => v.verify(t).map(|g| Some(Box::new(g))),
            (Some(_), None) => Err(AuthRefused::NoKey),
            (None, _) if self.shared.config.allow_anonymous => Ok(None),
            (None, _) => Err(AuthRefused::Missing),
        };
        verdict.map_err(|e| {
            self.stats.refused[Refused::Unauthorized as usize] += 1;
            reject(401, &e.to_string())
        })
    }

    /// Put a token's next deadline on the expiry heap: `refresh_needed` at
    /// `exp - refresh_margin_s`, the 4001 close at `exp + refresh_grace_s`.
    pub(super) fn schedule_expiry(&mut self, key: ConnKey) {
        let auth = &self.shared.config.auth;
        let (margin, grace) = (auth.refresh_margin_s, auth.refresh_grace_s);
        let Some(g) = self.conn_mut(key).and_then(|c| c.grant.as_deref()) else {
            return;
        };
        let at = if g.refresh_asked {
            g.exp.saturating_add(grace)
        } else {
            g.exp.saturating_sub(margin)
        };
        self.expiries
            .push(std::cmp::Reverse((at, key.slot, key.generation)));
    }

    /// Ask for fresh tokens and close connections whose token ran out (once a tick).
    pub(super) fn check_expiries(&mut self, now_s: u64) {
        let grace = self.shared.config.auth.refresh_grace_s;
        let margin = self.shared.config.auth.refresh_margin_s;
        while let Some(&std::cmp::Reverse((at, slot, generation))) = self.expiries.peek() {
            if at > now_s {
                break;
            }
            self.expiries.pop();
            let key = ConnKey { slot, generation };
            let Some(conn) = self.conn_mut(key) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let Some(g) = conn.grant.as_deref_mut() else {
                continue;
            };
            if now_s >= g.exp.saturating_add(grace) {
                self.close(key, close::TOKEN_EXPIRED, "token expired");
                continue;
            }
            if !g.refresh_asked && now_s >= g.exp.saturating_sub(margin) {
                g.refresh_asked = true;
                let exp = g.exp;
                let frame = crate::hub::presence::text_frame(&format!(
                    "{{\"type\":\"refresh_needed\",\"exp\":{exp}}}"
                ));
                self.enqueue(key, Out::Own(frame));
            }
            // Not yet due (refreshed since) or waiting for the refresh: next deadline.
            self.schedule_expiry(key);
        }
    }

    /// `refresh`: swap the connection's token for a newer one of the same user.
    pub fn refresh(
        &mut self,
        key: ConnKey,
        token: &str,
        reference: Option<&serde_json::value::RawValue>,
    ) {
        let verdict = match &self.shared.verifier {
            Some(v) => v.verify(token).map_err(|e| e.to_string()),
            None => Err("this node has no token key configured".to_owned()),
        };
        let current = self.conn_mut(key).and_then(|c| c.user());
        let result = verdict.and_then(|g| match &current {
            Some(u) if *u == g.user => Ok(g),
            Some(_) => {
                Err("the new token is for another user; reconnect to change users".to_owned())
            }
            None => Err("this connection is anonymous; reconnect with a token".to_owned()),
        });
        match result {
            Ok(g) => {
                let exp = g.exp;
                if let Some(conn) = self.conn_mut(key) {
                    conn.grant = Some(Box::new(g));
                    conn.denied = false;
                }
                self.schedule_expiry(key);
                let frame = crate::hub::presence::text_frame(&format!(
                    "{{\"type\":\"refreshed\",\"exp\":{exp}}}"
                ));
                self.enqueue(key, Out::Own(frame));
            }
            Err(reason) => {
                let frame =
                    protocol::error_frame(protocol::ErrorCode::BadToken, &reason, None, reference);
                self.enqueue(key, Out::Own(frame));
            }
        }
    }

    /// Give back what [`State::admit`] counted for a connection from `peer`.
    pub(super) fn release(&mut self, peer: IpAddr, user: Option<Arc<str>>) {
        self.release_counts(peer, user);
    }

    fn release_counts(&mut self, peer: IpAddr, user: Option<Arc<str>>) {
        if let (true, Some(user)) = (self.shared.config.auth.max_connections_per_user > 0, user) {
            let mut map = self
                .shared
                .per_user
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&user);
                }
            }
        }
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if self.shared.config.limits.max_connections_per_ip > 0 {
            let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&peer);
                }
            }
        }
    }

    /// Advance the wheel to `now`: ping connections quiet for a ping interval, close
    /// those quiet for the idle timeout (no pong, no traffic), and abort closing
    /// connections whose peer has not finished the close within the close timeout
    /// (a slow consumer that never reads its 4008, say).
    pub(super) fn heartbeat(&mut self, now: Tick) {
        let idle = self.ticks(self.shared.config.heartbeat.idle_timeout_ms);
        let linger = self.ticks(self.shared.config.limits.close_timeout_ms);
        let ping = self.ticks(self.shared.config.heartbeat.ping_interval_ms);
        let mut wheel = std::mem::take(&mut self.wheel);
        let mut to_ping = Vec::new();
        let mut to_close = Vec::new();
        let mut to_abort = Vec::new();
        wheel.advance(now, |wheel, key, at| {
            let Some(conn) = self.conn_mut(key) else {
                return; // gone: its entry simply ends here
            };
            if conn.phase == Phase::Closing {
                if conn.aborted {
                    return; // already shut down; its read task is reclaiming it
                }
                if at.saturating_sub(conn.last_seen) >= linger {
                    to_abort.push(key);
                } else {
                    wheel.schedule(key, conn.last_seen + linger);
                }
                return;
            }
            let quiet = at.saturating_sub(conn.last_seen);
            if quiet >= idle {
                to_close.push(key);
                return;
            }
            if quiet >= ping {
                to_ping.push(key);
            }
            wheel.schedule(key, (conn.last_seen + idle).min(at + ping));
        });
        self.wheel = wheel;
        for key in to_ping {
            self.stats.pings += 1;
            self.enqueue(key, Out::Own(encode(OpCode::Control(Control::Ping), b"")));
        }
        for key in to_close {
            self.close_now(key, close::GOING_AWAY, "idle timeout: no traffic or pong");
        }
        for key in to_abort {
            if let Some(conn) = self.conn_mut(key) {
                abort(conn);
                self.stats.disconnected(Disconnect::CloseTimeout);
            }
        }
    }

    /// Close a connection whose peer may be gone: queue the close frame, try to
    /// write it now, and shut the socket down (which wakes its read task to reclaim
    /// it) instead of waiting for the peer's half of the handshake.
    pub fn close_now(&mut self, key: ConnKey, code: u16, reason: &str) {
        self.close(key, code, reason);
        let now = crate::metrics::histogram::now_ns();
        if let Some(conn) = self
            .conns
            .get_mut(key.slot as usize)
            .filter(|c| c.generation == key.generation)
        {
            let (n, _) = conn.flush(now, &mut self.stats.publish_to_write);
            abort(conn);
            self.stats.bytes_out += n as u64;
        }
    }
}

impl Worker {
    /// Begin draining this worker over `window` (see the module docs).
    pub(super) fn start_drain(self: &Rc<Self>, window: Duration) {
        if let Some(fd) = self.listener_fd.take() {
            // Wakes the accept loop, which sees `draining` and stops.
            let _ = shutdown(fd, Shutdown::Read);
        }
        let mut schedule: Vec<(Duration, ConnKey)> = {
            let mut st = self.state.borrow_mut();
            let mut keys: Vec<ConnKey> = st
                .conns
                .iter()
                .filter(|(_, c)| c.phase == Phase::Open)
                .map(|(slot, c)| ConnKey {
                    slot: slot as u32,
                    generation: c.generation,
                })
                .collect();
            fastrand::shuffle(&mut keys);
            let n = keys.len().max(1) as u32;
            let spaced: Vec<(Duration, ConnKey)> = keys
                .into_iter()
                .enumerate()
                .map(|(i, key)| (window * i as u32 / n, key))
                .collect();
            for &(at, key) in &spaced {
                let hint = protocol::reconnect_frame(at.as_millis() as u64);
                st.enqueue(key, Out::Own(hint));
            }
            info!(
                worker = self.id,
                connections = spaced.len(),
                window_ms = window.as_millis() as u64,
                "draining: reconnect hints sent, closing in paced batches"
            );
            spaced
        };
        self.flush_dirty();
        schedule.reverse(); // pop from the end: earliest first
        let w = self.clone();
        monoio::spawn(async move {
            let start = Instant::now();
            while let Some(&(at, _)) = schedule.last() {
                let due = start + at;
                let now = Instant::now();
                if due > now {
                    monoio::time::sleep((due - now).min(DRAIN_STEP)).await;
                    continue;
                }
                {
                    let mut st = w.state.borrow_mut();
                    while let Some(&(at, key)) = schedule.last() {
                        if start + at > Instant::now() {
                            break;
                        }
                        schedule.pop();
                        st.close(key, close::RESTART, "node restarting: reconnect and resume");
                    }
                }
                w.flush_dirty();
            }
            // Wait out the window, or less once every connection here has gone.
            while start.elapsed() < window && !w.state.borrow().conns.is_empty() {
                monoio::time::sleep(DRAIN_STEP.min(window.saturating_sub(start.elapsed()))).await;
            }
            // The window is over: shut down whatever is still open.
            {
                let mut st = w.state.borrow_mut();
                let left: Vec<ConnKey> = st
                    .conns
                    .iter()
                    .map(|(slot, c)| ConnKey {
                        slot: slot as u32,
                        generation: c.generation,
                    })
                    .collect();
                for key in left {
                    st.close_now(key, close::RESTART, "node restarting");
                }
            }
            // Let the read tasks see their EOF and release their sockets.
            monoio::time::sleep(Duration::from_millis(50)).await;
            w.shared.mailboxes[w.id].send(super::mailbox::Mail::Shutdown);
        });
    }
}
