//! TLS for client connections (wss), on the same io_uring workers, through rustls's
//! unbuffered API (`UnbufferedServerConnection`).
//!
//! Nothing about the connection's life changes: the worker receives into its scratch
//! buffer; the records are processed there, and the plaintext they yield (copied into
//! a second per-worker scratch buffer) goes to the same handshake and frame code as
//! plain connections. On the way out, queued frames are encrypted only when the
//! previous ciphertext has left, so the outbound queue (and its slow-consumer bounds)
//! still sees the backlog.
//!
//! Why the unbuffered API: rustls's buffered `ServerConnection` keeps a buffer of at
//! least 4 KiB for incoming records in every session, idle or not. Here a session holds
//! its keys and state only: a record cut by a read waits in `held` (allocated only
//! then), and ciphertext to send in `out` (freed once sent), so an idle wss connection
//! holds no buffer at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

/// Per-connection TLS state.
pub struct Tls {
    /// The rustls session.
    session: UnbufferedServerConnection,
    /// Ciphertext produced and not yet accepted by the socket.
    pub out: Vec<u8>,
    /// The start of a record a read cut short, until the rest arrives. Empty,
    /// unallocated, between whole records.
    held: Vec<u8>,
    /// A close_notify goes after the frames queued before the close.
    close_pending: bool,
    /// The session failed: nothing more is read or sent (but its alert).
    failed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.is_handshaking())
            .field("out", &self.out.len())
            .field("held", &self.held.len())
            .finish()
    }
}

/// What the peer's bytes amounted to.
#[derive(Debug)]
pub enum Received {
    /// Keep reading.
    More,
    /// The peer sent close_notify.
    Closed,
    /// A TLS error: an alert is queued in `out`; send it and drop the connection.
    Failed(Failure),
}

/// Why a TLS session failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The peer broke the protocol (rustls queued an alert saying how).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// Application data could not be encrypted.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// A handshake message was joined from more records than an honest client
    /// sends.
    #[error("a handshake message over {MAX_HELD} bytes of records")]
    Oversized,
}

/// Why `tls.cert` and `tls.key` cannot serve wss. The message names the file and
/// what it should hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The certificate file cannot be read.
    #[error("cannot read tls.cert {}: {error}; give the path of a PEM certificate chain", path.display())]
    CertUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: pem::Error,
    },
    /// The certificate file holds something other than PEM certificates.
    #[error("tls.cert {} is not PEM certificates: {error}", path.display())]
    CertNotPem {
        /// The file.
        path: PathBuf,
        /// Why.
        error: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("tls.cert {} holds no certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable private key.
    #[error("cannot read a private key from tls.key {}: {error} (PKCS#8, PKCS#1 or SEC1 PEM)", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        error: pem::Error,
    },
    /// rustls refused the pair (the key is not the certificate's, or of a kind it
    /// does not support).
    #[error("tls.cert and tls.key do not form a usable pair: {0}")]
    Pair(rustls::Error),
}

/// Build the server configuration from PEM files; the error says which file and why.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| ConfigError::CertUnreadable {
            path: cert.to_owned(),
            error,
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| ConfigError::CertNotPem {
            path: cert.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| ConfigError::Key {
        path: key.to_owned(),
        error,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ConfigError::Pair)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Room for the records' framing around `plain` bytes of application data: a
/// header, an explicit nonce (TLS 1.2) and a tag per record of at most 16 KiB, and a
/// content type (TLS 1.3). A guess that is rarely short: rustls says when it is.
fn sealed_len(plain: usize) -> usize {
    plain + (plain / 16_384 + 1) * 64
}

/// Bytes of records a session holds at most: a handshake message (64 KiB at most)
/// and its record headers, or one record cut short by a read.
pub const MAX_HELD: usize = 96 << 10;

/// Append what `write` puts into a buffer onto `out`: it is given `room` bytes
/// first, and as many as it says it needs (`needs`) if that was too few.
fn append_onto<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let at = out.len();
    loop {
        out.resize(at + room, 0);
        match write(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(at);
                    return Err(e);
                }
            },
        }
    }
}

