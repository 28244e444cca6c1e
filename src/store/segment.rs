//! One worker's segment log on disk: files `w<worker>-<index>.seg` in the data
//! directory, each a run of [`record`](super::record)s. Appends go to the newest
//! segment; past [`SEGMENT_BYTES`] a new one begins, so old history is deleted a
//! whole file at a time once it has left the replay window.
//!
//! Reading the logs back at start is [`recover`](super::recover)'s job; a [`Log`]
//! only ever appends to segments it created.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::record::{End, Kind, Record, scan};

/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// When appended records reach the disk for sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every flush.
    Always,
    /// At most this many milliseconds after a record was written.
    IntervalMs(u64),
    /// Never (the kernel writes back in its own time).
    Never,
}

/// A record read back, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The room.
    pub room: String,
    /// Its epoch.
    pub epoch: u64,
    /// The seq.
    pub seq: u64,
    /// When it was stamped, Unix ms.
    pub at_ms: u64,
    /// The frame (empty: a position or key record).
    pub frame: Vec<u8>,
    /// The idempotency key with its scope (empty: none).
    pub key: String,
    /// What the record says (see `store::record`).
    pub kind: Kind,
}

impl From<&Record<'_>> for Stored {
    fn from(r: &Record<'_>) -> Self {
        Self {
            room: r.room.to_owned(),
            epoch: r.epoch,
            seq: r.seq,
            at_ms: r.at_ms,
            frame: r.frame.to_vec(),
            key: r.key.to_owned(),
            kind: r.kind,
        }
    }
}

/// What a log has done (plain counters: one worker writes them).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogStats {
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
    /// Time spent in them, ns.
    pub fsync_ns: u64,
    /// Segments deleted once out of the window.
    pub deleted: u64,
}

/// One segment this log wrote.
#[derive(Debug)]
struct Segment {
    index: u64,
    path: PathBuf,
    /// When a record was last appended to it (the monotonic clock: a step of the
    /// wall clock must not delete history still in its window).
    last: Instant,
    /// Bytes in it.
    bytes: u64,
}

/// A worker's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    worker: usize,
    segments: Vec<Segment>,
    file: File,
    buf: Vec<u8>,
    policy: Fsync,
    /// Written but not yet synced since this time (ms, the caller's clock).
    dirty_since: Option<u64>,
    stats: LogStats,
    /// A new segment begins past this size ([`SEGMENT_BYTES`]).
    segment_bytes: u64,
}

