//! The mesh wire format, sans-IO: what two nodes say to each other and how it is
//! framed on the TCP link.
//!
//! A frame is a 4-byte big-endian body length, then the body: one [`Frame`] in
//! postcard (serde's compact binary encoding). The length comes first so a reader
//! knows how much to wait for and can refuse an oversized frame before allocating
//! it. The link's own frames (hello, proof, refusal, heartbeats) are defined here; room
//! messages are the router's (`hub::PeerMsg`), carried in `Frame::Hub`. Client-bound
//! payloads (`Deliver`, `SubAck`) carry the WebSocket frame the owner encoded, so a
//! receiving node queues it to its clients without re-encoding.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::hub::PeerMsg;

/// Version spoken in `Hello`; a peer with another version is refused.
pub const VERSION: u16 = 6;

/// One message on a mesh link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame from each side: nothing about the node, only the version and a
    /// challenge (a stranger learns no node id or cluster name).
    Hello {
        /// [`VERSION`].
        version: u16,
        /// Fresh random challenge for the other side's proof.
        nonce: [u8; 16],
    },
    /// Who the sender is, with its proof of the shared secret over both nonces, the
    /// cluster name and both node ids (see `mesh::auth`). The dialer sends it first;
    /// the acceptor answers only once the dialer's proof checked out.
    Auth {
        /// The sender's node id.
        node: String,
        /// HMAC-SHA256.
        mac: [u8; 32],
    },
    /// Why the sender refuses the link (logged by the receiver), then it closes.
    Refuse {
        /// Cause and fix, for the other node's log.
        reason: String,
    },
    /// Heartbeat, sent every `mesh.heartbeat_ms`; the peer answers `Pong` with the
    /// same value, which gives the link's round-trip time.
    Ping {
        /// The sender's clock (microseconds, its own origin).
        sent_us: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s value, unchanged.
        sent_us: u64,
    },
    /// A room message for the peer's router.
    Hub(PeerMsg),
}

/// Why bytes from a peer cannot be read as frames. Any of these ends the link.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix is over the limit.
    #[error(
        "frame of {0} bytes is over mesh.max_frame_bytes ({1}); raise it on this node if the peer sends large messages"
    )]
    TooLarge(usize, usize),
    /// The length prefix of a hello is over the hello limit: not a ringway peer.
    #[error("a hello of {0} bytes (at most {1}): this is not a ringway peer of this version")]
    HelloTooLarge(usize, usize),
    /// The body is not a frame of this version.
    #[error("undecodable frame ({0}); are both nodes running the same ringway version?")]
    Malformed(String),
}

/// Encode one frame, length prefix included.
pub fn encode(frame: &Frame) -> Bytes {
    let mut buf = postcard::to_extend(frame, vec![0u8; 4]).expect("encoding to a Vec cannot fail");
    let body = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&body.to_be_bytes());
    Bytes::from(buf)
}

/// Largest hello frame (a hello carries a node id and a proof).
pub const MAX_HELLO: usize = 1024;

/// Splits a byte stream into frames. Feed it what the socket gave, then take
/// frames until it says it needs more.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
    /// Still in the hello exchange (limit [`MAX_HELLO`]).
    hello: bool,
}

impl Decoder {
    /// A decoder for a link's hello exchange (frames of at most [`MAX_HELLO`]).
    pub fn hello() -> Self {
        Self {
            buf: BytesMut::new(),
            max: MAX_HELLO,
            hello: true,
        }
    }

