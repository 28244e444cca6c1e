//! Back-pressure on publishers: a room whose fan-out is behind stops the reading of
//! the connections that publish to it, for a bounded time, instead of letting its
//! subscribers' queues grow to their bound.
//!
//! *Behind*: more than half of a room's subscribers on the node have a full socket
//! with over `limits.backpressure_frames` frames queued behind it, and are still
//! reading (their socket took bytes within the last half second). A subscriber that
//! stopped reading altogether does not count, so it cannot stall its rooms: it is left
//! to its slow-consumer policy, as before; nor does a minority that reads slower than
//! the rest (a hostile client reading a byte at a time among them).
//!
//! Each worker counts, as it queues a room's frame for its subscribers, how many of
//! them are behind, and reports both numbers in a node-wide table indexed by a hash
//! of the room's name, seeded per process (a cell per worker, so no two workers
//! write the same one). A cell also keeps 32 more bits of the hash, and a room only
//! reads the cells that carry its own: two rooms that share a slot overwrite each
//! other's reports (at worst a pause comes late), but never pause each other's
//! publishers. While a room is behind, each worker where some of its subscribers are
//! counts them again every couple of milliseconds, so the report clears once they
//! catch up even when nothing more is published.
//!
//! A client connection that publishes to a room that is behind is read no more
//! after the read that brought the message (what that read brought, at most the
//! worker's 64 KiB buffer, is acted on: nothing complete waits in the connection,
//! where it would count as an unfinished message); its socket leaves the reactor's
//! input interest until the room is no longer behind or
//! `limits.backpressure_pause_ms` passed; then it is read again, at least once
//! before it can be paused again. What it sends meanwhile waits in the
//! kernel, and TCP's flow control carries the pressure to the publisher.
//!
//! The node itself is behind while some worker's inbox is long (over `INBOX_HIGH`
//! letters). Then a connection that publishes in bulk (`BULK_READ` messages or more
//! in its last read) is not read: it is paused before its read (and after a read
//! that made it one) until every inbox is short again (they only ever drain: a
//! worker handles its letters whatever its subscribers do); then the held are read
//! again `BULK_RESUMES` at a time per pace, oldest first, since one read of one of
//! them may make the inboxes long again. Only once per
//! `limits.backpressure_pause_ms` does a held connection get one read of
//! `SMALL_READ` bytes meanwhile: its pongs and closes are seen, and a chat user
//! marked bulk by one paste waits a pause at most. Meanwhile every read is of
//! `SMALL_READ` bytes at most, which bounds what a connection not yet known to
//! publish in bulk adds. So the letters in flight stay near the bound however many
//! publishers there are, and a connection that publishes a message at a time is
//! read as usual: the crowd's letters are not put ahead of it. An HTTP publish
//! waits while its room or the node is behind, at most a pause. Messages from
//! peer nodes are not held back (their link is shared by every room).

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use super::worker::{Shared, State, Worker};
use crate::conn::{Conn, ConnKey, Phase, WriteWait};

/// Slots per worker in the node-wide table (a power of two).
const SLOTS: usize = 8192;

/// How often reports and pauses are looked at again while any is up.
const PACE: Duration = Duration::from_millis(2);

/// A subscriber whose socket took nothing for this long has stopped reading.
const READING_MS: u16 = 500;

/// Letters in a worker's inbox over which the node is behind: publishers read no
/// more (their messages already read go through it to the room's home worker and
/// on to every worker with subscribers, so it bounds how far ahead of the fan-out
/// a publisher can be read).
const INBOX_HIGH: usize = 128;

/// Messages published in one read from which a connection publishes in bulk: while
/// the node's inboxes are long it is not read at all (one that publishes a message
/// at a time is read, and paused after its read like any publisher).
const BULK_READ: u8 = 8;

/// Bytes read at once from a connection while the node's inboxes are long, and
/// from a bulk publisher whose hold ended by time.
const SMALL_READ: usize = 4096;

/// Bulk publishers held for the node that a worker reads again per pace, once the
/// inboxes are short.
const BULK_RESUMES: usize = 4;

/// What each worker last counted of the rooms in each slot: subscribers behind, and
/// subscribers.
#[derive(Debug)]
pub struct LagTable {
    /// `SLOTS` cells per worker, worker after worker.
    cells: Box<[Cell]>,
    workers: usize,
    /// The hash's seed: which rooms share a slot cannot be worked out offline.
    seed: u64,
}

#[derive(Debug, Default)]
struct Cell {
    /// The reporting room's tag (0: none yet).
    tag: AtomicU32,
    lagging: AtomicU32,
    subscribers: AtomicU32,
}

/// Where a room's counts are kept, and the tag that tells them from another
/// room's in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomKey {
    slot: u32,
    tag: u32,
}

