//! Who gets in: a new socket against the node's and its address's caps (pending
//! upgrades count), an upgrade against the user's cap, and the client's origin and
//! token; what a connection gives back when it goes.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::worker::State;
use crate::auth::{Grant, Refused as AuthRefused};
use crate::conn::ConnKey;
use crate::metrics::Refused;
use crate::ws::handshake::{Accepted, Rejected, reject};

impl State {
    /// Admit a new TCP connection, before anything is read from it: refuse when
    /// draining, when the node is at its connection cap, or when the client's address
    /// is at its cap (pending upgrades count like open connections, so silent sockets
    /// cannot fill the node). On success the socket is counted and the time it has to
    /// finish its upgrade is returned: `handshake_timeout_ms`, or a tenth of it (at
    /// least 500 ms) when the node is over three quarters full.
    pub fn admit_socket(&mut self, peer: IpAddr) -> Result<Duration, Rejected> {
        let shared = self.shared.clone();
        self.refuse_if_draining()?;
        let before = shared.connections.fetch_add(1, Ordering::Relaxed);
        if before >= shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            self.conns.stats.refused[Refused::NodeFull as usize] += 1;
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
                self.conns.stats.refused[Refused::PerIp as usize] += 1;
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

    /// 503 while the node drains (counted).
    fn refuse_if_draining(&mut self) -> Result<(), Rejected> {
        if !self.shared.draining() {
            return Ok(());
        }
        self.conns.stats.refused[Refused::Draining as usize] += 1;
        Err(reject(
            503,
            "this node is restarting; reconnect to another node or retry shortly",
        ))
    }

    /// Admit an upgrade: refuse when draining or when the user is at its cap on this
    /// node. On success the connection's deadlines go on the wheel.
    pub fn admit(&mut self, key: ConnKey) -> Result<(), Rejected> {
        let shared = self.shared.clone();
        self.refuse_if_draining()?;
        let per_user = shared.config.auth.max_connections_per_user;
        let user = self.conns.get_mut(key).and_then(|c| c.user());
        if let (true, Some(user)) = (per_user > 0, user) {
            let mut map = shared.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(user).or_insert(0);
            if *n as usize >= per_user {
                drop(map);
                self.conns.stats.refused[Refused::PerUser as usize] += 1;
                return Err(reject(
                    429,
                    "this user has too many open connections; close one first",
                ));
            }
            *n += 1;
            if let Some(conn) = self.conns.get_mut(key) {
                conn.user_counted = true;
            }
        }
        let now = self.conns.stamp();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.last_seen = now;
        }
        self.conns.schedule(key, now);
        Ok(())
    }

    /// Check who the client is before admitting it: its `Origin` against
    /// `auth.origins`, and its token (required unless anonymous clients are allowed).
    pub fn identify(&mut self, accepted: &Accepted) -> Result<Option<Box<Grant>>, Rejected> {
        self.check_origin(accepted)?;
        let verdict = match &accepted.token {
            Some(t) => self.verify_token(t).map(|g| Some(Box::new(g))),
            None if self.shared.config.allow_anonymous => Ok(None),
            None => Err(AuthRefused::Missing),
        };
        verdict.map_err(|e| {
            self.conns.stats.refused[Refused::Unauthorized as usize] += 1;
            reject(401, &e.to_string())
        })
    }

    /// Refuse (403) an upgrade from an origin not in `auth.origins` (when set).
    pub(super) fn check_origin(&mut self, accepted: &Accepted) -> Result<(), Rejected> {
        let auth = &self.shared.config.auth;
        if let Some(origin) = &accepted.origin
            && !auth.origins.is_empty()
            && !auth.origins.iter().any(|o| o == origin)
        {
            self.conns.stats.refused[Refused::Origin as usize] += 1;
            return Err(reject(
                403,
                &format!("origin {origin} is not allowed here (auth.origins)"),
            ));
        }
        Ok(())
    }

    /// Check a token against the node's key (and, with the demo on, the demo key,
    /// whose tokens only ever open `demo:*` rooms), and its lifetime against
    /// `auth.max_token_ttl_s`.
    pub(super) fn verify_token(&self, token: &str) -> Result<Grant, AuthRefused> {
        let now = crate::auth::unix_now();
        let max_ttl = self.shared.config.auth.max_token_ttl_s;
        let production = match &self.shared.verifier {
            Some(v) => v.verify(token, now, max_ttl),
            None => Err(AuthRefused::NoKey),
        };
        match (production, &self.shared.site.demo) {
            (Ok(g), _) => Ok(g),
            (Err(e), Some(demo)) => demo.verify(token, now, max_ttl).map_err(|_| e),
            (Err(e), None) => Err(e),
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
}
