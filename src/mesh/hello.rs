//! The hello exchange that turns a TCP connection into a link, on a blocking socket
//! with one deadline for the whole exchange.
//!
//! ```text
//!   dialer                                  acceptor
//!     ── Hello { version, nonce_d } ──────────▶   version checked
//!     ◀────────── Hello { version, nonce_a } ──
//!     ── Auth { dialer id, mac_d } ───────────▶   peer list and proof checked
//!     ◀──────────── Auth { acceptor id, mac_a }   (or Refuse, saying nothing)
//! ```
//!
//! The macs cover the cluster name, both ids and both nonces (`super::auth`). The
//! acceptor names itself only to a dialer whose proof checked out, and tells any
//! other only that authentication failed; its own log says why.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::Mesh;
use super::auth::{self, Role, Transcript};
use super::wire::{self, Frame, WireError};

/// How long a peer has for the whole hello exchange.
pub const DEADLINE: Duration = Duration::from_secs(3);

/// What the acceptor tells a dialer whose proof did not check out.
const AUTH_FAILED: &str = "authentication failed: check mesh.secret, mesh.cluster and the peer lists; the other node's log says which";

/// Why a hello did not make a link. The message is for this node's log and says
/// what to change.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The exchange ran past [`DEADLINE`].
    #[error("the hello took longer than {} s", DEADLINE.as_secs())]
    Deadline,
    /// The socket failed.
    #[error("{doing} failed: {error}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The error.
        error: std::io::Error,
    },
    /// The other side closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// Bytes that are not a hello of this version.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A frame out of turn.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the exchange was waiting for.
        expected: &'static str,
        /// What arrived, for the log.
        got: String,
    },
    /// The dialer speaks another wire version.
    #[error(
        "mesh version {theirs} != {}: run the same ringway version on every node",
        wire::VERSION
    )]
    Version {
        /// Its version.
        theirs: u16,
    },
    /// A dialer named a node this one does not know.
    #[error(
        "a node calling itself {node:?} is not in {me}'s peer list: add it with --peer {node}=HOST:PORT on every node (or it is a stranger)"
    )]
    UnknownNode {
        /// The name it gave.
        node: String,
        /// This node.
        me: String,
    },
    /// A dialer's proof did not check out.
    #[error(
        "node {node:?} failed authentication: the mesh secrets or cluster names differ (set the same mesh.secret and mesh.cluster on every node), or it dialed this address for another node (check its --peer entries)"
    )]
    BadProof {
        /// The name it gave.
        node: String,
    },
    /// Of this pair, this node dials: the other one should be waiting.
    #[error(
        "node {node:?} should not dial {me}: of each pair the id that sorts first dials (is the id duplicated?)"
    )]
    WrongDialer {
        /// The name it gave.
        node: String,
        /// This node.
        me: String,
    },
    /// The peer's address did not resolve.
    #[error("cannot resolve {addr}: {error}")]
    Resolve {
        /// As configured.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The peer's address resolved to nothing.
    #[error("{addr} resolved to no address")]
    NoAddress {
        /// As configured.
        addr: String,
    },
    /// No address of the peer took the connection.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The last address tried.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The peer refused this node, with its reason.
    #[error("refused: {0}")]
    Refused(String),
    /// Whoever answered at the peer's address is another node.
    #[error("{addr} answered as node {got:?}, not {expected:?}: check --peer {expected}=...")]
    WrongNode {
        /// The address dialed.
        addr: String,
        /// The node the peer list names there.
        expected: String,
        /// The node that answered.
        got: String,
    },
    /// The acceptor's proof does not match this node's secret.
    #[error("the peer's proof does not match our secret: set the same mesh.secret on every node")]
    PeerProof,
}

/// A stream whose reads and writes all end by `deadline`.
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Deadlined {
    fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            deadline: Instant::now() + DEADLINE,
        }
    }

    fn left(&self) -> Result<Duration, HelloError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HelloError::Deadline);
        }
        Ok(left)
    }

    fn write(&mut self, f: &Frame) -> Result<(), HelloError> {
        let io = |doing| move |error| HelloError::Io { doing, error };
        let left = self.left()?;
        self.stream
            .set_write_timeout(Some(left))
            .map_err(io("setting a write timeout"))?;
        self.stream.write_all(&wire::encode(f)).map_err(io("write"))
    }

    fn read(&mut self, decoder: &mut wire::Decoder) -> Result<Frame, HelloError> {
        let io = |doing| move |error| HelloError::Io { doing, error };
        let mut buf = [0u8; 1024];
        loop {
            if let Some(f) = decoder.next_frame()? {
                return Ok(f);
            }
            let left = self.left()?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(io("setting a read timeout"))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(HelloError::Closed),
                Ok(n) => decoder.feed(&buf[..n]),
                // A signal (SIGSTOP/SIGCONT, a profiler) interrupts a read that has
                // a timeout: not the peer's doing.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.left()?;
                }
                Err(e) => return Err(io("read")(e)),
            }
        }
    }

    /// Tell the peer it is refused with `said` (for a stranger: nothing it could
    /// use), and return the full reason for this node's log.
    fn refuse<T>(&mut self, said: &str, reason: HelloError) -> Result<T, HelloError> {
        let _ = self.write(&Frame::Refuse {
            reason: said.to_owned(),
        });
        Err(reason)
    }

    fn into_inner(self) -> Result<TcpStream, HelloError> {
        self.stream
            .set_write_timeout(None)
            .map_err(|error| HelloError::Io {
                doing: "clearing the write timeout",
                error,
            })?;
        Ok(self.stream)
    }
}

