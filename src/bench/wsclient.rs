//! A lean WebSocket client for the load generator, on monoio: connect from a chosen
//! source address, upgrade, send masked text frames, read server frames. It keeps
//! per-connection state small so the generator can hold as many sockets as the
//! server.

use std::io::{self, Cursor};
use std::net::{IpAddr, SocketAddr};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::ws::frame::unmask;

/// Offer permessage-deflate in every upgrade (`--compress`); compressed frames are
/// inflated by [`FrameReader`] with one inflater per thread.
pub static COMPRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static INFLATER: std::cell::RefCell<crate::ws::deflate::Inflater> = Default::default();
}

/// Open a TCP connection from `source` (port chosen by the kernel).
pub fn connect_from(source: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    connect_with(source, to, None)
}

/// Like [`connect_from`], with a fixed receive buffer (SO_RCVBUF, set before the
/// handshake so the window is small from the start): a client on a slow link.
pub fn connect_with(
    source: Option<IpAddr>,
    to: SocketAddr,
    recv_buffer: Option<usize>,
) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(bytes) = recv_buffer {
        s.set_recv_buffer_size(bytes)?;
    }
    if let Some(ip) = source {
        // Choose the source port at connect(), not bind(): bind() must find a port
        // free for *every* destination and crawls once many are in TIME_WAIT;
        // connect() only needs the 4-tuple to be unique.
        let _ =
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.connect(&to.into())?;
    s.set_tcp_nodelay(true)?;
    let std: std::net::TcpStream = s.into();
    TcpStream::from_std(std)
}

/// Send the upgrade request and read the response head. Returns bytes that came
/// after the head (already WebSocket frames).
pub async fn upgrade(stream: &mut TcpStream, host: &str, path: &str) -> io::Result<Vec<u8>> {
    let key = tungstenite::handshake::client::generate_key();
    // What a browser offers, when the scenario measures compression.
    let ext = if COMPRESS.load(std::sync::atomic::Ordering::Relaxed) {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Protocol: ringway.v1\r\n{ext}\r\n"
    );
    let (res, _) = stream.write_all(req.into_bytes()).await;
    res?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            buf.reserve(1024);
        }
        let cap = buf.capacity();
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        if res? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            if !head.starts_with("HTTP/1.1 101") {
                let line = head.lines().next().unwrap_or("").to_owned();
                return Err(io::Error::other(format!("upgrade refused: {line}")));
            }
            return Ok(buf[end + 4..].to_vec());
        }
        if buf.len() > 16 << 10 {
            return Err(io::Error::other("upgrade response too large"));
        }
    }
}

/// The TLS client configuration for `wss://` targets, set once per process by the
/// scenario (`set_tls`) before any connection opens; `None` for `ws://`.
static TLS: std::sync::OnceLock<Option<std::sync::Arc<rustls::ClientConfig>>> =
    std::sync::OnceLock::new();

