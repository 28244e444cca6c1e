//! Readiness of open connections: one epoll instance per worker, and one task that
//! waits on it.
//!
//! An open connection has no task of its own. Its socket is registered (level-
//! triggered, for input) in the worker's epoll instance with its `ConnKey` as the
//! event's data; the worker's reactor task waits for that instance to be readable
//! (one io_uring POLL_ADD, or the fallback driver's epoll) and then takes the ready
//! sockets from it in batches, reading each through the same path the handshake
//! used (`driver::on_readable`). So an idle connection is its slab entry and its
//! timer-wheel entry, nothing more in user space: no task, no runtime handle for
//! its descriptor, no operation in flight. A socket readable for longer than one
//! read budget is reported again in the next batch (level-triggered), and under
//! io_uring the wait between batches lets the worker's other tasks run. (Under the
//! epoll fallback monoio answers a wait on a descriptor that is still readable
//! without yielding, so a client that keeps its socket full can hold the worker
//! there, as it could before the reactor.)
//!
//! A connection whose send buffer filled (a slow reader) asks the same instance for
//! output readiness as well until it drains (`EPOLL_CTL_MOD`), so waiting to write
//! costs no descriptor, task or operation either.
//!
//! The slab entry owns the descriptor from its registration on: when the connection ends the
//! reactor takes it out of the instance and closes it (`Reactor::release`).
//! Closing goes through here too: a connection in `Closing` stays registered, its
//! input is discarded until the peer's EOF, and the timer wheel aborts it (shut
//! down, which reads as EOF) `limits.close_timeout_ms` after the close started,
//! whatever the peer sends meanwhile. Only open connections come here: one the
//! handshake task ended (a refusal, a page) finishes its close in that task, under
//! its own timer.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tracing::error;

use super::driver::{Read, on_readable};
use super::worker::Worker;
use crate::conn::ConnKey;

/// Ready sockets taken per `epoll_wait` (each read for up to 16 × 64 KiB), before
/// the worker's other tasks get a turn.
const BATCH: usize = 64;

/// A worker's epoll instance for its open connections.
pub struct Reactor {
    epoll: Epoll,
    /// A runtime handle on a duplicate of the instance's descriptor, to wait for
    /// it to be readable (the handle closes what it holds when dropped).
    handle: monoio::net::TcpStream,
}

impl Reactor {
    /// A new, empty instance; inside the worker's runtime. Fails only when the
    /// process is out of descriptors or memory.
    pub fn new() -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let dup = epoll.0.try_clone()?;
        let handle = monoio::net::TcpStream::from_std(std::net::TcpStream::from(dup))?;
        Ok(Reactor { epoll, handle })
    }

    /// Watch `fd` (connection `key`'s socket, now owned by its slab entry) for input.
    pub fn register(&self, fd: RawFd, key: ConnKey) -> std::io::Result<()> {
        // SAFETY: `fd` is open: its connection's slab entry holds it until
        // `release`, which is the only place it is closed.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let event = EpollEvent::new(EpollFlags::EPOLLIN, key.pack());
        self.epoll.add(fd, event)?;
        Ok(())
    }

    /// Watch `fd` for `input` (not while its publisher is paused, see
    /// `runtime::backpressure`) and for `output` (while its send buffer is full).
    /// `ENOENT`: the reactor does not watch `fd`.
    pub fn interest(
        &self,
        fd: RawFd,
        key: ConnKey,
        input: bool,
        output: bool,
    ) -> Result<(), Errno> {
        // SAFETY: as in `register`.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut flags = EpollFlags::empty();
        if input {
            flags |= EpollFlags::EPOLLIN;
        }
        if output {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut event = EpollEvent::new(flags, key.pack());
        self.epoll.modify(fd, &mut event)
    }

    /// Stop watching `fd` and close it: its connection is gone from the slab.
    /// Removed before the close, so no event for it is reported after (an event for
    /// a descriptor number a new connection reuses would name the old key, which the
    /// slab's generation check rejects anyway).
    pub fn release(&self, fd: RawFd) {
        // SAFETY: as in `register`; the connection that held `fd` was just removed
        // and nothing else closes it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = self.epoll.delete(borrowed);
        let _ = nix::unistd::close(fd);
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("epoll", &self.epoll.0.as_raw_fd())
            .finish()
    }
}

/// The worker's reactor task: wait until some open connection is readable, read
/// every ready one, repeat.
pub async fn run(w: Rc<Worker>) {
    loop {
        if let Err(e) = serve_ready(&w) {
            error!(
                worker = w.id,
                "epoll_wait failed: {e}; the worker stops reading its connections"
            );
            return;
        }
        // With more ready than one batch the instance is still readable: under
        // io_uring the wait returns at the runtime's next turn, after the other
        // tasks had theirs.
        if w.reactor.handle.readable(false).await.is_err() {
            error!(
                worker = w.id,
                "waiting on epoll failed; the worker stops reading its connections"
            );
            return;
        }
    }
}

/// Read the connections that are ready now (up to [`BATCH`]), without waiting.
/// The reactor task calls this when the instance is readable; the flushing task
/// (`runtime::flush`) before each of its slices too, so that input is read every
/// slice, not only when the runtime next polls its driver (every few slices while
/// tasks are runnable).
pub(super) fn serve_ready(w: &Rc<Worker>) -> Result<(), Errno> {
    let mut events = [EpollEvent::empty(); BATCH];
    let n = loop {
        match w.reactor.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut wrote = false;
    for ev in &events[..n] {
        let key = ConnKey::unpack(ev.data());
        let ready = ev.events();
        if ready.contains(EpollFlags::EPOLLOUT) {
            w.writable_in_reactor(key);
            wrote = true;
        }
        if ready.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            serve(w, key);
        }
    }
    if wrote {
        w.flush_dirty();
    }
    Ok(())
}

/// Read a ready connection; release it when it ended.
fn serve(w: &Rc<Worker>, key: ConnKey) {
    let fd = match w.state.borrow_mut().conns.get_mut(key) {
        Some(conn) => conn.fd,
        None => return, // ended earlier in this batch
    };
    if on_readable(w, key) == Read::Eof {
        close(w, key, fd);
    }
}

/// Forget a registered connection and close its socket.
fn close(w: &Rc<Worker>, key: ConnKey, fd: RawFd) {
    w.state.borrow_mut().remove(key);
    w.reactor.release(fd);
}
