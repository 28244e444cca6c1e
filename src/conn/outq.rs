//! The outbound queue of one connection: shared frames waiting for the socket.
//!
//! Every queued frame is one `Rc<SharedFrame>` (8 bytes in the queue): a broadcast
//! frame shared by every subscriber on this worker (the refcount is a plain integer,
//! not a contended atomic), or a frame of this connection's own, shared with no one.
//! Under overload each subscriber's queue holds thousands of entries, and a 32-byte
//! entry (a `Bytes` inline) was most of the node's memory then (page-fault profile of
//! `ringway bench fanout` at 8 M deliveries/s offered: three quarters of the faults
//! in the queues' growth), far more than the frames themselves.
//! [`OutQueue::flush`] writes as many frames as fit with one vectored `sendmsg` per
//! call ("corking"). An idle queue allocates nothing.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::rc::Rc;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, sendmsg};

pub use crate::hub::Arrival;
use crate::metrics::Histogram;

/// Frames gathered into one `sendmsg` at most (Linux accepts up to 1024).
const MAX_IOV: usize = 64;

/// A broadcast frame as the subscribers of one worker share it.
#[derive(Debug)]
pub struct SharedFrame {
    /// The complete encoded frame.
    pub bytes: Bytes,
    /// Conflation tag: frames with the same non-zero tag (same room, same key)
    /// replace each other under the `conflate` policy.
    pub tag: u64,
    /// When the message reached this node, for `ringway_publish_to_write_seconds`
    /// ([`Arrival::UNTIMED`] for a connection's own frames and presence changes).
    pub born: Arrival,
}

/// One queued frame.
#[derive(Debug, Clone)]
pub enum Out {
    /// A broadcast frame shared with the other subscribers on this worker.
    Shared(Rc<SharedFrame>),
    /// A frame for this connection only (replies, pongs, close).
    Own(Bytes),
}

impl Out {
    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Out::Shared(f) => &f.bytes,
            Out::Own(b) => b,
        }
    }

    /// As the queue holds it: one pointer.
    fn into_queued(self) -> Rc<SharedFrame> {
        match self {
            Out::Shared(f) => f,
            Out::Own(bytes) => Rc::new(SharedFrame {
                bytes,
                tag: 0,
                born: Arrival::UNTIMED,
            }),
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is in the kernel.
    All,
    /// The socket buffer is full: wait for writability, then flush again.
    Blocked,
    /// The socket is broken (peer reset, closed): drop the connection.
    Failed,
}

/// Bounded by the caller ([`OutQueue::len`], [`OutQueue::bytes`]).
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Rc<SharedFrame>>,
    /// Bytes of the front frame already written (a frame is under 4 GiB: messages
    /// are bounded by `max_message_size`).
    head_written: u32,
    /// Bytes queued and not yet written (bounded by `max_queue_bytes` plus one frame,
    /// both checked under 2 GiB by `Config::validate`).
    bytes: u32,
}

