//! Worker mailboxes: how workers (and the mesh's link threads, and the node's
//! control) reach a worker.
//!
//! Each worker has one `crossbeam-channel` inbox. Its runtime learns of new mail
//! through a doorbell: a socketpair whose read end the worker awaits through its own
//! driver (io_uring or epoll). To avoid a syscall per message, the worker *arms* the
//! doorbell only when it is about to sleep; a sender rings it only if it finds it
//! armed, and disarms it in the same atomic swap, so a burst of mail costs one wake-up.
//!
//! Why a socketpair and not an eventfd: monoio reads an eventfd only through its
//! `File`, which under the legacy (epoll) driver is a blocking `pread` and fails with
//! ESPIPE on an eventfd. A socketpair works the same under both drivers.
//!
//! The inbox is unbounded on purpose: workers send to each other, so a bounded inbox
//! could deadlock two full workers. Memory is bounded upstream instead (per-connection
//! queues, per-room replay rings, and publishers' own rate limits).

use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use monoio::io::AsyncReadRent;

use crate::hub::{Mail, PeerMsg};
use crate::metrics::WorkerStats;

/// What a worker's inbox carries: the router's mail, and the runtime's own.
#[derive(Debug)]
#[non_exhaustive]
pub enum Letter {
    /// Mail between routers (see `hub::Mail`).
    Hub(Mail),
    /// A message from a peer node for this worker's router (routed by
    /// `PeerMsg::route`).
    Peer {
        /// The peer's node index.
        peer: usize,
        /// The message.
        msg: PeerMsg,
        /// When it arrived.
        at: crate::hub::Arrival,
    },
    /// A mesh link came up or went down. Every message of a session is mailed after
    /// its `up` and before its `down`.
    Link {
        /// The peer's node index.
        peer: usize,
        /// Up or down.
        up: bool,
        /// Which session of the link (see `mesh::Sink::link`).
        session: u64,
    },
    /// Asks for a snapshot of the receiver's counters.
    StatsRequest {
        /// The asking worker.
        from: usize,
        /// Request id there.
        req: u64,
    },
    /// A snapshot of a worker's counters.
    Stats {
        /// Request id on the receiving worker.
        req: u64,
        /// The counters.
        stats: Box<WorkerStats>,
    },
    /// Drain: stop accepting, hint every client to reconnect, close them in paced
    /// batches over the window, then stop.
    Drain {
        /// The drain window.
        window: std::time::Duration,
    },
    /// The app's answer to an authorization this worker asked for.
    Authorized {
        /// Who, where and what.
        key: crate::hooks::authorize::Key,
        /// The answer.
        verdict: crate::hooks::authorize::Verdict,
    },
    /// The app's answer to a connect callback this worker asked for.
    Identified {
        /// The connection waiting in its upgrade.
        conn: crate::conn::ConnKey,
        /// Who the app says it is.
        identity: crate::hooks::connect::Identity,
    },
    /// Stop the worker.
    Shutdown,
}

struct Doorbell {
    armed: AtomicBool,
    ring: StdUnixStream,
}

/// The sending side of a worker's inbox. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Mailbox {
    tx: Sender<Letter>,
    bell: Arc<Doorbell>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Letters waiting in the inbox.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no letter waits.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Deliver `mail`, waking the worker if it sleeps.
    pub fn send(&self, mail: Letter) {
        if self.tx.send(mail).is_err() {
            return; // the worker has stopped; nothing is waiting for this mail
        }
        if self.bell.armed.swap(false, Ordering::AcqRel) {
            self.bell.ring();
        }
    }
}

impl Doorbell {
    fn ring(&self) {
        // Non-blocking: a full socket buffer means the bell is already ringing.
        let _ = (&self.ring).write(&[1]);
    }
}

/// The receiving side, owned by the worker thread.
pub struct Inbox {
    rx: Receiver<Letter>,
    bell: Arc<Doorbell>,
    listen: Option<StdUnixStream>,
}

/// A new inbox and the mailbox that feeds it.
pub fn channel() -> std::io::Result<(Mailbox, Inbox)> {
    let (ring, listen) = StdUnixStream::pair()?;
    ring.set_nonblocking(true)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Doorbell {
        armed: AtomicBool::new(false),
        ring,
    });
    Ok((
        Mailbox {
            tx,
            bell: bell.clone(),
        },
        Inbox {
            rx,
            bell,
            listen: Some(listen),
        },
    ))
}

/// Mail handled per wake-up before the worker lets its other tasks run.
pub const BATCH: usize = 1024;

/// Mail handled between flushes. Each broadcast letter queues a frame for every
/// local subscriber of its room: flushing every so many keeps a burst from piling
/// up in every subscriber's queue (a frame per letter) before any of it is written,
/// while one `sendmsg` still carries many frames.
const FLUSH_EVERY: usize = 64;

impl Inbox {
    /// Run forever: wait for mail, hand each batch to `handle`, call `after` at the
    /// end of each batch and `between` every `FLUSH_EVERY` letters within one (to
    /// flush what they queued). Must run inside the worker's monoio runtime.
    /// Returns when `handle` returns `false` (shutdown).
    ///
    /// Fairness: this task never wakes itself (monoio 0.2.4 runs a self-woken task
    /// first again, starving the others, bug #362); after a full batch it rings its
    /// own doorbell, so it resumes through the driver like any other I/O.
    pub async fn run(
        mut self,
        mut handle: impl FnMut(Letter) -> bool,
        mut after: impl FnMut(),
        mut between: impl FnMut(),
    ) -> std::io::Result<()> {
        let listen = self.listen.take().expect("Inbox::run called once");
        listen.set_nonblocking(true)?;
        let mut listen = monoio::net::UnixStream::from_std(listen)?;
        let mut buf = vec![0u8; 64];
        loop {
            let mut n = 0;
            while n < BATCH {
                match self.rx.try_recv() {
                    Ok(mail) => {
                        n += 1;
                        if !handle(mail) {
                            after();
                            return Ok(());
                        }
                        if n % FLUSH_EVERY == 0 && n < BATCH {
                            between();
                        }
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            after();
            if n == BATCH {
                self.bell.ring();
            } else {
                self.bell.armed.store(true, Ordering::SeqCst);
                // Mail sent between the last try_recv and arming found the bell
                // unarmed and did not ring: look once more.
                if !self.rx.is_empty() && self.bell.armed.swap(false, Ordering::AcqRel) {
                    continue;
                }
            }
            let (res, b) = listen.read(buf).await;
            buf = b;
            res?;
        }
    }
}
