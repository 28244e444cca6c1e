//! Writing out: every connection's queued frames leave in one vectored `sendmsg`
//! each; a socket whose send buffer is full waits for writability in the reactor
//! (or, for a connection the reactor does not watch, on a duplicate of its
//! descriptor).
//!
//! Connections with output wait in a line (`Conns::dirty`, oldest first), and a
//! flush writes out at most [`SLICE`] of them; what is left is written by a task
//! that takes a slice per turn of the runtime, so input is read between slices.
//! A fan-out to many subscribers is one pass along the line that new work joins
//! at the back: a message that arrives during the pass reaches the subscribers
//! still ahead in this pass, and the others in the next (each connection's own
//! frames stay in order, in its queue). Writing a whole line before reading again
//! made every message that arrived during a pass wait for its end: with 5,000
//! subscribers on two loaded cores a pass takes tens of milliseconds, and the
//! median fan-out latency at 0.5 M deliveries/s (one worker) was 56-84 ms against
//! 23-49 ms now, at the same CPU per delivery (`ringway bench fanout`, see the
//! README). A slice is also as long as a big fan-out keeps other connections (a
//! ping, a publish) from being read.

use std::rc::Rc;

use nix::errno::Errno;

use super::backpressure;
use super::conns::abort;
use super::worker::Worker;
use crate::conn::outq::Flushed;
use crate::conn::{ConnKey, WriteWait};
use crate::metrics::histogram::now_ns;

/// Connections written per flush before input gets a turn (a few hundred
/// microseconds to a couple of milliseconds of `sendmsg`s).
const SLICE: usize = 128;

impl Worker {
    /// Write the queued frames of the next [`SLICE`] connections in line (one
    /// vectored `sendmsg` each), and leave the rest to the flushing task. Called
    /// after every batch of work.
    pub fn flush_dirty(self: &Rc<Self>) {
        if self.flush_slice() {
            self.flush_later();
        }
    }

    /// Write every connection in line now, however long that takes (the worker
    /// is stopping).
    pub fn flush_all(self: &Rc<Self>) {
        while self.flush_slice() {}
    }

    /// One slice of the line; returns whether connections are still waiting.
    fn flush_slice(self: &Rc<Self>) -> bool {
        let mut st = self.state.borrow_mut();
        // What this worker received as a standby in this batch, acknowledged once.
        if st.hub.acks_owed() > 0 {
            st.hub.flush_acks();
            st.run_hub();
        }
        // Nothing stamped leaves before it is on disk (`rooms.fsync = "always"`).
        st.commit();
        let now_ms = st.now_ms();
        let conns = &mut st.conns;
        let mut now = now_ns();
        for i in 0..SLICE {
            let Some(key) = conns.dirty.pop_front() else {
                break;
            };
            // A slice of many writes takes a while: re-read the clock now and then
            // so the latency histogram sees when each frame really left.
            if i % 64 == 63 {
                now = now_ns();
            }
            let Some(conn) = conns.slab.get_mut(key.slot as usize) else {
                continue;
            };
            if conn.generation != key.generation {
                continue;
            }
            conn.dirty = false;
            if conn.write_wait != WriteWait::No {
                continue;
            }
            let (n, res) = conn.flush(now, &mut conns.stats.publish_to_write);
            conns.stats.bytes_out += n as u64;
            if n > 0 {
                // It reads (see `runtime::backpressure`).
                conn.drained = backpressure::drained_units(now_ms);
            }
            match res {
                Flushed::All => {
                    if conn.shutdown_after_flush {
                        conn.shutdown_after_flush = false;
                        let _ =
                            nix::sys::socket::shutdown(conn.fd, nix::sys::socket::Shutdown::Write);
                    }
                }
                Flushed::Blocked => match self.reactor.interest(conn.fd, key, !conn.paused, true) {
                    Ok(()) => conn.write_wait = WriteWait::Reactor,
                    // Not in the reactor (still upgrading, or a task of its own).
                    Err(Errno::ENOENT) => match writability_handle(conn.fd) {
                        Ok(stream) => {
                            conn.write_wait = WriteWait::Task;
                            let w = self.clone();
                            monoio::spawn(async move {
                                let _ = stream.writable(false).await;
                                w.on_writable(key);
                            });
                        }
                        Err(_) => abort(conn), // out of descriptors: as a broken socket
                    },
                    Err(_) => abort(conn), // out of kernel memory: as a broken socket
                },
                Flushed::Failed => abort(conn), // the peer is gone: wake the read task
            }
        }
        let more = !conns.dirty.is_empty();
        if st.pacer_wanted() {
            drop(st);
            self.pace();
        }
        more
    }