/// A link ready for sessions: the socket and the decoder that holds whatever
/// arrived after the hello.
pub type Linked = (TcpStream, wire::Decoder);

/// The acceptor's side: challenge, check the dialer's proof, and only then say who
/// this node is. Returns the peer's index.
pub fn accept(mesh: &Mesh, stream: TcpStream) -> Result<(usize, Linked), HelloError> {
    let mut link = Deadlined::new(stream);
    let mut decoder = wire::Decoder::hello();
    let Frame::Hello {
        version,
        nonce: theirs,
    } = link.read(&mut decoder)?
    else {
        return Err(HelloError::Unexpected {
            expected: "a hello",
            got: "another frame".into(),
        });
    };
    if version != wire::VERSION {
        let reason = HelloError::Version { theirs: version };
        return link.refuse(&reason.to_string(), reason);
    }
    let mine = auth::nonce();
    link.write(&Frame::Hello {
        version: wire::VERSION,
        nonce: mine,
    })?;
    let Frame::Auth { node, mac } = link.read(&mut decoder)? else {
        return Err(HelloError::Unexpected {
            expected: "the dialer's proof",
            got: "another frame".into(),
        });
    };
    let me = &mesh.nodes[mesh.me].id;
    let t = Transcript {
        cluster: &mesh.config.cluster,
        dialer: (&node, theirs),
        acceptor: (me, mine),
    };
    let secret = mesh.config.secret.as_bytes();
    let Some(peer) = mesh.nodes.iter().position(|n| n.id == node) else {
        let me = me.clone();
        return link.refuse(AUTH_FAILED, HelloError::UnknownNode { node, me });
    };
    if !t.verify(secret, Role::Dialer, &mac) {
        return link.refuse(AUTH_FAILED, HelloError::BadProof { node });
    }
    if peer == mesh.me || super::link::dials(mesh, peer) {
        let reason = HelloError::WrongDialer {
            node,
            me: me.clone(),
        };
        return link.refuse(&reason.to_string(), reason);
    }
    link.write(&Frame::Auth {
        node: me.clone(),
        mac: t.prove(secret, Role::Acceptor),
    })?;
    Ok((peer, (link.into_inner()?, resize(decoder, mesh))))
}

/// The dialer's side.
pub fn dial(mesh: &Mesh, peer: usize) -> Result<Linked, HelloError> {
    let target = &mesh.nodes[peer];
    let addrs: Vec<_> = target
        .addr
        .to_socket_addrs()
        .map_err(|error| HelloError::Resolve {
            addr: target.addr.clone(),
            error,
        })?
        .collect();
    let mut last = HelloError::NoAddress {
        addr: target.addr.clone(),
    };
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, DEADLINE) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(error) => last = HelloError::Connect { addr, error },
        }
    }
    let mut link = Deadlined::new(stream.ok_or(last)?);
    let me = &mesh.nodes[mesh.me].id;
    let mine = auth::nonce();
    link.write(&Frame::Hello {
        version: wire::VERSION,
        nonce: mine,
    })?;
    let mut decoder = wire::Decoder::hello();
    let theirs = match link.read(&mut decoder)? {
        Frame::Hello { nonce, .. } => nonce,
        Frame::Refuse { reason } => return Err(HelloError::Refused(reason)),
        other => {
            return Err(HelloError::Unexpected {
                expected: "hello",
                got: format!("{other:?}"),
            });
        }
    };
    let t = Transcript {
        cluster: &mesh.config.cluster,
        dialer: (me, mine),
        acceptor: (&target.id, theirs),
    };
    let secret = mesh.config.secret.as_bytes();
    link.write(&Frame::Auth {
        node: me.clone(),
        mac: t.prove(secret, Role::Dialer),
    })?;
    match link.read(&mut decoder)? {
        Frame::Auth { node, mac }
            if node == target.id && t.verify(secret, Role::Acceptor, &mac) => {}
        Frame::Auth { node, .. } if node != target.id => {
            return Err(HelloError::WrongNode {
                addr: target.addr.clone(),
                expected: target.id.clone(),
                got: node,
            });
        }
        Frame::Auth { .. } => return Err(HelloError::PeerProof),
        Frame::Refuse { reason } => return Err(HelloError::Refused(reason)),
        other => {
            return Err(HelloError::Unexpected {
                expected: "auth",
                got: format!("{other:?}"),
            });
        }
    }
    Ok((link.into_inner()?, resize(decoder, mesh)))
}

/// After the hello, frames may be as large as the configuration allows.
fn resize(small: wire::Decoder, mesh: &Mesh) -> wire::Decoder {
    small.with_max(mesh.config.max_frame_bytes)
}
