//! The link threads: the listener, one manager per peer (dial or wait, run a session,
//! back off), and per session a writer (queue to socket) and a reader (socket to the
//! workers' inboxes).

use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::RecvTimeoutError;
use tracing::{debug, info, warn};

use super::Sink;
use super::hello;
use super::wire::{self, Frame};
use super::{Mesh, Slot};
use crate::metrics::histogram::now_ns;

/// Hello exchanges an acceptor runs at once (see the config's constant).
pub const MAX_PENDING_HELLOS: usize = crate::config::MESH_PENDING_HELLOS;

/// Start the listener and one manager thread per peer.
pub fn start(mesh: Arc<Mesh>, listener: TcpListener, sink: Arc<dyn Sink>) -> std::io::Result<()> {
    {
        let mesh = mesh.clone();
        std::thread::Builder::new()
            .name("ringway-mesh-listen".into())
            .spawn(move || accept_loop(mesh, listener))?;
    }
    for peer in 0..mesh.nodes.len() {
        if peer == mesh.me {
            continue;
        }
        let (mesh, sink) = (mesh.clone(), sink.clone());
        std::thread::Builder::new()
            .name(format!("ringway-mesh-{}", mesh.nodes[peer].id))
            .spawn(move || manage(mesh, sink, peer))?;
    }
    Ok(())
}

/// Of each pair, the node whose id sorts first dials.
pub(super) fn dials(mesh: &Mesh, peer: usize) -> bool {
    mesh.me < peer
}

