//! `[compression]`: permessage-deflate.

use serde::{Deserialize, Serialize};

/// permessage-deflate (RFC 7692; see `ws::deflate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// Negotiate permessage-deflate with clients that offer it. Default true.
    pub enabled: bool,
    /// Messages shorter than this go uncompressed (RSV1 clear): compressing them
    /// costs more CPU than the bytes it saves. Default 256.
    pub min_bytes: usize,
    /// zlib level, 1 (fastest) to 9 (smallest). Default 3: on a 4 KiB JSON document
    /// it costs three quarters of level 6 for 7% more bytes, and level 1 hardly
    /// compresses a chat message (`cargo bench --bench deflate`; README,
    /// "Compression").
    pub level: u32,
    /// Room-name prefixes whose messages are never compressed (payloads that are
    /// compressed already). Default none.
    pub off: Vec<String>,
    /// Compress a broadcast once and share it (true, the default). `false`
    /// compresses it again for every subscriber, as servers with a compressor per
    /// connection do: only for measuring what sharing saves.
    pub shared: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 256,
            level: 3,
            off: Vec::new(),
            shared: true,
        }
    }
}

impl Compression {
    /// Whether messages of `room` may be compressed.
    pub fn room_on(&self, room: &str) -> bool {
        !self.off.iter().any(|p| room.starts_with(p.as_str()))
    }
}
