//! Varlink framing: each message is one JSON object followed by a NUL byte.
//!
//! ```text
//!   {"method":"io.rsmd.Ntms.OpenSession","parameters":{}}\0{"method":...}\0
//!   |<------------------- message ------------------->|  |<--- next ...
//! ```
//!
//! JSON text never contains a raw NUL (a NUL inside a string is escaped as `\u0000`), so the first NUL ends the
//! message. [`FrameDecoder`] accepts bytes in chunks of any size, as a socket delivers them, and yields complete
//! messages. A message may be at most [`MAX_MESSAGE`] bytes (without its NUL); a peer that sends more without a
//! NUL gets [`FrameError::TooLarge`], after which the stream is unusable: the server answers an error and
//! disconnects. A complete message that is not UTF-8 is [`FrameError::InvalidUtf8`]; it is dropped and the
//! decoder carries on with the next one.

use serde_json::Value;

/// The largest message accepted, in bytes, not counting the NUL terminator.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The limit a client applies to replies: a whole large library's objects are one reply (50,000 slots are about
/// 18 MiB), so replies may be far larger than calls.
pub const MAX_REPLY: usize = 256 << 20;

/// A framing failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More than [`MAX_MESSAGE`] bytes arrived without a NUL. The stream cannot be resynchronised.
    #[error("Message exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A complete message is not valid UTF-8.
    #[error("Message is not valid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// The offset of the first invalid byte within the message.
        offset: usize,
    },
}

/// Splits a byte stream into NUL-terminated messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Received bytes; `buf[start..]` is not yet consumed.
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// Bytes of `buf[start..]` already searched for a NUL (none found there).
    scanned: usize,
    /// Set once the stream exceeded the limit: every later call reports [`FrameError::TooLarge`].
    overflowed: bool,
    /// The largest message accepted (0 means [`MAX_MESSAGE`]).
    limit: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// A decoder accepting messages of up to `limit` bytes (clients reading replies use [`MAX_REPLY`]).
    pub fn with_limit(limit: usize) -> FrameDecoder {
        FrameDecoder { limit, ..FrameDecoder::default() }
    }

    fn limit(&self) -> usize {
        if self.limit == 0 {
            MAX_MESSAGE
        } else {
            self.limit
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The memory the buffer holds (its capacity).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the stream exceeded [`MAX_MESSAGE`] (the decoder is then dead).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// The next complete message, if any: `None` means more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<String, FrameError>> {
        let limit = self.limit();
        if self.overflowed {
            return Some(Err(FrameError::TooLarge { limit }));
        }
        let pending = &self.buf[self.start..];
        // Never look further than one byte past the limit: a NUL beyond it cannot end an acceptable message.
        let window = pending.len().min(limit + 1);
        let found = pending[self.scanned.min(window)..window].iter().position(|&b| b == 0);
        let Some(rel) = found else {
            self.scanned = window;
            if window > limit {
                self.overflowed = true;
                self.buf = Vec::new();
                self.start = 0;
                self.scanned = 0;
                return Some(Err(FrameError::TooLarge { limit }));
            }
            return None;
        };
        let len = self.scanned.min(window) + rel;
        let message = pending[..len].to_vec();
        self.start += len + 1;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 16 << 10 {
                // A burst of calls is handled: give its buffer back rather than hold it for the connection's life.
                self.buf = Vec::new();
            }
        }
        Some(String::from_utf8(message).map_err(|e| FrameError::InvalidUtf8 { offset: e.utf8_error().valid_up_to() }))
    }
}

