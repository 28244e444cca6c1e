//! ringway: a thread-per-core WebSocket connection engine on io_uring.
//!
//! ringway is the connection (gateway) tier of a real-time product: it holds the
//! client sockets, moves messages between clients and rooms, and lets stateless app
//! services publish through a small HTTP API.
//!
//! ```text
//!                 +--------------------- one ringway process ---------------------+
//!  clients ─TCP─▶ │ one listening socket, shared by the workers                    │
//!                 │ worker 0 (core 0)              worker 1 (core 1)         ...   │
//!                 │  monoio runtime (io_uring)      monoio runtime (io_uring)      │
//!                 │  Slab<Conn> + timer wheel       Slab<Conn> + timer wheel       │
//!                 │  Hub: rooms, owners, roster     Hub: rooms, owners, roster     │
//!                 │       ▲   inbox (crossbeam + doorbell)   ▲                     │
//!                 │       └──────────────┬───────────────────┘                     │
//!  services ─HTTP─▶ API on every worker (publish, presence, metrics, health)       │
//!  peers ═══TCP══▶ mesh link threads ─▶ the room's home worker                     │
//!                 +----------------------------------------------------------------+
//! ```
//!
//! Module map, bottom up (folder = layer; the sans-IO layers take bytes and `now`,
//! never sockets; no module imports one above it):
//!
//! | module       | job |
//! |--------------|-----|
//! | [`config`]   | every limit with its default; TOML file and flags |
//! | [`ws`]       | sans-IO WebSocket: handshake, frames, close codes, UTF-8 |
//! | [`http`]     | sans-IO HTTP responses (one writer for every plain-HTTP answer) |
//! | [`protocol`] | sans-IO client protocol `ringway.v1` (parse requests, encode every server message) |
//! | [`auth`]     | sans-IO tokens (JWT), demo tokens, room permissions |
//! | [`hub`]      | sans-IO router: subscriber index, owners (seq, epoch, replay ring, roster, per-user cap), mirrors, cluster moves; its mail and peer-message vocabulary |
//! | [`conn`]     | sans-IO connection state: outbound queue, rate limits, deadlines, TLS session, what a request amounts to, the timer wheel |
//! | [`metrics`]  | per-worker counters, the latency histogram, Prometheus text |
//! | [`mesh`]     | links between nodes: sans-IO wire codec and auth, link threads, a sink for what arrives |
//! | [`store`]    | room history on disk: the segment log's records (sans-IO) |
//! | [`hooks`]    | what the node tells and asks the app: webhooks, the authorization and connect callbacks |
//! | [`client`]   | the embedded browser client (`/client.js`) and demo page |
//! | [`runtime`]  | workers: the hub's executor, connection tasks, admission, deadlines, drain, mailboxes, listeners, probes |
//! | [`api`]      | the HTTP API, on the workers |
//! | [`node`]     | a node assembled: listeners, keys, workers, API, mesh |
//! | [`check`]    | `ringway check`: does this host fit the connection target |
//! | [`bench`]    | the load generator (`ringway bench`) |
//! | [`cli`]      | command line |
//!
//! The router is proven by a deterministic simulation (`src/sim`, run by
//! `cargo test --release --lib sim`).
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod bench;
pub mod check;
pub mod cli;
pub(crate) mod client;
pub mod config;
pub mod conn;
pub(crate) mod hooks;
pub(crate) mod http;
pub(crate) mod hub;
pub mod mesh;
pub(crate) mod metrics;
pub(crate) mod node;
pub mod protocol;
pub(crate) mod runtime;
#[cfg(test)]
mod sim;
pub mod store;
pub mod ws;

pub use config::Config;
pub use hub::rendezvous;
pub use node::{Server, StartError, Stopper};

/// What `main` does to the process before it starts a node.
pub mod process {
    pub use crate::runtime::probe::disable_transparent_huge_pages;
    pub use crate::runtime::signals::{Terminate, block_terminate};
}
