//! ringway: a thread-per-core WebSocket connection engine on io_uring.
//!
//! ringway is the connection (gateway) tier of a real-time product: it holds the
//! client sockets, moves messages between clients and rooms, and lets stateless app
//! services publish through a small HTTP API.
//!
//! ```text
//!                 +--------------------- one ringway process ---------------------+
//!  clients ─TCP─▶ │ worker 0 (core 0)              worker 1 (core 1)         ...   │
//!                 │  monoio runtime (io_uring)      monoio runtime (io_uring)      │
//!                 │  SO_REUSEPORT listener          SO_REUSEPORT listener          │
//!                 │  Slab<Conn>  room index         Slab<Conn>  room index         │
//!                 │  owned rooms: seq, epoch, ring  owned rooms: seq, epoch, ring  │
//!                 │       ▲   inbox (crossbeam + doorbell)   ▲                     │
//!                 │       └──────────────┬───────────────────┘                     │
//!  services ─HTTP─▶ API on every worker (publish, metrics, health)                 │
//!                 +----------------------------------------------------------------+
//! ```
//!
//! Module map (folder = layer; the sans-IO layers take bytes and `now`, never sockets):
//!
//! | module       | job |
//! |--------------|-----|
//! | [`auth`]     | sans-IO tokens (JWT) and room permissions |
//! | [`config`]   | every limit with its default; TOML file and flags |
//! | [`ws`]       | sans-IO WebSocket: handshake, frames, close codes, UTF-8 |
//! | [`protocol`] | sans-IO client protocol `ringway.v1` (parse requests, encode frames) |
//! | [`hub`]      | sans-IO rooms: owner state, replay ring, resume rules, room homes |
//! | [`conn`]     | per-connection state, outbound queue, the read loop |
//! | [`mesh`]     | links between nodes: sans-IO wire codec and auth, link threads |
//! | [`runtime`]  | workers, pinning, mailboxes, listeners, start-up probes, cluster routing |
//! | [`api`]      | the HTTP API |
//! | [`metrics`]  | per-worker counters, Prometheus text |
//! | [`bench`]    | the load generator (`ringway bench`) |
//! | [`check`]    | `ringway check`: does this host fit the connection target |
//! | [`cli`]      | command line |
//! | [`client`]   | the embedded browser client (`/client.js`) and demo page |
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod bench;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod http;
pub mod hub;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod runtime;
#[cfg(test)]
mod sim;
pub mod ws;

pub use config::Config;
pub use node::Server;
