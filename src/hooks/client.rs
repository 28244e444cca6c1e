//! The HTTP client every call to the app goes through: one request at a time per
//! caller (blocking; only hooks threads call it), signed with `hooks.secret`, with a
//! timeout for the whole exchange and a bounded answer.

use std::time::Duration;

use super::sign;

/// How a call went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, with the body (at most [`MAX_ANSWER`] bytes).
    Ok(String),
    /// The app refused (a 4xx other than 408 and 429): sending it again will not
    /// help.
    Refused(u16),
    /// Worth trying again (no answer, a timeout, 408, 429, 5xx): why.
    Retry(String),
}

/// The largest answer read.
pub const MAX_ANSWER: u64 = 64 << 10;

/// A client for one URL.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    secret: Vec<u8>,
    node: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Calls to `url`, each at most `timeout`, signed with `secret`, naming `node`.
    pub fn new(url: &str, secret: &str, node: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("ringway/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            url: url.to_owned(),
            secret: secret.as_bytes().to_vec(),
            node: node.to_owned(),
        }
    }

    /// POST `body` (JSON) with the signature and `headers`.
    pub fn post(&self, body: &[u8], headers: &[(&str, String)]) -> Outcome {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(sign::HEADER, sign::signature(&self.secret, body))
            .header("X-Ringway-Node", self.node.as_str());
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        match req.send(body) {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let text = res
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER)
                    .read_to_string();
                match status {
                    200..=299 => match text {
                        Ok(t) => Outcome::Ok(t),
                        Err(e) => Outcome::Retry(format!("reading the answer: {e}")),
                    },
                    408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                    _ => Outcome::Refused(status),
                }
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// The URL called.
    pub fn url(&self) -> &str {
        &self.url
    }
}