fn accept_loop(mesh: Arc<Mesh>, listener: TcpListener) {
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refusals = Arc::new(Throttle::default());
    for stream in listener.incoming() {
        if mesh.stopping() {
            return;
        }
        let Ok(stream) = stream else { continue };
        if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_HELLOS {
            pending.fetch_sub(1, Ordering::AcqRel);
            refusals.warn(|n| {
                format!("mesh: {n} connection(s) closed unread: {MAX_PENDING_HELLOS} hellos already pending (a stranger, or a reconnect storm)")
            });
            continue; // dropped: closed
        }
        let (mesh, pending, throttle) = (mesh.clone(), pending.clone(), refusals.clone());
        // A short-lived thread per hello, at most MAX_PENDING_HELLOS at once and each
        // bounded by hello::DEADLINE, so a silent stranger cannot hold up a real peer.
        let spawned = std::thread::Builder::new()
            .name("ringway-mesh-hello".into())
            .spawn(move || {
                let from = stream
                    .peer_addr()
                    .map_or_else(|_| "an unknown address".to_owned(), |a| a.to_string());
                match hello::accept(&mesh, stream) {
                    Ok((peer, (stream, decoder))) => {
                        let slot = &mesh.slots[peer];
                        // A new session replaces a stale one (the peer restarted
                        // before this side noticed).
                        slot.cut();
                        let _ = slot.incoming.0.send((stream, decoder));
                    }
                    Err(e) => throttle.warn(|n| {
                        let more = if n > 1 {
                            format!(" ({} more since the last report)", n - 1)
                        } else {
                            String::new()
                        };
                        format!("mesh: refused a link from {from}: {e}{more}")
                    }),
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // No thread: the stream went with the closure, closed.
            refusals.warn(|_| "mesh: cannot start a hello thread; connection closed".to_owned());
        }
    }
}

/// Logs at most one warning a second, saying how many it stood for.
#[derive(Debug, Default)]
struct Throttle {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    fn warn(&self, message: impl FnOnce(u64) -> String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.1 += 1;
        if st.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        warn!("{}", message(st.1));
        *st = (Some(std::time::Instant::now()), 0);
    }
}

/// A peer's manager: get a session (dial, or take one the listener accepted), run
/// it, and start over.
fn manage(mesh: Arc<Mesh>, sink: Arc<dyn Sink>, peer: usize) {
    let slot = &mesh.slots[peer];
    let id = &mesh.nodes[peer].id;
    let mut attempt: u32 = 0;
    // What the last warning of this outage said: a new reason is said again (the
    // peer was down, then came back refusing our secret), a repeat is not.
    let mut said: Option<String> = None;
    while !mesh.stopping() {
        let session = if dials(&mesh, peer) {
            match hello::dial(&mesh, peer) {
                Ok(s) => Some(s),
                Err(e) => {
                    // Say each reason once per outage, not at every retry.
                    let why = e.to_string();
                    if said.as_ref() == Some(&why) {
                        debug!("mesh: link to {id} not up: {why}");
                    } else {
                        warn!("mesh: link to {id} not up: {why}; retrying with backoff");
                        said = Some(why);
                    }
                    std::thread::sleep(backoff(&mesh, attempt));
                    attempt = attempt.saturating_add(1);
                    None
                }
            }
        } else {
            slot.incoming
                .1
                .recv_timeout(Duration::from_millis(200))
                .ok()
        };
        if let Some((stream, decoder)) = session {
            attempt = 0;
            said = None;
            run_session(&*sink, &mesh, peer, stream, decoder);
        }
    }
}

/// Full jitter: random(0, min(cap, base * 2^attempt)).
fn backoff(mesh: &Mesh, attempt: u32) -> Duration {
    let c = &mesh.config;
    let ceiling = c
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.min(30))
        .min(c.backoff_cap_ms);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

fn run_session(
    sink: &dyn Sink,
    mesh: &Arc<Mesh>,
    peer: usize,
    stream: TcpStream,
    decoder: wire::Decoder,
) {
    let slot = &mesh.slots[peer];
    let id = &mesh.nodes[peer].id;
    // Frames queued while the link was down were computed for a view that no longer
    // holds; everything they were for is redone once the link is up.
    while slot.rx.try_recv().is_ok() {}
    slot.queued.store(0, Ordering::Release);
    slot.overflow.store(false, Ordering::Release);
    let (Ok(for_writer), Ok(for_cut)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    *slot.socket.lock().expect("not poisoned") = Some(for_cut);
    let stop = Arc::new(AtomicBool::new(false));
    // A new session: frames queued for any other are not sent on it.
    let session = slot.session.fetch_add(1, Ordering::AcqRel) + 1;
    let writer = {
        let (mesh, stop) = (mesh.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("ringway-mesh-w-{id}"))
            .spawn(move || write_loop(&mesh, peer, session, for_writer, &stop))
    };
    let Ok(writer) = writer else {
        *slot.socket.lock().expect("not poisoned") = None;
        return;
    };
    slot.stats.connects.fetch_add(1, Ordering::Relaxed);
    slot.up.store(true, Ordering::Release);
    mesh.set_live(peer, true);
    sink.link(peer, true, session);
    // Only now: a client admitted because of it must find the workers told.
    mesh.linked.fetch_or(1 << peer, Ordering::AcqRel);
    info!(peer = %id, "mesh: link to {id} up");

    let why = read_loop(sink, mesh, peer, stream, decoder);

    slot.up.store(false, Ordering::Release);
    mesh.set_live(peer, false);
    sink.link(peer, false, session);
    if mesh.stopping() {
        info!(peer = %id, "mesh: link to {id} closed (shutting down)");
    } else {
        warn!(peer = %id, "mesh: link to {id} down: {why}; its rooms move to the next owner");
    }
    stop.store(true, Ordering::Release);
    slot.cut();
    let _ = writer.join();
    *slot.socket.lock().expect("not poisoned") = None;
}

fn read_loop(
    sink: &dyn Sink,
    mesh: &Mesh,
    peer: usize,
    mut stream: TcpStream,
    mut decoder: wire::Decoder,
) -> String {
    let slot = &mesh.slots[peer];
    let dead = Duration::from_millis(mesh.config.dead_after_ms);
    if let Err(e) = stream.set_read_timeout(Some(dead)) {
        return e.to_string();
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    slot.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    dispatch(sink, mesh, peer, f);
                }
                Ok(None) => break,
                Err(e) => return format!("bad frame: {e}"),
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return "the peer closed the link".into(),
            Ok(n) => {
                slot.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                decoder.feed(&buf[..n]);
            }
            // A signal (SIGSTOP/SIGCONT, a profiler) interrupts a read that has a
            // timeout (SA_RESTART does not restart those): not the peer's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return format!(
                    "no frame for {} ms (mesh.dead_after_ms): the peer is down or the network is partitioned",
                    mesh.config.dead_after_ms
                );
            }
            Err(e) => return format!("read failed: {e}"),
        }
    }
}

