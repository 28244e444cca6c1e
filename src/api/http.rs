//! Just enough HTTP/1.1 for the API, sans-IO: a request head parsed by `httparse`,
//! a body framed by `Content-Length` (responses: [`crate::http::Response`]).

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// A request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body's length (`Content-Length`; 0 without one).
    pub content_length: usize,
}

/// Parse outcome on the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A head and the bytes it took; its body (if any) follows.
    Complete(Head, usize),
    /// Unusable input: answer with this status and close.
    Error(u16, &'static str),
}

/// Parse the request head at the front of `buf`. Framing is strict, as a service
/// behind a proxy must be to avoid request smuggling: one `Content-Length` of plain
/// digits, no `Transfer-Encoding`, a head of at most [`MAX_HEAD`] bytes.
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Parsed::Error(431, "request head too large");
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Error(431, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(431, "too many headers"),
        Err(_) => return Parsed::Error(400, "malformed HTTP request"),
    };
    let mut content_length = None;
    let mut keep_alive = req.version == Some(1);
    let mut authorization = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(String::from_utf8_lossy(h.value).into_owned());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Parsed::Error(400, "more than one Content-Length");
            }
            let digits = h.value.trim_ascii();
            if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
                return Parsed::Error(400, "invalid Content-Length: give plain digits");
            }
            // Twelve digits or fewer always parse.
            content_length = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
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
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    Parsed::Complete(
        Head {
            method: req.method.unwrap_or("GET").to_owned(),
            path: path.to_owned(),
            query,
            keep_alive,
            authorization,
            content_length: content_length.unwrap_or(0),
        },
        head,
    )
}

pub use crate::http::Response;

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] =
        b"POST /v1/publish?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn byte_at_a_time_is_partial_until_the_head_is_in() {
        let head_len = REQ.len() - 5;
        for i in 0..head_len {
            assert_eq!(parse_head(&REQ[..i]), Parsed::Partial, "{i}");
        }
        let Parsed::Complete(h, n) = parse_head(REQ) else {
            panic!()
        };
        assert_eq!(
            (
                h.method.as_str(),
                h.path.as_str(),
                h.query.as_deref(),
                h.content_length,
                n
            ),
            ("POST", "/v1/publish", Some("x=1"), 5, head_len)
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn refuses_what_it_cannot_frame_safely() {
        let status = |req: &str| match parse_head(req.as_bytes()) {
            Parsed::Error(s, _) => s,
            Parsed::Complete(..) => 200,
            Parsed::Partial => 0,
        };
        assert_eq!(status("\x00\x01 / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            200,
            "the size is the caller's to judge"
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&big), 431, "complete but too large");
        let Parsed::Complete(h, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!h.keep_alive);
    }
}
