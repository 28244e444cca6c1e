//! The WebSocket protocol, sans-IO: upgrade handshake, frame decoding and encoding,
//! close codes, incremental UTF-8 validation. No sockets and no clocks in here.

pub(crate) mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub(crate) mod utf8;
