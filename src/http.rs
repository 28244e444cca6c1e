//! HTTP/1.1 responses, sans-IO: the one writer for every answer ringway gives over
//! plain HTTP (the API, refused upgrades, the client library and demo page).

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Extra header lines, each ending in `\r\n` (`Retry-After`, CORS, ...).
    pub headers: String,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::with_type(status, "application/json", body)
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::with_type(status, "text/plain; charset=utf-8", body)
    }

    /// A response with a body of `content_type`.
    pub fn with_type(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: String::new(),
            body: body.into(),
        }
    }

    /// A JSON `{"error": reason}` response.
    pub fn error(status: u16, reason: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": reason }).to_string())
    }

    /// The same response with another header line (`name: value`).
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        use std::fmt::Write as _;
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    /// The bytes on the wire; `keep_alive` says whether the connection stays open.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = self.head(keep_alive);
        out.extend_from_slice(&self.body);
        out
    }

    /// The status line and headers only (the answer to a `HEAD`; `Content-Length` is
    /// the body's a `GET` would get).
    pub fn head(&self, keep_alive: bool) -> Vec<u8> {
        let reason = tungstenite::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: {}\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.headers,
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_status_headers_and_body() {
        let r = Response::text(503, "busy\n").header("Retry-After", 5);
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert_eq!(
            wire,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\nRetry-After: 5\r\nConnection: close\r\n\r\nbusy\n"
        );
        let head = String::from_utf8(r.head(true)).unwrap();
        assert!(head.ends_with("Connection: keep-alive\r\n\r\n"), "{head}");
        assert!(
            head.contains("Content-Length: 5\r\n"),
            "the GET's length: {head}"
        );
    }
}
