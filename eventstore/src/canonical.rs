//! NIP-01 JSON writing: the canonical serialization that ids are hashed over, and the
//! compact event object that stores keep and serve.
//!
//! NIP-01 fixes the escaping: `"` `\` and the control characters `\b \t \n \f \r` get their
//! short escapes, every other control character (below 0x20) is written as `\u00XX`, and
//! everything else, non-ASCII included, is written as its raw UTF-8 bytes.

use crate::tags::Tags;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, quotes included, escaped as NIP-01 requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping (most text has no escape).
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0x0f) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether `s` is written as it is between quotes: no byte of it needs escaping.
pub fn is_plain(s: &str) -> bool {
    let mut words = s.as_bytes().chunks_exact(8);
    for w in &mut words {
        if needs_escape(u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))) {
            return false;
        }
    }
    // The tail, padded with a byte that never needs escaping.
    let mut tail = [b'a'; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    !needs_escape(u64::from_le_bytes(tail))
}

/// Whether any of the eight bytes of `w` is `"`, `\` or a control character (below
/// 0x20). Exact: a byte of 0x80 or more (UTF-8 beyond ASCII) never counts.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below n (n <= 0x80) sets its high bit in (x - n) & !x.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    (below(w, 0x20) | below(quote, 1) | below(backslash, 1)) != 0
}

/// Bytes the tags array takes, escapes aside: each tag its brackets and comma, each
/// value its quotes and comma.
pub(crate) fn tags_room(tags: &Tags) -> usize {
    2 * tags.len() + 3 * tags.value_count() + tags.text_len()
}

/// Appends the tags array, e.g. `[["e","…"],["p","…"]]`.
pub fn write_tags(out: &mut Vec<u8>, tags: &Tags) {
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
    out.reserve(bytes.len() * 2 + 2);
    out.push(b'"');
    // Through a buffer: one copy per 64 bytes rather than a push (and its capacity
    // check) per digit.
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = HEX[(b >> 4) as usize];
            pair[1] = HEX[(b & 0x0f) as usize];
        }
        out.extend_from_slice(&buf[..chunk.len() * 2]);
    }
    out.push(b'"');
}

/// The fields an event is serialized from.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub pubkey: &'a [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    pub tags: &'a Tags,
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
    let mut out = Vec::with_capacity(360 + p.content.len() + tags_room(p.tags));
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

    #[test]
    fn an_escape_at_every_place_in_a_word_is_found() {
        // Each escaped byte at each offset of an eight-byte word, amid plain and
        // multi-byte text, against serde_json's writer.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é'] {
            for at in 0..17 {
                let mut s: String = "abcdefghijklmnopq".chars().take(at).collect();
                s.push(special);
                s.push_str("rstuvwxyz\u{80}ü");
                assert_eq!(lit(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in "(?s).{0,64}") {
            proptest::prop_assert_eq!(lit(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn a_plain_string_is_one_serde_json_writes_unescaped(s in "(?s).{0,40}") {
            proptest::prop_assert_eq!(is_plain(&s), serde_json::to_string(&s).unwrap() == format!("\"{s}\""));
        }

        #[test]
        fn hex_is_lowercase_and_whole(bytes in proptest::collection::vec(0u8.., 0..200)) {
            let mut out = Vec::new();
            write_hex(&mut out, &bytes);
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), format!("\"{want}\""));
        }
    }
}