    /// A decoder refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
            hello: false,
        }
    }

    /// The same decoder (and any bytes it holds), past the hello, with the
    /// session's size limit.
    pub fn with_max(self, max: usize) -> Self {
        Self {
            max,
            hello: false,
            ..self
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max && self.hello {
            return Err(WireError::HelloTooLarge(len, self.max));
        }
        if len > self.max {
            return Err(WireError::TooLarge(len, self.max));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len);
        postcard::from_bytes(&body)
            .map(Some)
            .map_err(|e| WireError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::id::{Subscriber, Ticket};

    fn samples() -> Vec<Frame> {
        let who = Subscriber {
            worker: 1,
            conn: 7 << 32 | 3,
        };
        vec![
            Frame::Hello {
                version: VERSION,
                nonce: [9; 16],
            },
            Frame::Auth {
                node: "n1".into(),
                mac: [1; 32],
            },
            Frame::Ping { sent_us: 7 },
            Frame::Pong { sent_us: 7 },
            Frame::Hub(PeerMsg::Subscribe {
                room: "chat:1".into(),
                who,
                attempt: 9,
                since: Some((5, 6)),
                user: Some("alice".into()),
            }),
            Frame::Hub(PeerMsg::SubAck {
                room: "chat:1".into(),
                who,
                attempt: 9,
                epoch: u64::MAX,
                seq: 3,
                recovered: true,
                replay: vec![Bytes::from_static(b"\x81\x02hi"), Bytes::new()],
                refused: false,
            }),
            Frame::Hub(PeerMsg::Leave {
                room: "chat:1".into(),
                who: None,
                node_left: true,
            }),
            Frame::Hub(PeerMsg::Publish {
                room: "r".into(),
                data: "{\"a\":1}".into(),
                key: None,
                origin: crate::hub::Origin {
                    from: Some("alice".into()),
                    idempotency_key: Some("k1".into()),
                    client: true,
                },
                reply: Some(Ticket { worker: 0, id: 12 }),
                via: Some(2),
            }),
            Frame::Hub(PeerMsg::Handoff(Box::new(crate::hub::msg::Handoff {
                room: "chat:1".into(),
                epoch: 0xfeed,
                seq: 42,
                messages: vec![
                    (41, 10, Bytes::from_static(b"\x81\x01a")),
                    (42, 3, Bytes::new()),
                ],
                keys: vec![("api\0k1".into(), 41, 10)],
                announced: vec!["ann".into()],
                from_log: false,
                term: 3,
                answers: vec![(42, Ticket { worker: 1, id: 9 }, Some(2), false)],
            }))),
            Frame::Hub(PeerMsg::Replicate {
                room: "r".into(),
                epoch: 9,
                term: 2,
                seq: 43,
                frame: Bytes::from_static(b"\x81\x01b"),
                key: Some("api\0k2".into()),
            }),
            Frame::Hub(PeerMsg::Replicated {
                room: "r".into(),
                epoch: 9,
                term: 2,
                seq: 43,
                ok: true,
            }),
            Frame::Hub(PeerMsg::Vote {
                room: "r".into(),
                epoch: 9,
                term: 3,
                seq: 43,
            }),
            Frame::Hub(PeerMsg::Voted {
                room: "r".into(),
                epoch: 9,
                term: 3,
                granted: false,
                retry: true,
            }),
            Frame::Hub(PeerMsg::Unseed {
                room: "r".into(),
                epoch: 9,
            }),
            Frame::Hub(PeerMsg::Leaving { workers: 2 }),
            Frame::Hub(PeerMsg::HandoffDone {
                worker: 1,
                workers: 2,
                leaving: true,
            }),
            Frame::Hub(PeerMsg::Deliver {
                room: "r".into(),
                seq: 41,
                tag: 77,
                frame: Bytes::from(vec![0x81; 300]),
            }),
            Frame::Hub(PeerMsg::Lagged { room: "r".into() }),
        ]
    }

    #[test]
    fn round_trip_fed_one_byte_at_a_time() {
        let frames = samples();
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f).to_vec()).collect();
        let mut d = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for b in wire {
            d.feed(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut d = Decoder::new(100);
        d.feed(&101u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(WireError::TooLarge(101, 100)));
    }

    #[test]
    fn garbage_body_is_an_error_not_a_panic() {
        let mut d = Decoder::new(100);
        d.feed(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(WireError::Malformed(_))));
        let mut d = Decoder::new(100);
        d.feed(&[0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(WireError::Malformed(_))));
    }
}
