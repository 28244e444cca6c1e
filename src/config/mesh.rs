//! `[mesh]`: the cluster's node list, secret and link settings.

use super::*;

/// The mesh: links to the other nodes of a cluster (see `src/mesh`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// Address on which peers connect to this node. With peers, it defaults to this
    /// node's own entry in `peers` (when that is an `IP:PORT`); none by default.
    pub listen: Option<SocketAddr>,
    /// The nodes of the cluster, as `"ID=HOST:PORT"` (each node's `mesh.listen`).
    /// The list may include this node itself (recognised by `node_id`), so every
    /// host can carry the same file. Empty by default.
    pub peers: Vec<String>,
    /// Cluster name; a peer with another name is refused. Default `"ringway"`.
    pub cluster: String,
    /// Shared secret that peers prove they know (HMAC-SHA256 over both sides'
    /// nonces). Required with peers; at least 16 bytes. Prefer the environment
    /// variable `RINGWAY_MESH_SECRET` to writing it in a file.
    pub secret: String,
    /// Each side of a link sends a heartbeat this often, busy or idle (its answer
    /// measures the round trip), in milliseconds.
    /// Default 500.
    pub heartbeat_ms: u64,
    /// A link silent for this long is dead, in milliseconds. Default 2 000.
    pub dead_after_ms: u64,
    /// Reconnect backoff: delay = random(0, min(cap, base * 2^attempt)), in
    /// milliseconds. Defaults 100 and 5 000.
    pub backoff_base_ms: u64,
    /// See `backoff_base_ms`.
    pub backoff_cap_ms: u64,
    /// At start-up, how long a node waits for a link to every peer before it serves
    /// clients anyway, in milliseconds. Until it has its links it cannot know which
    /// rooms its peers own, and would answer for them itself (a resume would then
    /// fail, and the room move a moment later). A peer that is up links in
    /// milliseconds; one that must dial back may wait out its backoff. `0`: do not
    /// wait. Default 5 000 (`backoff_cap_ms`).
    pub join_timeout_ms: u64,
    /// Bytes queued for one peer before the link is cut (the peer reconnects and
    /// re-registers; its clients resume). Default 64 MiB.
    pub queue_bytes: usize,
    /// Frames queued for one peer before the link is cut. Default 262 144.
    pub queue_frames: usize,
    /// Largest frame accepted from a peer, in bytes. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// How long presence entries of a lost node are kept before they expire, in
    /// milliseconds. Default 10 000.
    pub presence_lease_ms: u64,
    /// Keep a copy of every room on a standby node (the one that owns the room if
    /// its owner is lost), and deliver and acknowledge each message once the
    /// standby has it: losing a node then loses no acknowledged message and makes
    /// nobody re-sync. Takes effect with three nodes or more. Default true.
    pub replicate: bool,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            listen: None,
            peers: Vec::new(),
            cluster: "ringway".to_owned(),
            secret: String::new(),
            heartbeat_ms: 500,
            dead_after_ms: 2_000,
            backoff_base_ms: 100,
            backoff_cap_ms: 5_000,
            join_timeout_ms: 5_000,
            queue_bytes: 64 << 20,
            queue_frames: 1 << 18,
            max_frame_bytes: 16 << 20,
            presence_lease_ms: 10_000,
            replicate: true,
        }
    }
}

/// A peer from `mesh.peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub id: String,
    /// Where its mesh listener is (`HOST:PORT`, resolved at each dial).
    pub addr: String,
}

/// `mesh.peers` read for one node: the other nodes, and this node's own entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList {
    /// Every node but this one, one entry per id.
    pub others: Vec<Peer>,
    /// This node's entry, when the list names it.
    pub own: Option<Peer>,
}

impl Mesh {
    /// Read `peers` for the node `me`: one entry per id (the same id at two
    /// addresses is an error), this node's own entry set apart. The error names the
    /// bad entry and the expected form.
    pub fn peer_list(&self, me: &str) -> Result<PeerList, ConfigError> {
        let mut list = PeerList {
            others: Vec::new(),
            own: None,
        };
        for p in self.parsed_peers()? {
            let seen = list.others.iter().chain(&list.own).find(|q| q.id == p.id);
            match seen {
                Some(q) if q.addr == p.addr => continue,
                Some(q) => {
                    return Err(ConfigError::Invalid(format!(
                        "node id {:?} appears twice in mesh.peers, at {} and at {}; every node needs its own id",
                        p.id, q.addr, p.addr
                    )));
                }
                None if p.id == me => list.own = Some(p),
                None => list.others.push(p),
            }
        }
        Ok(list)
    }

    /// Where this node listens for peers: `listen`, or its own entry in `peers`.
    pub fn listen_addr(&self, me: &str) -> Option<SocketAddr> {
        self.listen.or_else(|| {
            let own = self.peer_list(me).ok()?.own?;
            own.addr.parse().ok()
        })
    }

    /// Parse `peers`; the error names the bad entry and the expected form.
    fn parsed_peers(&self) -> Result<Vec<Peer>, ConfigError> {
        self.peers
            .iter()
            .map(|p| {
                let (id, addr) = p.split_once('=').ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "mesh.peers entry {p:?} must be ID=HOST:PORT, e.g. \"n2=10.0.0.2:7400\""
                    ))
                })?;
                let port_ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
                if id.is_empty() || !port_ok {
                    return Err(ConfigError::Invalid(format!(
                        "mesh.peers entry {p:?} must be ID=HOST:PORT, e.g. \"n2=10.0.0.2:7400\""
                    )));
                }
                Ok(Peer {
                    id: id.to_owned(),
                    addr: addr.to_owned(),
                })
            })
            .collect()
    }
}
