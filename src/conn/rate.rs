//! A token bucket for client messages, sans-IO (the caller passes the time).

/// Tokens refill at `rate` per second up to `burst`; each message takes one.
/// Eight bytes, kept in every connection's slab entry.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    /// Milliseconds (worker clock, wrapping) of the last refill.
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn new(burst: u32, now_ms: u32) -> Self {
        Self {
            tokens: burst as f32,
            last_ms: now_ms,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now_ms: u32, rate: u32, burst: u32) -> bool {
        let elapsed = now_ms.wrapping_sub(self.last_ms);
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed as f32 * rate as f32 / 1000.0).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(5, 0);
        assert_eq!((0..10).filter(|_| b.take(0, 10, 5)).count(), 5, "the burst");
        assert!(!b.take(50, 10, 5), "half a token after 50 ms at 10/s");
        assert!(b.take(100, 10, 5), "one token after 100 ms");
        // A long pause refills to the burst, not beyond.
        assert_eq!((0..10).filter(|_| b.take(60_000, 10, 5)).count(), 5);
    }

    #[test]
    fn survives_clock_wrap() {
        let mut b = TokenBucket::new(1, u32::MAX - 10);
        assert!(b.take(u32::MAX - 10, 100, 1));
        assert!(
            b.take(20, 100, 1),
            "31 ms later across the wrap: 3 tokens, capped at 1"
        );
    }
}
