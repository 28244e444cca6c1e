//! What a connection's wheel entry means when it comes due, sans-IO: the caller
//! passes the tick, the connection's facts and the limits in ticks; this decides
//! pings, closes and the next deadline.
//!
//! Every open connection has exactly one live entry on its worker's wheel (the
//! connection remembers its tick, so an older entry that comes due is recognised as
//! stale and ignored). That one entry serves every deadline the connection has: the
//! server ping, the idle timeout, its token's `refresh_needed` and expiry, a message
//! that trickles in too slowly, and the close handshake's linger.

use crate::conn::wheel::Tick;
use crate::ws::close;

/// Limits in wheel ticks (rounded up).
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    /// Silence after which the server pings.
    pub ping: Tick,
    /// Silence (no pong either) after which the connection is closed.
    pub idle: Tick,
    /// Time the peer has to finish a close handshake we started.
    pub linger: Tick,
    /// Time an unfinished frame or fragmented message may take to complete.
    pub message: Tick,
    /// Milliseconds per tick (to turn the token's Unix deadlines into ticks).
    pub tick_ms: u64,
}

/// A token's deadlines, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct TokenDue {
    /// `exp - refresh_margin_s`: ask for a refresh.
    pub ask_at: u64,
    /// `exp + refresh_grace_s`: close with 4001.
    pub close_at: u64,
    /// `refresh_needed` was already sent for this token.
    pub asked: bool,
}

/// What the caller knows of the connection when its entry comes due.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Tick of the last bytes received (or of the close, while closing).
    pub last_seen: Tick,
    /// The close handshake has started.
    pub closing: bool,
    /// Since when an unfinished frame or message has been waiting, if one is.
    pub partial_since: Option<Tick>,
    /// The token's deadlines, when the connection has a token.
    pub token: Option<TokenDue>,
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Send a ping.
    pub ping: bool,
    /// Send `refresh_needed`.
    pub ask_refresh: bool,
    /// Close with this code and reason.
    pub close: Option<(u16, &'static str)>,
    /// Give up on the close handshake: shut the socket down.
    pub abort: bool,
    /// The next deadline (none once the connection is being torn down).
    pub next: Option<Tick>,
}

/// Decide for an entry due at tick `at` (the wheel's clock), `now_s` Unix seconds.
pub fn on_due(at: Tick, now_s: u64, f: Facts, t: Ticks) -> Due {
    let mut due = Due::default();
    if f.closing {
        if at.saturating_sub(f.last_seen) >= t.linger {
            due.abort = true;
        } else {
            due.next = Some(f.last_seen + t.linger);
        }
        return due;
    }
    let quiet = at.saturating_sub(f.last_seen);
    if quiet >= t.idle {
        due.close = Some((close::GOING_AWAY, "idle timeout: no traffic or pong"));
        return due;
    }
    if let Some(since) = f.partial_since
        && at.saturating_sub(since) >= t.message
    {
        due.close = Some((
            close::POLICY,
            "message not completed in time (limits.message_timeout_ms)",
        ));
        return due;
    }
    let mut token_next = None;
    if let Some(tok) = f.token {
        if now_s >= tok.close_at {
            due.close = Some((close::TOKEN_EXPIRED, "token expired"));
            return due;
        }
        let asked = tok.asked || now_s >= tok.ask_at;
        due.ask_refresh = !tok.asked && asked;
        let next_s = if asked { tok.close_at } else { tok.ask_at };
        let ticks = (next_s - now_s).saturating_mul(1000).div_ceil(t.tick_ms);
        token_next = Some(at.saturating_add(Tick::try_from(ticks).unwrap_or(Tick::MAX).max(1)));
    }
    due.ping = quiet >= t.ping;
    let mut next = (f.last_seen + t.idle).min(at + t.ping);
    if let Some(since) = f.partial_since {
        next = next.min(since + t.message);
    }
    if let Some(tok) = token_next {
        next = next.min(tok);
    }
    due.next = Some(next.max(at + 1));
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ticks = Ticks {
        ping: 25,
        idle: 60,
        linger: 5,
        message: 30,
        tick_ms: 1000,
    };

    fn open(last_seen: Tick) -> Facts {
        Facts {
            last_seen,
            closing: false,
            partial_since: None,
            token: None,
        }
    }

    #[test]
    fn pings_after_silence_and_closes_after_the_idle_timeout() {
        let d = on_due(25, 0, open(0), T);
        assert!(d.ping && d.close.is_none());
        assert_eq!(d.next, Some(50));
        let d = on_due(10, 0, open(0), T);
        assert!(!d.ping);
        assert_eq!(d.next, Some(35));
        let d = on_due(60, 0, open(0), T);
        assert_eq!(d.close.map(|c| c.0), Some(close::GOING_AWAY));
        assert_eq!(d.next, None);
    }

    #[test]
    fn a_token_asks_for_a_refresh_then_closes() {
        let tok = TokenDue {
            ask_at: 1_000,
            close_at: 1_070,
            asked: false,
        };
        let f = Facts {
            token: Some(tok),
            ..open(0)
        };
        // 10 s before the ask: the entry comes back exactly then.
        let d = on_due(5, 990, f, T);
        assert!(!d.ask_refresh);
        assert_eq!(d.next, Some(15));
        let d = on_due(15, 1_000, f, T);
        assert!(d.ask_refresh);
        assert_eq!(
            d.next,
            Some(15 + 25),
            "the next ping comes before the close"
        );
        let asked = Facts {
            token: Some(TokenDue { asked: true, ..tok }),
            last_seen: 40,
            ..f
        };
        let d = on_due(60, 1_045, asked, T);
        assert!(!d.ask_refresh, "asked once");
        assert_eq!(d.next, Some(60 + 25));
        let d = on_due(85, 1_070, asked, T);
        assert_eq!(d.close.map(|c| c.0), Some(close::TOKEN_EXPIRED));
    }

    #[test]
    fn a_trickling_message_is_closed_after_the_message_timeout() {
        let f = Facts {
            partial_since: Some(10),
            ..open(30)
        };
        let d = on_due(35, 0, f, T);
        assert_eq!(d.next, Some(40));
        let d = on_due(40, 0, f, T);
        assert_eq!(d.close.map(|c| c.0), Some(close::POLICY));
    }

    #[test]
    fn closing_lingers_then_aborts() {
        let f = Facts {
            closing: true,
            ..open(100)
        };
        assert_eq!(on_due(102, 0, f, T).next, Some(105));
        let d = on_due(105, 0, f, T);
        assert!(d.abort && d.next.is_none());
    }
}
