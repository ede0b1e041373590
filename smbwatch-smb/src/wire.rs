//! Checked little-endian reads over a byte slice, and the parse error every
//! message parser returns. Nothing here indexes a slice without a bound
//! check: a length past the end of what was seen is an error, not a panic.

use thiserror::Error;

/// Longest name (share path, file or pipe name, user, domain) kept, in
/// characters. Longer names are cut and marked with a trailing `…`: a
/// hostile peer cannot make the parser hold more than this per name.
pub const MAX_NAME_CHARS: usize = 512;

/// Why a message could not be parsed (or not completely).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// A field reaches past the bytes that were seen (a truncated message,
    /// the end of a sample, or a hostile length).
    #[error("{what}: needs {need} bytes at offset {at}, only {have} seen")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Its offset in the buffer.
        at: usize,
        /// Bytes it needs from there.
        need: usize,
        /// Bytes that were seen in the buffer.
        have: usize,
    },
    /// A fixed field holds a value the specification does not allow.
    #[error("{what}: unexpected value {value:#x}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// The value seen.
        value: u64,
    },
}

/// A little-endian view of a buffer with checked reads.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// `len` bytes at `at`, or a [`ParseError::Truncated`] naming `what`.
    pub fn slice(&self, what: &'static str, at: usize, len: usize) -> Result<&'a [u8], ParseError> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or(ParseError::Truncated {
                what,
                at,
                need: len,
                have: self.0.len(),
            })
    }

    /// One byte at `at`.
    pub fn u8(&self, what: &'static str, at: usize) -> Result<u8, ParseError> {
        Ok(self.slice(what, at, 1)?[0])
    }

    /// A little-endian u16 at `at`.
    pub fn u16(&self, what: &'static str, at: usize) -> Result<u16, ParseError> {
        let b = self.slice(what, at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// A little-endian u32 at `at`.
    pub fn u32(&self, what: &'static str, at: usize) -> Result<u32, ParseError> {
        let b = self.slice(what, at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian u64 at `at`.
    pub fn u64(&self, what: &'static str, at: usize) -> Result<u64, ParseError> {
        let b = self.slice(what, at, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// 16 bytes at `at` (an SMB2 FileId, a UUID).
    pub fn b16(&self, what: &'static str, at: usize) -> Result<[u8; 16], ParseError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.slice(what, at, 16)?);
        Ok(a)
    }
}

/// Decodes UTF-16LE, lossily, keeping at most [`MAX_NAME_CHARS`]
/// characters. An odd trailing byte is ignored.
pub fn utf16(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    bounded(char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)))
}

/// Decodes an 8-bit (OEM) string as Latin-1, keeping at most
/// [`MAX_NAME_CHARS`] characters.
pub fn latin1(bytes: &[u8]) -> String {
    bounded(bytes.iter().map(|&b| char::from(b)))
}

fn bounded(chars: impl Iterator<Item = char>) -> String {
    let mut s = String::new();
    for (i, c) in chars.enumerate() {
        if i == MAX_NAME_CHARS {
            s.push('…');
            break;
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors() {
        let b = Bytes(&[1, 2, 3]);
        assert_eq!(b.u16("x", 1).unwrap(), 0x0302);
        assert!(matches!(
            b.u32("x", 0),
            Err(ParseError::Truncated {
                need: 4,
                have: 3,
                ..
            })
        ));
        assert!(b.slice("x", usize::MAX, 2).is_err());
        assert!(b.u8("x", 3).is_err());
    }

    #[test]
    fn names_are_bounded() {
        let long: Vec<u8> = "a"
            .repeat(5000)
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let s = utf16(&long);
        assert_eq!(s.chars().count(), MAX_NAME_CHARS + 1);
        assert_eq!(utf16(&[0x41, 0, 0x42]), "A");
        assert_eq!(latin1(b"NT LM 0.12"), "NT LM 0.12");
    }
}