impl RoomKey {
    /// No room: a publisher held before its read while the node's inboxes are long.
    /// No report carries tag 0, so it is never behind.
    const NONE: Self = Self { slot: 0, tag: 0 };
}

impl LagTable {
    /// An empty table for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            cells: (0..SLOTS * workers).map(|_| Cell::default()).collect(),
            workers,
            seed: fastrand::u64(..),
        }
    }

    /// Where `room`'s counts are kept.
    pub fn key(&self, room: &str) -> RoomKey {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(room.as_bytes(), self.seed);
        RoomKey {
            slot: (h as usize & (SLOTS - 1)) as u32,
            tag: (h >> 32) as u32 | 1,
        }
    }

    fn cell(&self, worker: usize, key: RoomKey) -> &Cell {
        &self.cells[worker * SLOTS + key.slot as usize]
    }

    /// Whether over half the node's subscribers of the room are behind.
    pub fn behind(&self, key: RoomKey) -> bool {
        let (mut lagging, mut subscribers) = (0u64, 0u64);
        for w in 0..self.workers {
            let c = self.cell(w, key);
            if c.tag.load(Ordering::Relaxed) != key.tag {
                continue; // another room's report, or none
            }
            lagging += u64::from(c.lagging.load(Ordering::Relaxed));
            subscribers += u64::from(c.subscribers.load(Ordering::Relaxed));
        }
        lagging > 0 && 2 * lagging > subscribers
    }

    /// Worker `worker` counted `lagging` of `subscribers` behind in the room.
    fn report(&self, worker: usize, key: RoomKey, lagging: usize, subscribers: usize) {
        let c = self.cell(worker, key);
        c.tag.store(key.tag, Ordering::Relaxed);
        c.lagging.store(lagging as u32, Ordering::Relaxed);
        c.subscribers.store(subscribers as u32, Ordering::Relaxed);
    }
}

/// A worker's side: the rooms with subscribers behind here, and the publishers it
/// paused.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Rooms behind with subscribers behind here, counted again while they are.
    lagging: Vec<(Arc<str>, RoomKey)>,
    /// Paused publishers: the connection, the room it waits on, since when (ms).
    paused: Vec<(ConnKey, RoomKey, u32)>,
    /// Bulk publishers whose hold ended by time while the node was still behind:
    /// their next read is a small one.
    short: Vec<ConnKey>,
    /// Something began to lag or was paused: the pacer must run.
    wake: bool,
}

impl Pacing {
    /// Rooms with subscribers behind on this worker whose fan-out is behind
    /// node-wide (gauge).
    pub fn rooms_behind(&self, table: &LagTable) -> usize {
        self.lagging
            .iter()
            .filter(|(_, key)| table.behind(*key))
            .count()
    }

    /// Whether nothing lags or is paused here.
    fn idle(&self) -> bool {
        self.lagging.is_empty() && self.paused.is_empty()
    }
}

/// The worker's milliseconds in the 16 ms units of `Conn::drained`.
pub(super) fn drained_units(now_ms: u32) -> u16 {
    (now_ms >> 4) as u16
}

/// Whether some worker's inbox is long: the node itself is behind.
fn inbox_long(shared: &Shared) -> bool {
    shared.mailboxes.iter().any(|m| m.len() > INBOX_HIGH)
}

/// Whether a publisher to the room waits: the room is behind, or some worker's
/// inbox is.
fn held_back(shared: &Shared, room: RoomKey) -> bool {
    shared.lag.behind(room) || inbox_long(shared)
}

/// Whether `conn` is behind: its socket is full, more than `frames` frames wait
/// behind it, and it took bytes within `READING_MS` (it still reads).
pub(super) fn lags(conn: &Conn, frames: usize, now_ms: u32) -> bool {
    conn.write_wait != WriteWait::No
        && conn.outq.len() > frames
        && drained_units(now_ms).wrapping_sub(conn.drained) <= READING_MS / 16
}

impl State {
    fn pacing_on(&self) -> bool {
        self.shared.config.limits.backpressure_frames > 0
    }

    /// `lagging` of `room`'s `subscribers` on this worker are behind (see
    /// [`lags`]), counted as a frame was queued for them: report it.
    pub(super) fn report_lag(&mut self, room: &str, lagging: usize, subscribers: usize) {
        let key = self.shared.lag.key(room);
        self.shared.lag.report(self.id, key, lagging, subscribers);
        if lagging > 0
            && self.shared.lag.behind(key)
            && !self.pacing.lagging.iter().any(|(r, _)| &**r == room)
        {
            self.pacing.lagging.push((Arc::from(room), key));
            self.pacing.wake = true;
        }
    }

