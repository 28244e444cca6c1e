//! The bits of the NATS client protocol the generator needs to drive `nats-server`'s
//! WebSocket listener: the text to subscribe and publish, and an incremental parser
//! of what the server sends (the protocol is a byte stream; WebSocket frames may cut
//! it anywhere).

/// What a NATS server said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A delivered message's payload.
    Msg(&'a [u8]),
    /// The server pings; answer with [`PONG`].
    Ping,
    /// The answer to our PING (used to learn that a SUB is in place).
    Pong,
    /// INFO, +OK, -ERR and anything else.
    Other,
}

/// The answer to a server PING.
pub const PONG: &[u8] = b"PONG\r\n";

/// What a subscriber sends first: connect, subscribe, and a PING whose PONG says the
/// subscription is in place.
pub fn subscribe(subject: &str) -> Vec<u8> {
    format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n").into_bytes()
}

/// What a publisher sends once, before publishing.
pub fn connect() -> Vec<u8> {
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n".to_vec()
}

/// One publish.
pub fn publish(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reassembles the server's byte stream.
#[derive(Debug, Default)]
pub struct Stream {
    buf: Vec<u8>,
}

impl Stream {
    /// Append bytes (one WebSocket frame's payload) and hand every complete
    /// operation to `f`.
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(Event<'_>)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(eol) = find_crlf(&self.buf[start..]).map(|i| start + i) {
            let line = &self.buf[start..eol];
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let Some(n) = rest
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok()?.parse::<usize>().ok())
                else {
                    start = eol + 2;
                    continue;
                };
                let end = eol + 2 + n;
                if self.buf.len() < end + 2 {
                    break; // the payload has not all arrived
                }
                f(Event::Msg(&self.buf[eol + 2..end]));
                start = end + 2;
            } else {
                f(match line {
                    b"PING" => Event::Ping,
                    b"PONG" => Event::Pong,
                    _ => Event::Other,
                });
                start = eol + 2;
            }
        }
        self.buf.drain(..start);
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_split_anywhere() {
        let wire = b"INFO {\"x\":1}\r\nPONG\r\nMSG bench.0 1 5\r\nhello\r\nPING\r\nMSG a.b 1 r 2\r\nok\r\n";
        for step in 1..wire.len() {
            let mut s = Stream::default();
            let mut seen = Vec::new();
            for chunk in wire.chunks(step) {
                s.feed(chunk, |e| {
                    seen.push(match e {
                        Event::Msg(p) => format!("msg:{}", String::from_utf8_lossy(p)),
                        other => format!("{other:?}"),
                    })
                });
            }
            assert_eq!(
                seen,
                ["Other", "Pong", "msg:hello", "Ping", "msg:ok"],
                "step {step}"
            );
        }
    }

    #[test]
    fn publish_frames_the_payload() {
        assert_eq!(publish("s", b"abc"), b"PUB s 3\r\nabc\r\n");
    }
}