    /// Make sure the flushing task runs: a slice per turn of the runtime until
    /// the line is empty.
    fn flush_later(self: &Rc<Self>) {
        if !self.flushing.replace(true) {
            self.flush_next_turn();
        }
    }

    /// A task for the next slice, spawned anew each time: a new task joins the
    /// back of monoio's run queue, behind the tasks already woken (the reactor,
    /// the inbox, the API, timers). A task that woke itself would go to the front
    /// and run again before any of them (monoio 0.2.4 `Schedule::yield_now`),
    /// so the worker would read nothing until the line was empty.
    fn flush_next_turn(self: &Rc<Self>) {
        let w = self.clone();
        monoio::spawn(async move {
            // Input first: what arrived since the last slice joins this pass.
            let _ = super::reactor::serve_ready(&w);
            // Checked and cleared with no await between: whoever queues work
            // after this either sees the task coming or starts a new one.
            if w.flush_slice() {
                w.flush_next_turn();
            } else {
                w.flushing.set(false);
            }
        });
    }

    /// A flush in the middle of a batch (a burst read, many letters), so that its
    /// frames do not pile up in every subscriber's queue; skipped while the journal
    /// waits for a sync (`rooms.fsync = "always"`), whose group commit the end of
    /// the batch makes once.
    pub fn flush_between(self: &Rc<Self>) {
        if self
            .state
            .borrow()
            .journal
            .as_ref()
            .is_some_and(|j| j.unsynced())
        {
            return;
        }
        self.flush_dirty();
    }

    /// A write-blocked connection's task saw its socket writable: flush again.
    fn on_writable(self: &Rc<Self>, key: ConnKey) {
        {
            let mut st = self.state.borrow_mut();
            let Some(conn) = st.conns.get_mut(key) else {
                return;
            };
            conn.write_wait = WriteWait::No;
            st.conns.mark_dirty(key);
        }
        self.flush_dirty();
    }

    /// The reactor saw a write-blocked connection's socket writable: stop asking
    /// for output readiness and queue it for the next flush (the caller flushes).
    pub(super) fn writable_in_reactor(&self, key: ConnKey) {
        let mut st = self.state.borrow_mut();
        let Some(conn) = st.conns.get_mut(key) else {
            return;
        };
        if conn.write_wait != WriteWait::Reactor {
            return;
        }
        conn.write_wait = WriteWait::No;
        if let Err(e) = self.reactor.interest(conn.fd, key, !conn.paused, false) {
            // Still registered for output it reports writability again, and this
            // does nothing more then: harmless but for the wake-ups.
            tracing::debug!("cannot stop watching a socket for output: {e}");
        }
        st.conns.mark_dirty(key);
    }
}

/// A second handle on a connection's socket, to wait for writability while the
/// task reading it keeps the first. Used only while the send buffer of a socket the
/// reactor does not watch is full (an upgrade's answer a client does not read), so
/// it costs a descriptor only then.
fn writability_handle(fd: std::os::fd::RawFd) -> std::io::Result<monoio::net::TcpStream> {
    use std::os::fd::{BorrowedFd, OwnedFd};
    // SAFETY: `fd` is open: it belongs to a connection still in the slab, and its
    // owner (the reactor, or the task holding the stream) closes it only after
    // removing the entry.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup: OwnedFd = borrowed.try_clone_to_owned()?;
    monoio::net::TcpStream::from_std(std::net::TcpStream::from(dup))
}
