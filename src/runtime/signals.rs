//! SIGTERM and SIGINT, handled on a thread of their own with `sigwait` (no async
//! signal handler, no self-pipe): the first signal stops the node, a second one exits
//! at once.
//!
//! [`block_terminate`] must run before any worker thread is spawned, so that every
//! thread inherits the blocked mask and only the waiting thread receives them.

use nix::sys::signal::{SigSet, Signal};
use tracing::warn;

/// SIGTERM and SIGINT, blocked in the calling thread (and so in threads it spawns).
#[derive(Debug)]
pub struct Terminate {
    set: SigSet,
}

/// Block SIGTERM and SIGINT. Call first thing in `main`.
pub fn block_terminate() -> std::io::Result<Terminate> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(std::io::Error::from)?;
    Ok(Terminate { set })
}

impl Terminate {
    /// Wait for the signals on a new thread: the first calls `stop`, a second exits
    /// the process with status 130.
    pub fn on_signal(self, stop: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("ringway-signals".into())
            .spawn(move || {
                if let Ok(sig) = self.set.wait() {
                    warn!("{sig:?} received: stopping (send it again to exit at once)");
                    stop();
                }
                if let Ok(sig) = self.set.wait() {
                    warn!("second {sig:?}: exiting now");
                    std::process::exit(130);
                }
            })?;
        Ok(())
    }
}
