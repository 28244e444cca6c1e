//! The progress line: once a second, on stderr (stdout stays clean for `--json`),
//! what the running scenario has done so far.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters a scenario bumps; the printer reads them. One scenario runs per process,
/// so they are process-wide.
pub struct Progress {
    counts: [AtomicU64; 3],
    stop: AtomicBool,
}

/// The process's progress counters.
pub static PROGRESS: Progress = Progress {
    counts: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    stop: AtomicBool::new(false),
};

impl Progress {
    /// Add `n` to counter `i`.
    pub fn add(&self, i: usize, n: u64) {
        if n > 0 {
            self.counts[i].fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Print a progress line every second until the returned guard is dropped. `labels`
/// name the three counters ("" hides one).
pub fn start(prefix: String, labels: [&'static str; 3]) -> Guard {
    PROGRESS.stop.store(false, Ordering::Relaxed);
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let mut last = [0u64; 3];
        while !PROGRESS.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let now: Vec<u64> = PROGRESS
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let mut line = format!("{prefix}[{:>4.0}s]", started.elapsed().as_secs_f64());
            for (i, label) in labels.iter().enumerate() {
                if !label.is_empty() {
                    line.push_str(&format!("  {label} {} (+{}/s)", now[i], now[i] - last[i]));
                }
            }
            eprintln!("{line}");
            last.copy_from_slice(&now);
        }
    });
    Guard(Some(handle))
}

/// Stops the progress line when dropped.
pub struct Guard(Option<std::thread::JoinHandle<()>>);

impl Drop for Guard {
    fn drop(&mut self) {
        PROGRESS.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}
