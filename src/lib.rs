//! ringway
#![warn(missing_docs)]
pub mod config;
pub mod ws;
