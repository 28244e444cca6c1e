//! Reading the data directory back at start: every room's epoch, latest seq and the
//! messages still inside the replay window, handed to the worker that is now its
//! home.
//!
//! The worker count may have changed since the segments were written (a room's home
//! worker with it), so recovery reads every worker's segments, rebuilds each room,
//! writes what is still needed into fresh segments of the rooms' new home workers
//! (a position record per room, then its messages), syncs them, and only then
//! deletes the old files. A crash in between leaves old and new segments side by
//! side; the next start reads both and the duplicates collapse (a seq is a seq).
//!
//! A torn tail is dropped (what was whole before it is kept); a segment with a
//! corrupt record keeps its good prefix and is renamed `*.seg.corrupt` for the
//! operator to inspect, never read again.
//!
//! # Whether an epoch may continue
//!
//! A restarted room keeps its epoch and goes on from its latest seq only if no seq
//! it handed out can be missing from the log. Records reach the page cache before
//! anything they carry is delivered (the worker writes them first), so a process
//! crash loses nothing. A machine crash loses what was not yet synced, so unless the
//! policy is `always` (then nothing is ever unsynced when it is seen) the rooms
//! restart with new epochs, written into the new segments so a later restart cannot
//! bring the old ones back (their messages stay readable through the history API,
//! their seqs continue). A machine crash is told from a process crash by the
//! kernel's boot id, kept in the directory; a node that stopped cleanly (every log
//! synced) leaves a mark that spares its rooms after a planned reboot.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::record::{End, Kind, Record};
use super::segment::{self, Fsync, Log, Stored};

/// One room as the log left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomHistory {
    /// The room.
    pub room: String,
    /// Its epoch.
    pub epoch: u64,
    /// The latest seq stamped in it.
    pub seq: u64,
    /// The messages still inside the window: consecutive seqs ending at `seq`, oldest
    /// first (empty when the latest one is gone).
    pub messages: Vec<Stored>,
    /// Idempotency keys stamped in the epoch inside the key window: `(scoped key,
    /// seq, at_ms)`, by key.
    pub keys: Vec<(String, u64, u64)>,
    /// When its newest record was written, Unix ms.
    pub newest_ms: u64,
    /// The latest term it went on under (0: none written; see `hub::replica`).
    pub term: u64,
}

impl RoomHistory {
    /// The room for [`crate::hub::Hub::restore`], its messages' and keys' ages
    /// measured at `now_ms` (the clock their stamp times were taken on).
    pub fn into_restored(self, now_ms: u64) -> crate::hub::Restored {
        crate::hub::Restored {
            room: self.room,
            epoch: self.epoch,
            seq: self.seq,
            term: self.term,
            messages: self
                .messages
                .into_iter()
                .map(|m| (m.seq, now_ms.saturating_sub(m.at_ms), m.frame.into()))
                .collect(),
            keys: self
                .keys
                .into_iter()
                .map(|(k, seq, at)| (k, seq, now_ms.saturating_sub(at)))
                .collect(),
        }
    }

    /// The records that keep what recovery kept of the room, in the order to write
    /// them: its position, its term, its idempotency keys, its messages.
    pub fn records(&self, mut out: impl FnMut(Record<'_>)) {
        out(Record {
            room: &self.room,
            epoch: self.epoch,
            seq: self.seq,
            at_ms: self.newest_ms,
            frame: &[],
            key: "",
            kind: Kind::Message,
        });
        if self.term > 0 {
            out(Record {
                room: &self.room,
                epoch: self.epoch,
                seq: self.term,
                at_ms: self.newest_ms,
                frame: &[],
                key: "",
                kind: Kind::Term,
            });
        }
        for (key, seq, at_ms) in &self.keys {
            out(Record {
                room: &self.room,
                epoch: self.epoch,
                seq: *seq,
                at_ms: *at_ms,
                frame: &[],
                key,
                kind: Kind::Message,
            });
        }
        for m in &self.messages {
            out(Record {
                room: &self.room,
                epoch: self.epoch,
                seq: m.seq,
                at_ms: m.at_ms,
                frame: &m.frame,
                key: "",
                kind: Kind::Message,
            });
        }
    }
}

/// Rooms rebuilt from records fed in the order they were written.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, Building>,
    fed: u64,
}

