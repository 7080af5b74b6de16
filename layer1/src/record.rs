//! The stored form of an event: a compact binary record instead of its JSON.
//!
//! An event's JSON spends most of its bytes on hex (id, pubkey and signature: 256
//! characters for 128 bytes; `e` and `p` tag values: 64 characters for 32 bytes) and on
//! field names and punctuation. The record keeps those as raw bytes and lengths; on real
//! events (`../shared/data`) it is about a third smaller than the JSON, so a byte budget
//! holds that many more events. Reading it back writes the canonical NIP-01 JSON afresh
//! (`Event::from_stored_parts`), which is byte for byte the JSON every stored event has:
//! events are only ever built in that canonical form (`eventstore::canonical`).
//!
//! Layout (version 1), all integers LEB128 varints:
//!
//! ```text
//! 0x01 | id (32) | pubkey (32) | sig (64) | created_at | kind | tag count
//!      | per tag: value count, per value: 0 then 32 bytes (64 lower-case hex
//!        characters, packed), or length + 1 then the UTF-8 bytes
//!      | content: the UTF-8 bytes to the end of the record
//! ```
//!
//! Files written before records stored the JSON itself; such a value starts with `{`
//! (never a record's first byte) and is still read as it is, so no file needs
//! rewriting.

use eventstore::{Event, EventId, Kind, PublicKey, Signature, StoreError, TagsBuilder, Timestamp};

use crate::error::corrupt;

const VERSION: u8 = 1;
const FIXED: usize = 1 + 32 + 32 + 64;

