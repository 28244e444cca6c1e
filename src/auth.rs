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
    /// The token's claims as it carried them (a JSON object), kept only when the
    /// verifier was told to (the authorization callback passes them to the app).
    pub claims: Option<Box<str>>,
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
    /// Not a JWT, or claims missing or of the wrong type.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// `nbf` is still in the future.
    #[error("the token is not valid yet (nbf): check the clocks of the issuer and this node")]
    NotYetValid,
    /// `exp` is further away than `auth.max_token_ttl_s`.
    #[error(
        "the token lives longer than this node accepts (auth.max_token_ttl_s): mint shorter-lived tokens and refresh them"
    )]
    TooLong,
    /// Tokens are presented but no key is configured to check them.
    #[error("this node has no token key configured (auth.token_secret or auth.token_public_key)")]
    NoKey,
}

/// A key file that holds no public key ringway can verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RSA or EC (P-256) public key in PEM (-----BEGIN PUBLIC KEY-----)")]
pub struct NotAPublicKey;

/// Checks tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Room permissions every token gets whatever it claims (demo tokens).
    confine: Option<Arc<RoomClaims>>,
    /// Keep each token's claims in its grant.
    keep_claims: bool,
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
    pub fn public_pem(pem: &[u8]) -> Result<Self, NotAPublicKey> {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(k, Algorithm::RS256));
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with(k, Algorithm::ES256));
        }
        Err(NotAPublicKey)
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key,
            validation,
            confine: None,
            keep_claims: false,
        }
    }

    /// Keep every verified token's claims in its grant ([`Grant::claims`]).
    pub fn keeping_claims(mut self) -> Self {
        self.keep_claims = true;
        self
    }

    /// Check a token at Unix time `now`: signature, algorithm, `exp` and `nbf`, a
    /// lifetime of at most `max_ttl_s` seconds (0: any), and the claims (`sub` is a
    /// user id: see [`crate::protocol::valid_user`]). The reasons never quote the
    /// library's internals.
    pub fn verify(&self, token: &str, now: u64, max_ttl_s: u64) -> Result<Grant, Refused> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                K::ExpiredSignature => Refused::Expired,
                K::ImmatureSignature => Refused::NotYetValid,
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                    Refused::BadSignature
                }
                K::MissingRequiredClaim(_) => Refused::Malformed("it needs sub and exp claims"),
                K::Json(_) => Refused::Malformed(
                    "its claims must be JSON with sub (a string) and exp (a number)",
                ),
                _ => Refused::Malformed("it is not a JWT (header.claims.signature, base64url)"),
            },
        )?;
        let c = data.claims;
        if max_ttl_s > 0 && c.exp > now.saturating_add(max_ttl_s) {
            return Err(Refused::TooLong);
        }
        if !crate::protocol::valid_user(&c.sub) {
            return Err(Refused::Malformed(
                "sub must be 1 to 100 characters of A-Z a-z 0-9 _ - . : / @ # = +",
            ));
        }
        Ok(Grant {
            user: Arc::from(c.sub),
            exp: c.exp,
            rooms: match &self.confine {
                Some(r) => Some(r.clone()),
                None => c.rooms.map(Arc::new),
            },
            refresh_asked: false,
            claims: self.keep_claims.then(|| payload(token)).flatten(),
        })
    }
}

/// The claims segment of a JWT whose signature was checked, as JSON text.
fn payload(token: &str) -> Option<Box<str>> {
    use base64::Engine as _;
    let segment = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    String::from_utf8(json).ok().map(String::into_boxed_str)
}

/// The demo's guest tokens: signed with a key that is never the production secret
/// (random per node, or derived from the mesh secret so a cluster's nodes agree),
/// accepted only where the demo is on, and confined to `demo:*` rooms whatever they
/// claim.
#[derive(Clone)]
pub struct Demo {
    key: Vec<u8>,
    verifier: Verifier,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo").finish_non_exhaustive()
    }
}

/// The rooms demo tokens open.
pub const DEMO_ROOMS: &str = "demo:*";

impl Demo {
    /// Demo tokens under `key`.
    pub fn new(key: Vec<u8>) -> Self {
        let mut verifier = Verifier::hs256(&key);
        verifier.confine = Some(Arc::new(RoomClaims {
            sub: vec![DEMO_ROOMS.into()],
            publish: vec![DEMO_ROOMS.into()],
        }));
        Self { key, verifier }
    }

