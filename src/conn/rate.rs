//! Per-connection rate limits, sans-IO (the caller passes the time): a token bucket
//! for messages, one for bytes, and the rule that closes a client that keeps over
//! them.
//!
//! The rule: a refused message starts an *overrun*; the overrun ends when the
//! client has slowed down long enough for its buckets to refill to half their
//! bursts. A client still in an overrun `close_after_ms` after it began is closed
//! (4029), whatever multiple of its rate it sends at: above its rate the buckets
//! never refill, so the overrun never ends. Only the first refusal of an overrun is
//! answered with an error, so a flood cannot make the server write one error frame
//! per refused message.

/// The limits, from `limits.*` in the configuration. A rate of 0 turns its bucket
/// off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Sustained messages per second.
    pub messages_per_second: u32,
    /// Messages allowed in a burst above the rate.
    pub message_burst: u32,
    /// Sustained payload bytes per second.
    pub bytes_per_second: u32,
    /// Bytes allowed in a burst above the rate (at least the largest message).
    pub byte_burst: u32,
    /// How long an overrun may last before the connection is closed, in ms.
    pub close_after_ms: u32,
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits: act on it.
    Allow,
    /// Over a limit: drop it. `notify` is true for the first refusal of an overrun
    /// (answer with an error); `bytes` says which limit.
    Refuse {
        /// Send the client a `rate_limited` error.
        notify: bool,
        /// The byte rate, not the message rate, refused it.
        bytes: bool,
    },
    /// Over a limit for longer than `close_after_ms`: close with 4029.
    Close,
}

/// Sixteen bytes, kept in every connection's slab entry.
#[derive(Debug, Clone, Copy)]
pub struct RateLimiter {
    messages: f32,
    bytes: f32,
    /// Milliseconds (worker clock, wrapping) of the last refill.
    last_ms: u32,
    /// When the current overrun began, or [`NOT_OVER`].
    over_since: u32,
}

const NOT_OVER: u32 = u32::MAX;

impl RateLimiter {
    /// Full buckets at time `now_ms`.
    pub fn new(rates: &Rates, now_ms: u32) -> Self {
        Self {
            messages: rates.message_burst as f32,
            bytes: rates.byte_burst as f32,
            last_ms: now_ms,
            over_since: NOT_OVER,
        }
    }

    /// Judge one message of `len` payload bytes at `now_ms`.
    pub fn check(&mut self, now_ms: u32, len: usize, r: &Rates) -> Verdict {
        let elapsed = now_ms.wrapping_sub(self.last_ms) as f32 / 1000.0;
        self.last_ms = now_ms;
        let (msg_on, byte_on) = (r.messages_per_second > 0, r.bytes_per_second > 0);
        if msg_on {
            self.messages = (self.messages + elapsed * r.messages_per_second as f32)
                .min(r.message_burst as f32);
        }
        if byte_on {
            self.bytes =
                (self.bytes + elapsed * r.bytes_per_second as f32).min(r.byte_burst as f32);
        }
        let recovered = (!msg_on || self.messages >= r.message_burst as f32 / 2.0)
            && (!byte_on || self.bytes >= r.byte_burst as f32 / 2.0);
        let msg_ok = !msg_on || self.messages >= 1.0;
        let byte_ok = !byte_on || self.bytes >= len as f32;
        // An overrun ends with a message let through once the buckets refilled to
        // half: not merely with buckets at half, which a message larger than half
        // the byte burst never gets through (each such message would start a new
        // overrun, with its own error, and never be closed).
        if recovered && msg_ok && byte_ok {
            self.over_since = NOT_OVER;
        }
        if msg_ok && byte_ok {
            if msg_on {
                self.messages -= 1.0;
            }
            if byte_on {
                self.bytes -= len as f32;
            }
            return Verdict::Allow;
        }
        // A refused message was still read (and unmasked, and checked): its bytes
        // count, so a flood of messages too large for the bucket never lets it
        // refill and is closed like any other flood.
        if byte_on {
            self.bytes = (self.bytes - len as f32).max(-(r.byte_burst as f32));
        }
        if self.over_since == NOT_OVER {
            // `now_ms` itself may be NOT_OVER once every 49 days: a moment early is fine.
            self.over_since = now_ms.min(NOT_OVER - 1);
            return Verdict::Refuse {
                notify: true,
                bytes: msg_ok,
            };
        }
        if now_ms.wrapping_sub(self.over_since) >= r.close_after_ms {
            return Verdict::Close;
        }
        Verdict::Refuse {
            notify: false,
            bytes: msg_ok,
        }
    }
}