/// Use TLS for every connection [`open`] makes, trusting the CA certificates in
/// `ca_pem` (a PEM file: the server's self-signed certificate will do).
pub fn set_tls(ca_pem: &std::path::Path) -> anyhow::Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .map_err(|e| anyhow::anyhow!("cannot read --tls-ca {}: {e}", ca_pem.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = TLS.set(Some(std::sync::Arc::new(cfg)));
    Ok(())
}

/// An upgraded connection, held open until dropped: the socket, and its TLS
/// session for `wss://`. It reads nothing by itself: whoever holds it waits for
/// [`Held::readable`] and then calls [`Held::keep_alive`], which answers the
/// server's pings as a browser would (see `bench::hold`).
pub struct Held {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// An unfinished server frame from the last look: unallocated nearly always
    /// (pings are a few bytes and arrive whole), so an idle connection costs no
    /// buffer.
    partial: Vec<u8>,
}

impl Held {
    fn new(stream: TcpStream, tls: Option<Box<rustls::ClientConnection>>, left: &[u8]) -> Self {
        Self {
            stream,
            tls,
            // Frames that came with the 101 (the welcome, or the start of it).
            partial: left.to_vec(),
        }
    }

    /// Wait until the server has sent something (or closed): no buffer is lent to
    /// the kernel while waiting (a poll, not a read). Cancel-safe: dropping the
    /// future withdraws the poll and consumes nothing.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable(false).await
    }

    /// Read what the server sent (without waiting) and answer each ping with a
    /// pong. Returns `false` once the server closed the connection. `scratch` is
    /// shared by every held connection of the thread.
    pub fn keep_alive(&mut self, scratch: &mut [u8]) -> bool {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        let mut plain = std::mem::take(&mut self.partial);
        loop {
            let n =
                match nix::sys::socket::recv(fd, scratch, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
                {
                    Ok(0) => return false,
                    Ok(n) => n,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return false,
                };
            match self.tls.as_deref_mut() {
                None => plain.extend_from_slice(&scratch[..n]),
                Some(tls) => {
                    if tls.read_tls(&mut &scratch[..n]).is_err()
                        || tls.process_new_packets().is_err()
                    {
                        return false;
                    }
                    let _ = std::io::Read::read_to_end(&mut tls.reader(), &mut plain);
                }
            }
            if n < scratch.len() {
                break;
            }
        }
        let seen = scan(&plain);
        if seen.closed {
            return false;
        }
        plain.drain(..seen.used);
        // Keep an allocation only for a frame still arriving.
        self.partial = if plain.is_empty() { Vec::new() } else { plain };
        if seen.pongs.is_empty() {
            return true;
        }
        let bytes = match self.tls.as_deref_mut() {
            None => seen.pongs,
            Some(tls) => {
                let _ = std::io::Write::write_all(&mut tls.writer(), &seen.pongs);
                let mut out = Vec::new();
                while tls.wants_write() {
                    if tls.write_tls(&mut out).is_err() {
                        return false;
                    }
                }
                out
            }
        };
        // A pong is a few bytes into an idle socket's empty buffer: it fits.
        nix::sys::socket::send(
            fd,
            &bytes,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .is_ok()
    }
}

/// What the server sent a held connection, frame by frame.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of whole frames (the rest is a frame still arriving).
    used: usize,
    /// A masked pong for each ping, in order.
    pongs: Vec<u8>,
    /// The server sent a close frame.
    closed: bool,
}

/// Go through the whole frames at the start of `plain`: answer pings, notice a
/// close, skip everything else.
fn scan(plain: &[u8]) -> Scan {
    let mut seen = Scan::default();
    loop {
        let mut c = Cursor::new(&plain[seen.used..]);
        let Ok(Some((header, len))) = FrameHeader::parse(&mut c) else {
            return seen;
        };
        let hlen = c.position() as usize;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| (seen.used + hlen).checked_add(len))
            .filter(|&end| end <= plain.len())
        else {
            return seen;
        };
        match header.opcode {
            OpCode::Control(Control::Ping) => seen.pongs.extend_from_slice(&masked_frame(
                OpCode::Control(Control::Pong),
                &plain[seen.used + hlen..end],
            )),
            OpCode::Control(Control::Close) => {
                seen.closed = true;
                return seen;
            }
            _ => {}
        }
        seen.used = end;
    }
}

/// Connect from `source`, do the TLS handshake when [`set_tls`] was called, and
/// upgrade to WebSocket.
pub async fn open(
    source: Option<IpAddr>,
    to: SocketAddr,
    host: &str,
    path: &str,
) -> io::Result<Held> {
    let mut stream = connect_from(source, to)?;
    let Some(Some(cfg)) = TLS.get() else {
        let left = upgrade(&mut stream, host, path).await?;
        return Ok(Held::new(stream, None, &left));
    };
    let name =
        rustls::pki_types::ServerName::try_from(to.ip().to_string()).map_err(io::Error::other)?;
    let mut tls =
        Box::new(rustls::ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?);
    let key = tungstenite::handshake::client::generate_key();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Protocol: ringway.v1\r\n\r\n"
    );
    // Queued now, sent as soon as the TLS handshake allows.
    std::io::Write::write_all(&mut tls.writer(), req.as_bytes())?;
    let mut plain = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        while tls.wants_write() {
            let mut out = Vec::new();
            tls.write_tls(&mut out)?;
            let (res, _) = stream.write_all(out).await;
            res?;
        }
        if let Some(end) = plain.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&plain[..end]);
            if !head.starts_with("HTTP/1.1 101") {
                let line = head.lines().next().unwrap_or("").to_owned();
                return Err(io::Error::other(format!("upgrade refused: {line}")));
            }
            return Ok(Held::new(stream, Some(tls), &plain[end + 4..]));
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the TLS or WebSocket handshake",
            ));
        }
        tls.read_tls(&mut &buf[..n])?;
        tls.process_new_packets().map_err(io::Error::other)?;
        let mut chunk = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut tls.reader(), &mut chunk) {
                Ok(0) => break,
                Ok(k) => plain.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A masked client text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    masked_frame(OpCode::Data(Data::Text), payload)
}