/// The record of `e`.
pub(crate) fn encode(e: &Event) -> Vec<u8> {
    let tags = e.tags();
    let mut out = Vec::with_capacity(
        FIXED + 16 + e.content().len() + tags.text_len() + 2 * tags.value_count(),
    );
    out.push(VERSION);
    out.extend_from_slice(&e.id().0);
    out.extend_from_slice(&e.pubkey().0);
    out.extend_from_slice(&e.sig().0);
    put(&mut out, e.created_at().0);
    put(&mut out, u64::from(e.kind().0));
    put(&mut out, tags.len() as u64);
    for tag in tags {
        put(&mut out, tag.len() as u64);
        for v in tag {
            match eventstore::hex::decode_array::<32>(v) {
                Ok(b) => {
                    out.push(0);
                    out.extend_from_slice(&b);
                }
                Err(_) => {
                    put(&mut out, v.len() as u64 + 1);
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
    out.extend_from_slice(e.content().as_bytes());
    out
}

/// The event stored as `bytes` (a record, or JSON from an older file).
pub(crate) fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    match bytes.first() {
        Some(&VERSION) => decode_record(bytes),
        Some(b'{') => {
            let s =
                std::str::from_utf8(bytes).map_err(|e| corrupt(format!("event not UTF-8: {e}")))?;
            Event::from_stored_json(s).map_err(|e| corrupt(format!("stored event: {e}")))
        }
        other => Err(corrupt(format!("unknown event record {other:?}"))),
    }
}

/// The id of the event stored as `bytes`, without decoding the rest.
pub(crate) fn id_of(bytes: &[u8]) -> Result<EventId, StoreError> {
    if bytes.first() == Some(&VERSION) && bytes.len() >= FIXED {
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[1..33]);
        return Ok(EventId(id));
    }
    // Stored JSON starts `{"id":"<hex>"`.
    let fast = bytes
        .get(..71)
        .filter(|b| b.starts_with(b"{\"id\":\""))
        .and_then(|b| std::str::from_utf8(&b[7..71]).ok())
        .and_then(|h| EventId::from_hex(h).ok());
    match fast {
        Some(id) => Ok(id),
        None => decode(bytes).map(|e| e.id()),
    }
}

fn decode_record(bytes: &[u8]) -> Result<Event, StoreError> {
    let bad = || corrupt("truncated or malformed event record");
    if bytes.len() < FIXED {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    let mut pubkey = [0u8; 32];
    let mut sig = [0u8; 64];
    id.copy_from_slice(&bytes[1..33]);
    pubkey.copy_from_slice(&bytes[33..65]);
    sig.copy_from_slice(&bytes[65..FIXED]);
    let mut r = Reader {
        b: bytes,
        at: FIXED,
    };
    let created_at = r.varint().ok_or_else(bad)?;
    let kind = u16::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?;
    let n_tags = r.count()?;
    let (values, text) = r.clone().tag_sizes(n_tags)?;
    let mut tags = TagsBuilder::with_capacity(n_tags, values, text);
    for _ in 0..n_tags {
        let n = r.count()?;
        for _ in 0..n {
            let head = r.varint().ok_or_else(bad)?;
            if head == 0 {
                tags.push_hex(r.take(32).ok_or_else(bad)?);
            } else {
                let len = usize::try_from(head - 1).map_err(|_| bad())?;
                tags.push_str(r.str(len)?);
            }
        }
        tags.end_tag();
    }
    let content = r.str(bytes.len() - r.at)?;
    Ok(Event::from_stored_parts(
        EventId(id),
        PublicKey(pubkey),
        Timestamp(created_at),
        Kind(kind),
        tags.finish(),
        content,
        Signature(sig),
    ))
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[derive(Clone)]
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// A count of items still to come: each takes at least a byte, so a count beyond
    /// the bytes left is corrupt (and never allocates).
    fn count(&mut self) -> Result<usize, StoreError> {
        let n = self
            .varint()
            .ok_or_else(|| corrupt("truncated event record"))?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len() - self.at)
            .ok_or_else(|| corrupt("event record count out of range"))
    }

    /// How many values the next `n_tags` tags hold, and their text's length: one pass
    /// ahead, so the event's tags are built in room of the exact size.
    fn tag_sizes(mut self, n_tags: usize) -> Result<(usize, usize), StoreError> {
        let bad = || corrupt("truncated or malformed event record");
        let (mut values, mut text) = (0usize, 0usize);
        for _ in 0..n_tags {
            let n = self.count()?;
            values += n;
            for _ in 0..n {
                let (skip, len) = match self.varint().ok_or_else(bad)? {
                    0 => (32, 64),
                    head => {
                        let len = usize::try_from(head - 1).map_err(|_| bad())?;
                        (len, len)
                    }
                };
                self.take(skip).ok_or_else(bad)?;
                text += len;
            }
        }
        Ok((values, text))
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn str(&mut self, n: usize) -> Result<&str, StoreError> {
        let s = self
            .take(n)
            .ok_or_else(|| corrupt("truncated event record"))?;
        std::str::from_utf8(s).map_err(|e| corrupt(format!("event record not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys};

    #[test]
    fn records_give_back_the_same_event_and_json() {
        let k = Keys::from_seed(3);
        let other = Keys::from_seed(4).public_key().to_hex();
        let e = EventBuilder::new(Kind(1), "héllo \"quoted\"\n\u{1}")
            .tags(vec![
                vec!["p".into(), other.clone()],
                vec![
                    "e".into(),
                    other.to_uppercase(),
                    String::new(),
                    "reply".into(),
                ],
                vec![],
                vec!["t".into(), "x".repeat(300)],
            ])
            .created_at(Timestamp(1_700_000_000))
            .sign(&k);
        let r = encode(&e);
        assert!(r.len() < e.json_len(), "{} vs {}", r.len(), e.json_len());
        let back = decode(&r).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.as_json(), e.as_json());
        assert_eq!(id_of(&r).unwrap(), e.id());
        // An older file's JSON still reads.
        assert_eq!(decode(e.as_json().as_bytes()).unwrap(), e);
        assert_eq!(id_of(e.as_json().as_bytes()).unwrap(), e.id());
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let e = EventBuilder::new(Kind(7), "+")
            .tags(vec![vec!["e".into(), "ab".into()]])
            .sign(&Keys::from_seed(5));
        let r = encode(&e);
        for cut in 0..r.len() {
            let _ = decode(&r[..cut]);
        }
        let mut huge = r[..FIXED].to_vec();
        huge.extend_from_slice(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge).is_err());
        assert!(decode(&[9, 9, 9]).is_err());
    }
}