impl Log {
    /// Start worker `worker`'s log in `dir` with a new, empty segment numbered
    /// `index` (higher than any segment already there).
    pub fn create(dir: &Path, worker: usize, index: u64, policy: Fsync) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (file, path) = create(dir, worker, index)?;
        Ok(Self {
            dir: dir.to_owned(),
            worker,
            segments: vec![Segment {
                index,
                path,
                last: Instant::now(),
                bytes: 0,
            }],
            file,
            buf: Vec::new(),
            policy,
            dirty_since: None,
            stats: LogStats::default(),
            segment_bytes: SEGMENT_BYTES,
        })
    }

    /// The same log with segments of `bytes` (tests: rotations without writing
    /// 64 MiB).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Queue a record (written at the next [`Log::flush`]).
    pub fn append(&mut self, r: &Record<'_>) {
        r.encode(&mut self.buf);
        self.stats.records += 1;
    }

    /// Whether records wait for a [`Log::flush`].
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Write what was appended, and sync as the policy says, at `now_ms`. Returns
    /// whether a new segment began (the caller then appends each room's position,
    /// see the module docs of [`record`](super::record)).
    pub fn flush(&mut self, now_ms: u64) -> io::Result<bool> {
        let rotated = self.write(now_ms)?;
        if self.policy == Fsync::Always {
            self.sync()?;
        }
        Ok(rotated)
    }

    /// [`Log::flush`], but with the `always` policy the sync is left to the caller
    /// ([`Log::sync`], once for a batch: group commit). Returns whether a new
    /// segment began.
    pub fn write(&mut self, now_ms: u64) -> io::Result<bool> {
        if !self.buf.is_empty() {
            let result = self.file.write_all(&self.buf);
            let n = self.buf.len() as u64;
            self.buf.clear();
            if let Err(e) = result {
                // Part of it may be in the file: cut it off, so what is appended next
                // follows the last whole record (best effort; recovery would see a
                // torn or corrupt segment otherwise).
                if let Some(s) = self.segments.last() {
                    let _ = self.file.set_len(s.bytes);
                }
                return Err(e);
            }
            self.stats.bytes += n;
            if let Some(s) = self.segments.last_mut() {
                s.bytes += n;
                s.last = Instant::now();
            }
            self.dirty_since.get_or_insert(now_ms);
        }
        let sync = match (self.policy, self.dirty_since) {
            (_, None) | (Fsync::Never | Fsync::Always, _) => false,
            (Fsync::IntervalMs(ms), Some(t)) => now_ms.saturating_sub(t) >= ms,
        };
        if sync {
            self.sync()?;
        }
        let full = self
            .segments
            .last()
            .is_some_and(|s| s.bytes >= self.segment_bytes);
        if !full {
            return Ok(false);
        }
        self.sync()?;
        let next = self.segments.last().map_or(0, |s| s.index + 1);
        let (file, path) = create(&self.dir, self.worker, next)?;
        // The new file's name must survive a power loss with its records.
        File::open(&self.dir)?.sync_all()?;
        self.file = file;
        self.segments.push(Segment {
            index: next,
            path,
            last: Instant::now(),
            bytes: 0,
        });
        Ok(true)
    }

    /// Whether something written is not yet synced.
    pub fn unsynced(&self) -> bool {
        self.dirty_since.is_some()
    }

    /// The fsync policy.
    pub fn policy(&self) -> Fsync {
        self.policy
    }

    /// The directory it writes in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make everything written so far durable (`fdatasync`), whatever the policy.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let t = Instant::now();
        self.file.sync_data()?;
        self.stats.fsyncs += 1;
        self.stats.fsync_ns += t.elapsed().as_nanos() as u64;
        self.dirty_since = None;
        Ok(())
    }

    /// Delete the closed segments last written more than `keep` ago, oldest first.
    /// Returns how many were deleted.
    pub fn forget_older_than(&mut self, keep: std::time::Duration) -> io::Result<usize> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[0].last.elapsed() > keep {
            fs::remove_file(&self.segments[0].path)?;
            self.segments.remove(0);
            self.stats.deleted += 1;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Bytes on disk in this log's segments.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// What the log has done.
    pub fn stats(&self) -> LogStats {
        self.stats
    }
}

/// A segment file found in a data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Its number (segments of all workers are numbered apart from each other).
    pub index: u64,
    /// The worker that wrote it.
    pub worker: usize,
    /// Where it is.
    pub path: PathBuf,
}

/// Every segment file in `dir` (of any worker), oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some((worker, index)) = name
            .strip_prefix('w')
            .and_then(|r| r.strip_suffix(".seg"))
            .and_then(|r| r.split_once('-'))
        else {
            continue;
        };
        if let (Ok(worker), Ok(index)) = (worker.parse(), index.parse()) {
            found.push(Found {
                index,
                worker,
                path,
            });
        }
    }
    found.sort();
    Ok(found)
}

/// Read a segment back: its good records, and how it ended.
pub fn read(path: &Path) -> io::Result<(Vec<Stored>, End)> {
    let bytes = fs::read(path)?;
    let (records, end) = scan(&bytes);
    let stored = records.iter().map(Stored::from).collect();
    Ok((stored, end))
}

fn create(dir: &Path, worker: usize, index: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!("w{worker}-{index:016}.seg"));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    Ok((file, path))
}

