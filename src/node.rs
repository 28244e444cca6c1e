//! A node, assembled: the configuration checked, the host probed, the listeners
//! bound, the workers started with the API on them, the mesh linked; and the
//! handles that stop it.
//!
//! ```text
//!  Server::start ─┬─ validate, probe io_uring, raise RLIMIT_NOFILE, size the cap
//!                 ├─ bind one client listener and one API listener (shared by the workers)
//!                 ├─ keys: tokens, demo tokens, TLS
//!                 ├─ runtime::spawn_workers (each with the API's accept loop)
//!                 └─ mesh::link::start (peer messages to the workers through runtime::router)
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::runtime::mailbox::{self, Letter};
use crate::runtime::worker::Shared;
use crate::runtime::{Service, listener, probe};
use crate::ws::handshake::HandshakeConfig;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `tls.cert` and `tls.key` cannot serve wss (the message names the file).
    #[error("invalid configuration: {0}")]
    Tls(crate::conn::tls::ConfigError),
    /// `auth.token_public_key` cannot be read or holds no public key.
    #[error("invalid configuration: auth.token_public_key {}: {error}", path.display())]
    TokenKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: TokenKeyError,
    },
    /// A listener could not be bound (the message names the address and the fix).
    #[error("{0}")]
    Listen(std::io::Error),
    /// `rooms.data_dir` cannot be used.
    #[error(
        "cannot use the data directory {} (rooms.data_dir / --data-dir): {}",
        dir.display(),
        store_hint(dir, error)
    )]
    Store {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A worker could not start its runtime.
    #[error("worker {worker} failed to start: {message}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What failed.
        message: String,
    },
}

/// The cause and the fix for a data directory that cannot be used.
fn store_hint(dir: &std::path::Path, error: &std::io::Error) -> String {
    if dir.exists() && !dir.is_dir() {
        return "it is a file, not a directory: give the path of a directory (it is created \
                if missing)"
            .to_owned();
    }
    format!("{error}. Check that it is writable by this user and not used by another ringway node")
}

/// Why `auth.token_public_key` is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// The file cannot be read.
    #[error(
        "cannot read it: {0}; check the path (--token-public-key) and that this user may read the file"
    )]
    Read(std::io::Error),
    /// It holds no public key.
    #[error("{0}")]
    NotAKey(crate::auth::NotAPublicKey),
}

/// A running node. Dropping it leaves the workers running; call
/// [`Server::shutdown`] to stop them.
#[derive(Debug)]
pub struct Server {
    ws_addr: SocketAddr,
    api_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The webhook sender, when webhooks are on.
    hooks: Option<JoinHandle<()>>,
    /// The threads calling the app's callbacks, when any is on.
    calls: Option<Arc<crate::hooks::pool::Pool>>,
}