#[derive(Debug)]
struct Building {
    epoch: u64,
    seq: u64,
    /// Stamp time of the newest record of the epoch.
    newest_ms: u64,
    /// The latest term of the epoch.
    term: u64,
    messages: BTreeMap<u64, (u64, Vec<u8>)>,
    keys: BTreeMap<String, (u64, u64)>,
}

impl Rooms {
    /// Take one record, in the order they were written (segments by index, each
    /// from its start: a room lives on one worker at a time, and recovery writes
    /// what it keeps after everything older). A room's epoch is that of its last
    /// record; records of an earlier epoch are dropped. (Not the stamp times: the
    /// wall clock may have stepped back.)
    pub fn add(&mut self, s: Stored) {
        self.fed += 1;
        if s.kind == Kind::Gone {
            // Handed to another node: it is that node's now (a later record here
            // means the room came back).
            self.rooms.remove(&s.room);
            return;
        }
        let fresh = |epoch| Building {
            epoch,
            seq: 0,
            newest_ms: 0,
            term: 0,
            messages: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        let b = self.rooms.entry(s.room).or_insert_with(|| fresh(s.epoch));
        if s.epoch != b.epoch {
            *b = fresh(s.epoch);
        }
        b.newest_ms = b.newest_ms.max(s.at_ms);
        if s.kind == Kind::Term {
            b.term = b.term.max(s.seq);
            return;
        }
        b.seq = b.seq.max(s.seq);
        if !s.key.is_empty() {
            b.keys.insert(s.key, (s.seq, s.at_ms));
        }
        if !s.frame.is_empty() {
            b.messages.insert(s.seq, (s.at_ms, s.frame));
        }
    }

    /// Every room written to since `room_cutoff_ms` (older ones are forgotten: their
    /// next incarnation gets a new epoch, as in memory), with the run of messages
    /// that ends at its latest seq and is no older than `cutoff_ms`, and the keys no
    /// older than `key_cutoff_ms`. Sorted by room.
    pub fn finish(
        self,
        cutoff_ms: u64,
        key_cutoff_ms: u64,
        room_cutoff_ms: u64,
    ) -> Vec<RoomHistory> {
        let mut out: Vec<RoomHistory> = self
            .rooms
            .into_iter()
            .filter(|(_, b)| b.newest_ms >= room_cutoff_ms)
            .map(|(room, mut b)| {
                let mut run = Vec::new();
                let mut next = b.seq;
                while let Some((at_ms, frame)) = b.messages.remove(&next) {
                    if at_ms < cutoff_ms || next == 0 {
                        break;
                    }
                    run.push(Stored {
                        room: room.clone(),
                        epoch: b.epoch,
                        seq: next,
                        at_ms,
                        frame,
                        key: String::new(),
                        kind: Kind::Message,
                    });
                    next -= 1;
                }
                run.reverse();
                let keys = b
                    .keys
                    .into_iter()
                    .filter(|(_, (_, at))| *at >= key_cutoff_ms)
                    .map(|(k, (seq, at))| (k, seq, at))
                    .collect();
                RoomHistory {
                    room,
                    epoch: b.epoch,
                    seq: b.seq,
                    messages: run,
                    keys,
                    newest_ms: b.newest_ms,
                    term: b.term,
                }
            })
            .collect();
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }
}

/// What recovery found and did, for the start-up log.
#[derive(Debug, Default)]
pub struct Report {
    /// Segment files read.
    pub files: usize,
    /// Records read from them.
    pub records: u64,
    /// Rooms rebuilt.
    pub rooms: usize,
    /// Messages kept (inside the window).
    pub messages: u64,
    /// Segments whose tail was torn (a crash mid-write), with the bytes dropped.
    pub torn: Vec<(PathBuf, u64)>,
    /// Segments with a corrupt record, renamed to `*.seg.corrupt` (their good prefix
    /// was kept).
    pub corrupt: Vec<PathBuf>,
    /// The machine restarted since the log was written and the fsync policy is not
    /// `always`, or a segment was corrupt (what it held past the damage is
    /// unknown): the rooms restart with new epochs.
    pub new_epochs: bool,
}

/// The data directory, read back.
#[derive(Debug)]
pub struct Recovered {
    /// Each worker's log, a fresh segment holding its rooms' positions and messages.
    pub logs: Vec<Log>,
    /// Each worker's rooms.
    pub rooms: Vec<Vec<RoomHistory>>,
    /// What was found.
    pub report: Report,
}

/// Where recovery reads and what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// The data directory.
    pub dir: &'a Path,
    /// Workers now.
    pub workers: usize,
    /// The fsync policy the logs will use.
    pub policy: Fsync,
    /// Unix ms now.
    pub now_ms: u64,
    /// The replay window, ms: older messages are not kept.
    pub window_ms: u64,
    /// The idempotency window, ms: older keys are not kept.
    pub key_window_ms: u64,
}

