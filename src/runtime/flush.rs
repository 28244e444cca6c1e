//! Writing out: every connection's queued frames leave in one vectored `sendmsg`
//! each, once per batch of work (and in the middle of a long one); a socket whose
//! send buffer is full waits for writability in the reactor (or, for a connection
//! the reactor does not watch, on a duplicate of its descriptor).

use std::rc::Rc;

use nix::errno::Errno;

use super::backpressure;
use super::conns::abort;
use super::worker::Worker;
use crate::conn::outq::Flushed;
use crate::conn::{ConnKey, WriteWait};
use crate::metrics::histogram::now_ns;

impl Worker {
    /// Write every connection's queued frames (one vectored `sendmsg` each). Called
    /// once per batch of work, so frames queued by one batch leave together.
    pub fn flush_dirty(self: &Rc<Self>) {
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
        let mut dirty = std::mem::take(&mut conns.dirty);
        let mut now = now_ns();
        for (i, key) in dirty.drain(..).enumerate() {
            // A batch of many writes takes a while: re-read the clock now and then
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
        // Keep the allocation for the next round.
        conns.dirty = dirty;
        if st.pacer_wanted() {
            drop(st);
            self.pace();
        }
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