    /// Whether the pacer must be started (something began to lag or was paused).
    pub(super) fn pacer_wanted(&mut self) -> bool {
        std::mem::take(&mut self.pacing.wake)
    }

    /// Count the rooms behind again and report them; forget those no longer behind
    /// (a room that is not behind has no paused publishers, so its next frames bring
    /// a new report: only a room behind needs counting without them, and a large
    /// room with a few slow readers is not counted over and over).
    fn recount(&mut self, now_ms: u32) {
        let frames = self.shared.config.limits.backpressure_frames;
        let Self {
            conns,
            pacing,
            hub,
            shared,
            id,
            ..
        } = self;
        pacing.lagging.retain(|(room, key)| {
            let subscribers = hub.subscribers(room);
            let lagging = subscribers
                .iter()
                .filter(|&&key| conns.get_mut(key).is_some_and(|c| lags(c, frames, now_ms)))
                .count();
            shared.lag.report(*id, *key, lagging, subscribers.len());
            lagging > 0 && shared.lag.behind(*key)
        });
    }

    /// Client connection `key` published to `room`: pause it when the room is
    /// behind (its reader stops after this read; see `Worker::stop_reading`).
    pub(super) fn pace_publisher(&mut self, key: ConnKey, room: &str) {
        if !self.pacing_on() {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.read_pubs = conn.read_pubs.saturating_add(1);
        let bulk = conn.read_pubs >= BULK_READ;
        let room = self.shared.lag.key(room);
        if self.shared.lag.behind(room) {
            self.pause(key, room);
        } else if bulk && inbox_long(&self.shared) {
            self.pause(key, RoomKey::NONE);
        }
    }

    /// What a read brought is about to be acted on: the connection's publishes are
    /// counted anew (a read that completed no TLS record does not count: it would
    /// clear a bulk publisher's mark).
    pub(super) fn publishes_counted_anew(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.read_pubs = 0;
        }
    }

    /// Before reading connection `key`: hold it, unread, when it publishes in bulk
    /// and the node's inboxes are long (its reader stops; see
    /// `Worker::stop_reading`). Whether it was held.
    pub(super) fn hold_before_read(&mut self, key: ConnKey) -> bool {
        let held = self.pacing_on()
            && !self.pacing.short.contains(&key)
            && self
                .conns
                .get_mut(key)
                .is_some_and(|c| c.read_pubs >= BULK_READ)
            && inbox_long(&self.shared);
        held && self.pause(key, RoomKey::NONE)
    }

    /// How much of connection `key` to read at once: while the node's inboxes are
    /// long, a small read (a connection not yet known to publish in bulk may be
    /// one); the same for a bulk publisher whose hold ended by time.
    pub(super) fn read_size(&mut self, key: ConnKey, scratch: usize) -> usize {
        if !self.pacing_on() {
            return scratch;
        }
        let short = match self.pacing.short.iter().position(|&k| k == key) {
            Some(i) => {
                self.pacing.short.swap_remove(i);
                true
            }
            None => false,
        };
        if short || inbox_long(&self.shared) {
            scratch.min(SMALL_READ)
        } else {
            scratch
        }
    }

    /// Pause an open connection's reading while `room` (or the node) is behind;
    /// whether it was paused now.
    fn pause(&mut self, key: ConnKey, room: RoomKey) -> bool {
        let now = self.now_ms();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.paused || conn.phase != Phase::Open {
            return false;
        }
        conn.paused = true;
        self.pacing.paused.push((key, room, now));
        self.pacing.wake = true;
        self.conns.stats.publishers_paused += 1;
        true
    }

    /// Paused connections to read again: their room is no longer behind or their
    /// pause is over; for a bulk publisher held for the node, the node's inboxes are
    /// short again; or they ended or began to close.
    fn resumable(&mut self, now_ms: u32) -> Vec<ConnKey> {
        let pause = self.shared.config.limits.backpressure_pause_ms as u32;
        let Self {
            conns,
            pacing,
            shared,
            ..
        } = self;
        let mut out = Vec::new();
        let tick = conns.stamp();
        let long = inbox_long(shared);
        let mut bulk = 0;
        // Small reads owed to connections that ended are forgotten.
        pacing
            .short
            .retain(|&key| conns.get_mut(key).is_some_and(|c| c.phase == Phase::Open));
        pacing.paused.retain(|&(key, room, since)| {
            let Some(conn) = conns.get_mut(key) else {
                return false; // gone
            };
            let done = conn.phase != Phase::Open
                || if room == RoomKey::NONE {
                    // A bulk publisher held for the node: a few at a time, oldest
                    // first (one read of one of them may make the inboxes long
                    // again); and at least once a pause, a small read (its pongs
                    // and closes are read; a chat user who once pasted 8 lines
                    // waits no longer than a pause behind the crowd).
                    let short = long && now_ms.wrapping_sub(since) >= pause;
                    if short && !pacing.short.contains(&key) {
                        pacing.short.push(key);
                    }
                    short
                        || (!long && {
                            bulk += 1;
                            bulk <= BULK_RESUMES
                        })
                } else {
                    !shared.lag.behind(room) || now_ms.wrapping_sub(since) >= pause
                };
            if done {
                conn.paused = false;
                if conn.partial_since.is_some() {
                    // Its unfinished frame waited on us, not on the client.
                    conn.partial_since = Some(tick);
                }
                out.push(key);
            }
            !done
        });
        out
    }
}