impl RateLimiter {
    /// Take `len` more bytes from the byte bucket for a message already let through
    /// (what a compressed message inflated to, beyond its compressed size): the next
    /// messages wait for it. The bucket may go below zero, down to one burst.
    pub fn charge(&mut self, len: usize, r: &Rates) {
        if r.bytes_per_second > 0 {
            self.bytes = (self.bytes - len as f32).max(-(r.byte_burst as f32));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        messages_per_second: 100,
        message_burst: 200,
        bytes_per_second: 0,
        byte_burst: 0,
        close_after_ms: 2000,
    };

    /// Send at `multiple` x the message rate for up to `ms`; returns when it was
    /// closed (ms after the start) and how many errors it was sent.
    fn flood(multiple: f32, ms: u32) -> (Option<u32>, u32) {
        let mut l = RateLimiter::new(&RATES, 0);
        let interval = 1000.0 / (RATES.messages_per_second as f32 * multiple);
        let mut errors = 0;
        let mut t = 0.0f32;
        while (t as u32) < ms {
            match l.check(t as u32, 10, &RATES) {
                Verdict::Allow => {}
                Verdict::Refuse { notify, .. } => errors += u32::from(notify),
                Verdict::Close => return (Some(t as u32), errors),
            }
            t += interval;
        }
        (None, errors)
    }

    #[test]
    fn burst_then_rate() {
        let mut l = RateLimiter::new(&RATES, 0);
        let allowed = (0..300)
            .filter(|_| l.check(0, 1, &RATES) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 200, "the burst");
        assert_eq!(
            l.check(5, 1, &RATES),
            Verdict::Refuse {
                notify: false,
                bytes: false
            }
        );
        assert_eq!(
            l.check(10, 1, &RATES),
            Verdict::Allow,
            "one token after 10 ms"
        );
    }

    #[test]
    fn any_sustained_overrun_is_closed_within_the_bound() {
        // The burst (200 messages) goes first; then the overrun may last 2 s.
        for multiple in [1.5f32, 2.0, 9.0, 25.0, 1000.0] {
            let burst_ms = 200.0 / (100.0 * (multiple - 1.0)) * 1000.0;
            let (closed, errors) = flood(multiple, 30_000);
            let at = closed.unwrap_or_else(|| panic!("{multiple}x was never closed"));
            assert!(
                at as f32 <= burst_ms + 2000.0 + 50.0,
                "{multiple}x closed at {at} ms, burst used up at {burst_ms} ms"
            );
            assert_eq!(errors, 1, "{multiple}x: one error per overrun");
        }
    }

    #[test]
    fn a_client_at_its_rate_is_never_closed() {
        assert_eq!(flood(0.99, 60_000), (None, 0));
        assert_eq!(flood(1.0, 60_000).0, None);
    }

    #[test]
    fn slowing_down_ends_the_overrun() {
        let mut l = RateLimiter::new(&RATES, 0);
        let mut t = 0;
        while l.check(t, 1, &RATES) == Verdict::Allow {
            t += 1;
        }
        // Quiet for 1.5 s: 150 tokens, more than half the burst.
        t += 1500;
        let mut first_refusal = Verdict::Allow;
        for _ in 0..300 {
            first_refusal = l.check(t, 1, &RATES);
            if first_refusal != Verdict::Allow {
                break;
            }
        }
        assert_eq!(
            first_refusal,
            Verdict::Refuse {
                notify: true,
                bytes: false
            },
            "a new overrun, announced again"
        );
        // Keep flooding (one every 2 ms, 5x the rate): closed 2 s after it began.
        let began = t;
        loop {
            t += 2;
            match l.check(t, 1, &RATES) {
                Verdict::Close => break,
                v => assert!(t - began < 2000, "still {v:?} at {} ms", t - began),
            }
        }
        assert_eq!(t - began, 2000);
    }

    #[test]
    fn the_byte_rate_bounds_large_messages() {
        let r = Rates {
            bytes_per_second: 1000,
            byte_burst: 2000,
            ..RATES
        };
        let mut l = RateLimiter::new(&r, 0);
        assert_eq!(l.check(0, 1500, &r), Verdict::Allow);
        assert_eq!(
            l.check(0, 1000, &r),
            Verdict::Refuse {
                notify: true,
                bytes: true
            }
        );
        assert!(
            matches!(
                l.check(500, 1000, &r),
                Verdict::Refuse { notify: false, .. }
            ),
            "the refused 1,000 bytes were read: they count too"
        );
        assert_eq!(
            l.check(3000, 1000, &r),
            Verdict::Allow,
            "refilled once the client slowed down"
        );
    }

    #[test]
    fn a_flood_of_messages_over_half_the_byte_burst_is_closed_with_one_error() {
        // A hostile probe's find: each 700-byte message (burst 1000) found the
        // bucket over half full, ended the overrun, was refused and started another,
        // with its own error, forever.
        let r = Rates {
            messages_per_second: 0,
            bytes_per_second: 1000,
            byte_burst: 1000,
            ..RATES
        };
        let mut l = RateLimiter::new(&r, 0);
        let (mut errors, mut closed) = (0, None);
        for t in 0..5000u32 {
            match l.check(t, 700, &r) {
                Verdict::Allow => {}
                Verdict::Refuse { notify, .. } => errors += u32::from(notify),
                Verdict::Close => {
                    closed = Some(t);
                    break;
                }
            }
        }
        assert!(closed.is_some_and(|t| t <= 2100), "closed at {closed:?}");
        assert_eq!(errors, 1);
    }

    #[test]
    fn inflated_bytes_are_charged_after_the_fact() {
        let r = Rates {
            bytes_per_second: 1000,
            byte_burst: 2000,
            ..RATES
        };
        let mut l = RateLimiter::new(&r, 0);
        assert_eq!(l.check(0, 100, &r), Verdict::Allow);
        l.charge(1900, &r); // it inflated to 2,000 bytes
        assert!(matches!(l.check(0, 1, &r), Verdict::Refuse { .. }));
        assert_eq!(
            l.check(1000, 500, &r),
            Verdict::Allow,
            "a second refilled 1,000"
        );
        // Never more than one burst in debt.
        l.charge(1 << 30, &r);
        assert_eq!(l.check(4000, 1000, &r), Verdict::Allow);
    }

    #[test]
    fn survives_clock_wrap() {
        let mut l = RateLimiter::new(&RATES, u32::MAX - 10);
        for _ in 0..200 {
            l.check(u32::MAX - 10, 1, &RATES);
        }
        assert!(matches!(
            l.check(u32::MAX - 10, 1, &RATES),
            Verdict::Refuse { .. }
        ));
        assert_eq!(
            l.check(20, 1, &RATES),
            Verdict::Allow,
            "31 ms later across the wrap"
        );
    }

    #[test]
    fn zero_rates_are_off() {
        let off = Rates {
            messages_per_second: 0,
            bytes_per_second: 0,
            ..RATES
        };
        let mut l = RateLimiter::new(&off, 0);
        assert!((0..10_000).all(|_| l.check(0, 1 << 20, &off) == Verdict::Allow));
    }
}
