//! One worker's segment log on disk: files `w<worker>-<index>.seg` in the data
//! directory, each a run of [`record`](super::record)s. Appends go to the newest
//! segment; past [`SEGMENT_BYTES`] a new one begins, so old history is deleted a
//! whole file at a time once it has left the replay window.
//!
//! Opening the log reads every segment of the worker back (oldest first): a torn
//! tail (a crash mid-write) is truncated, never fatal; a corrupt segment keeps its
//! good prefix, the rest skipped, and is named in what [`Log::open`] reports.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{End, Record, scan};

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

/// A record read back at open, owned.
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
    /// The frame.
    pub frame: Vec<u8>,
}

/// What opening found besides the records.
#[derive(Debug, Default)]
pub struct Opened {
    /// Segments whose tail was torn and has been truncated, with the bytes cut.
    pub truncated: Vec<(PathBuf, u64)>,
    /// Segments with a corrupt record: their good prefix was kept, the rest skipped.
    pub corrupt: Vec<PathBuf>,
}

/// One closed or open segment.
#[derive(Debug)]
struct Segment {
    index: u64,
    path: PathBuf,
    /// Newest record's stamp time (0: none).
    newest_ms: u64,
}

/// A worker's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    worker: usize,
    segments: Vec<Segment>,
    file: File,
    len: u64,
    buf: Vec<u8>,
    policy: Fsync,
    /// Written but not yet synced since this time (ms, the caller's clock).
    dirty_since: Option<u64>,
}

