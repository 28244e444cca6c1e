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
use crate::conn::timers::{self, Due, Facts, Ticks, TokenDue};
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
    /// Admit a new TCP connection, before anything is read from it: refuse when
    /// draining, when the node is at its connection cap, or when the client's address
    /// is at its cap (pending upgrades count like open connections, so silent sockets
    /// cannot fill the node). On success the socket is counted and the time it has to
    /// finish its upgrade is returned: `handshake_timeout_ms`, or a tenth of it (at
    /// least 500 ms) when the node is over three quarters full.
    pub fn admit_socket(&mut self, peer: IpAddr) -> Result<Duration, Rejected> {
        let shared = self.shared.clone();
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
        let full = shared.config.limits.handshake_timeout_ms;
        let pressed = before * 4 >= shared.max_connections * 3;
        let ms = if pressed {
            (full / 10).max(500).min(full)
        } else {
            full
        };
        Ok(Duration::from_millis(ms))
    }

    /// Admit an upgrade: refuse when draining or when the user is at its cap on this
    /// node. On success the connection's deadlines go on the wheel.
    pub fn admit(&mut self, key: ConnKey) -> Result<(), Rejected> {
        let shared = self.shared.clone();
        if shared.draining() {
            self.stats.refused[Refused::Draining as usize] += 1;
            return Err(reject(
                503,
                "this node is restarting; reconnect to another node or retry shortly",
            ));
        }
        let per_user = shared.config.auth.max_connections_per_user;
        let user = self.conn_mut(key).and_then(|c| c.user());
        if let (true, Some(user)) = (per_user > 0, user) {
            let mut map = shared.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(user).or_insert(0);
            if *n as usize >= per_user {
                drop(map);
                self.stats.refused[Refused::PerUser as usize] += 1;
                return Err(reject(
                    429,
                    "this user has too many open connections; close one first",
                ));
            }
            *n += 1;
            if let Some(conn) = self.conn_mut(key) {
                conn.user_counted = true;
            }
        }
        let now = self.wheel.now();
        if let Some(conn) = self.conn_mut(key) {
            conn.last_seen = now;
        }
        self.schedule(key, now + 1);
        Ok(())
    }

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
        let verdict = match &accepted.token {
            Some(t) => self.verify_token(t).map(|g| Some(Box::new(g))),
            None if self.shared.config.allow_anonymous => Ok(None),
            None => Err(AuthRefused::Missing),
        };
        verdict.map_err(|e| {
            self.stats.refused[Refused::Unauthorized as usize] += 1;
            reject(401, &e.to_string())
        })
    }

    /// Check a token against the node's key (and, with the demo on, the demo key,
    /// whose tokens only ever open `demo:*` rooms), and its lifetime against
    /// `auth.max_token_ttl_s`.
    fn verify_token(&self, token: &str) -> Result<Grant, AuthRefused> {
        let now = crate::auth::unix_now();
        let max_ttl = self.shared.config.auth.max_token_ttl_s;
        let production = match &self.shared.verifier {
            Some(v) => v.verify(token, now, max_ttl),
            None => Err(AuthRefused::NoKey),
        };
        match (production, &self.shared.demo) {
            (Ok(g), _) => Ok(g),
            (Err(e), Some(demo)) => demo.verify(token, now, max_ttl).map_err(|_| e),
            (Err(e), None) => Err(e),
        }
    }

    /// `refresh`: swap the connection's token for a newer one of the same user.
    pub fn refresh(
        &mut self,
        key: ConnKey,
        token: &str,
        reference: Option<&serde_json::value::RawValue>,
    ) {
        let verdict = if self.shared.verifier.is_none() && self.shared.demo.is_none() {
            Err("this node has no token key configured".to_owned())
        } else {
            self.verify_token(token).map_err(|e| e.to_string())
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
                // The wheel entry is recomputed when it comes due; a token that ends
                // sooner than that needs an earlier look.
                let now = self.wheel.now();
                self.reschedule_if_sooner(key, now + 1);
                let frame = crate::protocol::refreshed_frame(exp);
                self.enqueue(key, Out::Own(frame));
            }
            Err(reason) => {
                let frame =
                    protocol::error_frame(protocol::ErrorCode::BadToken, &reason, None, reference);
                self.enqueue(key, Out::Own(frame));
            }
        }
    }

    /// Give back what [`State::admit_socket`] and [`State::admit`] counted for a
    /// connection from `peer` (`user` when its user was counted).
    pub(super) fn release(&mut self, peer: IpAddr, user: Option<Arc<str>>) {
        if let Some(user) = user {
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

    /// Put the connection's one wheel entry at tick `at` (an older entry becomes
    /// stale: see `conn::timers`).
    pub(super) fn schedule(&mut self, key: ConnKey, at: Tick) {
        let at = self.wheel.schedule(key, at);
        if let Some(conn) = self.conn_mut(key) {
            conn.due = at;
        }
    }

    /// Move the connection's wheel entry earlier, if `at` is.
    pub(super) fn reschedule_if_sooner(&mut self, key: ConnKey, at: Tick) {
        if self.conn_mut(key).is_some_and(|c| at < c.due) {
            self.schedule(key, at);
        }
    }

    /// The limits of `conn::timers` in ticks.
    fn timer_ticks(&self) -> Ticks {
        let c = &self.shared.config;
        Ticks {
            ping: self.ticks(c.heartbeat.ping_interval_ms),
            idle: self.ticks(c.heartbeat.idle_timeout_ms),
            linger: self.ticks(c.limits.close_timeout_ms),
            message: self.ticks(c.limits.message_timeout_ms),
            tick_ms: c.heartbeat.tick_ms,
        }
    }

    /// Advance the wheel to tick `now` (`now_s` in Unix seconds) and act on every
    /// connection whose entry came due (see `conn::timers`): pings, idle closes,
    /// token refreshes and expiries, trickling messages, and aborting closes the peer
    /// never finished (a slow consumer that never reads its 4008, say).
    pub(super) fn heartbeat(&mut self, now: Tick, now_s: u64) {
        let ticks = self.timer_ticks();
        let auth = self.shared.config.auth.clone();
        let mut wheel = std::mem::take(&mut self.wheel);
        let mut acts: Vec<(ConnKey, Due)> = Vec::new();
        wheel.advance(now, |wheel, key, at| {
            let Some(conn) = self.conns.get_mut(key.slot as usize) else {
                return; // gone: its entry simply ends here
            };
            if conn.generation != key.generation || conn.due != at || conn.aborted {
                return; // stale entry, or already shut down and being reclaimed
            }
            let facts = Facts {
                last_seen: conn.last_seen,
                closing: conn.phase == Phase::Closing,
                partial_since: conn.partial_since,
                token: conn.grant.as_deref().map(|g| TokenDue {
                    ask_at: g.exp.saturating_sub(auth.refresh_margin_s),
                    close_at: g.exp.saturating_add(auth.refresh_grace_s),
                    asked: g.refresh_asked,
                }),
            };
            let due = timers::on_due(at, now_s, facts, ticks);
            if let Some(next) = due.next {
                conn.due = wheel.schedule(key, next);
            }
            if due != Due::default() {
                acts.push((key, due));
            }
        });
        self.wheel = wheel;
        for (key, due) in acts {
            if due.ping {
                self.stats.pings += 1;
                self.enqueue(key, Out::Own(encode(OpCode::Control(Control::Ping), b"")));
            }
            if due.ask_refresh
                && let Some(g) = self.conn_mut(key).and_then(|c| c.grant.as_deref_mut())
            {
                g.refresh_asked = true;
                let frame = crate::protocol::refresh_needed_frame(g.exp);
                self.enqueue(key, Out::Own(frame));
            }
            if let Some((code, reason)) = due.close {
                self.close_now(key, code, reason);
            }
            if due.abort
                && let Some(conn) = self.conn_mut(key)
            {
                abort(conn);
                self.stats.disconnected(Disconnect::CloseTimeout);
            }
        }
    }

    /// After a connection's unfinished input changed from `before` bytes: keep the
    /// worker's total, date the unfinished message (its deadline goes on the wheel),
    /// and over the worker's share of `limits.partial_budget_bytes` close the
    /// connection that holds the most with 1013.
    pub(crate) fn account_partial(&mut self, key: ConnKey, before: usize) {
        let now = self.wheel.now();
        let message = self.ticks(self.shared.config.limits.message_timeout_ms);
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let held = conn.partial.capacity() + conn.decoder.buffered();
        let open = conn.phase == Phase::Open;
        let started = match (held, conn.partial_since) {
            (0, _) => {
                conn.partial_since = None;
                false
            }
            (_, None) if open => {
                conn.partial_since = Some(now);
                true
            }
            _ => false,
        };
        self.partial_bytes = self.partial_bytes + held - before;
        if started {
            self.reschedule_if_sooner(key, now + message);
        }
        let share = self.shared.config.limits.partial_budget_bytes / self.shared.mailboxes.len();
        while self.partial_bytes > share {
            let largest = self
                .conns
                .iter()
                .filter(|(_, c)| c.phase != Phase::Closing)
                .max_by_key(|(_, c)| c.partial.capacity() + c.decoder.buffered())
                .map(|(slot, c)| ConnKey {
                    slot: slot as u32,
                    generation: c.generation,
                });
            let Some(victim) = largest else { break };
            tracing::debug!(conn = %self.conn_id(victim), "over the unfinished-message budget: closing the largest holder with 1013");
            self.drop_partial(victim);
            self.close_now(
                victim,
                close::TRY_AGAIN,
                "server busy: too many unfinished messages; retry",
            );
        }
    }

    /// Free a connection's unfinished input (it is closing; no more is read).
    fn drop_partial(&mut self, key: ConnKey) {
        if let Some(conn) = self.conn_mut(key) {
            let held = conn.partial.capacity() + conn.decoder.buffered();
            conn.partial = Vec::new();
            conn.decoder = crate::ws::frame::Decoder::default();
            conn.partial_since = None;
            self.partial_bytes -= held;
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