/// Read `plan.dir` back and hand each room to its worker (`home(room)`); rooms that
/// cannot keep their epoch (see the module docs) get one from `new_epoch`.
pub fn recover(
    plan: Plan<'_>,
    home: impl Fn(&str) -> usize,
    new_epoch: &mut dyn FnMut() -> u64,
) -> io::Result<Recovered> {
    let dir = plan.dir;
    fs::create_dir_all(dir)?;
    let found = segment::list(dir)?;
    let mut report = Report {
        files: found.len(),
        ..Report::default()
    };
    let mut rooms = Rooms::default();
    for f in &found {
        let (stored, end) = segment::read(&f.path)?;
        report.records += stored.len() as u64;
        for s in stored {
            rooms.add(s);
        }
        match end {
            End::Clean => {}
            End::Torn { valid } => {
                let len = fs::metadata(&f.path)?.len();
                report.torn.push((f.path.clone(), len - valid as u64));
            }
            End::Corrupt { .. } => report.corrupt.push(f.path.clone()),
        }
    }
    let mut history = rooms.finish(
        plan.now_ms.saturating_sub(plan.window_ms),
        plan.now_ms.saturating_sub(plan.key_window_ms),
        plan.now_ms
            .saturating_sub(plan.window_ms.max(plan.key_window_ms)),
    );
    report.rooms = history.len();
    report.messages = history.iter().map(|h| h.messages.len() as u64).sum();
    let clean = dir.join(CLEAN_FILE).exists();
    // Whether the last run's unsynced writes may be lost: the policy it wrote under,
    // not this run's.
    let (same_boot, synced) = last_boot(dir);
    let lost_writes = !clean && !same_boot && !synced;
    report.new_epochs = !history.is_empty() && (lost_writes || !report.corrupt.is_empty());
    if report.new_epochs {
        for h in &mut history {
            h.epoch = new_epoch();
            for m in &mut h.messages {
                m.epoch = h.epoch;
            }
        }
    }
    // Fresh segments after every old one, each beginning with its rooms' positions.
    let first = found.iter().map(|f| f.index + 1).max().unwrap_or(0);
    let workers = plan.workers.max(1);
    let mut logs = Vec::with_capacity(workers);
    let mut by_worker: Vec<Vec<RoomHistory>> = (0..workers).map(|_| Vec::new()).collect();
    for h in history {
        by_worker[home(&h.room).min(workers - 1)].push(h);
    }
    for (w, rooms) in by_worker.iter().enumerate() {
        let mut log = Log::create(dir, w, first + w as u64, plan.policy)?;
        for h in rooms {
            h.records(|r| log.append(&r));
        }
        log.flush(plan.now_ms)?;
        log.sync()?;
        logs.push(log);
    }
    sync_dir(dir)?;
    for f in &found {
        if report.corrupt.contains(&f.path) {
            let mut kept = f.path.clone().into_os_string();
            kept.push(".corrupt");
            fs::rename(&f.path, kept)?;
        } else {
            fs::remove_file(&f.path)?;
        }
    }
    write_boot(dir, plan.policy)?;
    if clean {
        // From now on the logs are written again: only a new clean stop counts.
        fs::remove_file(dir.join(CLEAN_FILE))?;
    }
    sync_dir(dir)?;
    Ok(Recovered {
        logs,
        rooms: by_worker,
        report,
    })
}