/// A fresh directory for a test.
#[cfg(test)]
pub(crate) fn tests_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringway-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        tests_dir(name)
    }

    fn rec(seq: u64, at_ms: u64, frame: &[u8]) -> Record<'_> {
        Record {
            room: "chat:1",
            epoch: 7,
            seq,
            at_ms,
            frame,
            key: "",
            kind: Kind::Message,
        }
    }

    #[test]
    fn what_was_flushed_is_read_back() {
        let d = dir("flushed");
        let mut log = Log::create(&d, 3, 5, Fsync::Always).unwrap();
        for seq in 1..=3 {
            log.append(&rec(seq, 100 + seq, b"frame"));
        }
        assert!(log.has_pending());
        assert!(!log.flush(0).unwrap());
        assert_eq!(log.stats().fsyncs, 1, "always: synced at the flush");
        let found = list(&d).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].worker, found[0].index), (3, 5));
        let (stored, end) = read(&found[0].path).unwrap();
        assert_eq!(end, End::Clean);
        let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(
            log.disk_bytes(),
            fs::metadata(&found[0].path).unwrap().len()
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_interval_policy_syncs_once_the_interval_has_passed() {
        let d = dir("interval");
        let mut log = Log::create(&d, 0, 0, Fsync::IntervalMs(100)).unwrap();
        log.append(&rec(1, 1, b"a"));
        log.flush(1_000).unwrap();
        log.append(&rec(2, 2, b"b"));
        log.flush(1_050).unwrap();
        assert_eq!(log.stats().fsyncs, 0);
        log.flush(1_100).unwrap(); // nothing new, but the first write is due
        assert_eq!(log.stats().fsyncs, 1);
        log.flush(1_300).unwrap();
        assert_eq!(log.stats().fsyncs, 1, "nothing written since");
        let mut never = Log::create(&d, 1, 0, Fsync::Never).unwrap();
        never.append(&rec(1, 1, b"a"));
        never.flush(0).unwrap();
        never.flush(1 << 40).unwrap();
        assert_eq!(never.stats().fsyncs, 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn old_segments_are_deleted_whole_once_out_of_the_window() {
        let d = dir("forget");
        let mut log = Log::create(&d, 0, 0, Fsync::Never).unwrap();
        let big = vec![b'x'; 1 << 20];
        // 70 records of 1 MiB: a second segment begins after 64.
        let mut rotated = 0;
        for seq in 1..=70 {
            log.append(&rec(seq, seq, &big));
            rotated += usize::from(log.flush(seq).unwrap());
        }
        assert_eq!((log.segments(), rotated), (2, 1));
        let window = std::time::Duration::from_millis(300);
        assert_eq!(log.forget_older_than(window).unwrap(), 0, "just written");
        std::thread::sleep(window);
        // The open segment stays, however old.
        assert_eq!(log.forget_older_than(window).unwrap(), 1);
        assert_eq!(log.forget_older_than(window).unwrap(), 0);
        assert!(log.disk_bytes() < 8 << 20, "{}", log.disk_bytes());
        let found = list(&d).unwrap();
        assert_eq!(found.len(), 1);
        let (stored, _) = read(&found[0].path).unwrap();
        assert_eq!(stored.first().map(|s| s.seq), Some(65));
        assert_eq!(log.stats().deleted, 1);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn listing_ignores_what_is_not_a_segment() {
        let d = dir("list");
        fs::create_dir_all(&d).unwrap();
        for name in [
            "w0-2.seg",
            "w1-1.seg",
            "w0-x.seg",
            "notes.txt",
            "w2-3.seg.corrupt",
        ] {
            fs::write(d.join(name), b"").unwrap();
        }
        let found: Vec<(u64, usize)> = list(&d)
            .unwrap()
            .iter()
            .map(|f| (f.index, f.worker))
            .collect();
        assert_eq!(found, [(1, 1), (2, 0)]);
        assert!(list(&d.join("absent")).unwrap().is_empty());
        let _ = fs::remove_dir_all(&d);
    }
}