    /// The key for a node: derived from the mesh secret when there is one (every
    /// node of the cluster then accepts every node's guests), random otherwise.
    pub fn key_for(mesh_secret: &str) -> Vec<u8> {
        use hmac::{Hmac, KeyInit, Mac};
        if mesh_secret.is_empty() {
            let mut key = vec![0u8; 32];
            // Without randomness no key is safe: an empty one verifies nothing.
            if getrandom::fill(&mut key).is_err() {
                return Vec::new();
            }
            return key;
        }
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(mesh_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        m.update(b"ringway demo tokens v1");
        m.finalize().into_bytes().to_vec()
    }

    /// A guest token for `user`, valid `ttl_s` seconds from `now`.
    pub fn mint(&self, user: &str, now: u64, ttl_s: u64) -> String {
        mint_hs256(
            &self.key,
            &Claims {
                sub: user.to_owned(),
                exp: now + ttl_s,
                rooms: Some(RoomClaims {
                    sub: vec![DEMO_ROOMS.into()],
                    publish: vec![DEMO_ROOMS.into()],
                }),
            },
        )
    }

    /// Check a guest token (see [`Verifier::verify`]).
    pub fn verify(&self, token: &str, now: u64, max_ttl_s: u64) -> Result<Grant, Refused> {
        if self.key.is_empty() {
            return Err(Refused::BadSignature);
        }
        self.verifier.verify(token, now, max_ttl_s)
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

/// The credentials of an `Authorization: Bearer <credentials>` value; the scheme
/// is case-insensitive (RFC 9110 §11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

/// Find the token in an upgrade request: query `token=`, `Authorization: Bearer`,
/// or a `Sec-WebSocket-Protocol` entry `bearer.<token>`.
pub fn token_from_request<B>(req: &tungstenite::http::Request<B>) -> Option<String> {
    token_from(
        req.uri().query(),
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    )
}

/// [`token_from_request`] over a request's parts: its query string and its headers
/// in the order they came (names in any case). Only the first `Authorization`
/// header counts, as in an HTTP header map; values that are not visible ASCII are
/// skipped.
pub fn token_from<'a>(
    query: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Option<String> {
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "token" {
                return Some(v.into_owned());
            }
        }
    }
    // One pass: the first Authorization value, and the first `bearer.` entry of
    // the Sec-WebSocket-Protocol values (the former wins).
    let mut authorization: Option<Option<&str>> = None;
    let mut offered: Option<&str> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("authorization") {
            authorization.get_or_insert(visible_ascii(value));
        } else if offered.is_none() && name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offered = visible_ascii(value)
                .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("bearer.")));
        }
    }
    if let Some(t) = authorization.flatten().and_then(bearer) {
        return Some(t.trim().to_owned());
    }
    offered.map(str::to_owned)
}

