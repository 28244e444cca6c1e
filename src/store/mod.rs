//! Room history on disk (`rooms.data_dir`, issue 15): each worker appends the
//! messages its rooms stamp to its own segment log, and a restarted node rebuilds
//! every room's ring, epoch and seq from it.
//!
//! | module     | job |
//! |------------|-----|
//! | [`record`] | sans-IO: the record format (length, CRC32C, body) and reading a segment back, torn tails and corrupt records found |
//! | [`segment`] | one worker's segment files: append, flush with an fsync policy, delete what left the window; list and read them back |
//! | [`recover`] | at start: every worker's segments read back, each room rebuilt and handed to its home worker, fresh segments written |
//!
//! The worker appends what its hub stamps ([`crate::hub::Hub::poll_stored`]) and
//! writes it before anything of the turn leaves the process (see
//! `runtime::worker`); the hub takes the rebuilt rooms with
//! [`crate::hub::Hub::restore`].

pub mod record;
pub mod recover;
pub mod segment;
