//! Lower-case hex, the only encoding NIP-01 uses for ids, keys and signatures.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex form of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
}

/// The lower-case hex form of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_into(bytes, &mut s);
    s
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        // NIP-01 mandates lower case; upper case would give two spellings of one id.
        _ => None,
    }
}

/// Why a hex string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HexError {
    /// The string has the wrong number of characters.
    Length { expected: usize, got: usize },
    /// A character that is not lower-case hex, at this byte offset.
    Digit { at: usize },
}

impl std::fmt::Display for HexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HexError::Length { expected, got } => {
                write!(
                    f,
                    "expected {expected} lower-case hex characters, got {got}"
                )
            }
            HexError::Digit { at } => write!(f, "not a lower-case hex digit at position {at}"),
        }
    }
}

impl std::error::Error for HexError {}

/// Decodes exactly `N` bytes from `2 * N` lower-case hex characters.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: b.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Digit { at: 2 * i })?;
        let lo = nibble(pair[1]).ok_or(HexError::Digit { at: 2 * i + 1 })?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        assert_eq!(decode_array::<4>("0001abff"), Ok(bytes));
        assert_eq!(
            decode_array::<4>("0001abf"),
            Err(HexError::Length {
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            decode_array::<4>("0001ABff"),
            Err(HexError::Digit { at: 4 })
        );
        assert_eq!(
            decode_array::<4>("0001abfg"),
            Err(HexError::Digit { at: 7 })
        );
    }
}
