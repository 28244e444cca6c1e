//! TLS for client connections (wss), on the same io_uring workers, through rustls's
//! sans-IO `ServerConnection`.
//!
//! Nothing about the connection's life changes: the read task still waits for
//! readability and receives into the worker's scratch buffer; the ciphertext goes
//! into rustls, and the plaintext it yields (into a second per-worker scratch
//! buffer) goes to the same handshake and frame code as plain connections. On the
//! way out, queued frames are handed to rustls only when the previous ciphertext has
//! left, so the outbound queue (and its slow-consumer bounds) still sees the backlog.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Per-connection TLS state.
pub struct Tls {
    /// The rustls session.
    pub session: rustls::ServerConnection,
    /// Ciphertext produced and not yet accepted by the socket.
    pub out: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.is_handshaking())
            .field("out", &self.out.len())
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
    /// The records could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

impl Tls {
    /// A fresh server session.
    pub fn new(cfg: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            session: rustls::ServerConnection::new(cfg.clone())?,
            out: Vec::new(),
        })
    }

    /// Feed ciphertext; `plain` is called with each run of decrypted bytes (in
    /// `scratch`).
    pub fn receive(
        &mut self,
        mut cipher: &[u8],
        scratch: &mut [u8],
        mut plain: impl FnMut(&mut [u8]),
    ) -> Received {
        while !cipher.is_empty() {
            if let Err(e) = self.session.read_tls(&mut cipher) {
                return Received::Failed(e.into());
            }
            if let Err(e) = self.session.process_new_packets() {
                // Queue the alert that tells the peer why.
                let _ = self.session.write_tls(&mut self.out);
                return Received::Failed(e.into());
            }
            loop {
                match self.session.reader().read(scratch) {
                    Ok(0) => return Received::Closed,
                    Ok(n) => plain(&mut scratch[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Received::Failed(e.into()),
                }
            }
        }
        Received::More
    }

    /// Encrypt `plain` (whole) into the session's outgoing records.
    pub fn write_plain(&mut self, plain: &[u8]) -> std::io::Result<()> {
        self.session.writer().write_all(plain)
    }

    /// Move every record rustls has ready into `out`.
    pub fn seal(&mut self) {
        while self.session.wants_write() {
            if self.session.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_key() {
        let e = server_config(Path::new("/nonexistent/c.pem"), Path::new("/x")).unwrap_err();
        assert!(matches!(e, ConfigError::CertUnreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("tls.cert /nonexistent/c.pem"), "{e}");
    }
}
