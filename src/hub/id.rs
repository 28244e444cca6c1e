//! The names the router uses for connections, requests and time.

use serde::{Deserialize, Serialize};

/// Milliseconds on the caller's monotonic clock (the worker's since it started; the
/// simulator's own). The hub never reads a clock: every input carries `now`.
pub type Ms = u64;

/// The `at` of a frame that is not a publish (a presence change): its delivery is not
/// timed into `ringway_publish_to_write_seconds`. A publish's `at` is when it reached
/// this node, in the worker's nanoseconds (`metrics::histogram::now_ns`), not [`Ms`].
pub const UNTIMED: u64 = u64::MAX;

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
}
