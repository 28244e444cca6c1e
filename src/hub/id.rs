//! The names the router uses for connections, requests and time.

use serde::{Deserialize, Serialize};

/// Milliseconds on the caller's monotonic clock (the worker's since it started; the
/// simulator's own). The hub never reads a clock: every input carries `now`.
pub type Ms = u64;

/// When a publish reached this node, on the worker's nanosecond clock
/// (`metrics::histogram::now_ns`); it travels with the message to every frame made of
/// it, and the write of each is timed from it into `ringway_publish_to_write_seconds`.
/// Its own type, not [`Ms`]: the hub's clock is in milliseconds, and a millisecond
/// passed for it once made every presence frame a bogus latency sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival(u64);

impl Arrival {
    /// A broadcast frame that is not a publish (a presence change): its writes are
    /// not timed. (A connection's own frames, replies and replayed messages among
    /// them, carry no arrival and are not timed either.)
    pub const UNTIMED: Self = Self(u64::MAX);

    /// A publish that arrived at `ns` (`metrics::histogram::now_ns`).
    pub fn at_ns(ns: u64) -> Self {
        Self(ns.min(u64::MAX - 1))
    }

    /// Nanoseconds from arrival to `now_ns`; `None` if untimed.
    pub fn elapsed_ns(self, now_ns: u64) -> Option<u64> {
        (self != Self::UNTIMED).then(|| now_ns.saturating_sub(self.0))
    }
}

/// A connection's key inside its worker's slab. The generation makes a stale key
/// (kept by a pending subscription, say) miss a reused slot instead of reaching the
/// wrong client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// Slab index.
    pub slot: u32,
    /// Generation stamped at insertion.
    pub generation: u32,
}

impl ConnKey {
    /// The key as it travels in mesh messages: `slot << 32 | generation`.
    pub fn pack(self) -> u64 {
        u64::from(self.slot) << 32 | u64::from(self.generation)
    }

    /// The inverse of [`ConnKey::pack`].
    pub fn unpack(v: u64) -> ConnKey {
        ConnKey {
            slot: (v >> 32) as u32,
            generation: v as u32,
        }
    }
}

/// A connection's node-wide id: its worker plus its key there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Worker index.
    pub worker: u16,
    /// Key in that worker's slab.
    pub key: ConnKey,
}

impl std::fmt::Display for ConnId {
    /// `worker.slot.generation`, the form sent in `welcome`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.worker, self.key.slot, self.key.generation
        )
    }
}

/// Who is waiting for an answer on the asking node: a request id in one of its
/// workers (the worker keeps what the id stands for: an API call or a connection's
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Worker on the asking node.
    pub worker: u16,
    /// A request id in that worker.
    pub id: u64,
}

/// A subscriber on the node that asked: its worker and packed connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subscriber {
    /// Worker index on its node.
    pub worker: u16,
    /// `slot << 32 | generation`.
    pub conn: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pack_and_unpack() {
        let k = ConnKey {
            slot: 7,
            generation: u32::MAX,
        };
        assert_eq!(ConnKey::unpack(k.pack()), k);
        let id = ConnId { worker: 1, key: k };
        assert_eq!(id.to_string(), "1.7.4294967295");
    }

    #[test]
    fn only_a_publish_is_timed() {
        assert_eq!(Arrival::UNTIMED.elapsed_ns(5), None);
        assert_eq!(Arrival::at_ns(2).elapsed_ns(5), Some(3));
        assert_eq!(Arrival::at_ns(9).elapsed_ns(5), Some(0), "never negative");
        // No clock reading can pass for the sentinel.
        assert_eq!(Arrival::at_ns(u64::MAX).elapsed_ns(u64::MAX), Some(1));
    }
}
