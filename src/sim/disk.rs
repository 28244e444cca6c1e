//! A node's history log in the simulation (`rooms.data_dir`): what its workers'
//! hubs stamp, kept across a crash as the page cache keeps it across a process
//! crash, and read back at restart with the real recovery code.

use crate::hub::topology::home_worker;
use crate::hub::{Ms, Restored, Stamped};
use crate::store::recover::Rooms;
use crate::store::segment::Stored;

/// Every record a node wrote, oldest first.
#[derive(Default)]
pub(super) struct Disk {
    records: Vec<Stored>,
}

impl Disk {
    /// A worker wrote a stamped message at `now`.
    pub(super) fn write(&mut self, s: Stamped, now: Ms) {
        self.records.push(Stored {
            room: s.room.to_string(),
            epoch: s.epoch,
            seq: s.seq,
            at_ms: now.saturating_sub(s.age),
            frame: s.frame.to_vec(),
            key: s.key.unwrap_or_default(),
            kind: s.kind,
        });
    }

    /// Read the log back at `now` for `workers` workers, as a restarted node does:
    /// each worker's rooms, and the log rewritten to what recovery keeps.
    pub(super) fn recover(
        &mut self,
        now: Ms,
        (window, key_window): (Ms, Ms),
        workers: usize,
    ) -> Vec<Vec<Restored>> {
        let mut rooms = Rooms::default();
        for s in self.records.drain(..) {
            rooms.add(s);
        }
        let mut out: Vec<Vec<Restored>> = (0..workers).map(|_| Vec::new()).collect();
        let finished = rooms.finish(
            now.saturating_sub(window),
            now.saturating_sub(key_window),
            now.saturating_sub(window.max(key_window)),
        );
        for h in finished {
            h.records(|r| self.records.push(Stored::from(&r)));
            let w = home_worker(&h.room, workers);
            out[w].push(h.into_restored(now));
        }
        out
    }
}
