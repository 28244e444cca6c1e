//! The workers' side of `rooms.data_dir`: the directory opened and read back once at
//! start ([`open`]), and each worker's journal ([`Journal`]): what its hub stamps,
//! written to its log before anything of the same turn leaves the process.
//!
//! With `rooms.fsync = "always"` the records must also be synced before then. The
//! sync is a group commit: [`Journal::write`] writes a turn's records, the worker
//! holds back what would leave the process (mail, peer messages, answers, events;
//! frames to clients wait in their queues anyway) while [`Journal::unsynced`], and
//! [`Journal::commit`] syncs once for everything written since, just before the
//! worker writes its sockets and lets what it held go. Under load a sync covers
//! many messages: while one runs, the next turn's input accumulates.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::hub::{Hub, Ms};
use crate::store::record::{Kind, Record};
use crate::store::recover::{self, Plan, RoomHistory};
use crate::store::segment::{Log, LogStats};

/// What one worker starts with: its journal, and the rooms it is home to.
pub type WorkerPart = (Journal, Vec<RoomHistory>);

/// The data directory, locked for this process, with what each worker starts with.
#[derive(Debug)]
pub struct NodeStore {
    /// The directory.
    dir: PathBuf,
    /// Held while the node runs: a second node on the same directory is refused.
    _lock: Flock<File>,
    /// Each worker's log and rooms, taken by the worker as it starts.
    parts: Mutex<Vec<Option<WorkerPart>>>,
    /// A journal failed to write or sync: the directory is not marked clean at the
    /// stop.
    failed: std::sync::atomic::AtomicBool,
}

/// Open `rooms.data_dir` (when set): lock it, read it back, and split it among
/// `workers`. Errors name the directory's problem; the caller adds the fix.
pub fn open(
    config: &Config,
    workers: usize,
) -> Result<Option<NodeStore>, (PathBuf, std::io::Error)> {
    let Some(dir) = &config.rooms.data_dir else {
        return Ok(None);
    };
    let fail = |e| (dir.clone(), e);
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = File::create(dir.join("lock")).map_err(fail)?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let e = if errno == nix::errno::Errno::EWOULDBLOCK {
            std::io::Error::other("another process holds it")
        } else {
            std::io::Error::from(errno)
        };
        fail(e)
    })?;
    let started = Instant::now();
    let plan = Plan {
        dir,
        workers,
        policy: config.rooms.fsync_policy(),
        now_ms: unix_ms(),
        window_ms: config.rooms.replay_seconds.saturating_mul(1000),
        key_window_ms: config.rooms.idempotency_window_s.saturating_mul(1000),
    };
    let home = |room: &str| crate::hub::topology::home_worker(room, workers);
    let got = recover::recover(plan, home, &mut || fastrand::u64(..)).map_err(fail)?;
    let r = &got.report;
    info!(
        dir = %dir.display(),
        "history: read {} records from {} segments in {} ms: {} rooms, {} messages inside the replay window",
        r.records,
        r.files,
        started.elapsed().as_millis(),
        r.rooms,
        r.messages
    );
    for (path, bytes) in &r.torn {
        warn!(
            "history: {} ended in a record cut short by a crash ({bytes} bytes): dropped, the records before it kept",
            path.display()
        );
    }
    for path in &r.corrupt {
        error!(
            "history: {} holds a corrupt record: the records before it were kept, the rest skipped; the file is kept as {}.corrupt for inspection (the disk may be failing)",
            path.display(),
            path.display()
        );
    }
    if r.new_epochs {
        let why = if r.corrupt.is_empty() {
            "the machine restarted since the log was written and its writes were not all synced (rooms.fsync is not \"always\", or a write failed): the last ones may be lost"
        } else {
            "a segment was corrupt: what it held after the damage is unknown"
        };
        warn!("history: {why}, so every room starts a new epoch (clients re-sync once)");
    }
    // Records matter for the replay window, or the idempotency window if longer.
    let rooms = &config.rooms;
    let keep_ms = rooms
        .replay_seconds
        .max(rooms.idempotency_window_s)
        .saturating_mul(1000);
    let parts = got
        .logs
        .into_iter()
        .zip(got.rooms)
        .map(|(log, rooms)| Some((Journal::new(log, keep_ms), rooms)))
        .collect();
    Ok(Some(NodeStore {
        dir: dir.clone(),
        _lock: lock,
        parts: Mutex::new(parts),
        failed: Default::default(),
    }))
}

