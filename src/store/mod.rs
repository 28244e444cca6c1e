//! Room history on disk (`rooms.data_dir`, issue 15): each worker appends the
//! messages its rooms stamp to its own segment log, and a restarted node rebuilds
//! every room's ring, epoch and seq from it.
//!
//! | module     | job |
//! |------------|-----|
//! | [`record`] | sans-IO: the record format (length, CRC32C, body) and reading a segment back, torn tails and corrupt records found |
//!
//! So far only the record format exists; the writer (segments, fsync policy,
//! deletion past the replay window) and the restart path are the next steps.

pub mod record;