/// Serialises `value` as one message: compact JSON followed by NUL.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(d: &mut FrameDecoder) -> Vec<Result<String, FrameError>> {
        std::iter::from_fn(|| d.next_message()).collect()
    }

    #[test]
    fn encode_appends_nul_and_escapes_nul_in_strings() {
        let bytes = encode(&json!({"a": "x\u{0}y"}));
        assert_eq!(bytes.last(), Some(&0));
        assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(&bytes[..bytes.len() - 1], br#"{"a":"x\u0000y"}"#);
    }

    #[test]
    fn several_messages_in_one_chunk() {
        let mut d = FrameDecoder::new();
        d.extend(b"{\"a\":1}\0{\"b\":2}\0{\"c\"");
        assert_eq!(drain(&mut d), vec![Ok("{\"a\":1}".into()), Ok("{\"b\":2}".into())]);
        assert_eq!(d.buffered(), 4);
        d.extend(b":3}\0");
        assert_eq!(drain(&mut d), vec![Ok("{\"c\":3}".into())]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn split_at_every_offset() {
        let stream: Vec<u8> = [
            encode(&json!({"method": "io.rsmd.Ntms.OpenSession", "parameters": {"application": "bäckup"}})),
            encode(&json!({"method": "org.varlink.service.GetInfo"})),
            encode(&json!({})),
        ]
        .concat();
        let want = vec![
            Ok(r#"{"method":"io.rsmd.Ntms.OpenSession","parameters":{"application":"bäckup"}}"#.to_owned()),
            Ok(r#"{"method":"org.varlink.service.GetInfo"}"#.to_owned()),
            Ok("{}".to_owned()),
        ];
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut d = FrameDecoder::new();
                let mut got = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    d.extend(part);
                    got.extend(drain(&mut d));
                }
                assert_eq!(got, want, "cuts at {cut}, {cut2}");
                assert_eq!(d.buffered(), 0);
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let stream = [encode(&json!({"x": [1, 2, 3]})), encode(&json!({"y": null}))].concat();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.extend(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, vec![Ok(r#"{"x":[1,2,3]}"#.into()), Ok(r#"{"y":null}"#.into())]);
    }

    #[test]
    fn empty_message_is_returned() {
        let mut d = FrameDecoder::new();
        d.extend(b"\0");
        assert_eq!(drain(&mut d), vec![Ok(String::new())]);
    }

    #[test]
    fn invalid_utf8_is_an_error_and_decoding_continues() {
        let mut d = FrameDecoder::new();
        d.extend(b"{\"a\xff\"}\0{}\0");
        assert_eq!(drain(&mut d), vec![Err(FrameError::InvalidUtf8 { offset: 3 }), Ok("{}".into())]);
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut d = FrameDecoder::new();
        let body = vec![b' '; MAX_MESSAGE];
        d.extend(&body);
        assert_eq!(d.next_message(), None);
        d.extend(b"\0");
        assert_eq!(d.next_message().map(|r| r.map(|s| s.len())), Some(Ok(MAX_MESSAGE)));
    }

    #[test]
    fn over_max_without_nul_is_too_large_and_sticky() {
        let mut d = FrameDecoder::new();
        let chunk = vec![b' '; 64 * 1024];
        let mut result = None;
        for _ in 0..17 {
            d.extend(&chunk);
            if let Some(r) = d.next_message() {
                result = Some(r);
                break;
            }
        }
        assert_eq!(result, Some(Err(FrameError::TooLarge { limit: MAX_MESSAGE })));
        assert!(d.is_overflowed());
        d.extend(b"\0{}\0");
        assert_eq!(d.next_message(), Some(Err(FrameError::TooLarge { limit: MAX_MESSAGE })));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn over_max_with_nul_in_one_chunk_is_too_large() {
        let mut d = FrameDecoder::new();
        let mut body = vec![b' '; MAX_MESSAGE + 1];
        body.push(0);
        d.extend(&body);
        assert_eq!(d.next_message(), Some(Err(FrameError::TooLarge { limit: MAX_MESSAGE })));
    }

    #[test]
    fn large_message_after_small_ones_is_measured_from_its_start() {
        let mut d = FrameDecoder::new();
        d.extend(b"{}\0");
        let body = vec![b' '; MAX_MESSAGE];
        d.extend(&body);
        assert_eq!(d.next_message(), Some(Ok("{}".into())));
        assert_eq!(d.next_message(), None);
        d.extend(b"\0");
        assert!(matches!(d.next_message(), Some(Ok(s)) if s.len() == MAX_MESSAGE));
    }
}