impl NodeStore {
    /// Worker `id`'s journal and rooms (once).
    pub fn take(&self, id: usize) -> Option<WorkerPart> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)?
            .take()
    }

    /// A worker's journal stopped (see [`Journal::close`]): `ok` when everything it
    /// was given reached the disk.
    pub fn journal_closed(&self, ok: bool) {
        if !ok {
            self.failed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Every worker has stopped (their journals synced and closed): mark the
    /// directory clean, unless a journal failed.
    pub fn close(&self) {
        let dir = &self.dir;
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            warn!(
                "history: a write to {} failed during this run: not marked as cleanly stopped, so after a machine restart its rooms start new epochs",
                dir.display()
            );
            return;
        }
        if let Err(e) = recover::mark_clean(dir) {
            warn!(
                "history: cannot mark {} as cleanly stopped: {e}; after a machine restart its rooms will start new epochs",
                dir.display()
            );
        }
    }
}

/// Unix time, ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One worker's log, fed from its hub.
#[derive(Debug)]
pub struct Journal {
    log: Log,
    /// How long a record matters, ms (the replay window, or the idempotency window
    /// if longer): segments older than it are deleted.
    keep_ms: u64,
    /// Writes or syncs that failed.
    errors: u64,
    last_complaint: Option<Instant>,
}

impl Journal {
    /// The journal of a worker that starts with `log`, keeping records `keep_ms`.
    pub fn new(log: Log, keep_ms: u64) -> Self {
        Self {
            log,
            keep_ms,
            errors: 0,
            last_complaint: None,
        }
    }

    /// Hand `rooms` to `hub` (at start), ages measured from now.
    pub fn restore(hub: &mut Hub, rooms: Vec<RoomHistory>, now: Ms) {
        let unix = unix_ms();
        hub.restore(rooms.into_iter().map(|h| h.into_restored(unix)), now);
    }

    /// Write what `hub` stamped since the last call (and sync if the policy says
    /// so). Call before anything else the hub decided in the same turn is carried
    /// out.
    pub fn write(&mut self, hub: &mut Hub) {
        let at_ms = unix_ms();
        while let Some(s) = hub.poll_stored() {
            self.log.append(&Record {
                room: &s.room,
                epoch: s.epoch,
                seq: s.seq,
                at_ms: at_ms.saturating_sub(s.age),
                frame: &s.frame,
                key: s.key.as_deref().unwrap_or(""),
                kind: s.kind,
            });
        }
        if self.log.has_pending() {
            let written = self.log.write(at_ms);
            self.written(written, hub, at_ms);
        }
    }

    /// Whether written records wait for [`Journal::commit`] (only with
    /// `fsync = "always"`): nothing of theirs may leave the process until then.
    pub fn unsynced(&self) -> bool {
        self.log.policy() == crate::store::segment::Fsync::Always && self.log.unsynced()
    }

    /// Sync what was written (the group commit of `fsync = "always"`).
    pub fn commit(&mut self) {
        if let Err(e) = self.log.sync() {
            self.complain("cannot sync the history log", &e);
        }
    }

    /// Periodic upkeep: a due sync, and segments that left the window deleted.
    pub fn tick(&mut self, hub: &Hub) {
        let now = unix_ms();
        self.flush(hub, now);
        let keep = Duration::from_millis(self.keep_ms);
        if let Err(e) = self.log.forget_older_than(keep) {
            self.complain("cannot delete an old segment", &e);
        }
    }

    fn flush(&mut self, hub: &Hub, now: u64) {
        let written = self.log.flush(now);
        self.written(written, hub, now);
    }

    /// After a write: a new segment begins with the positions; an error is told.
    fn written(&mut self, result: std::io::Result<bool>, hub: &Hub, now: u64) {
        match result {
            Ok(false) => {}
            Ok(true) => self.positions(hub, now),
            Err(e) => self.complain("cannot write the history log", &e),
        }
    }

