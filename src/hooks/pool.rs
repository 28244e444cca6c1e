//! The threads that call the app's callbacks (authorization, connect): blocking HTTP
//! calls, a bounded queue in front, never a worker's thread. A caller hands a
//! [`Job`]; with every thread busy and the queue full the job is refused at once
//! (it answers its asker with a failure), so nothing waits without bound.

use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

/// A call to make.
pub trait Job: Send {
    /// Make it and answer whoever asked.
    fn run(self: Box<Self>);
    /// It will not be made (the queue is full, the node stops): answer that.
    fn refuse(self: Box<Self>, why: &str);
}

/// Jobs queued per thread before more are refused.
const QUEUED_PER_THREAD: usize = 64;

/// Stack of each calling thread (a blocking HTTP call, TLS included).
const STACK: usize = 512 << 10;

/// The node's calling threads.
pub struct Pool {
    tx: Mutex<Option<Sender<Box<dyn Job>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// `n` threads named `ringway-calls-<i>`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Box<dyn Job>>(n * QUEUED_PER_THREAD);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringway-calls-{i}"))
                    .stack_size(STACK)
                    .spawn(move || {
                        for job in rx {
                            job.run();
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queue `job`, or refuse it at once.
    pub fn submit(&self, job: Box<dyn Job>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else {
            return job.refuse("the node is stopping");
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => job.refuse(
                "every caller is busy and the queue is full (raise hooks.authorize_concurrency, or make the app answer faster)",
            ),
            Err(TrySendError::Disconnected(job)) => job.refuse("the node is stopping"),
        }
    }

    /// Stop the threads once the jobs queued are done.
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Say(mpsc::Sender<String>, std::time::Duration);

    impl Job for Say {
        fn run(self: Box<Self>) {
            std::thread::sleep(self.1);
            let _ = self.0.send("ran".into());
        }
        fn refuse(self: Box<Self>, why: &str) {
            let _ = self.0.send(format!("refused: {why}"));
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_stop_finishes_what_was_queued() {
        let pool = Pool::start(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let slow = std::time::Duration::from_millis(2);
        for _ in 0..QUEUED_PER_THREAD + 10 {
            pool.submit(Box::new(Say(tx.clone(), slow)));
        }
        pool.stop();
        pool.submit(Box::new(Say(tx.clone(), slow)));
        drop(tx);
        let got: Vec<String> = rx.iter().collect();
        let ran = got.iter().filter(|g| *g == "ran").count();
        let refused = got.len() - ran;
        // One running and a full queue ran; the rest, and the one after stop, were
        // refused.
        assert!(
            (QUEUED_PER_THREAD..=QUEUED_PER_THREAD + 1).contains(&ran),
            "{ran} ran"
        );
        assert_eq!(ran + refused, QUEUED_PER_THREAD + 11);
        assert!(got.last().unwrap().contains("stopping"), "{got:?}");
    }
}