const BOOT_FILE: &str = "boot_id";
const CLEAN_FILE: &str = "clean";

/// Say that every log in `dir` was synced and closed (the node stopped cleanly):
/// the next start keeps the epochs even if the machine restarted in between.
pub fn mark_clean(dir: &Path) -> io::Result<()> {
    let path = dir.join(CLEAN_FILE);
    fs::write(&path, b"")?;
    fs::File::open(&path)?.sync_all()?;
    sync_dir(dir)
}

/// The kernel's id of this boot (empty when unknown).
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Whether the machine has not restarted since the directory was last opened, and
/// whether the run that opened it synced every write (`fsync = "always"`).
fn last_boot(dir: &Path) -> (bool, bool) {
    let now = boot_id();
    let then = fs::read_to_string(dir.join(BOOT_FILE)).unwrap_or_default();
    let mut lines = then.lines();
    let same = !now.is_empty() && lines.next().is_some_and(|b| b.trim() == now);
    let synced = lines.next().is_some_and(|p| p.trim() == "always");
    (same, synced)
}

/// Say that a write or sync of this run failed: after a machine restart, what this
/// run wrote cannot be trusted to be complete, whatever its policy.
pub fn mark_unsynced(dir: &Path) -> io::Result<()> {
    let tmp = dir.join(".boot_id.tmp");
    fs::write(&tmp, format!("{}\nfailed\n", boot_id()))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(tmp, dir.join(BOOT_FILE))
}