/// Encode a handshake or alert record onto `out`.
fn encode_onto<D>(out: &mut Vec<u8>, encode: &mut rustls::unbuffered::EncodeTlsData<'_, D>) {
    // Only `AlreadyEncoded` is left to fail: nothing more to write.
    let _ = append_onto(
        out,
        1024,
        |buf| encode.encode(buf),
        |e| match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(*required_size)
            }
            _ => None,
        },
    );
}

impl Tls {
    /// A fresh server session.
    pub fn new(cfg: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            session: UnbufferedServerConnection::new(cfg.clone())?,
            out: Vec::new(),
            held: Vec::new(),
            close_pending: false,
            failed: false,
        })
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Whether there is ciphertext to send (handshake records, an alert, a
    /// close_notify, encrypted frames).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes held for a record cut short by a read.
    pub fn held(&self) -> usize {
        self.held.capacity()
    }

    /// Let go of the bytes held (the connection is closing: no more input is
    /// read). When they begin with a whole record, they are part of a handshake
    /// message rustls has begun to join (every other whole record was used up) and
    /// keeps its place in by offset: without them it cannot go on, so the session
    /// sends nothing more (a peer that left a message half sent at its close gets
    /// no close_notify).
    pub fn drop_held(&mut self) {
        let whole = self.held.get(3..5).is_some_and(|len| {
            5 + usize::from(u16::from_be_bytes([len[0], len[1]])) <= self.held.len()
        });
        if whole {
            self.failed = true;
        }
        self.held = Vec::new();
    }

    /// Feed ciphertext (`cipher` may be overwritten); the plaintext of its whole
    /// records goes into `plain`, which must have room for the bytes held plus
    /// `cipher` (plaintext is never longer than its record). Returns the plaintext's
    /// length and what the bytes amounted to.
    pub fn receive(&mut self, cipher: &mut [u8], plain: &mut [u8]) -> (usize, Received) {
        if self.failed {
            return (0, Received::Closed);
        }
        let mut held = std::mem::take(&mut self.held);
        let using_held = !held.is_empty();
        let buf: &mut [u8] = if using_held {
            held.extend_from_slice(cipher);
            &mut held
        } else {
            cipher
        };
        debug_assert!(plain.len() >= buf.len(), "no room for the plaintext");
        let (used, len, got) = self.process(buf, plain);
        if using_held {
            held.drain(..used);
            held.shrink_to_fit(); // what is counted is what is held
            self.held = held;
        } else if used < buf.len() {
            self.held = buf[used..].to_vec();
        }
        if self.held.len() > MAX_HELD && matches!(got, Received::More) {
            // Only handshake messages are joined across records: one that long is
            // no honest client's.
            self.failed = true;
            self.held = Vec::new();
            return (len, Received::Failed(Failure::Oversized));
        }
        (len, got)
    }

    /// Process the records in `buf`: how many bytes were used up, how much
    /// plaintext went into `plain`, and what they amounted to.
    fn process(&mut self, buf: &mut [u8], plain: &mut [u8]) -> (usize, usize, Received) {
        let mut used = 0;
        let mut len = 0;
        loop {
            let status = self.session.process_tls_records(&mut buf[used..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    self.failed = true;
                    // Queue the alert that tells the peer why (rustls asks for it
                    // to be encoded before it looks at the records again).
                    while let Ok(ConnectionState::EncodeTlsData(mut encode)) =
                        self.session.process_tls_records(&mut buf[used..]).state
                    {
                        encode_onto(&mut self.out, &mut encode);
                    }
                    return (used, len, Received::Failed(e.into()));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                let n = record.payload.len();
                                plain[len..len + n].copy_from_slice(record.payload);
                                len += n;
                            }
                            Err(e) => {
                                self.failed = true;
                                return (used + discard, len, Received::Failed(e.into()));
                            }
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_onto(&mut self.out, &mut encode)
                }
                // What was encoded is in `out`, and goes out with the next flush.
                ConnectionState::TransmitTlsData(done) => done.done(),
                // Every whole record is used up; the rest waits for more bytes.
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    return (used + discard, len, Received::More);
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return (used + discard, len, Received::Closed);
                }
                // No early data is accepted (the configuration allows none).
                _ => return (used + discard, len, Received::More),
            }
            used += discard;
        }
    }

    /// Encrypt `plain` (whole) onto `out`.
    pub fn encrypt(&mut self, plain: &[u8]) -> Result<(), Failure> {
        self.traffic(sealed_len(plain.len()), |w, out| w.encrypt(plain, out))
    }

    /// The connection closes: a close_notify follows the frames already queued
    /// (once the handshake is done; before, the socket's shutdown says it).
    pub fn close(&mut self) {
        self.close_pending = !self.is_handshaking();
    }

    /// Every queued frame is encrypted: add the close_notify, if one is due.
    pub fn seal_close(&mut self) {
        if std::mem::take(&mut self.close_pending) {
            let _ = self.traffic(64, |w, out| w.queue_close_notify(out));
        }
    }

    /// Reach the traffic state (encoding anything rustls queued first) and write
    /// `f`'s records onto `out`, `room` bytes being a first guess of their size.
    fn traffic(
        &mut self,
        room: usize,
        mut f: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> Result<(), Failure> {
        if self.failed || self.is_handshaking() {
            // Nothing can be sent over TLS yet (an answer to a stalled upgrade), or
            // any more (the session failed; its alert is the last word).
            return Err(Failure::Encrypt("the session cannot send".to_owned()));
        }
        loop {
            // rustls keeps its place in a handshake message split over records by
            // offset into the bytes held: it must always see them.
            let status = self.session.process_tls_records(&mut self.held);
            let discard = status.discard;
            let done = match status.state {
                Ok(ConnectionState::WriteTraffic(mut w)) => Some(
                    append_onto(
                        &mut self.out,
                        room,
                        |buf| f(&mut w, buf),
                        |e| match e {
                            EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Some(*required_size),
                            _ => None,
                        },
                    )
                    .map_err(|e| Failure::Encrypt(e.to_string())),
                ),
                // A key update or a ticket waits: it goes first.
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_onto(&mut self.out, &mut encode);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(done)) => {
                    done.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => None, // said once; ask again
                Ok(other) => Some(Err(Failure::Encrypt(format!(
                    "the session cannot send now ({other:?})"
                )))),
                Err(e) => {
                    self.failed = true;
                    Some(Err(e.into()))
                }
            };
            if discard > 0 {
                self.held.drain(..discard);
            }
            if let Some(result) = done {
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A server session and a rustls client that trusts it (TLS 1.3, or 1.2 only).
    fn pair(tls12: bool) -> (Tls, rustls::ClientConnection) {
        pair_with(tls12, |_| {})
    }

    fn pair_with(
        tls12: bool,
        tweak: impl FnOnce(&mut rustls::ClientConfig),
    ) -> (Tls, rustls::ClientConnection) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(c.cert.der().clone()).unwrap();
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tweak(&mut client);
        (
            Tls::new(&Arc::new(server)).unwrap(),
            rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
                .unwrap(),
        )
    }

    /// Everything the client has to send.
    fn from_client(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut v = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut v).unwrap();
        }
        v
    }

    /// Feed `bytes` to the server `step` bytes at a time; the plaintext it yields.
    fn feed(s: &mut Tls, bytes: &[u8], step: usize) -> (Vec<u8>, Vec<Received>) {
        let mut plain = Vec::new();
        let mut scratch = vec![0u8; MAX_HELD + (1 << 16)];
        let mut outcomes = Vec::new();
        for chunk in bytes.chunks(step) {
            let mut chunk = chunk.to_vec();
            let (n, got) = s.receive(&mut chunk, &mut scratch);
            plain.extend_from_slice(&scratch[..n]);
            if !matches!(got, Received::More) {
                outcomes.push(got);
            }
        }
        (plain, outcomes)
    }

    /// Hand the server's output to the client; the plaintext the client read.
    fn to_client(s: &mut Tls, c: &mut rustls::ClientConnection) -> Vec<u8> {
        let out = std::mem::take(&mut s.out);
        let mut rd = &out[..];
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
            while let Ok(n @ 1..) = c.reader().read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    }

    fn handshake(s: &mut Tls, c: &mut rustls::ClientConnection, step: usize) {
        for _ in 0..4 {
            let bytes = from_client(c);
            let (plain, outcomes) = feed(s, &bytes, step);
            assert!(plain.is_empty() && outcomes.is_empty(), "{outcomes:?}");
            assert!(to_client(s, c).is_empty());
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
    }

    #[test]
    fn a_session_fed_one_byte_at_a_time_handshakes_and_carries_data_both_ways() {
        for tls12 in [false, true] {
            let (mut s, mut c) = pair(tls12);
            handshake(&mut s, &mut c, 1);
            // Two records (the second over 16 KiB, so two of them), a byte at a time.
            let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
            c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            c.writer().write_all(&big).unwrap();
            let bytes = from_client(&mut c);
            let (plain, outcomes) = feed(&mut s, &bytes, 1);
            assert!(outcomes.is_empty(), "{outcomes:?}");
            assert_eq!(&plain[..18], b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(&plain[18..], &big[..]);
            assert_eq!(s.held(), 0, "nothing held between whole records");
            // And back, several frames into one flush.
            s.encrypt(b"HTTP/1.1 101 ").unwrap();
            s.encrypt(&big).unwrap();
            let got = to_client(&mut s, &mut c);
            assert_eq!(got.len(), 13 + big.len(), "tls12 {tls12}");
            assert_eq!(&got[13..], &big[..]);
        }
    }

    #[test]
    fn a_record_cut_short_is_held_only_until_the_rest_arrives() {
        let (mut s, mut c) = pair(false);
        handshake(&mut s, &mut c, 4096);
        c.writer().write_all(&[7u8; 1000]).unwrap();
        let bytes = from_client(&mut c);
        let (first, rest) = bytes.split_at(600);
        let (plain, _) = feed(&mut s, first, first.len());
        assert!(plain.is_empty());
        assert_eq!(s.held(), 600);
        let (plain, _) = feed(&mut s, rest, rest.len());
        assert_eq!(plain, vec![7u8; 1000]);
        assert_eq!(s.held(), 0, "freed");
        s.drop_held();
    }

    #[test]
    fn close_notify_both_ways() {
        let (mut s, mut c) = pair(false);
        handshake(&mut s, &mut c, 512);
        s.close();
        assert!(!s.has_output(), "not before the frames queued before it");
        s.encrypt(b"last frame").unwrap();
        s.seal_close();
        assert_eq!(to_client(&mut s, &mut c), b"last frame");
        s.seal_close();
        assert!(!s.has_output(), "once");
        let mut buf = [0u8; 8];
        assert_eq!(
            c.reader().read(&mut buf).unwrap(),
            0,
            "the client saw close_notify"
        );
        c.send_close_notify();
        let bytes = from_client(&mut c);
        let (_, outcomes) = feed(&mut s, &bytes, 1);
        assert!(matches!(outcomes[..], [Received::Closed]), "{outcomes:?}");
    }

    /// A client whose handshake messages go in 64-byte records: the server joins
    /// each from many.
    fn fragmenting_pair() -> (Tls, rustls::ClientConnection) {
        pair_with(false, |c| c.max_fragment_size = Some(64))
    }

    #[test]
    fn nothing_is_sent_while_a_handshake_message_is_half_joined() {
        // The review's crash: rustls keeps its place in a message split over records
        // as an offset into the bytes held; asking it to encrypt (a 408 for a stalled
        // upgrade) with any other buffer panicked the worker.
        let (mut s, mut c) = fragmenting_pair();
        let hello = from_client(&mut c);
        let (first, rest) = hello.split_at(hello.len() / 2);
        let (_, outcomes) = feed(&mut s, first, first.len());
        assert!(outcomes.is_empty(), "{outcomes:?}");
        assert!(s.held() > 0);
        assert!(s.encrypt(b"HTTP/1.1 408 Request Timeout\r\n\r\n").is_err());
        s.close();
        s.seal_close();
        // The rest arrives: the handshake goes on as if nothing happened.
        let (_, outcomes) = feed(&mut s, rest, 7);
        assert!(outcomes.is_empty(), "{outcomes:?}");
        to_client(&mut s, &mut c);
        handshake(&mut s, &mut c, 100);
        s.encrypt(b"ok").unwrap();
        assert_eq!(to_client(&mut s, &mut c), b"ok");
    }

    #[test]
    fn garbage_after_half_a_handshake_message_fails_with_an_alert() {
        let (mut s, mut c) = fragmenting_pair();
        let hello = from_client(&mut c);
        let (_, outcomes) = feed(&mut s, &hello[..hello.len() / 2], 4096);
        assert!(outcomes.is_empty());
        // An application-data record where the handshake goes on.
        let (_, outcomes) = feed(&mut s, &[23, 3, 3, 0, 3, 1, 2, 3], 8);
        assert!(
            matches!(outcomes[..], [Received::Failed(_)]),
            "{outcomes:?}"
        );
        assert_eq!(s.out.first(), Some(&21), "an alert record");
        assert!(
            s.encrypt(b"x").is_err(),
            "a failed session sends nothing more"
        );
        let (n, got) = s.receive(&mut [23, 3, 3], &mut [0u8; 64]);
        assert!(n == 0 && matches!(got, Received::Closed), "{got:?}");
    }

    #[test]
    fn a_handshake_message_joined_from_too_many_records_fails_the_session() {
        // A ClientHello announcing 60,000 bytes, a byte per record: six bytes held
        // for each; the buffered session refused such a message at 64 KiB.
        let (mut s, _) = pair(false);
        let mut body = vec![1u8, 0, 0xea, 0x60];
        body.resize(4 + 60_000, 0);
        let records: Vec<u8> = body.iter().flat_map(|&b| [22, 3, 1, 0, 1, b]).collect();
        let (_, outcomes) = feed(&mut s, &records, 16_384);
        assert!(
            matches!(outcomes[0], Received::Failed(Failure::Oversized)),
            "{outcomes:?}"
        );
        assert!(
            outcomes[1..].iter().all(|o| matches!(o, Received::Closed)),
            "nothing more is read: {outcomes:?}"
        );
        assert_eq!(s.held(), 0, "let go");
    }

    #[test]
    fn dropping_half_a_joined_message_leaves_a_session_that_sends_nothing() {
        // The second review's crash: a KeyUpdate split over two records, the first
        // one read, then a close (no more input): rustls's place in the message is
        // in the bytes dropped, and encrypting the close frame panicked.
        use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
        use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};
        let (mut s, mut c) = pair_with(false, |c| c.enable_secret_extraction = true);
        handshake(&mut s, &mut c, 4096);
        let (seq, secrets) = c.dangerous_extract_secrets().unwrap().tx;
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384;
        let rustls::SupportedCipherSuite::Tls13(suite) = suite else {
            unreachable!()
        };
        let ConnectionTrafficSecrets::Aes256Gcm { key, iv } = secrets else {
            panic!("expected the ring provider's first suite")
        };
        let mut seal = suite.aead_alg.encrypter(key, iv);
        let key_update = [24u8, 0, 0, 1, 0];
        let mut record = |part: &[u8], seq: u64| {
            let msg = OutboundPlainMessage {
                typ: ContentType::Handshake,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(part),
            };
            seal.encrypt(msg, seq).unwrap().encode()
        };
        let first = record(&key_update[..3], seq);
        let (_, outcomes) = feed(&mut s, &first, first.len());
        assert!(outcomes.is_empty(), "{outcomes:?}");
        assert!(s.held() > 0, "half a message joined");
        s.close();
        s.drop_held();
        assert!(s.encrypt(b"a close frame").is_err(), "and no panic");
        s.seal_close();
        assert!(!s.has_output());
    }

    #[test]
    fn garbage_fails_the_session_with_an_alert_for_the_peer() {
        let (mut s, _) = pair(false);
        let mut junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut scratch = vec![0u8; 1024];
        let (n, got) = s.receive(&mut junk, &mut scratch);
        assert!(n == 0 && matches!(got, Received::Failed(_)), "{got:?}");
        assert!(s.has_output(), "an alert says why");
        assert_eq!(s.out[0], 21, "an alert record");
    }

    #[test]
    fn missing_files_name_the_key() {
        let e = server_config(Path::new("/nonexistent/c.pem"), Path::new("/x")).unwrap_err();
        assert!(matches!(e, ConfigError::CertUnreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("tls.cert /nonexistent/c.pem"), "{e}");
    }
}