    /// A new segment began: it starts with every owned room's place, so the room
    /// keeps it when the segments holding its messages are deleted.
    fn positions(&mut self, hub: &Hub, now: u64) {
        for (room, r) in hub.owned_rooms() {
            let (epoch, seq) = r.position();
            self.log.append(&Record {
                room,
                epoch: epoch.0,
                seq,
                at_ms: now,
                frame: &[],
                key: "",
                kind: Kind::Message,
            });
            let term = r.standby.term();
            if term > 0 {
                self.log.append(&Record {
                    room,
                    epoch: epoch.0,
                    seq: term,
                    at_ms: now,
                    frame: &[],
                    key: "",
                    kind: Kind::Term,
                });
            }
        }
        if let Err(e) = self.log.write(now) {
            self.complain("cannot write the history log", &e);
        }
    }

    /// Sync what was written (the worker stops). Returns whether everything the
    /// journal was given is on disk (no write or sync ever failed).
    pub fn close(&mut self) -> bool {
        if let Err(e) = self.log.sync() {
            self.complain("cannot sync the history log", &e);
        }
        self.errors == 0
    }

    fn complain(&mut self, what: &str, e: &std::io::Error) {
        self.errors += 1;
        if self.errors == 1 {
            // A restart after a power loss must not trust this run's log to be
            // complete (best effort: the disk may be what failed).
            let _ = recover::mark_unsynced(self.log.dir());
        }
        let quiet = self
            .last_complaint
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !quiet {
            self.last_complaint = Some(Instant::now());
            error!(
                "{what}: {e} ({} errors so far). Messages are still delivered but a restart may lose them: free space on the data directory's disk or fix its permissions",
                self.errors
            );
        }
    }

    /// What the log has done, the bytes and segments on disk, and the errors.
    pub fn stats(&self) -> (LogStats, u64, usize, u64) {
        (
            self.log.stats(),
            self.log.disk_bytes(),
            self.log.segments(),
            self.errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubConfig, Origin, Topology};
    use crate::store::recover::{Plan, recover};
    use crate::store::segment::{self, Fsync};

    fn hub() -> Hub {
        let cfg = HubConfig {
            replay_messages: 1000,
            history_budget: 1 << 24,
            durable: true,
            ..HubConfig::for_tests()
        };
        let mut n = 0;
        let epochs = Box::new(move || {
            n += 1;
            n
        });
        Hub::new(0, cfg, Topology::single(1), epochs)
    }

    fn publish(hub: &mut Hub, room: &str, now: Ms) {
        let pad = "x".repeat(200);
        let data = serde_json::value::RawValue::from_string(format!(r#"{{"pad":"{pad}"}}"#));
        let origin = Origin {
            from: None,
            idempotency_key: None,
            client: false,
        };
        hub.handle_publish(
            room,
            &data.unwrap(),
            None,
            origin,
            None,
            crate::hub::Arrival::UNTIMED,
            now,
        );
        while hub.poll_conn().is_some() {}
    }

    #[test]
    fn a_quiet_room_keeps_its_place_after_its_messages_segments_are_deleted() {
        let dir = segment::tests_dir("journal-positions");
        let plan = || Plan {
            dir: &dir,
            workers: 1,
            policy: Fsync::Never,
            now_ms: unix_ms(),
            window_ms: 60_000,
            key_window_ms: 60_000,
        };
        // Opened as a node opens it.
        let log = recover(plan(), |_| 0, &mut || 99).unwrap().logs.remove(0);
        // Small segments, kept no longer than it takes to close them.
        let mut j = Journal::new(log.with_segment_bytes(4096), 0);
        let mut hub = hub();
        publish(&mut hub, "quiet", 1);
        j.write(&mut hub);
        for t in 0..100 {
            publish(&mut hub, "busy", 2 + t);
            j.write(&mut hub);
            j.tick(&hub);
        }
        let (stats, _, segments, errors) = j.stats();
        assert!(
            stats.deleted > 0 && segments <= 2,
            "{stats:?}, {segments} left"
        );
        assert_eq!(errors, 0);
        drop(j);
        let got = recover(plan(), |_| 0, &mut || 99).unwrap();
        let room = |name: &str| got.rooms[0].iter().find(|h| h.room == name).unwrap();
        // The quiet room's message went with its segment; its epoch and seq did not.
        let quiet = room("quiet");
        assert_eq!((quiet.seq, quiet.messages.len()), (1, 0));
        let epoch = hub.owned_room("quiet").unwrap().position().0;
        assert_eq!(quiet.epoch, epoch.0);
        assert_eq!(room("busy").seq, 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
