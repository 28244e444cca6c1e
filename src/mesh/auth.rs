//! Link authentication, sans-IO: both nodes prove they hold the cluster's shared
//! secret without sending it.
//!
//! Each side sends `Hello` with a fresh 16-byte nonce. Each then sends
//! `HMAC-SHA256(secret, transcript || role)`, where the transcript binds the cluster
//! name, both node ids and both nonces in dialer-then-acceptor order. A recorded
//! proof is useless later (the other side's nonce is new each time) and useless in
//! the other direction (the role byte differs). The check is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Which end of the link a proof is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the TCP connection.
    Dialer,
    /// The node that accepted it.
    Acceptor,
}

/// What both sides said in their `Hello`s.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// The dialer's node id and nonce.
    pub dialer: (&'a str, [u8; 16]),
    /// The acceptor's node id and nonce.
    pub acceptor: (&'a str, [u8; 16]),
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], role: Role) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        m.update(b"ringway-mesh-1");
        for part in [self.cluster, self.dialer.0, self.acceptor.0] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part.as_bytes());
        }
        m.update(&self.dialer.1);
        m.update(&self.acceptor.1);
        m.update(&[role as u8]);
        m
    }

    /// The proof `role` sends.
    pub fn prove(&self, secret: &[u8], role: Role) -> [u8; 32] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    /// Whether `mac` is `role`'s proof (constant-time).
    pub fn verify(&self, secret: &[u8], role: Role, mac: &[u8; 32]) -> bool {
        self.mac(secret, role).verify_slice(mac).is_ok()
    }
}

/// A fresh nonce from the operating system's generator.
pub fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).expect("the OS random generator is available");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>() -> Transcript<'a> {
        Transcript {
            cluster: "c",
            dialer: ("n1", [1; 16]),
            acceptor: ("n2", [2; 16]),
        }
    }

    #[test]
    fn proof_verifies_only_with_same_secret_role_and_nonces() {
        let secret = b"0123456789abcdef";
        let p = t().prove(secret, Role::Dialer);
        assert!(t().verify(secret, Role::Dialer, &p));
        assert!(!t().verify(b"0123456789abcdeX", Role::Dialer, &p));
        assert!(!t().verify(secret, Role::Acceptor, &p), "reflected proof");
        let mut other = t();
        other.acceptor.1 = [3; 16];
        assert!(!other.verify(secret, Role::Dialer, &p), "replayed proof");
        let mut renamed = t();
        renamed.dialer.0 = "n3";
        assert!(!renamed.verify(secret, Role::Dialer, &p));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