impl Server {
    /// Start a node: bind, spawn the workers, and return once all are running.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        // Everything that can fail on a file first, so an error is not buried under
        // start-up lines.
        let verifier = verifier(&config)?;
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(crate::conn::tls::server_config(cert, key).map_err(StartError::Tls)?)
            }
            _ => None,
        };
        let workers = config.worker_count();
        let store = crate::runtime::store::open(&config, workers)
            .map_err(|(dir, error)| StartError::Store { dir, error })?;
        let driver = probe::io_driver();
        let backlog = config.limits.listen_backlog;
        let ws =
            listener::bind_shared(config.listen, "--listen (listen)", workers, backlog, driver)
                .map_err(StartError::Listen)?;
        if let Err(e) = listener::defer_accept(&ws[0], config.limits.defer_accept_s) {
            // Only a cost: each connection is then taken when its handshake ends.
            warn!(
                "cannot defer accepts on {} (TCP_DEFER_ACCEPT): {e}; connections are taken before their first bytes",
                config.listen
            );
        }
        let api = listener::bind_shared(
            config.api_listen,
            "--api-listen (api_listen)",
            workers,
            backlog,
            driver,
        )
        .map_err(StartError::Listen)?;
        let ws_addr = ws[0].local_addr().map_err(StartError::Listen)?;
        let api_addr = api[0].local_addr().map_err(StartError::Listen)?;
        let mesh = crate::mesh::Mesh::from_config(&config)?.map(Arc::new);
        let mesh_listener = match (&mesh, config.mesh.listen_addr(&config.node_id)) {
            (Some(_), Some(addr)) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
                let setting = if config.mesh.listen.is_some() {
                    "--mesh-listen (mesh.listen)"
                } else {
                    "this node's --peer entry (mesh.peers)"
                };
                StartError::Listen(listener::bind_error(addr, setting, e))
            })?),
            _ => None,
        };
        let max_connections = connection_cap(&config);
        let h = &config.hooks;
        let calls = if h.authorize_url.is_empty() && h.connect_url.is_empty() {
            None
        } else {
            let pool = crate::hooks::pool::Pool::start(h.authorize_concurrency).map_err(|e| {
                StartError::Worker {
                    worker: 0,
                    message: format!("cannot start the threads that call the app: {e}"),
                }
            })?;
            Some(Arc::new(pool))
        };
        let (authorizer, connector) = match &calls {
            Some(pool) => (
                crate::hooks::authorize::Authorizer::new(h, &config.node_id, pool),
                crate::hooks::connect::Connector::new(h, &config.node_id, pool),
            ),
            None => (None, None),
        };
        announce(&config);
        let (mailboxes, inboxes): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| mailbox::channel())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Worker {
                worker: 0,
                message: format!("cannot create a mailbox: {e}"),
            })?
            .into_iter()
            .unzip();
        let shared = Arc::new(Shared {
            handshake: HandshakeConfig {
                ws_path: config.ws_path.clone(),
                echo: config.echo,
                max_bytes: config.limits.max_handshake_bytes,
                deflate: config.compression.enabled,
                pass_headers: if config.hooks.connect_url.is_empty() {
                    Vec::new()
                } else {
                    std::iter::once("cookie".to_owned())
                        .chain(
                            config
                                .hooks
                                .connect_headers
                                .iter()
                                .map(|h| h.to_ascii_lowercase()),
                        )
                        .collect()
                },
            },
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
            site: crate::client::Site::from_config(&config),
            hooks: crate::hooks::Hooks::new(&config.hooks, &config.node_id),
            authorizer,
            connector,
            started: std::time::Instant::now(),
            joined: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            store,
            lag: crate::runtime::backpressure::LagTable::new(workers),
            config,
        });
        // The API runs on every worker too, on its handle of the API listener.
        let services: Vec<Service> = api
            .into_iter()
            .map(|listener| -> Service {
                Box::new(move |w| {
                    let listener = monoio::net::TcpListener::from_std(listener)
                        .map_err(|e| format!("cannot register the API listener: {e}"))?;
                    monoio::spawn(crate::api::accept_loop(w.clone(), listener));
                    Ok(())
                })
            })
            .collect();
        let hooks =
            match &shared.hooks {
                Some(h) => Some(crate::hooks::sender::start(h.clone()).map_err(|e| {
                    StartError::Worker {
                        worker: 0,
                        message: format!("cannot start the webhook sender: {e}"),
                    }
                })?),
                None => None,
            };
        let threads = crate::runtime::spawn_workers(&shared, inboxes, ws, services, driver)
            .map_err(|(worker, message)| StartError::Worker { worker, message })?;
        if let (Some(mesh), Some(listener)) = (&shared.mesh, mesh_listener) {
            link_mesh(&shared, mesh, listener)?;
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
            hooks,
            calls,
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
            m.send(Letter::Shutdown);
        }
        self.wait();
    }

    /// Block until the workers exit, then let the webhook sender deliver what is
    /// queued (a few seconds at most).
    pub fn wait(self) {
        let mut clean = true;
        for t in self.threads {
            clean &= t.join().is_ok();
        }
        if let (true, Some(store)) = (clean, &self.shared.store) {
            store.close();
        }
        if let Some(p) = &self.calls {
            p.stop();
        }
        if let (Some(h), Some(t)) = (&self.shared.hooks, self.hooks) {
            h.stop();
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

/// The node-wide connection cap: `limits.max_connections`, within what the
/// open-file limit allows once the node's own descriptors are held back (said in the
/// log, so the operator sees the real number).
fn connection_cap(config: &Config) -> usize {
    let soft = probe::raise_nofile();
    let reserved = config.fd_reserve();
    let fd_room = (soft as usize).saturating_sub(reserved);
    let cap = match config.limits.max_connections {
        0 => fd_room,
        n if n > fd_room => {
            warn!(
                "limits.max_connections = {n} does not fit the open-file limit ({}): the cap \
                 is lowered to {fd_room}. Raise the limit (LimitNOFILE= in the systemd unit, \
                 nofile in /etc/security/limits.d, or `ulimit -n`) to at least {}",
                soft,
                n + reserved
            );
            fd_room
        }
        n => n,
    };
    info!(
        "up to {cap} client connections (limits.max_connections{}); \
         {reserved} descriptors held back for listeners, the API and the mesh",
        if config.limits.max_connections == 0 {
            " = 0: the open-file limit less the reserve"
        } else {
            ""
        }
    );
    cap
}

/// Say at start-up what an operator should know about this configuration.
fn announce(config: &Config) {
    if config.auth.api_key.is_empty() {
        info!(
            "the HTTP API has no key (auth.api_key): it may only listen on loopback ({}); set --api-key to expose it",
            config.api_listen
        );
    }
    if config.demo_served() {
        info!(
            "demo page on the client listener at / (guest tokens for demo:* rooms); it is for trying ringway: turn it off with --no-demo or demo = false"
        );
    } else if config.demo {
        info!("demo page off: tokens are required (require_auth), and it needs guest tokens");
    }
    if config.allow_anonymous {
        warn!(
            "anonymous clients are allowed (allow_anonymous = true): anyone who can reach the listener can subscribe and publish"
        );
    }
}

/// The token verifier: an HS256 secret or a public key, if either is configured.
fn verifier(config: &Config) -> Result<Option<crate::auth::Verifier>, StartError> {
    let auth = &config.auth;
    // The authorization callback hands the app each token's claims.
    let keep = !config.hooks.authorize_url.is_empty();
    let keep = move |v: crate::auth::Verifier| if keep { v.keeping_claims() } else { v };
    Ok(match (&auth.token_public_key, auth.token_secret.as_str()) {
        (Some(path), _) => {
            let key_error = |error| StartError::TokenKey {
                path: path.clone(),
                error,
            };
            let pem = std::fs::read(path).map_err(|e| key_error(TokenKeyError::Read(e)))?;
            let key = crate::auth::Verifier::public_pem(&pem);
            Some(keep(key.map_err(|e| key_error(TokenKeyError::NotAKey(e)))?))
        }
        (None, "") => None,
        (None, secret) => Some(keep(crate::auth::Verifier::hs256(secret.as_bytes()))),
    })
}

/// Start the mesh's links, handing what they receive to the workers.
fn link_mesh(
    shared: &Arc<Shared>,
    mesh: &Arc<crate::mesh::Mesh>,
    listener: std::net::TcpListener,
) -> Result<(), StartError> {
    let addr = listener.local_addr().map_err(StartError::Listen)?;
    let sink = Arc::new(crate::runtime::router::Router::new(
        shared.mailboxes.clone(),
    ));
    crate::mesh::link::start(mesh.clone(), listener, sink).map_err(|e| StartError::Worker {
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
    Ok(())
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
            m.send(Letter::Drain { window });
        }
    }

    /// Ask every worker to stop now (open connections are dropped).
    pub fn stop(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        for m in &self.shared.mailboxes {
            m.send(Letter::Shutdown);
        }
    }
}
