//! Workers and their start-up: probes, listeners, threads pinned to cores, and the
//! handle that stops them.
//!
//! ```text
//!  Server::start ─┬─ probe io_uring, raise RLIMIT_NOFILE
//!                 ├─ bind N SO_REUSEPORT listeners for clients, N for the API
//!                 └─ spawn N threads ── pin to core i ── monoio runtime ─┬─ accept loop (clients)
//!                                                                         ├─ accept loop (API)
//!                                                                         ├─ tick (heartbeat.tick_ms: wheel, rooms)
//!                                                                         └─ inbox (mail from other workers)
//! ```

pub mod cluster;
pub mod lifecycle;
pub mod listener;
pub mod mailbox;
pub mod probe;
pub mod rooms;
pub mod signals;
pub mod wheel;
pub mod worker;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::ws::handshake::HandshakeConfig;
use mailbox::{Inbox, Mail};
use probe::Driver;
use worker::{Shared, Worker};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (the message names the address and the fix).
    #[error("{0}")]
    Listen(std::io::Error),
    /// A worker could not start its runtime.
    #[error("worker {worker} failed to start: {message}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What failed.
        message: String,
    },
}

/// A running node. Dropping it leaves the workers running; call
/// [`Server::shutdown`] to stop them.
#[derive(Debug)]
pub struct Server {
    ws_addr: SocketAddr,
    api_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Start a node: bind, spawn the workers, and return once all are running.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let workers = config.worker_count();
        let driver = probe::io_driver();
        let limits = probe::raise_nofile();
        // Held back from the fd limit, so clients can never starve them: the node's
        // own (listeners, mailboxes, rings, files), every API connection it allows,
        // and the mesh (two per peer plus pending hellos).
        let peers = config
            .mesh
            .peer_list(&config.node_id)
            .map_or(0, |l| l.others.len());
        let reserved =
            64 + config.api.max_connections + 2 * peers + crate::mesh::link::MAX_PENDING_HELLOS;
        let fd_room = (limits.soft as usize).saturating_sub(reserved);
        let max_connections = match config.limits.max_connections {
            0 => fd_room,
            n if n > fd_room => {
                warn!(
                    "limits.max_connections = {n} does not fit the open-file limit ({}): the cap \
                     is lowered to {fd_room}. Raise the limit (LimitNOFILE= in the systemd unit, \
                     nofile in /etc/security/limits.d, or `ulimit -n`) to at least {}",
                    limits.soft,
                    n + reserved
                );
                fd_room
            }
            n => n,
        };
        info!(
            "up to {max_connections} client connections (limits.max_connections{}); \
             {reserved} descriptors held back for listeners, the API and the mesh",
            if config.limits.max_connections == 0 {
                " = 0: the open-file limit less the reserve"
            } else {
                ""
            }
        );
        if config.auth.api_key.is_empty() {
            info!(
                "the HTTP API has no key (auth.api_key): it may only listen on loopback ({}); set --api-key to expose it",
                config.api_listen
            );
        }
        if config.demo {
            info!(
                "demo page on the client listener at / (guest tokens for demo:* rooms); turn it off with --no-demo or demo = false"
            );
        }
        if config.allow_anonymous {
            warn!(
                "anonymous clients are allowed (allow_anonymous = true): anyone who can reach the listener can subscribe and publish"
            );
        }
        let backlog = config.limits.listen_backlog;
        let ws = listener::bind_shared(config.listen, workers, backlog, driver)
            .map_err(StartError::Listen)?;
        let api = listener::bind_shared(config.api_listen, workers, backlog, driver)
            .map_err(StartError::Listen)?;
        let ws_addr = ws[0].local_addr().map_err(StartError::Listen)?;
        let api_addr = api[0].local_addr().map_err(StartError::Listen)?;