/// A masked, final client frame of `opcode`.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = fastrand::u32(..).to_ne_bytes();
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(mask),
    };
    let mut out = Vec::with_capacity(14 + payload.len());
    header
        .format(payload.len() as u64, &mut out)
        .expect("writing to a Vec");
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    out
}

/// Reads server frames from a stream, calling back with each text payload.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// A reader that already holds `leftover` bytes.
    pub fn new(leftover: Vec<u8>) -> Self {
        let mut buf = leftover;
        buf.reserve(16 << 10);
        Self { buf, start: 0 }
    }

    /// Hand every complete data frame (text or binary) buffered so far to `on_text`;
    /// returns false if the server sent a close frame.
    pub fn drain(&mut self, mut on_text: impl FnMut(&[u8])) -> bool {
        loop {
            let mut cur = Cursor::new(&self.buf[self.start..]);
            let Ok(Some((header, len))) = FrameHeader::parse(&mut cur) else {
                break;
            };
            let hlen = cur.position() as usize;
            let total = hlen + len as usize;
            if self.buf.len() - self.start < total {
                break;
            }
            let payload = &self.buf[self.start + hlen..self.start + total];
            match header.opcode {
                OpCode::Data(Data::Text | Data::Binary) if header.rsv1 => {
                    INFLATER.with_borrow_mut(|i| match i.inflate(payload, 64 << 20) {
                        Ok(plain) => on_text(plain),
                        Err(e) => {
                            eprintln!("bench: a compressed frame does not inflate: {}", e.reason)
                        }
                    });
                }
                OpCode::Data(Data::Text | Data::Binary) => on_text(payload),
                OpCode::Control(tungstenite::protocol::frame::coding::Control::Close) => {
                    return false;
                }
                _ => {}
            }
            self.start += total;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        true
    }

    /// Read more bytes from `stream`. Returns the count (0 at EOF).
    pub async fn fill(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 << 10);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        res
    }
}

/// Nanoseconds on the system-wide monotonic clock (comparable across processes on
/// one host).
pub fn mono_nanos() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn held_connections_answer_each_ping_and_skip_the_rest_byte_by_byte() {
        let mut wire = server_frame(OpCode::Data(Data::Text), br#"{"type":"welcome"}"#);
        wire.extend(server_frame(OpCode::Control(Control::Ping), b"one"));
        wire.extend(server_frame(OpCode::Data(Data::Binary), &[7; 300]));
        wire.extend(server_frame(OpCode::Control(Control::Ping), b""));
        wire.extend(server_frame(OpCode::Control(Control::Close), &[3, 233]));
        // As a held connection's buffer grows when bytes trickle in.
        let (mut buf, mut pongs, mut fed) = (Vec::new(), Vec::new(), 0);
        for &b in &wire {
            buf.push(b);
            fed += 1;
            let seen = scan(&buf);
            buf.drain(..seen.used);
            pongs.extend(seen.pongs);
            if seen.closed {
                break;
            }
        }
        assert_eq!(fed, wire.len(), "the close is seen once it is whole");
        let mut answered = Vec::new();
        let mut c = Cursor::new(&pongs[..]);
        while let Some((header, len)) = FrameHeader::parse(&mut c).unwrap() {
            assert_eq!(header.opcode, OpCode::Control(Control::Pong));
            let at = c.position() as usize;
            let mut payload = pongs[at..at + len as usize].to_vec();
            unmask(&mut payload, header.mask.expect("client frames are masked"));
            answered.push(payload);
            c.set_position((at + len as usize) as u64);
        }
        assert_eq!(answered, [b"one".to_vec(), Vec::new()]);
    }
}
