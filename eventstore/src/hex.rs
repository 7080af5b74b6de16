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

/// What each byte is worth as a lower-case hex digit; [`NOT_HEX`] for every other byte.
/// NIP-01 mandates lower case: upper case would give two spellings of one id.
static NIBBLES: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        t[DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const NOT_HEX: u8 = 0xff;

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
    // Without a branch per digit (ids, keys and signatures are decoded for every event
    // read and every filter parsed): a byte that is not a digit is worth 0xff, and any
    // high bit left in `bad` means one was met.
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = NIBBLES[pair[0] as usize];
        let lo = NIBBLES[pair[1] as usize];
        bad |= hi | lo;
        *o = (hi << 4) | lo;
    }
    if bad & 0xf0 != 0 {
        let at = b.iter().position(|&c| NIBBLES[c as usize] == NOT_HEX);
        return Err(HexError::Digit {
            at: at.unwrap_or(0),
        });
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
        // Every byte value: exactly the sixteen lower-case digits are accepted.
        for c in 0..=255u8 {
            let s = [b'0', c];
            let got = std::str::from_utf8(&s).ok().map(decode_array::<1>);
            let digit = DIGITS.iter().position(|&d| d == c);
            match (got, digit) {
                (Some(Ok([v])), Some(d)) => assert_eq!(v as usize, d),
                (Some(Err(e)), None) => assert_eq!(e, HexError::Digit { at: 1 }),
                (None, None) => {} // not UTF-8 on its own: no &str to decode
                other => panic!("byte {c:#x}: {other:?}"),
            }
        }
    }
}
