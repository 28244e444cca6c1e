//! Start-up probes of the host: io_uring and the open-file limit. Each finding is
//! logged with what to do about it.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tracing::{info, warn};

/// Which I/O driver the workers will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring (the intended driver).
    IoUring,
    /// epoll, monoio's legacy driver (fallback).
    Legacy,
}

/// Probe io_uring once; warn with the fix when it is missing.
pub fn io_driver() -> Driver {
    if monoio::utils::detect_uring() {
        info!("io_uring available: workers use the io_uring driver");
        Driver::IoUring
    } else {
        warn!(
            "io_uring is unavailable (kernel older than 5.6, kernel.io_uring_disabled=1 or 2, \
             or a seccomp profile that blocks io_uring_setup): falling back to epoll, which \
             costs more syscalls per message. Fix: run on Linux >= 5.10 with \
             `sysctl -w kernel.io_uring_disabled=0`, and allow io_uring_* syscalls in the \
             container's seccomp profile"
        );
        Driver::Legacy
    }
}

/// The open-file limits after start-up.
#[derive(Debug, Clone, Copy)]
pub struct FdLimits {
    /// Soft limit before we raised it.
    pub soft_before: u64,
    /// Soft limit now (raised to the hard limit).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raise the open-file soft limit to the hard limit and log both.
pub fn raise_nofile() -> FdLimits {
    let (soft_before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot read RLIMIT_NOFILE ({e}); the connection capacity is unknown");
            return FdLimits {
                soft_before: 0,
                soft: 0,
                hard: 0,
            };
        }
    };
    let mut soft = soft_before;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft = hard,
            Err(e) => {
                warn!("cannot raise the open-file soft limit from {soft_before} to {hard}: {e}")
            }
        }
    }
    info!(
        soft_before,
        soft,
        hard,
        "open-file limit: about {} connections fit (one fd each, a few held back)",
        soft.saturating_sub(64)
    );
    FdLimits {
        soft_before,
        soft,
        hard,
    }
}
