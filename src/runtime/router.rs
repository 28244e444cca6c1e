//! Where the mesh's messages go: each to the worker that handles it (the room's
//! home worker, or the worker that asked), link events to every worker. The mesh
//! calls this sink from its link threads; it knows nothing of workers.

use crate::hub::{Arrival, PeerMsg, Route};
use crate::mesh::Sink;

use super::mailbox::{Letter, Mailbox};

/// The workers' mailboxes, as the mesh's sink.
#[derive(Debug)]
pub struct Router {
    mailboxes: Vec<Mailbox>,
}

impl Router {
    /// A sink delivering to these workers.
    pub fn new(mailboxes: Vec<Mailbox>) -> Self {
        Self { mailboxes }
    }
}

impl Sink for Router {
    fn message(&self, peer: usize, msg: PeerMsg, at: Arrival) {
        match msg.route(self.mailboxes.len()) {
            Route::Worker(to) => self.mailboxes[to].send(Letter::Peer { peer, msg, at }),
            Route::Every => {
                for m in &self.mailboxes {
                    m.send(Letter::Peer {
                        peer,
                        msg: msg.clone(),
                        at,
                    });
                }
            }
        }
    }

    fn link(&self, peer: usize, up: bool, session: u64) {
        for m in &self.mailboxes {
            m.send(Letter::Link { peer, up, session });
        }
    }
}
