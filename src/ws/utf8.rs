//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across fragments (and a code point across a fragment
//! boundary). RFC 6455 §8.1 asks an endpoint to fail as soon as the bytes seen so far
//! cannot start a valid sequence ("fail fast"); this validator keeps only the 0–3
//! bytes of an unfinished code point between calls, so it costs nothing per connection.

/// Validates a byte stream piece by piece. `feed` each piece in order, then `finish`.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a code point whose end has not arrived yet.
    pending: [u8; 4],
    /// How many of `pending` are in use (0..=3).
    len: u8,
}

/// The bytes are not UTF-8 (close code 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Validate the next piece. Fails as soon as the input cannot be a prefix of valid
    /// UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            let p = usize::from(self.len);
            let take = input.len().min(4 - p);
            let mut tmp = [0u8; 7];
            tmp[..p].copy_from_slice(&self.pending[..p]);
            tmp[p..p + take].copy_from_slice(&input[..take]);
            let joined = &tmp[..p + take];
            let valid = match std::str::from_utf8(joined) {
                Ok(_) => joined.len(),
                Err(e) if e.valid_up_to() >= p => e.valid_up_to(),
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still an unfinished code point: everything taken is pending.
                    self.pending[..joined.len()].copy_from_slice(joined);
                    self.len = joined.len() as u8;
                    return Ok(());
                }
            };
            self.len = 0;
            input = &input[valid - p..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message has ended: an unfinished code point is an error.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        v.feed(bytes)?;
        v.finish()
    }

    fn byte_at_a_time(bytes: &[u8]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        for b in bytes {
            v.feed(std::slice::from_ref(b))?;
        }
        v.finish()
    }

    const CASES: &[(&[u8], bool)] = &[
        (b"hello", true),
        ("κόσμε".as_bytes(), true),
        ("\u{10FFFF}\u{0}\u{7FF}\u{FFFF}".as_bytes(), true),
        (
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            false,
        ), // surrogate
        (b"\xf4\x90\x80\x80", false), // above U+10FFFF
        (b"\xc0\xaf", false),         // overlong
        (b"\x80", false),             // lone continuation
        (b"\xe2\x82", false),         // truncated at the end
        (b"", true),
    ];

    #[test]
    fn agrees_with_std_whole_and_byte_at_a_time() {
        for &(bytes, ok) in CASES {
            assert_eq!(whole(bytes).is_ok(), ok, "{bytes:?}");
            assert_eq!(byte_at_a_time(bytes).is_ok(), ok, "{bytes:?}");
        }
    }

    #[test]
    fn every_split_point_agrees_with_std() {
        let text = "aκ€😀z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let mut v = Utf8Validator::default();
                v.feed(&text[..i]).unwrap();
                v.feed(&text[i..j]).unwrap();
                v.feed(&text[j..]).unwrap();
                v.finish().unwrap();
            }
        }
    }

    #[test]
    fn fails_fast_inside_a_code_point() {
        // 0xF4 0x90 can never be valid: fail on the second byte, before the rest.
        let mut v = Utf8Validator::default();
        v.feed(b"ok\xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
    }
}