        let mut mailboxes = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (m, i) = mailbox::channel().map_err(|e| StartError::Worker {
                worker: 0,
                message: format!("cannot create a mailbox: {e}"),
            })?;
            mailboxes.push(m);
            inboxes.push(i);
        }
        let handshake = HandshakeConfig {
            ws_path: config.ws_path.clone(),
            echo: config.echo,
            max_bytes: config.limits.max_handshake_bytes,
        };
        let mesh = crate::mesh::Mesh::from_config(&config)?.map(Arc::new);
        let mesh_listener = match (&mesh, config.mesh.listen_addr(&config.node_id)) {
            (Some(_), Some(addr)) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| StartError::Listen(listener::bind_error(addr, e)))?,
            ),
            _ => None,
        };
        let verifier = match (
            &config.auth.token_public_key,
            config.auth.token_secret.as_str(),
        ) {
            (Some(path), _) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read auth.token_public_key {}: {e}",
                        path.display()
                    ))
                })?;
                Some(crate::auth::Verifier::public_pem(&pem).map_err(|e| {
                    ConfigError::Invalid(format!("auth.token_public_key {}: {e}", path.display()))
                })?)
            }
            (None, "") => None,
            (None, secret) => Some(crate::auth::Verifier::hs256(secret.as_bytes())),
        };
        // Demo guest tokens have their own key, never the production secret, and are
        // accepted only where the demo is on (see `auth::Demo`).
        let demo = (config.demo && config.allow_anonymous)
            .then(|| crate::auth::Demo::new(crate::auth::Demo::key_for(&config.mesh.secret)));
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(crate::conn::tls::server_config(cert, key).map_err(ConfigError::Invalid)?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            config,
            handshake,
            mailboxes,
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            max_connections,
            per_ip: Mutex::new(std::collections::HashMap::new()),
            mesh,
            verifier,
            per_user: Mutex::new(std::collections::HashMap::new()),
            tls,
            api_connections: AtomicUsize::new(0),
            demo,
        });

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut threads = Vec::with_capacity(workers);
        for (id, ((inbox, ws), api)) in inboxes.into_iter().zip(ws).zip(api).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let pin = shared.config.pin_workers.then_some(id % cores);
            let t = std::thread::Builder::new()
                .name(format!("ringway-w{id}"))
                .spawn(move || {
                    worker_thread(id, shared, inbox, ws, api, driver, pin, ready);
                })
                .map_err(|e| StartError::Worker {
                    worker: id,
                    message: e.to_string(),
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        for id in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    return Err(StartError::Worker {
                        worker: id,
                        message,
                    });
                }
                Err(_) => {
                    return Err(StartError::Worker {
                        worker: id,
                        message: "worker thread exited during start-up".into(),
                    });
                }
            }
        }
        if let (Some(mesh), Some(listener)) = (&shared.mesh, mesh_listener) {
            let addr = listener.local_addr().map_err(StartError::Listen)?;
            crate::mesh::link::start(shared.clone(), listener).map_err(|e| StartError::Worker {
                worker: 0,
                message: format!("cannot start the mesh threads: {e}"),
            })?;
            let peers: Vec<&str> = mesh
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != mesh.me)
                .map(|(_, n)| n.id.as_str())
                .collect();
            info!(
                "mesh: node {} in cluster {:?} listening for peers on {addr}; peers: {}",
                shared.config.node_id,
                shared.config.mesh.cluster,
                peers.join(", ")
            );
        }
        info!(
            %ws_addr, %api_addr, workers, driver = ?driver,
            "ringway node {} listening: clients {}://{ws_addr}{}, API http://{api_addr}",
            shared.config.node_id,
            if shared.tls.is_some() { "wss" } else { "ws" },
            shared.config.ws_path
        );
        Ok(Server {
            ws_addr,
            api_addr,
            shared,
            threads,
        })
    }

    /// The bound client address (useful with port 0).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Stop every worker and wait for their threads. Open connections are dropped.
    pub fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        if let Some(mesh) = &self.shared.mesh {
            mesh.stop();
        }
        for m in &self.shared.mailboxes {
            m.send(Mail::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Block until the workers exit.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// A handle that can stop the node from another thread (signal handlers).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: self.shared.clone(),
        }
    }
}

/// Stops a node from any thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Drain gracefully over `drain.window_ms` (see `runtime::lifecycle`); the workers
    /// stop at the end of the window.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        let window = Duration::from_millis(self.shared.config.drain.window_ms);
        for m in &self.shared.mailboxes {
            m.send(Mail::Drain { window });
        }
    }

    /// Ask every worker to stop now (open connections are dropped).
    pub fn stop(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        for m in &self.shared.mailboxes {
            m.send(Mail::Shutdown);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_thread(
    id: usize,
    shared: Arc<Shared>,
    inbox: Inbox,
    ws: std::net::TcpListener,
    api: std::net::TcpListener,
    driver: Driver,
    pin: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
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
        let w = Rc::new(Worker::new(id, shared));
        let (ws, api) = match (TcpListener::from_std(ws), TcpListener::from_std(api)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                let _ = ready.send(Err(format!("cannot register the listeners: {e}")));
                return;
            }
        };
        w.listener_fd
            .set(Some(std::os::fd::AsRawFd::as_raw_fd(&ws)));
        monoio::spawn(accept_loop(w.clone(), ws));
        monoio::spawn(crate::api::accept_loop(w.clone(), api));
        monoio::spawn(tick_loop(w.clone()));
        let _ = ready.send(Ok(()));
        let (w1, w2) = (w.clone(), w.clone());
        if let Err(e) = inbox
            .run(move |mail| w1.handle_mail(mail), move || w2.flush_dirty())
            .await
        {
            error!(worker = id, "inbox failed: {e}; the worker stops");
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

async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(crate::conn::driver::run(w.clone(), stream, peer));
            }
            Err(_) if w.shared.draining() => return,
            Err(e) => {
                // EMFILE/ENFILE: out of descriptors. Say so (at most once a second) and
                // back off instead of spinning on the accept queue.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!(
                        worker = w.id,
                        "accept failed: {e}. If this is 'Too many open files', raise the \
                         open-file limit (LimitNOFILE / ulimit -n) or lower the connection target"
                    );
                    last_warning = Some(Instant::now());
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