fn write_boot(dir: &Path, policy: Fsync) -> io::Result<()> {
    let tmp = dir.join(".boot_id.tmp");
    let policy = match policy {
        Fsync::Always => "always",
        Fsync::IntervalMs(_) => "interval",
        Fsync::Never => "never",
    };
    fs::write(&tmp, format!("{}\n{policy}\n", boot_id()))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(tmp, dir.join(BOOT_FILE))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(room: &str, epoch: u64, seq: u64, at_ms: u64, frame: &str) -> Stored {
        Stored {
            room: room.into(),
            epoch,
            seq,
            at_ms,
            frame: frame.as_bytes().to_vec(),
            key: String::new(),
            kind: Kind::Message,
        }
    }

    fn seqs(h: &RoomHistory) -> Vec<u64> {
        h.messages.iter().map(|m| m.seq).collect()
    }

    /// Worker `w`'s segment number `w`, holding messages `seqs` of `(room,
    /// epoch)`, each stamped at `at(seq)`.
    fn write_log(
        d: &Path,
        w: usize,
        (room, epoch): (&str, u64),
        seqs: std::ops::RangeInclusive<u64>,
        at: impl Fn(u64) -> u64,
    ) {
        let mut log = Log::create(d, w, w as u64, Fsync::Never).unwrap();
        for seq in seqs {
            log.append(&Record {
                room,
                epoch,
                seq,
                at_ms: at(seq),
                frame: b"frame",
                key: "",
                kind: Kind::Message,
            });
        }
        log.flush(0).unwrap();
    }

    #[test]
    fn a_room_is_its_newest_epoch_and_the_run_that_ends_at_its_latest_seq() {
        let mut r = Rooms::default();
        for seq in 1..=4 {
            r.add(stored("a", 1, seq, 100 + seq, "m"));
        }
        // The room was forgotten and started again with epoch 2.
        r.add(stored("a", 2, 1, 200, "m"));
        r.add(stored("a", 2, 2, 201, "m"));
        r.add(stored("b", 9, 3, 300, "m"));
        r.add(stored("b", 9, 5, 301, "m")); // 4 is missing: the run is just 5
        // The wall clock stepped back: order, not stamp times, decides.
        r.add(stored("c", 1, 1, 900, "m"));
        r.add(stored("c", 2, 1, 100, "m"));
        // Quiet for longer than every window: forgotten.
        r.add(stored("old", 3, 8, 10, "m"));
        let out = r.finish(0, 0, 50);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[2].epoch, 2);
        assert_eq!(
            (out[0].epoch, out[0].seq, seqs(&out[0])),
            (2, 2, vec![1, 2])
        );
        assert_eq!((out[1].epoch, out[1].seq, seqs(&out[1])), (9, 5, vec![5]));
    }

    #[test]
    fn a_room_handed_to_another_node_is_not_restored_unless_it_came_back() {
        let mut r = Rooms::default();
        for room in ["gone", "back"] {
            r.add(stored(room, 5, 1, 100, "m"));
            r.add(stored(room, 5, 2, 101, "m"));
            r.add(Stored {
                kind: Kind::Gone,
                ..stored(room, 5, 2, 102, "")
            });
        }
        // Handed back later (the log of the node it returned to), one message on.
        r.add(stored("back", 5, 2, 200, ""));
        r.add(stored("back", 5, 3, 201, "m"));
        let out = r.finish(0, 0, 0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].room.as_str(), out[0].epoch, out[0].seq),
            ("back", 5, 3)
        );
        assert_eq!(seqs(&out[0]), [3]);
    }

    #[test]
    fn positions_keep_the_place_and_the_window_cuts_old_messages() {
        let mut r = Rooms::default();
        r.add(stored("a", 3, 10, 100, "m"));
        r.add(stored("a", 3, 11, 500, "m"));
        r.add(stored("a", 3, 12, 600, "m"));
        r.add(stored("quiet", 4, 70, 50, "")); // a position record only
        // Duplicates (a crash while recovery rewrote the segments) collapse.
        r.add(stored("a", 3, 12, 600, "m"));
        let out = r.finish(400, 0, 0);
        assert_eq!((out[0].seq, seqs(&out[0])), (12, vec![11, 12]));
        assert_eq!((out[1].epoch, out[1].seq), (4, 70));
        assert!(out[1].messages.is_empty());
    }

    #[test]
    fn recovery_moves_rooms_to_their_new_workers_and_survives_itself() {
        let d = segment::tests_dir("recover");
        // Written by a node with 3 workers.
        for (w, room) in [(0usize, "a"), (1, "b"), (2, "c")] {
            write_log(&d, w, (room, 7), 1..=3, |seq| 1_000 + seq);
        }
        let plan = Plan {
            dir: &d,
            workers: 2,
            policy: Fsync::Always,
            now_ms: 2_000,
            window_ms: 60_000,
            key_window_ms: 60_000,
        };
        let home = |room: &str| usize::from(room == "b");
        let got = recover(plan, home, &mut || 99).unwrap();
        assert_eq!((got.report.files, got.report.records), (3, 9));
        assert_eq!((got.report.rooms, got.report.messages), (3, 9));
        let names = |w: usize| -> Vec<&str> { got.rooms[w].iter().map(|h| &*h.room).collect() };
        assert_eq!((names(0), names(1)), (vec!["a", "c"], vec!["b"]));
        assert_eq!(
            segment::list(&d).unwrap().len(),
            2,
            "the old files are gone"
        );
        drop(got);
        // Again (as after a second restart): the same rooms, nothing lost.
        let again = recover(plan, home, &mut || 99).unwrap();
        assert_eq!((again.report.rooms, again.report.messages), (3, 9));
        assert_eq!(seqs(&again.rooms[1][0]), [1, 2, 3]);
        assert!(!again.report.new_epochs, "same boot");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_loses_one_record_and_a_corrupt_segment_is_set_aside() {
        let d = segment::tests_dir("damage");
        write_log(&d, 0, ("a", 1), 1..=3, |_| 10);
        write_log(&d, 1, ("b", 2), 1..=2, |_| 10);
        let found = segment::list(&d).unwrap();
        // A crash in the middle of the last record of the first segment.
        let bytes = fs::read(&found[0].path).unwrap();
        fs::write(&found[0].path, &bytes[..bytes.len() - 3]).unwrap();
        // A flipped bit in the first record of the second.
        let mut bytes = fs::read(&found[1].path).unwrap();
        bytes[20] ^= 0x10;
        fs::write(&found[1].path, &bytes).unwrap();
        let plan = Plan {
            dir: &d,
            workers: 1,
            policy: Fsync::Never,
            now_ms: 20,
            window_ms: 60_000,
            key_window_ms: 60_000,
        };
        let got = recover(plan, |_| 0, &mut || 99).unwrap();
        assert_eq!(got.report.torn.len(), 1);
        assert_eq!(got.report.corrupt, [found[1].path.clone()]);
        assert!(
            got.report.new_epochs,
            "what followed the damage is unknown: no epoch may go on"
        );
        let a = &got.rooms[0][0];
        assert_eq!((a.room.as_str(), a.seq, seqs(a)), ("a", 2, vec![1, 2]));
        assert_eq!(got.rooms[0].len(), 1, "nothing of b could be read");
        let mut kept = found[1].path.clone().into_os_string();
        kept.push(".corrupt");
        assert!(
            Path::new(&kept).exists(),
            "the corrupt segment is kept aside"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_changed_boot_id_means_new_epochs_unless_every_write_was_synced() {
        let d = segment::tests_dir("boot");
        write_log(&d, 0, ("a", 1), 1..=1, |_| 10);
        let plan = |policy| Plan {
            dir: &d,
            workers: 1,
            policy,
            now_ms: 20,
            window_ms: 60_000,
            key_window_ms: 60_000,
        };
        let mut next = 100;
        let mut fresh = || {
            next += 1;
            next
        };
        let got = recover(plan(Fsync::IntervalMs(100)), |_| 0, &mut fresh).unwrap();
        assert!(got.report.new_epochs);
        assert_eq!(
            (got.rooms[0][0].epoch, got.rooms[0][0].messages[0].epoch),
            (101, 101)
        );
        drop(got);
        // This boot was recorded by that recovery: the new epoch goes on.
        let got = recover(plan(Fsync::Never), |_| 0, &mut fresh).unwrap();
        assert!(!got.report.new_epochs);
        assert_eq!(got.rooms[0][0].epoch, 101, "the new epoch was written down");
        drop(got);
        // The run that wrote the log decides, not the next one: written under
        // "never", read after a reboot by a node set to "always": lost writes.
        fs::write(d.join(BOOT_FILE), "another boot\nnever\n").unwrap();
        let got = recover(plan(Fsync::Always), |_| 0, &mut fresh).unwrap();
        assert!(got.report.new_epochs, "the writer did not sync");
        drop(got);
        // Written by a run set to "always" (recorded by the recovery above): a reboot
        // loses nothing.
        let epoch = |got: &Recovered| got.rooms[0][0].epoch;
        let before = epoch(&recover(plan(Fsync::Always), |_| 0, &mut fresh).unwrap());
        let mut id = fs::read_to_string(d.join(BOOT_FILE)).unwrap();
        id.replace_range(..1, "X");
        fs::write(d.join(BOOT_FILE), id).unwrap();
        let got = recover(plan(Fsync::Never), |_| 0, &mut fresh).unwrap();
        assert!(!got.report.new_epochs, "every write was synced");
        assert_eq!(epoch(&got), before);
        drop(got);
        // A clean stop before the reboot: nothing can be missing.
        mark_clean(&d).unwrap();
        fs::write(d.join(BOOT_FILE), "another boot").unwrap();
        let got = recover(plan(Fsync::Never), |_| 0, &mut fresh).unwrap();
        assert!(!got.report.new_epochs, "stopped cleanly");
        drop(got);
        assert!(!d.join(CLEAN_FILE).exists(), "the mark is used once");
        fs::write(d.join(BOOT_FILE), "another boot").unwrap();
        assert!(
            recover(plan(Fsync::Never), |_| 0, &mut fresh)
                .unwrap()
                .report
                .new_epochs
        );
        let _ = fs::remove_dir_all(&d);
    }
}
