//! The workers: threads pinned to cores, each a monoio runtime that executes its
//! router's effects and drives its connections; their mailboxes, start-up probes,
//! listeners and drain. The node is assembled from them in `node`.
//!
//! ```text
//!  spawn_workers ── N threads ── pin to core i ── monoio runtime ─┬─ accept loop (clients)
//!                                                                 ├─ services (the API, from `node`)
//!                                                                 ├─ tick (heartbeat.tick_ms: wheel, router timers)
//!                                                                 └─ inbox (mail, peer messages, link events, control)
//! ```
//!
//! | module        | job |
//! |---------------|-----|
//! | `worker`      | the worker: its state, the executor of the router's effects |
//! | `flush`       | writing queued frames out, waiting for writability |
//! | `conns`       | the slab, the wheel, queueing under the slow-consumer policies, how a connection ends |
//! | `driver`      | the connection task: read, frame, hand to `requests` (I/O only) |
//! | `reactor`     | one epoll instance per worker for its open connections, one task waiting on it |
//! | `backpressure` | publishers of a room whose fan-out is behind are not read for a while |
//! | `requests`    | what a connection's upgrade, events and requests amount to |
//! | `admission`   | the caps at accept and upgrade, identity, what a connection gives back |
//! | `lifecycle`   | deadlines on the wheel, the unfinished-message budget, drain |
//! | `mailbox`     | inboxes with a doorbell |
//! | `outbox`      | what leaves the worker's thread (mail, peer messages, answers, events), held while the journal syncs |
//! | `router`      | where the mesh's messages go (the mesh's sink) |
//! | `listener`    | one shared listening socket per address |
//! | `store`       | `rooms.data_dir`: read back at start, each worker's journal of what its router stamps |
//! | `probe`, `signals` | start-up probes; SIGTERM/SIGINT |

pub mod admission;
pub mod authorize;
pub mod backpressure;
pub mod compress;
pub mod conns;
pub mod driver;
pub mod flush;
pub mod identify;
pub mod lifecycle;
pub mod listener;
pub mod mailbox;
pub mod outbox;
pub mod probe;
pub mod reactor;
pub mod requests;
pub mod router;
pub mod signals;
pub mod store;
pub mod worker;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use tracing::{error, warn};

use mailbox::Inbox;
use probe::Driver;
use worker::{Shared, Worker};

/// Something to start on a worker's runtime once it runs (the API's accept loop).
pub type Service = Box<dyn FnOnce(&Rc<Worker>) -> Result<(), String> + Send>;

/// Start one worker thread per inbox, each accepting clients on its handle of the
/// shared listener and running its `services`; returns once every worker runs.
pub fn spawn_workers(
    shared: &Arc<Shared>,
    inboxes: Vec<Inbox>,
    listeners: Vec<std::net::TcpListener>,
    services: Vec<Service>,
    driver: Driver,
) -> Result<Vec<JoinHandle<()>>, (usize, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(inboxes.len());
    let parts = inboxes.into_iter().zip(listeners).zip(services);
    for (id, ((inbox, ws), service)) in parts.enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let pin = shared.config.pin_workers.then_some(id % cores);
        let t = std::thread::Builder::new()
            .name(format!("ringway-w{id}"))
            .spawn(move || {
                let start = Start {
                    id,
                    shared,
                    inbox,
                    ws,
                    service,
                    driver,
                };
                worker_thread(start, pin, ready);
            })
            .map_err(|e| (id, e.to_string()))?;
        threads.push(t);
    }
    drop(ready_tx);
    for id in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err((id, message)),
            Err(_) => return Err((id, "worker thread exited during start-up".into())),
        }
    }
    Ok(threads)
}

/// What a worker thread starts with.
struct Start {
    id: usize,
    shared: Arc<Shared>,
    inbox: Inbox,
    ws: std::net::TcpListener,
    service: Service,
    driver: Driver,
}