impl Worker {
    /// The connection being read was paused (it published to a room behind): take
    /// its socket out of the reactor's input interest. A connection the reactor does
    /// not watch (it has a task of its own) is not paused. Whether it was.
    pub(super) fn stop_reading(self: &Rc<Self>, key: ConnKey) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(conn) = st.conns.get_mut(key) else {
            return false;
        };
        let output = conn.write_wait == WriteWait::Reactor;
        let paused = match self.reactor.interest(conn.fd, key, false, output) {
            Ok(()) => true,
            Err(e) => {
                // ENOENT: it has a task of its own (not paused); else out of memory.
                if e != Errno::ENOENT {
                    tracing::debug!("cannot pause reading a publisher: {e}");
                }
                conn.paused = false;
                st.pacing.paused.retain(|&(k, _, _)| k != key);
                false
            }
        };
        drop(st);
        self.pace();
        paused
    }

    /// Make sure the pacer runs while anything lags or is paused.
    pub(super) fn pace(self: &Rc<Self>) {
        if self.pacing.replace(true) {
            return;
        }
        let w = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(PACE).await;
                if !w.pace_once() {
                    w.pacing.set(false);
                    return;
                }
            }
        });
    }

    /// Count lagging rooms again, resume publishers; whether anything still lags or
    /// is paused.
    fn pace_once(self: &Rc<Self>) -> bool {
        let mut st = self.state.borrow_mut();
        let now = st.now_ms();
        st.recount(now);
        for key in st.resumable(now) {
            let Some(conn) = st.conns.get_mut(key) else {
                continue;
            };
            let output = conn.write_wait == WriteWait::Reactor;
            // Level-triggered: what waits in the kernel is reported at once.
            if let Err(e) = self.reactor.interest(conn.fd, key, true, output) {
                tracing::debug!("cannot resume reading a publisher: {e}");
            }
        }
        let busy = !st.pacing.idle();
        drop(st);
        self.flush_dirty();
        busy
    }
}

/// An HTTP publish to `room`: wait while the room is behind, at most a pause.
pub async fn wait_for_room(w: &Worker, room: &str) {
    let limits = &w.shared.config.limits;
    if limits.backpressure_frames == 0 {
        return;
    }
    let key = w.shared.lag.key(room);
    if !held_back(&w.shared, key) {
        return;
    }
    w.state.borrow_mut().conns.stats.publishers_paused += 1;
    let deadline = std::time::Instant::now() + Duration::from_millis(limits.backpressure_pause_ms);
    while held_back(&w.shared, key) && std::time::Instant::now() < deadline {
        monoio::time::sleep(PACE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_behind_when_over_half_its_subscribers_on_the_node_are() {
        let t = LagTable::new(2);
        let s = t.key("chat:1");
        assert_eq!(s, t.key("chat:1"), "stable");
        assert!(!t.behind(s));
        // One hostile reader alone on worker 1, 100 readers on worker 0.
        t.report(1, s, 1, 1);
        t.report(0, s, 0, 100);
        assert!(!t.behind(s), "a minority does not hold the room back");
        t.report(0, s, 60, 100);
        assert!(t.behind(s), "61 of 101");
        t.report(0, s, 49, 100);
        assert!(!t.behind(s), "50 of 101");
        t.report(1, s, 0, 0);
        t.report(0, s, 0, 0);
        assert!(!t.behind(s), "nobody");
    }

    #[test]
    fn a_room_sharing_a_slot_does_not_read_another_rooms_reports() {
        let t = LagTable::new(1);
        let victim = t.key("victim");
        let other = (0..100_000)
            .map(|i| t.key(&format!("attack-{i}")))
            .find(|k| k.slot == victim.slot && k.tag != victim.tag)
            .expect("8,192 slots: some room among 100,000 shares one");
        t.report(0, other, 3, 3);
        assert!(t.behind(other));
        assert!(
            !t.behind(victim),
            "the other room's report is not the victim's"
        );
    }
}
