//! Holding connections as a browser would: each held connection waits in a task of
//! its own until the server sends something, answers a ping at once, and waits
//! again. An idle connection costs nothing between the server's pings (no timer, no
//! read buffer, no look every second), so one process can hold its ~19,000 sockets
//! and still answer however short the server's ping interval and idle timeout.
//!
//! Connections are held from the moment they open: a run that opens slowly (`bench
//! idle --rate`) keeps its first connections past the server's idle timeout.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;
use monoio::task::JoinHandle;

use super::wsclient::Held;

thread_local! {
    /// Where held connections read what the server sent; one per thread, since
    /// reading and answering never waits.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 16 << 10]);
}

/// The connections one load-generator thread holds (on its monoio runtime).
#[derive(Default)]
pub struct Holders {
    /// Per held connection: dropping the sender lets it go; the handle says when
    /// it has.
    held: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// How many of them the server closed (or that failed).
    closed: Rc<Cell<usize>>,
}

impl Holders {
    /// Hold `conn` until [`Holders::let_go`], answering the server's pings.
    pub fn hold(&mut self, conn: Held) {
        let (tx, rx) = oneshot::channel();
        let task = monoio::spawn(hold_one(conn, rx, self.closed.clone()));
        self.held.push((tx, task));
    }

    /// Held connections the server has closed so far.
    pub fn closed(&self) -> usize {
        self.closed.get()
    }

    /// Close every connection still held; returns once all are closed.
    pub async fn let_go(self) {
        let (releases, tasks): (Vec<_>, Vec<_>) = self.held.into_iter().unzip();
        drop(releases);
        for task in tasks {
            task.await;
        }
    }
}

/// Wait for the server or for the release, whichever comes first; answer what the
/// server sent. Cancel-safe at its one `.await`: a poll withdrawn consumes nothing,
/// and the release is borrowed, not consumed.
async fn hold_one(mut conn: Held, mut release: oneshot::Receiver<()>, closed: Rc<Cell<usize>>) {
    loop {
        let woke = monoio::select! {
            _ = &mut release => return, // dropping `conn` closes the socket
            r = conn.readable() => r.is_ok(),
        };
        if !woke || !SCRATCH.with_borrow_mut(|s| conn.keep_alive(s)) {
            closed.set(closed.get() + 1);
            return;
        }
    }
}
