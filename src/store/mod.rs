//! Room history on disk (`rooms.data_dir`, issue 15): each worker appends the
//! messages its rooms stamp to its own segment log, and a restarted node rebuilds
//! every room's ring, epoch and seq from it.
//!
//! | module     | job |
//! |------------|-----|
//! | [`record`] | sans-IO: the record format (length, CRC32C, body) and reading a segment back, torn tails and corrupt records found |
//! | [`segment`] | one worker's segment files: open (read back, repair), append, flush with an fsync policy, delete what left the window |
//!
//! Not wired in yet: the hub handing stamped messages to the log and rebuilding its
//! rooms from it on start are the next steps.

pub mod record;
pub mod segment;