fn worker_thread(
    start: Start,
    pin: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let Start {
        id,
        shared,
        inbox,
        ws,
        service,
        driver,
    } = start;
    if let Some(core) = pin {
        pin_to(core);
    }
    let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build();
    let mut rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot build the {driver:?} runtime: {e}. If io_uring setup fails with \
                 ENOMEM, raise `ulimit -l` (memlock) or use a kernel >= 5.12"
            )));
            return;
        }
    };
    rt.block_on(async move {
        let reactor = match reactor::Reactor::new() {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "cannot create an epoll instance for worker {id}: {e}; \
                     raise the open-file limit (LimitNOFILE / ulimit -n)"
                )));
                return;
            }
        };
        let w = Rc::new(Worker::new(id, shared, reactor));
        let ws = match TcpListener::from_std(ws) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot register the listener: {e}")));
                return;
            }
        };
        w.listener_fd
            .set(Some(std::os::fd::AsRawFd::as_raw_fd(&ws)));
        let ws = Rc::new(ws);
        let warned = Rc::new(Cell::new(None));
        // monoio's epoll driver keeps one waker per descriptor and direction: a
        // second accept waiting on the listener would never be woken.
        let accepts = match driver {
            Driver::IoUring => ACCEPTS_IN_FLIGHT,
            Driver::Legacy => 1,
        };
        for _ in 0..accepts {
            monoio::spawn(accept_loop(w.clone(), ws.clone(), warned.clone()));
        }
        if let Err(e) = service(&w) {
            let _ = ready.send(Err(e));
            return;
        }
        monoio::spawn(tick_loop(w.clone()));
        monoio::spawn(reactor::run(w.clone()));
        let _ = ready.send(Ok(()));
        let (w1, w2, w3) = (w.clone(), w.clone(), w.clone());
        if let Err(e) = inbox
            .run(
                move |letter| w1.handle_letter(letter),
                move || w2.flush_dirty(),
                move || w3.flush_between(),
            )
            .await
        {
            error!(worker = id, "inbox failed: {e}; the worker stops");
        }
        // Whatever is still in line leaves before the runtime (and the flushing
        // task with it) is dropped.
        w.flush_all();
        if let Some(j) = &mut w.state.borrow_mut().journal {
            let ok = j.close();
            if let Some(store) = &w.shared.store {
                store.journal_closed(ok);
            }
        }
    });
}

fn pin_to(core: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    if set.set(core).is_ok()
        && let Err(e) = sched_setaffinity(Pid::from_raw(0), &set)
    {
        warn!("cannot pin worker to core {core}: {e}; it will float");
    }
}

/// Accepts each worker keeps pending on the client listener. With one, a worker
/// takes at most one connection per turn of its event loop (the next accept is
/// submitted only after the last one completed); with several, a burst of
/// connections completes several accepts that the worker reaps in one
/// `io_uring_enter`. Measured with `ringway bench connect` (15,000 upgrades,
/// alternating runs): 1 -> 4 lowered the server's CPU per upgrade by about 2 us
/// (median of 7) and raised handshakes per second by about a tenth; 16 was no
/// better than 4. The kernel wakes one pending accept per connection (io_uring
/// polls accept exclusively), so the workers still share the queue by who is free.
const ACCEPTS_IN_FLIGHT: usize = 4;

/// One of a worker's pending accepts (see [`ACCEPTS_IN_FLIGHT`]); `warned` is when
/// any of them last warned of a failed accept.
async fn accept_loop(w: Rc<Worker>, listener: Rc<TcpListener>, warned: Rc<Cell<Option<Instant>>>) {
    // Clients wait in the listen backlog while the node joins its cluster.
    w.shared.joined().await;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(driver::run(w.clone(), stream, peer));
            }
            Err(_) if w.shared.draining() => return,
            Err(e) => {
                // EMFILE/ENFILE: out of descriptors. Say so (at most once a second) and
                // back off instead of spinning on the accept queue.
                if warned
                    .get()
                    .is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(1))
                {
                    warn!(
                        worker = w.id,
                        "accept failed: {e}. If this is 'Too many open files', raise the \
                         open-file limit (LimitNOFILE / ulimit -n) or lower the connection target"
                    );
                    warned.set(Some(Instant::now()));
                }
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn tick_loop(w: Rc<Worker>) {
    let period = Duration::from_millis(w.shared.config.heartbeat.tick_ms);
    loop {
        monoio::time::sleep(period).await;
        w.tick(Instant::now());
    }
}
