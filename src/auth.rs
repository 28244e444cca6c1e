//! Who a client is and what it may do, sans-IO: signed expiring tokens (JWT through
//! the `jsonwebtoken` crate) and room patterns.
//!
//! A token is an HS256 JWT signed with `auth.token_secret`, or an RS256/ES256 JWT
//! checked against `auth.token_public_key` (PEM). Claims:
//!
//! ```json
//! {"sub": "alice", "exp": 1790000000, "rooms": {"sub": ["chat:*"], "pub": ["chat:*"]}}
//! ```
//!
//! `rooms` is optional; without it the user may use any room. Patterns are exact
//! names or end in `*` (a prefix). Every identified connection is also subscribed to
//! its personal room `user:<sub>`, through which direct messages arrive.
//!
//! The token may come in the query (`?token=`), an `Authorization: Bearer` header,
//! or, for browsers (which cannot set headers on a WebSocket), as a
//! `Sec-WebSocket-Protocol` entry `bearer.<token>` next to `ringway.v1`.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Room permissions of a token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// Rooms the user may subscribe to.
    #[serde(default)]
    pub sub: Vec<String>,
    /// Rooms the user may publish to.
    #[serde(default, rename = "pub")]
    pub publish: Vec<String>,
}

/// The claims ringway reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Room permissions; absent = any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<RoomClaims>,
}

/// What a valid token grants a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The user.
    pub user: Arc<str>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Room permissions; `None` = any room.
    pub rooms: Option<Arc<RoomClaims>>,
    /// `refresh_needed` was sent for this expiry.
    pub refresh_asked: bool,
}

impl Grant {
    /// Whether the grant lets the user subscribe to `room`.
    pub fn may_subscribe(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.sub.iter().any(|p| matches(p, room)))
    }

    /// Whether the grant lets the user publish to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.publish.iter().any(|p| matches(p, room)))
    }
}

/// Whether `pattern` (`name` or `prefix*`) covers `room`.
pub fn matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// Why a token was refused (sent as the body of the 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// No token where one is required.
    #[error(
        "a token is required: pass ?token=, Authorization: Bearer, or a Sec-WebSocket-Protocol entry bearer.<token>"
    )]
    Missing,
    /// The token has expired.
    #[error("the token has expired: get a new one")]
    Expired,
    /// The signature does not verify (or the algorithm is not the configured one).
    #[error("the token's signature is invalid (forged, or signed with another key or algorithm)")]
    BadSignature,
    /// Not a JWT, or claims missing.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// Tokens are presented but no key is configured to check them.
    #[error("this node has no token key configured (auth.token_secret or auth.token_public_key)")]
    NoKey,
}

/// Checks tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 or ES256 with a public key in PEM (the kind is read from the PEM).
    pub fn public_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(k, Algorithm::RS256));
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with(k, Algorithm::ES256));
        }
        Err("not an RSA or EC (P-256) public key in PEM".into())
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key, validation }
    }

    /// Check a token: signature, algorithm, expiry, claims.
    pub fn verify(&self, token: &str) -> Result<Grant, Refused> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                K::ExpiredSignature => Refused::Expired,
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                    Refused::BadSignature
                }
                other => Refused::Malformed(format!("{other:?}")),
            },
        )?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 100 || c.sub.chars().any(char::is_control) {
            return Err(Refused::Malformed(
                "sub must be 1 to 100 characters without control characters".into(),
            ));
        }
        Ok(Grant {
            user: Arc::from(c.sub),
            exp: c.exp,
            rooms: c.rooms.map(Arc::new),
            refresh_asked: false,
        })
    }
}

/// Mint an HS256 token (`ringway token`, tests, README examples).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing cannot fail")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Find the token in an upgrade request: query `token=`, `Authorization: Bearer`,
/// or a `Sec-WebSocket-Protocol` entry `bearer.<token>`.
pub fn token_from_request<B>(req: &tungstenite::http::Request<B>) -> Option<String> {
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "token" {
                return Some(v.into_owned());
            }
        }
    }
    let headers = req.headers();
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_owned());
    }
    for v in headers.get_all("sec-websocket-protocol") {
        let Ok(v) = v.to_str() else { continue };
        for p in v.split(',') {
            if let Some(t) = p.trim().strip_prefix("bearer.") {
                return Some(t.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-0123456789";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            rooms: Some(RoomClaims {
                sub: vec!["chat:*".into(), "news".into()],
                publish: vec!["chat:1".into()],
            }),
        }
    }

    #[test]
    fn good_token_grants_user_and_patterns() {
        let t = mint_hs256(SECRET, &claims(unix_now() + 60));
        let g = Verifier::hs256(SECRET).verify(&t).unwrap();
        assert_eq!(&*g.user, "alice");
        assert!(g.may_subscribe("chat:9") && g.may_subscribe("news"));
        assert!(!g.may_subscribe("newsroom") && !g.may_subscribe("admin"));
        assert!(g.may_publish("chat:1") && !g.may_publish("chat:2"));
    }

    #[test]
    fn forged_expired_malformed_are_refused_with_their_reason() {
        let v = Verifier::hs256(SECRET);
        let forged = mint_hs256(b"another-secret-xxxxxx", &claims(unix_now() + 60));
        assert_eq!(v.verify(&forged), Err(Refused::BadSignature));
        let expired = mint_hs256(SECRET, &claims(unix_now() - 5));
        assert_eq!(v.verify(&expired), Err(Refused::Expired));
        assert!(matches!(v.verify("not.a.jwt"), Err(Refused::Malformed(_))));
        assert!(matches!(v.verify(""), Err(Refused::Malformed(_))));
        // alg=none with the same claims: refused.
        let good = mint_hs256(SECRET, &claims(unix_now() + 60));
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn token_found_in_query_header_or_subprotocol() {
        let req = |uri: &str, h: Option<(&str, &str)>| {
            let mut b = tungstenite::http::Request::builder().uri(uri);
            if let Some((k, v)) = h {
                b = b.header(k, v);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            token_from_request(&req("/ws?x=1&token=a.b%2Ec", None)).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            token_from_request(&req("/ws", Some(("Authorization", "Bearer t1")))).as_deref(),
            Some("t1")
        );
        assert_eq!(
            token_from_request(&req(
                "/ws",
                Some(("Sec-WebSocket-Protocol", "ringway.v1, bearer.t2"))
            ))
            .as_deref(),
            Some("t2")
        );
        assert_eq!(token_from_request(&req("/ws", None)), None);
    }

    #[test]
    fn es256_tokens_verify_against_the_public_key_pem() {
        let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let claims = claims(unix_now() + 60);
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let v = Verifier::public_pem(pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(&*v.verify(&token).unwrap().user, "alice");
        // Another key's signature, and an HS256 token, are refused.
        let other = rcgen::KeyPair::generate().unwrap();
        let v2 = Verifier::public_pem(other.public_key_pem().as_bytes()).unwrap();
        assert_eq!(v2.verify(&token), Err(Refused::BadSignature));
        let hs = mint_hs256(SECRET, &claims);
        assert!(v.verify(&hs).is_err());
        assert!(Verifier::public_pem(b"not a pem").is_err());
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "anything"));
        assert!(matches("a:*", "a:"));
        assert!(!matches("a", "ab"));
    }
}
