//! What the node tells the app and asks it, over HTTP: webhooks (events in signed
//! batches), the authorization callback and the connect callback.
//!
//! None of it runs on a worker. Workers hand events to [`Hooks::event`], which only
//! formats them and queues them (a lock held for a push); one sender thread per node
//! batches and POSTs them, retries with backoff and jitter, and keeps order. The
//! callbacks run on a small pool of threads of their own (`authorize`, `connect`);
//! a worker asks and goes on serving while the answer comes back through its
//! mailbox.
//!
//! | module      | job |
//! |-------------|-----|
//! | [`event`]   | sans-IO: the events and the batch body |
//! | [`queue`]   | sans-IO: the bounded queue (drop oldest) and when a batch goes |
//! | [`sign`]    | sans-IO: the request signature, with a test vector |
//! | [`client`]  | the HTTP client every call goes through (ureq, signed, timed out) |
//! | [`sender`]  | the thread that delivers webhook batches |
//! | [`authorize`] | the authorization callback: the workers' cache (sans-IO), the call |
//! | [`connect`] | the connect callback: who an upgrade without a token is |
//! | [`pool`]    | the threads that make the callbacks' calls, behind a bounded queue |

pub mod authorize;
pub mod client;
pub mod connect;
pub mod event;
pub mod pool;
pub mod queue;
pub mod sender;
pub mod sign;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::config;
use crate::metrics::histogram::{Histogram, now_ns};
pub use event::Event;
use queue::Queue;

/// Counters of the webhook sender.
#[derive(Debug, Default)]
pub struct HookStats {
    /// Events queued.
    pub queued: AtomicU64,
    /// Events the app acknowledged (2xx).
    pub delivered: AtomicU64,
    /// Requests answered 2xx.
    pub requests_ok: AtomicU64,
    /// Requests that failed and were retried.
    pub retries: AtomicU64,
    /// Events dropped because the app refused their request (4xx other than 408,
    /// 429).
    pub rejected: AtomicU64,
    /// Events dropped because the node stopped before the app took them.
    pub abandoned: AtomicU64,
}

/// The node's webhooks: the queue workers fill and the sender thread empties.
#[derive(Debug)]
pub struct Hooks {
    cfg: config::Hooks,
    node: String,
    /// When the node started (Unix ms): batch numbers count from 1 again in each
    /// run, so (node, boot, batch) names a batch.
    boot: u64,
    /// Bit `i`: event kind `event::KINDS[i]` is sent.
    kinds: u8,
    queue: Mutex<Queue>,
    wake: Condvar,
    stopping: AtomicBool,
    /// Counters.
    pub stats: HookStats,
    /// Time from an event being queued to the app acknowledging its batch.
    latency: Mutex<Histogram>,
}

impl Hooks {
    /// The webhooks `cfg` describes for node `node`; `None` without a URL.
    pub fn new(cfg: &config::Hooks, node: &str) -> Option<Arc<Self>> {
        if cfg.url.is_empty() {
            return None;
        }
        let kinds = event::KINDS
            .iter()
            .enumerate()
            .filter(|(_, k)| cfg.events.iter().any(|e| e == *k))
            .fold(0u8, |m, (i, _)| m | (1 << i));
        Some(Arc::new(Self {
            cfg: cfg.clone(),
            node: node.to_owned(),
            boot: unix_ms(),
            kinds,
            queue: Mutex::new(Queue::new(cfg.queue_events)),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            stats: HookStats::default(),
            latency: Mutex::new(Histogram::default()),
        }))
    }

    /// Whether events of this kind are sent.
    pub fn wants(&self, kind: &str) -> bool {
        event::KINDS
            .iter()
            .position(|k| *k == kind)
            .is_some_and(|i| self.kinds & (1 << i) != 0)
    }

    /// Queue an event (a no-op for kinds not sent). Never blocks on the app.
    pub fn event(&self, e: &Event<'_>) {
        if !self.wants(e.kind()) {
            return;
        }
        let json = e.json(unix_ms(), &self.node);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = q.is_empty();
        q.push(json, now_ns());
        let full = q.len() >= self.cfg.batch_events;
        drop(q);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if was_empty || full {
            self.wake.notify_one();
        }
    }

    /// Prometheus text for the webhooks.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let (waiting, dropped) = {
            let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            (q.len(), q.dropped)
        };
        let counters = [
            (
                "ringway_hooks_events_total",
                "Webhook events queued.",
                s.queued.load(Ordering::Relaxed),
            ),
            (
                "ringway_hooks_delivered_total",
                "Webhook events the app acknowledged (2xx).",
                s.delivered.load(Ordering::Relaxed),
            ),
            (
                "ringway_hooks_requests_total",
                "Webhook requests the app acknowledged.",
                s.requests_ok.load(Ordering::Relaxed),
            ),
            (
                "ringway_hooks_retries_total",
                "Webhook requests that failed (timeout, connection, 408, 429, 5xx) and were sent again after a backoff.",
                s.retries.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let name = "ringway_hooks_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook events dropped: the oldest over hooks.queue_events while the app did not answer (overflow), in a request the app refused with a 4xx (rejected), or still undelivered 5 s into a stop (shutdown).\n# TYPE {name} counter\n{name}{{reason=\"overflow\"}} {dropped}\n{name}{{reason=\"rejected\"}} {}\n{name}{{reason=\"shutdown\"}} {}",
            s.rejected.load(Ordering::Relaxed),
            s.abandoned.load(Ordering::Relaxed)
        );
        let name = "ringway_hooks_queue_events";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook events waiting to be sent (bounded by hooks.queue_events).\n# TYPE {name} gauge\n{name} {waiting}"
        );
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(
                out,
                "ringway_hooks_delivery_seconds",
                "From a webhook event being queued to the app acknowledging its batch.",
            );
    }
}

/// Whether any pattern (`name` or `prefix*`) covers `room`.
pub fn matches_any(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| crate::auth::matches(p, room))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