impl Log {
    /// Open (or start) worker `worker`'s log in `dir`: every stored record, oldest
    /// first, and what was repaired. Appends go to a fresh segment.
    pub fn open(
        dir: &Path,
        worker: usize,
        policy: Fsync,
    ) -> io::Result<(Self, Vec<Stored>, Opened)> {
        fs::create_dir_all(dir)?;
        let prefix = format!("w{worker}-");
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(index) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".seg"))
                .and_then(|i| i.parse::<u64>().ok())
            {
                found.push((index, path));
            }
        }
        found.sort();
        let mut stored = Vec::new();
        let mut opened = Opened::default();
        let mut segments = Vec::new();
        for (index, path) in found {
            let bytes = fs::read(&path)?;
            let (records, end) = scan(&bytes);
            let newest_ms = records.iter().map(|r| r.at_ms).max().unwrap_or(0);
            stored.extend(records.into_iter().map(|r| Stored {
                room: r.room.to_owned(),
                epoch: r.epoch,
                seq: r.seq,
                at_ms: r.at_ms,
                frame: r.frame.to_vec(),
            }));
            match end {
                End::Clean => {}
                End::Torn { valid } => {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(valid as u64)?;
                    opened
                        .truncated
                        .push((path.clone(), (bytes.len() - valid) as u64));
                }
                End::Corrupt { .. } => opened.corrupt.push(path.clone()),
            }
            segments.push(Segment {
                index,
                path,
                newest_ms,
            });
        }
        let next = segments.last().map_or(0, |s| s.index + 1);
        let (file, path) = create(dir, worker, next)?;
        segments.push(Segment {
            index: next,
            path,
            newest_ms: 0,
        });
        let log = Self {
            dir: dir.to_owned(),
            worker,
            segments,
            file,
            len: 0,
            buf: Vec::new(),
            policy,
            dirty_since: None,
        };
        Ok((log, stored, opened))
    }

    /// Queue a record (written at the next [`Log::flush`]).
    pub fn append(&mut self, r: &Record<'_>) {
        r.encode(&mut self.buf);
        if let Some(s) = self.segments.last_mut() {
            s.newest_ms = s.newest_ms.max(r.at_ms);
        }
    }

    /// Write what was appended, and sync as the policy says, at `now_ms`.
    pub fn flush(&mut self, now_ms: u64) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.len += self.buf.len() as u64;
            self.buf.clear();
            self.dirty_since.get_or_insert(now_ms);
        }
        let sync = match (self.policy, self.dirty_since) {
            (_, None) | (Fsync::Never, _) => false,
            (Fsync::Always, Some(_)) => true,
            (Fsync::IntervalMs(ms), Some(t)) => now_ms.saturating_sub(t) >= ms,
        };
        if sync {
            self.file.sync_data()?;
            self.dirty_since = None;
        }
        if self.len >= SEGMENT_BYTES {
            self.file.sync_data()?;
            self.dirty_since = None;
            let next = self.segments.last().map_or(0, |s| s.index + 1);
            let (file, path) = create(&self.dir, self.worker, next)?;
            self.file = file;
            self.len = 0;
            self.segments.push(Segment {
                index: next,
                path,
                newest_ms: 0,
            });
        }
        Ok(())
    }

    /// Delete the closed segments whose every record is older than `cutoff_ms`.
    /// Returns how many were deleted.
    pub fn forget_before(&mut self, cutoff_ms: u64) -> io::Result<usize> {
        let open = self.segments.len().saturating_sub(1);
        let old = self.segments[..open]
            .iter()
            .take_while(|s| s.newest_ms < cutoff_ms)
            .count();
        for s in self.segments.drain(..old) {
            fs::remove_file(&s.path)?;
        }
        Ok(old)
    }

    /// Bytes on disk in this worker's segments.
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn create(dir: &Path, worker: usize, index: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!("w{worker}-{index:016}.seg"));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringway-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn rec(seq: u64, at_ms: u64, frame: &[u8]) -> Record<'_> {
        Record {
            room: "chat:1",
            epoch: 7,
            seq,
            at_ms,
            frame,
        }
    }

    #[test]
    fn what_was_flushed_is_read_back_after_a_restart() {
        let d = dir("restart");
        let (mut log, stored, _) = Log::open(&d, 0, Fsync::Always).unwrap();
        assert!(stored.is_empty());
        for seq in 1..=3 {
            log.append(&rec(seq, 100 + seq, b"frame"));
        }
        log.flush(0).unwrap();
        drop(log);
        let (_, stored, opened) = Log::open(&d, 0, Fsync::Always).unwrap();
        let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(opened.truncated.is_empty() && opened.corrupt.is_empty());
        // Another worker's segments are its own.
        let (_, other, _) = Log::open(&d, 1, Fsync::Always).unwrap();
        assert!(other.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_a_corrupt_segment_named() {
        let d = dir("torn");
        let (mut log, _, _) = Log::open(&d, 0, Fsync::Never).unwrap();
        log.append(&rec(1, 1, b"one"));
        log.append(&rec(2, 2, b"two"));
        log.flush(0).unwrap();
        let path = log.segments[0].path.clone();
        drop(log);
        // A crash in the middle of a third record.
        let mut bytes = fs::read(&path).unwrap();
        let whole = bytes.len() as u64;
        let mut third = Vec::new();
        rec(3, 3, b"three").encode(&mut third);
        bytes.extend_from_slice(&third[..third.len() - 2]);
        fs::write(&path, &bytes).unwrap();
        let (_, stored, opened) = Log::open(&d, 0, Fsync::Never).unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(opened.truncated, [(path.clone(), third.len() as u64 - 2)]);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
        // A changed byte in the first record: corrupt, named, nothing read from it.
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (_, stored, opened) = Log::open(&d, 0, Fsync::Never).unwrap();
        assert!(stored.is_empty());
        assert_eq!(opened.corrupt, [path]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn old_segments_are_deleted_whole_once_out_of_the_window() {
        let d = dir("forget");
        let (mut log, _, _) = Log::open(&d, 0, Fsync::IntervalMs(100)).unwrap();
        let big = vec![b'x'; 1 << 20];
        // 70 records of 1 MiB: a second segment begins after 64.
        for seq in 1..=70 {
            log.append(&rec(seq, seq, &big));
            log.flush(seq).unwrap();
        }
        assert_eq!(log.segments.len(), 2);
        assert_eq!(
            log.forget_before(64).unwrap(),
            0,
            "seq 64 (stamped at 64) is still in"
        );
        assert_eq!(log.forget_before(65).unwrap(), 1);
        assert!(log.disk_bytes() < 8 << 20, "{}", log.disk_bytes());
        drop(log);
        let (_, stored, _) = Log::open(&d, 0, Fsync::Never).unwrap();
        assert_eq!(stored.first().map(|s| s.seq), Some(65));
        let _ = fs::remove_dir_all(&d);
    }
}
