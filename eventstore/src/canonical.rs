//! NIP-01 JSON writing: the canonical serialization that ids are hashed over, and the
//! compact event object that stores keep and serve.
//!
//! NIP-01 fixes the escaping: `"` `\` and the control characters `\b \t \n \f \r` get their
//! short escapes, every other control character (below 0x20) is written as `\u00XX`, and
//! everything else, non-ASCII included, is written as its raw UTF-8 bytes.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, quotes included, escaped as NIP-01 requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0x0f) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends the tags array, e.g. `[["e","…"],["p","…"]]`.
pub fn write_tags(out: &mut Vec<u8>, tags: &[Vec<String>]) {
    out.push(b'[');
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (j, v) in tag.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(out, v);
        }
        out.push(b']');
    }
    out.push(b']');
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0x0f) as usize]);
    }
    out.push(b'"');
}

/// The fields an event is serialized from.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub pubkey: &'a [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    pub tags: &'a [Vec<String>],
    pub content: &'a str,
}

/// NIP-01: `[0,<pubkey>,<created_at>,<kind>,<tags>,<content>]`, the bytes the id hashes.
pub fn serialize_for_id(p: &Parts<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"[0,");
    write_hex(out, p.pubkey);
    out.push(b',');
    write_u64(out, p.created_at);
    out.push(b',');
    write_u64(out, u64::from(p.kind));
    out.push(b',');
    write_tags(out, p.tags);
    out.push(b',');
    write_str(out, p.content);
    out.push(b']');
}

/// The compact event object with the seven NIP-01 fields, in NIP-01's order.
pub fn serialize_event(p: &Parts<'_>, id: &[u8; 32], sig: &[u8; 64]) -> String {
    // The fixed fields take 345 bytes with a ten-digit `created_at`; each tag element
    // its quotes and comma. Escapes aside, one allocation (a read serialises every
    // event it serves, and growing the buffer twice per event showed in profiles).
    let tags: usize = p
        .tags
        .iter()
        .map(|t| 2 + t.iter().map(|v| v.len() + 3).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(360 + p.content.len() + tags);
    out.extend_from_slice(b"{\"id\":");
    write_hex(&mut out, id);
    out.extend_from_slice(b",\"pubkey\":");
    write_hex(&mut out, p.pubkey);
    out.extend_from_slice(b",\"created_at\":");
    write_u64(&mut out, p.created_at);
    out.extend_from_slice(b",\"kind\":");
    write_u64(&mut out, u64::from(p.kind));
    out.extend_from_slice(b",\"tags\":");
    write_tags(&mut out, p.tags);
    out.extend_from_slice(b",\"content\":");
    write_str(&mut out, p.content);
    out.extend_from_slice(b",\"sig\":");
    write_hex(&mut out, sig);
    out.push(b'}');
    // Only valid UTF-8 strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut v = Vec::new();
        write_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_follow_nip01() {
        assert_eq!(lit("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(lit("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(lit("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(lit("héllo 🌍 /"), "\"héllo 🌍 /\"");
    }

    #[test]
    fn agrees_with_serde_json_on_every_byte_class() {
        let mut s = String::new();
        for c in (0u32..0x300).filter_map(char::from_u32) {
            s.push(c);
        }
        s.push_str("🌍\u{2028}\u{feff}");
        assert_eq!(lit(&s), serde_json::to_string(&s).unwrap());
    }
}
