//! Connection lifecycle on a worker: the deadlines on the timer wheel, the budget
//! for unfinished messages, and graceful drain.
//!
//! Drain timeline (SIGTERM or SIGINT, window W):
//!
//! ```text
//!  t=0   stop accepting; /readyz -> 503; upgrades in flight get 503
//!        every client: {"type":"reconnect","after_ms":T_i}, T_i spread over [0, W)
//!  t=T_i client i is closed with 1012 (paced: every 100 ms, the clients due by then)
//!  t=W   whatever is left is shut down; the workers stop together; the process
//!        exits 0 (before W once every worker's connections have gone)
//! ```

use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::socket::{Shutdown, shutdown};
use tracing::info;

use super::conns::abort;
use super::mailbox::Letter;
use super::worker::{State, Worker};
use crate::conn::outq::Out;
use crate::conn::timers::{self, Due, Facts, Ticks, TokenDue};
use crate::conn::wheel::Tick;
use crate::conn::{ConnKey, Phase};
use crate::protocol;
use crate::ws::close;
use crate::ws::frame::encode;
use tungstenite::protocol::frame::coding::{Control, OpCode};

/// Pace of the drain: one batch of closes per step.
const DRAIN_STEP: Duration = Duration::from_millis(100);

impl State {
    /// The limits of `conn::timers` in ticks.
    fn timer_ticks(&self) -> Ticks {
        let c = &self.shared.config;
        Ticks {
            ping: self.conns.ticks(c.heartbeat.ping_interval_ms),
            idle: self.conns.ticks(c.heartbeat.idle_timeout_ms),
            linger: self.conns.ticks(c.limits.close_timeout_ms),
            message: self.conns.ticks(c.limits.message_timeout_ms),
            tick_ms: c.heartbeat.tick_ms,
        }
    }

    /// Advance the wheel to tick `now` (`now_s` in Unix seconds) and act on every
    /// connection whose entry came due (see `conn::timers`): pings, idle closes,
    /// token refreshes and expiries, trickling messages, and aborting closes the peer
    /// never finished (a slow consumer that never reads its 4008, say).
    pub(super) fn heartbeat(&mut self, now: Tick, now_s: u64) {
        let ticks = self.timer_ticks();
        let auth = &self.shared.config.auth;
        let (margin, grace) = (auth.refresh_margin_s, auth.refresh_grace_s);
        let mut wheel = std::mem::take(&mut self.conns.wheel);
        let mut acts: Vec<(ConnKey, Due)> = Vec::new();
        wheel.advance(now, |wheel, key, at| {
            let Some(conn) = self.conns.slab.get_mut(key.slot as usize) else {
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
                    ask_at: g.exp.saturating_sub(margin),
                    close_at: g.exp.saturating_add(grace),
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
        self.conns.wheel = wheel;
        for (key, due) in acts {
            if due.ping {
                self.conns.stats.pings += 1;
                self.conns
                    .enqueue(key, Out::Own(encode(OpCode::Control(Control::Ping), b"")));
            }
            if due.ask_refresh
                && let Some(g) = self.conns.get_mut(key).and_then(|c| c.grant.as_deref_mut())
            {
                g.refresh_asked = true;
                let frame = crate::protocol::refresh_needed_frame(g.exp);
                self.conns.enqueue(key, Out::Own(frame));
            }
            if let Some((code, reason)) = due.close {
                self.close_now(key, code, reason);
            }
            if due.abort
                && let Some(conn) = self.conns.get_mut(key)
            {
                abort(conn);
                self.conns.stats.close_timeouts += 1;
            }
        }
    }

    /// After a connection's unfinished input changed from `before` bytes: keep the
    /// worker's total, date the unfinished message (its deadline goes on the wheel),
    /// and over the worker's share of `limits.partial_budget_bytes` close the
    /// connection that holds the most with 1013. `progressed`: whole frames were
    /// consumed, so a tail left outside a fragmented message is a new frame, dated
    /// from now (a client that keeps sending is not one whose frame trickles in).
    pub(crate) fn account_partial(&mut self, key: ConnKey, before: usize, progressed: bool) {
        let now = self.conns.stamp();
        let message = self
            .conns
            .ticks(self.shared.config.limits.message_timeout_ms);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Closing {
            conn.drop_input(); // no more input is acted on: what it held is garbage
        }
        let held = conn.input_held();
        let open = conn.phase == Phase::Open;
        let fresh = progressed && conn.decoder.buffered() == 0;
        let started = match (held, conn.partial_since) {
            (0, _) => {
                conn.partial_since = None;
                false
            }
            (_, None) if open => {
                conn.partial_since = Some(now);
                true
            }
            (_, Some(_)) if open && fresh => {
                conn.partial_since = Some(now);
                false // later than the deadline on the wheel: it moves when that fires
            }
            _ => false,
        };
        self.conns.partial_bytes = self.conns.partial_bytes + held - before;
        if started {
            self.conns.reschedule_if_sooner(key, now + message);
        }
        let share = self.shared.config.limits.partial_budget_bytes / self.shared.mailboxes.len();
        while self.conns.partial_bytes > share {
            // The largest holder, closing or not: one that is already closing (it
            // began to close outside a read, so nothing freed its input yet) just
            // lets go of it.
            let largest = self
                .conns
                .slab
                .iter()
                .map(|(slot, c)| {
                    let key = ConnKey {
                        slot: slot as u32,
                        generation: c.generation,
                    };
                    (key, c.input_held(), c.phase)
                })
                .max_by_key(|&(_, held, _)| held);
            let Some((victim, held, phase)) = largest.filter(|&(_, held, _)| held > 0) else {
                debug_assert!(
                    false,
                    "unfinished-input total over its share with nobody holding any"
                );
                break;
            };
            self.drop_partial(victim);
            if phase != Phase::Closing {
                tracing::debug!(conn = %self.conns.conn_id(victim), held, "over the unfinished-message budget: closing the largest holder with 1013");
                self.close_now(
                    victim,
                    close::TRY_AGAIN,
                    "server busy: too many unfinished messages; retry",
                );
            }
        }
    }

    /// Free a connection's unfinished input (it is closing; no more is read).
    fn drop_partial(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.conns.partial_bytes -= conn.drop_input();
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
                .slab
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
                st.conns.enqueue(key, Out::Own(hint));
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
                        st.conns.close(
                            key,
                            close::RESTART,
                            "node restarting: reconnect and resume",
                        );
                    }
                }
                w.flush_dirty();
            }
            // Wait out the window, or less once every connection here has gone.
            while start.elapsed() < window && !w.state.borrow().conns.slab.is_empty() {
                monoio::time::sleep(DRAIN_STEP.min(window.saturating_sub(start.elapsed()))).await;
            }
            // The window is over: shut down whatever is still open.
            {
                let mut st = w.state.borrow_mut();
                let left: Vec<ConnKey> = st
                    .conns
                    .slab
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
            // Stop with the others, not before: until then this worker still takes
            // its share of the API's connections (the listener is shared), and one
            // handed to a stopped worker would never be answered.
            let workers = w.shared.mailboxes.len();
            w.shared
                .drained
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            while w.shared.drained.load(std::sync::atomic::Ordering::Acquire) < workers {
                monoio::time::sleep(DRAIN_STEP).await;
            }
            w.shared.mailboxes[w.id].send(Letter::Shutdown);
        });
    }
}