impl OutQueue {
    /// Queue a frame behind the others.
    pub fn push(&mut self, out: Out) {
        self.bytes += out.bytes().len() as u32;
        self.frames.push_back(out.into_queued());
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// Drop everything not yet started; a frame half written stays (the stream must
    /// stay well-formed). Returns how many frames were dropped.
    pub fn clear_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_written > 0);
        let dropped = self.frames.len().saturating_sub(keep);
        for out in self.frames.drain(keep..) {
            self.bytes -= out.bytes.len() as u32;
        }
        dropped
    }

    /// Drop the oldest frame not yet started, if any. Returns whether one was dropped.
    pub fn drop_oldest(&mut self) -> bool {
        let first = usize::from(self.head_written > 0);
        match self.frames.remove(first) {
            Some(out) => {
                self.bytes -= out.bytes.len() as u32;
                true
            }
            None => false,
        }
    }

    /// Drop every frame not yet started that carries `tag` (non-zero). Returns how
    /// many were dropped.
    pub fn drop_tagged(&mut self, tag: u64) -> usize {
        if tag == 0 {
            return 0;
        }
        let first = usize::from(self.head_written > 0);
        let before = self.frames.len();
        let mut i = 0;
        let mut freed = 0u32;
        self.frames.retain(|out| {
            let keep = i < first || out.tag != tag;
            if !keep {
                freed += out.bytes.len() as u32;
            }
            i += 1;
            keep
        });
        self.bytes -= freed;
        before - self.frames.len()
    }

    /// Drop the last frame if it is not started yet and `stale` says so of its
    /// bytes. Returns whether it was dropped.
    pub fn drop_last_if(&mut self, stale: impl FnOnce(&[u8]) -> bool) -> bool {
        let first = usize::from(self.head_written > 0);
        if self.frames.len() <= first || !self.frames.back().is_some_and(|f| stale(&f.bytes)) {
            return false;
        }
        let out = self.frames.pop_back().expect("checked above");
        self.bytes -= out.bytes.len() as u32;
        true
    }

    /// Free the queue's memory once it is empty, so an idle connection holds none.
    fn shrink_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    /// Write queued frames to `fd` without blocking, many per syscall. Returns the
    /// bytes written and the outcome. Each timed frame (a publish's) that leaves
    /// entirely is timed into `lat` (from its `born` to `now_ns`).
    pub fn flush(&mut self, fd: RawFd, now_ns: u64, lat: &mut Histogram) -> (usize, Flushed) {
        let mut total = 0;
        while !self.frames.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, out) in self.frames.iter().take(MAX_IOV).enumerate() {
                let b = &out.bytes[..];
                iov[i] = IoSlice::new(if i == 0 {
                    &b[self.head_written as usize..]
                } else {
                    b
                });
                n += 1;
            }
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(fd, &iov[..n], &[], flags, None) {
                Ok(written) => {
                    total += written;
                    self.consume(written, now_ns, lat);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return (total, Flushed::Blocked),
                Err(_) => return (total, Flushed::Failed),
            }
        }
        self.shrink_if_empty();
        (total, Flushed::All)
    }

    /// [`OutQueue::flush`] through a TLS session: send the ciphertext already sealed;
    /// once it is all out, seal up to 64 KiB more of the queue, and repeat. Frames stay
    /// in the queue until the socket has taken the records before them, so the queue
    /// bounds still see a slow reader.
    pub fn flush_tls(
        &mut self,
        fd: RawFd,
        tls: &mut super::tls::Tls,
        now_ns: u64,
        lat: &mut Histogram,
    ) -> (usize, Flushed) {
        const SEAL: usize = 64 << 10;
        let mut total = 0;
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            while !tls.out.is_empty() {
                match nix::sys::socket::send(fd, &tls.out, flags) {
                    Ok(n) => {
                        total += n;
                        tls.out.drain(..n);
                    }
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => return (total, Flushed::Blocked),
                    Err(_) => return (total, Flushed::Failed),
                }
            }
            // An idle connection holds no ciphertext buffer.
            tls.out = Vec::new();
            let mut sealed = 0;
            while sealed < SEAL {
                let Some(front) = self.frames.front() else {
                    break;
                };
                let rest = &front.bytes[self.head_written as usize..];
                let n = rest.len();
                if tls.encrypt(rest).is_err() {
                    return (total, Flushed::Failed);
                }
                sealed += n;
                self.consume(n, now_ns, lat);
            }
            if self.frames.is_empty() {
                tls.seal_close();
            }
            if tls.out.is_empty() {
                break;
            }
        }
        self.shrink_if_empty();
        (total, Flushed::All)
    }

    fn consume(&mut self, written: usize, now_ns: u64, lat: &mut Histogram) {
        // `written` is at most the queued bytes, which fit a u32.
        let mut written = written as u32;
        self.bytes -= written;
        while written > 0 {
            let front_left = self.frames[0].bytes.len() as u32 - self.head_written;
            if written >= front_left {
                written -= front_left;
                self.head_written = 0;
                if let Some(ns) = self
                    .frames
                    .pop_front()
                    .and_then(|f| f.born.elapsed_ns(now_ns))
                {
                    lat.record(ns);
                }
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn flushes_in_order_across_partial_writes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let shared = Rc::new(Bytes::from(vec![b's'; 3000]));
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..200u8 {
            let out = if i % 2 == 0 {
                Out::Shared(Rc::new(SharedFrame {
                    bytes: (*shared).clone(),
                    tag: 0,
                    born: Arrival::at_ns(0),
                }))
            } else {
                Out::Own(Bytes::from(vec![i; 100 + i as usize]))
            };
            expect.extend_from_slice(out.bytes());
            q.push(out);
        }
        assert_eq!(q.bytes(), expect.len());
        let mut got = Vec::new();
        let mut lat = Histogram::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let (_, res) = q.flush(a.as_raw_fd(), 7, &mut lat);
            b.set_nonblocking(true).unwrap();
            while let Ok(n) = b.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if res == Flushed::All {
                break;
            }
            assert_eq!(res, Flushed::Blocked);
        }
        assert_eq!(got, expect);
        assert!(q.is_empty() && q.bytes() == 0);
        assert_eq!(lat.count(), 100, "each broadcast frame timed once");
    }

    #[test]
    fn drop_oldest_and_tagged_spare_a_half_written_frame() {
        let tagged = |t: u64, n: usize| {
            Out::Shared(Rc::new(SharedFrame {
                bytes: Bytes::from(vec![b'x'; n]),
                tag: t,
                born: Arrival::at_ns(0),
            }))
        };
        let mut q = OutQueue::default();
        q.push(tagged(7, 10));
        q.push(tagged(7, 20));
        q.push(tagged(8, 30));
        q.push(tagged(7, 40));
        q.consume(5, 0, &mut Histogram::default()); // the first frame is half written
        assert_eq!(q.drop_tagged(7), 2);
        assert_eq!((q.len(), q.bytes()), (2, 5 + 30));
        assert!(q.drop_oldest());
        assert_eq!((q.len(), q.bytes()), (1, 5));
        assert!(!q.drop_oldest(), "the half-written frame stays");
    }

    #[test]
    fn clear_keeps_a_half_written_frame() {
        let mut q = OutQueue::default();
        q.push(Out::Own(Bytes::from_static(b"abcdef")));
        q.push(Out::Own(Bytes::from_static(b"gh")));
        q.consume(3, 0, &mut Histogram::default());
        assert_eq!(q.clear_unstarted(), 1);
        assert_eq!((q.len(), q.bytes()), (1, 3));
    }

    #[test]
    fn drop_last_if_spares_a_half_written_frame_and_others() {
        let own = |b: &'static [u8]| Out::Own(Bytes::from_static(b));
        let first_is = |c: u8| move |b: &[u8]| b[0] == c;
        let mut q = OutQueue::default();
        q.push(own(b"pong1"));
        q.consume(2, 0, &mut Histogram::default());
        assert!(!q.drop_last_if(first_is(b'p')), "half written: it stays");
        q.push(own(b"msg"));
        assert!(!q.drop_last_if(first_is(b'p')), "not what was asked for");
        q.push(own(b"pong2"));
        assert!(q.drop_last_if(first_is(b'p')));
        assert_eq!((q.len(), q.bytes()), (2, 3 + 3));
    }
}
