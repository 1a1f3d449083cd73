//! A bounds-checked reader over a device's response bytes.
//!
//! Every parser in [`crate::scsi`] reads through [`Reader`]: a `try_*` method returns a [`ParseError`] naming the
//! field (`what`, a singular noun) instead of indexing past the end. Devices report their own lengths; parsers check
//! those against the buffer with [`Reader::try_sub`], which never trusts a length beyond what was actually received.

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer ended before the named field.
    #[error("Response truncated at the {what}: {needed} bytes needed, {available} available")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A field holds a value the standard does not allow, or contradicts another field.
    #[error("Invalid {what}: {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The offending value.
        value: u64,
    },
}

/// A cursor over a byte slice that never reads out of bounds.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Offset of the cursor from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Consumes `n` bytes and returns them.
    pub fn try_take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let available = self.remaining();
        if n > available {
            return Err(ParseError::Truncated { what, needed: n, available });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Consumes up to `n` bytes: all of them when fewer remain (for reports the device truncated).
    pub fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.remaining());
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        out
    }

    /// Consumes `n` bytes and returns a reader over exactly them.
    pub fn try_sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, ParseError> {
        self.try_take(n, what).map(Reader::new)
    }

    /// Skips `n` bytes.
    pub fn try_skip(&mut self, n: usize, what: &'static str) -> Result<(), ParseError> {
        self.try_take(n, what).map(|_| ())
    }

    /// Reads one byte.
    pub fn try_u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.try_take(1, what)?[0])
    }

    /// Reads a big-endian 16-bit field.
    pub fn try_be16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.try_take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian 24-bit field.
    pub fn try_be24(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.try_take(3, what)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Reads a big-endian 32-bit field.
    pub fn try_be32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.try_take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian 64-bit field.
    pub fn try_be64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let b = self.try_take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// The unconsumed rest.
    pub fn rest(&mut self) -> &'a [u8] {
        let n = self.remaining();
        self.take_up_to(n)
    }
}

/// Text from a fixed-width ASCII field: leading and trailing spaces and NULs trimmed, non-ASCII replaced.
pub fn ascii(field: &[u8]) -> String {
    let end = field.iter().rposition(|&b| b != b' ' && b != 0).map_or(0, |i| i + 1);
    let start = field[..end].iter().position(|&b| b != b' ' && b != 0).unwrap_or(end);
    field[start..end].iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' }).collect()
}

/// A text field cut at its terminator: leading padding (spaces or NULs) is kept, the text after it ends at the first
/// NUL, and everything from that NUL on (NUL padding, or garbage a device left behind a terminated string) is
/// dropped. This is what `sg_inq` shows for such a field.
///
/// # References
/// SPC-4 4.4.1 (ASCII data fields: right-aligned, space padded) and 4.4.2 (null-terminated, null-padded strings).
pub fn until_nul(field: &[u8]) -> &[u8] {
    let start = field.iter().position(|&b| b != b' ' && b != 0).unwrap_or(field.len());
    let end = field[start..].iter().position(|&b| b == 0).map_or(field.len(), |i| start + i);
    &field[..end]
}

/// Text of an ASCII field that may be NUL-terminated ([`until_nul`]), trimmed and with non-ASCII replaced as by
/// [`ascii`]. For serial numbers and identifiers, where bytes after a NUL are never part of the value.
pub fn ascii_until_nul(field: &[u8]) -> String {
    ascii(until_nul(field))
}

/// Text of a UTF-8 field that may be NUL-terminated ([`until_nul`]): invalid sequences and control characters
/// replaced, leading and trailing spaces trimmed.
pub fn utf8_until_nul(field: &[u8]) -> String {
    let text = String::from_utf8_lossy(until_nul(field));
    text.trim_matches(' ').chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_reports_truncation_by_name() {
        let mut r = Reader::new(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(r.try_u8("byte").unwrap(), 1);
        assert_eq!(r.try_be16("word").unwrap(), 0x0203);
        assert_eq!(r.try_be24("triple").unwrap(), 0x040506);
        assert!(r.is_empty());
        assert_eq!(
            r.try_be32("page length"),
            Err(ParseError::Truncated { what: "page length", needed: 4, available: 0 })
        );
    }

    #[test]
    fn sub_reader_is_bounded_and_take_up_to_clamps() {
        let mut r = Reader::new(&[1, 2, 3, 4]);
        let mut s = r.try_sub(2, "descriptor").unwrap();
        assert_eq!(s.try_be16("address").unwrap(), 0x0102);
        assert!(s.try_u8("flags").is_err());
        assert_eq!(r.take_up_to(10), &[3, 4]);
        assert!(r.try_sub(1, "descriptor").is_err());
    }

    #[test]
    fn ascii_trims_spaces_and_nuls() {
        assert_eq!(ascii(b"IET     "), "IET");
        assert_eq!(ascii(b"  beaf11"), "beaf11");
        assert_eq!(ascii(b"ABC001L6\0\0\0"), "ABC001L6");
        assert_eq!(ascii(b"A\xffB "), "A?B");
        assert_eq!(ascii(b"    "), "");
    }

    #[test]
    fn text_ends_at_the_first_nul_after_the_padding() {
        assert_eq!(ascii_until_nul(b"MHVLIB0010\0\x000400"), "MHVLIB0010");
        assert_eq!(ascii_until_nul(b"    beaf11"), "beaf11");
        assert_eq!(ascii_until_nul(b"\0\0  SER1\0junk"), "SER1", "leading NUL padding is not the terminator");
        assert_eq!(ascii_until_nul(b"\0\0\0"), "");
        assert_eq!(ascii_until_nul(b"A\x01B  "), "A?B", "other control bytes are not terminators");
        assert_eq!(until_nul(b"  AB\0CD"), b"  AB");
        assert_eq!(utf8_until_nul("naa.50 \u{e9}\0\0xyz".as_bytes()), "naa.50 \u{e9}");
        assert_eq!(utf8_until_nul(b"a\xffb\x07"), "a\u{fffd}b?");
    }
}