/// A header value as text when it is all visible ASCII (and tabs), the rule of
/// `http::HeaderValue::to_str`.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
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
        let g = Verifier::hs256(SECRET).verify(&t, unix_now(), 0).unwrap();
        assert_eq!(&*g.user, "alice");
        assert!(g.may_subscribe("chat:9") && g.may_subscribe("news"));
        assert!(!g.may_subscribe("newsroom") && !g.may_subscribe("admin"));
        assert!(g.may_publish("chat:1") && !g.may_publish("chat:2"));
    }

    #[test]
    fn forged_expired_malformed_are_refused_with_their_reason() {
        let v = Verifier::hs256(SECRET);
        let forged = mint_hs256(b"another-secret-xxxxxx", &claims(unix_now() + 60));
        assert_eq!(v.verify(&forged, unix_now(), 0), Err(Refused::BadSignature));
        let expired = mint_hs256(SECRET, &claims(unix_now() - 5));
        assert_eq!(v.verify(&expired, unix_now(), 0), Err(Refused::Expired));
        assert!(matches!(
            v.verify("not.a.jwt", unix_now(), 0),
            Err(Refused::Malformed(_))
        ));
        assert!(matches!(
            v.verify("", unix_now(), 0),
            Err(Refused::Malformed(_))
        ));
        // alg=none with the same claims: refused.
        let good = mint_hs256(SECRET, &claims(unix_now() + 60));
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(v.verify(&none, unix_now(), 0).is_err());
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
            token_from_request(&req("/ws", Some(("Authorization", "BEARER t1")))).as_deref(),
            Some("t1")
        );
        assert_eq!(
            token_from_request(&req("/ws", Some(("Authorization", "Basic dTpw")))),
            None
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
        // Over raw headers: the first Authorization counts, then the subprotocols.
        let h = |v: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static [u8])> {
            v.iter().map(|&(k, v)| (k, v.as_bytes())).collect()
        };
        let both = h(&[
            ("Sec-WebSocket-Protocol", "ringway.v1, bearer.p1"),
            ("authorization", "Bearer a1"),
            ("Authorization", "Bearer a2"),
        ]);
        assert_eq!(token_from(None, both.clone()).as_deref(), Some("a1"));
        assert_eq!(token_from(Some("token=q1"), both).as_deref(), Some("q1"));
        let basic = h(&[
            ("Authorization", "Basic dTpw"),
            ("Authorization", "Bearer later"),
            ("sec-websocket-protocol", "bearer.p1"),
        ]);
        assert_eq!(token_from(None, basic).as_deref(), Some("p1"));
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
        assert_eq!(&*v.verify(&token, unix_now(), 0).unwrap().user, "alice");
        // Another key's signature, and an HS256 token, are refused.
        let other = rcgen::KeyPair::generate().unwrap();
        let v2 = Verifier::public_pem(other.public_key_pem().as_bytes()).unwrap();
        assert_eq!(v2.verify(&token, unix_now(), 0), Err(Refused::BadSignature));
        let hs = mint_hs256(SECRET, &claims);
        assert!(v.verify(&hs, unix_now(), 0).is_err());
        assert!(Verifier::public_pem(b"not a pem").is_err());
    }

    #[test]
    fn nbf_lifetime_and_user_ids_are_checked() {
        let v = Verifier::hs256(SECRET);
        let now = unix_now();
        let raw = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let later = raw(serde_json::json!({"sub": "a", "exp": now + 60, "nbf": now + 30}));
        assert_eq!(v.verify(&later, now, 0), Err(Refused::NotYetValid));
        let long = raw(serde_json::json!({"sub": "a", "exp": now + 7200}));
        assert_eq!(v.verify(&long, now, 3600), Err(Refused::TooLong));
        assert!(v.verify(&long, now, 0).is_ok(), "0: no cap");
        for bad in ["", "a b", "a\r\nX: 1", &"x".repeat(101)] {
            let t = raw(serde_json::json!({"sub": bad, "exp": now + 60}));
            assert!(
                matches!(v.verify(&t, now, 0), Err(Refused::Malformed(_))),
                "{bad:?}"
            );
        }
        let missing = raw(serde_json::json!({"exp": now + 60}));
        let e = v.verify(&missing, now, 0).unwrap_err().to_string();
        assert!(
            e.contains("sub") && e.contains("exp") && !e.contains("Missing"),
            "{e}"
        );
    }

    #[test]
    fn demo_tokens_are_confined_and_need_the_demo_key() {
        let demo = Demo::new(Demo::key_for(""));
        let now = unix_now();
        let t = demo.mint("guest:zoe", now, 600);
        let g = demo.verify(&t, now, 0).unwrap();
        assert!(g.may_subscribe("demo:lobby") && !g.may_subscribe("chat:1"));
        // Not a production token, and another node's demo key does not take it.
        assert!(Verifier::hs256(SECRET).verify(&t, now, 0).is_err());
        assert!(Demo::new(Demo::key_for("")).verify(&t, now, 0).is_err());
        // A production token with no room limits opens nothing more through the demo.
        let key = Demo::key_for("mesh-secret-0123456789");
        assert_eq!(
            key,
            Demo::key_for("mesh-secret-0123456789"),
            "a cluster agrees"
        );
        let wide = mint_hs256(&key, &claims(now + 60));
        let g = Demo::new(key).verify(&wide, now, 0).unwrap();
        assert!(!g.may_subscribe("chat:1"), "confined to demo:*");
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "anything"));
        assert!(matches("a:*", "a:"));
        assert!(!matches("a", "ab"));
    }
}
