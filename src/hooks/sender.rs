//! The webhook sender: one thread per node that takes batches off the queue and
//! POSTs them in order, retrying a batch (same number) with backoff and full jitter
//! until the app acknowledges it, drops it with a 4xx, or the node stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use super::client::{Client, Outcome};
use super::{Hooks, event};
use crate::metrics::histogram::now_ns;

/// Start the sender thread.
pub fn start(hooks: Arc<Hooks>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringway-hooks".into())
        .spawn(move || run(&hooks))
}

/// How long a stopping node keeps trying to deliver what is queued.
const FLUSH_FOR: Duration = Duration::from_secs(5);

fn run(h: &Hooks) {
    let cfg = &h.cfg;
    let client = Client::new(
        &cfg.url,
        &cfg.secret,
        &h.node,
        Duration::from_millis(cfg.timeout_ms),
    );
    let linger = cfg.batch_ms.saturating_mul(1_000_000);
    let mut batch_no = 0u64;
    let mut warned: Option<Instant> = None;
    let mut stop_by: Option<Instant> = None;
    loop {
        let events = {
            let mut q = h.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let stopping = h.stopping.load(Ordering::Acquire);
                if stopping {
                    stop_by.get_or_insert_with(|| Instant::now() + FLUSH_FOR);
                }
                if stopping && stop_by.is_some_and(|t| Instant::now() >= t) {
                    // Out of time: what is left is dropped, counted.
                    let left = q.len() as u64;
                    if left > 0 {
                        q.take(usize::MAX);
                        h.stats.abandoned.fetch_add(left, Ordering::Relaxed);
                        warn!(
                            "hooks: the node stops; {left} events could not be delivered in time and are dropped"
                        );
                    }
                    return;
                }
                let now = now_ns();
                let wait = if stopping { 0 } else { linger };
                if q.ready(cfg.batch_events, wait, now) {
                    break q.take(cfg.batch_events);
                }
                if stopping {
                    return; // and empty
                }
                let sleep = q
                    .due(linger)
                    .map_or(Duration::from_secs(1), |due| {
                        Duration::from_nanos(due.saturating_sub(now))
                    })
                    .max(Duration::from_millis(1));
                q = h
                    .wake
                    .wait_timeout(q, sleep)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        batch_no += 1;
        let jsons: Vec<String> = events.iter().map(|e| e.json.clone()).collect();
        let body = event::batch_body(&h.node, h.boot, batch_no, &jsons);
        let headers = [("X-Ringway-Batch", format!("{}-{batch_no}", h.boot))];
        let mut attempt: u32 = 0;
        loop {
            match client.post(&body, &headers) {
                Outcome::Ok(_) => {
                    let now = now_ns();
                    let mut lat = h.latency.lock().unwrap_or_else(|p| p.into_inner());
                    for e in &events {
                        lat.record(now.saturating_sub(e.at_ns));
                    }
                    drop(lat);
                    h.stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                    h.stats
                        .delivered
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    break;
                }
                Outcome::Refused(status) => {
                    h.stats
                        .rejected
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    warn!(
                        "hooks: {} refused batch {batch_no} with HTTP {status}: its {} events are dropped (ringway_hooks_dropped_total{{reason=\"rejected\"}}); the app must answer 2xx to a batch it accepts",
                        client.url(),
                        events.len()
                    );
                    break;
                }
                Outcome::Retry(why) => {
                    h.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if h.stopping.load(Ordering::Acquire) {
                        stop_by.get_or_insert_with(|| Instant::now() + FLUSH_FOR);
                    }
                    if stop_by.is_some_and(|t| Instant::now() >= t) {
                        h.stats
                            .abandoned
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        warn!(
                            "hooks: the node stops and {} still fails ({why}): batch {batch_no} ({} events) is dropped",
                            client.url(),
                            events.len()
                        );
                        break;
                    }
                    let delay = backoff(cfg.retry_base_ms, cfg.retry_cap_ms, attempt);
                    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        let waiting = h.queue.lock().map_or(0, |q| q.len());
                        warn!(
                            "hooks: POST {} failed ({why}); retrying batch {batch_no} with backoff ({waiting} more events waiting, at most hooks.queue_events = {} are kept)",
                            client.url(),
                            cfg.queue_events
                        );
                        warned = Some(Instant::now());
                    }
                    pause(h, delay, stop_by);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

/// Sleep `delay`, or less when the node starts stopping (then the flush deadline
/// bounds it).
fn pause(h: &Hooks, delay: Duration, stop_by: Option<Instant>) {
    let end = Instant::now() + delay;
    let end = stop_by.map_or(end, |t| end.min(t));
    while Instant::now() < end {
        if h.stopping.load(Ordering::Acquire) && stop_by.is_none() {
            return; // the caller sets the flush deadline
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
}

/// Full jitter: random(0, min(cap, base * 2^attempt)) milliseconds.
pub fn backoff(base_ms: u64, cap_ms: u64, attempt: u32) -> Duration {
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(30)).min(cap_ms);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

impl Hooks {
    /// Stop: the sender delivers what is queued (no more lingering), for a few
    /// seconds at most, then returns.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        assert!((0..500).all(|_| backoff(100, 1000, 20) <= Duration::from_millis(1000)));
        assert!((0..500).any(|_| backoff(100, 1000, 20) > Duration::from_millis(800)));
        assert!((0..500).all(|_| backoff(100, 1000, 0) <= Duration::from_millis(100)));
    }
}