/// Act on a frame of a session: answer pings, measure pongs, and hand room
/// messages to the sink.
fn dispatch(sink: &dyn Sink, mesh: &Mesh, peer: usize, frame: Frame) {
    match frame {
        Frame::Ping { sent_us } => {
            let session = mesh.slots[peer].session.load(Ordering::Acquire);
            mesh.send(peer, wire::encode(&Frame::Pong { sent_us }), session);
        }
        Frame::Pong { sent_us } => {
            let rtt = (now_ns() / 1000).saturating_sub(sent_us);
            mesh.slots[peer].stats.rtt_us.store(rtt, Ordering::Relaxed);
        }
        Frame::Hub(msg) => {
            if matches!(msg, crate::hub::PeerMsg::Deliver { .. }) {
                mesh.slots[peer]
                    .stats
                    .delivers_in
                    .fetch_add(1, Ordering::Relaxed);
            }
            sink.message(peer, msg, crate::hub::Arrival::at_ns(now_ns()));
        }
        Frame::Hello { .. } | Frame::Auth { .. } | Frame::Refuse { .. } => {
            debug!("mesh: ignoring a hello frame inside a session");
        }
    }
}

fn write_loop(mesh: &Mesh, peer: usize, session: u64, stream: TcpStream, stop: &AtomicBool) {
    let slot: &Slot = &mesh.slots[peer];
    let heartbeat = Duration::from_millis(mesh.config.heartbeat_ms);
    let ping = || {
        wire::encode(&Frame::Ping {
            sent_us: now_ns() / 1000,
        })
    };
    let mut last_ping = std::time::Instant::now();
    let mut out = BufWriter::with_capacity(256 << 10, stream);
    let write = |out: &mut BufWriter<TcpStream>, b: &Bytes| -> bool {
        slot.stats.frames_out.fetch_add(1, Ordering::Relaxed);
        slot.stats
            .bytes_out
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        out.write_all(b).is_ok()
    };
    while !stop.load(Ordering::Acquire) {
        // A ping every heartbeat, busy or idle: it proves the link alive and its
        // pong measures the round trip (queueing included).
        let wait = heartbeat.saturating_sub(last_ping.elapsed());
        let first = match slot.rx.recv_timeout(wait) {
            Ok(b) => Some(b),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut ok = true;
        let mut taken = 0;
        if let Some((s, first)) = first {
            taken += first.len();
            ok &= s != session || write(&mut out, &first);
            // Cork: everything already queued leaves in as few writes as the buffer
            // allows. (A frame queued for an older session is not this one's.)
            while ok {
                let Ok((s, b)) = slot.rx.try_recv() else {
                    break;
                };
                taken += b.len();
                ok &= s != session || write(&mut out, &b);
            }
        }
        if last_ping.elapsed() >= heartbeat {
            ok &= write(&mut out, &ping());
            last_ping = std::time::Instant::now();
        }
        slot.queued.fetch_sub(taken, Ordering::AcqRel);
        if !ok || out.flush().is_err() {
            break;
        }
    }
    let _ = out.get_ref().shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let mut c = Config {
            node_id: "a".into(),
            ..Config::default()
        };
        c.mesh.peers = vec!["b=127.0.0.1:1".into()];
        c.mesh.backoff_base_ms = 100;
        c.mesh.backoff_cap_ms = 1000;
        let mesh = Mesh::from_config(&c).unwrap().unwrap();
        let samples: Vec<u64> = (0..2000)
            .map(|_| backoff(&mesh, 10).as_millis() as u64)
            .collect();
        assert!(samples.iter().all(|&d| d <= 1000));
        assert!(samples.iter().any(|&d| d < 100), "jitter reaches near zero");
        assert!(samples.iter().any(|&d| d > 900), "and up to the cap");
        assert!((0..200).all(|_| backoff(&mesh, 0).as_millis() <= 100));
    }

    #[test]
    fn lower_id_dials() {
        let mut c = Config {
            node_id: "n2".into(),
            ..Config::default()
        };
        c.mesh.peers = vec!["n1=127.0.0.1:1".into(), "n3=127.0.0.1:2".into()];
        let mesh = Mesh::from_config(&c).unwrap().unwrap();
        assert_eq!(mesh.me, 1);
        assert!(!dials(&mesh, 0));
        assert!(dials(&mesh, 2));
    }
}
