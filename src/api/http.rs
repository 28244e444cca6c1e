//! Just enough HTTP/1.1 for the API, sans-IO: a request head parsed by `httparse`,
//! a body framed by `Content-Length`, and response formatting.

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest request body accepted (publish payloads).
pub const MAX_BODY: usize = 1 << 20;

/// A complete request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Parse outcome on the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A request and the bytes it took.
    Complete(Request, usize),
    /// Unusable input: answer with this status and close.
    Error(u16, &'static str),
}

/// Parse one request at the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Error(431, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(431, "too many headers"),
        Err(_) => return Parsed::Error(400, "malformed HTTP request"),
    };
    let mut content_length = 0usize;
    let mut keep_alive = req.version == Some(1);
    let mut authorization = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(String::from_utf8_lossy(h.value).into_owned());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => content_length = n,
                None => return Parsed::Error(400, "invalid Content-Length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Error(411, "send the body with Content-Length, not chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    if content_length > MAX_BODY {
        return Parsed::Error(413, "body larger than 1 MiB");
    }
    if buf.len() < head + content_length {
        return Parsed::Partial;
    }
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    Parsed::Complete(
        Request {
            method: req.method.unwrap_or("GET").to_owned(),
            path: path.to_owned(),
            keep_alive,
            authorization,
            body: buf[head..head + content_length].to_vec(),
        },
        head + content_length,
    )
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A JSON `{"error": reason}` response.
    pub fn error(status: u16, reason: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": reason }).to_string())
    }

    /// The bytes on the wire.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let reason = tungstenite::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] =
        b"POST /v1/publish?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn byte_at_a_time_is_partial_until_the_body_is_in() {
        for i in 0..REQ.len() {
            assert_eq!(parse(&REQ[..i]), Parsed::Partial, "{i}");
        }
        let Parsed::Complete(r, n) = parse(REQ) else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), &r.body[..], n),
            ("POST", "/v1/publish", &b"hello"[..], REQ.len())
        );
        assert!(r.keep_alive);
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        assert!(matches!(
            parse(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            Parsed::Error(400, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Error(411, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Parsed::Error(413, _)
        ));
        let Parsed::Complete(r, _) = parse(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!r.keep_alive);
    }
}
