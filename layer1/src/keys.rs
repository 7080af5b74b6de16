//! Index key encoding. Every ordering index key ends in `created_at (8, BE) | serial (8,
//! BE)`, so one prefix range walked backwards yields events newest first. Ties on
//! `created_at` come out by serial, not id: the query walk completes the last timestamp
//! and re-sorts it into canonical order (see `query.rs`).

use eventstore::{Event, Kind, PublicKey, Timestamp};

/// Index kinds, the first byte of every index key.
pub(crate) const IX_CREATED: u8 = 1;
pub(crate) const IX_AUTHOR: u8 = 2;
pub(crate) const IX_KIND: u8 = 3;
pub(crate) const IX_AUTHOR_KIND: u8 = 4;
pub(crate) const IX_TAG: u8 = 5;
pub(crate) const IX_EXPIRES: u8 = 6;

/// Tag values up to this many bytes are indexed as they are; longer ones by a hash.
/// Every candidate is re-checked with `Filter::matches`, so a collision costs a read,
/// never a wrong answer.
pub(crate) const TAG_INLINE_MAX: usize = 64;

/// Length of the `created_at | serial` suffix.
pub(crate) const SUFFIX: usize = 16;

/// A 128-bit FNV-1a-style hash that spreads long tag values. Collisions are re-checked
/// by the filter, so it need not be cryptographic.
fn hash_value(v: &[u8]) -> [u8; 16] {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &x in v {
        a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(x))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// The prefix of a tag index key: letter, then the value (length-prefixed so that no
/// value's key is a prefix of another's) or its hash.
pub(crate) fn tag_prefix(letter: u8, value: &str) -> Vec<u8> {
    let v = value.as_bytes();
    let mut k = Vec::with_capacity(2 + TAG_INLINE_MAX + 1 + SUFFIX);
    k.push(IX_TAG);
    k.push(letter);
    if v.len() <= TAG_INLINE_MAX {
        k.push(v.len() as u8);
        k.extend_from_slice(v);
    } else {
        k.push(0xff);
        k.extend_from_slice(&hash_value(v));
    }
    k
}

pub(crate) fn author_prefix(pk: &PublicKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 32 + SUFFIX);
    k.push(IX_AUTHOR);
    k.extend_from_slice(&pk.0);
    k
}

pub(crate) fn kind_prefix(kind: Kind) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + SUFFIX);
    k.push(IX_KIND);
    k.extend_from_slice(&kind.0.to_be_bytes());
    k
}

pub(crate) fn author_kind_prefix(pk: &PublicKey, kind: Kind) -> Vec<u8> {
    let mut k = Vec::with_capacity(35 + SUFFIX);
    k.push(IX_AUTHOR_KIND);
    k.extend_from_slice(&pk.0);
    k.extend_from_slice(&kind.0.to_be_bytes());
    k
}

pub(crate) fn created_prefix() -> Vec<u8> {
    vec![IX_CREATED]
}

pub(crate) fn expires_prefix() -> Vec<u8> {
    vec![IX_EXPIRES]
}

/// `prefix | t | serial`.
pub(crate) fn with_suffix(prefix: &[u8], t: Timestamp, serial: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + SUFFIX);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&t.0.to_be_bytes());
    k.extend_from_slice(&serial.to_be_bytes());
    k
}

/// Splits the `created_at | serial` suffix off an index key.
pub(crate) fn split_suffix(key: &[u8]) -> Option<(Timestamp, u64)> {
    let n = key.len().checked_sub(SUFFIX)?;
    let t = u64::from_be_bytes(key[n..n + 8].try_into().ok()?);
    let s = u64::from_be_bytes(key[n + 8..].try_into().ok()?);
    Some((Timestamp(t), s))
}

/// Every index key of an event. Tag keys are de-duplicated (an event may repeat a tag).
pub(crate) fn index_keys(e: &Event, serial: u64) -> Vec<Vec<u8>> {
    let t = e.created_at();
    let mut keys = vec![
        with_suffix(&created_prefix(), t, serial),
        with_suffix(&author_prefix(&e.pubkey()), t, serial),
        with_suffix(&kind_prefix(e.kind()), t, serial),
        with_suffix(&author_kind_prefix(&e.pubkey(), e.kind()), t, serial),
    ];
    let mut tags: Vec<Vec<u8>> = e
        .indexable_tags()
        .map(|(l, v)| with_suffix(&tag_prefix(l, v), t, serial))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    keys.extend(tags);
    if let Some(exp) = e.expiration() {
        keys.push(with_suffix(&expires_prefix(), exp, serial));
    }
    keys
}

/// The address table key: `kind | pubkey | d`.
pub(crate) fn address_key(a: &eventstore::Address) -> Vec<u8> {
    let mut k = Vec::with_capacity(34 + a.d.len());
    k.extend_from_slice(&a.kind.0.to_be_bytes());
    k.extend_from_slice(&a.pubkey.0);
    k.extend_from_slice(a.d.as_bytes());
    k
}

/// The id-tombstone key: `id | author`.
pub(crate) fn tombstone_key(id: &eventstore::EventId, author: &PublicKey) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&author.0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_prefixes_never_nest() {
        let a = tag_prefix(b't', "ab");
        let b = tag_prefix(b't', "abc");
        assert!(!b.starts_with(&a));
        let long = "x".repeat(5_000);
        let long2 = format!("{long}y");
        assert_eq!(tag_prefix(b't', &long).len(), 3 + 16);
        assert_ne!(tag_prefix(b't', &long), tag_prefix(b't', &long2));
    }

    #[test]
    fn suffix_round_trip() {
        let k = with_suffix(&author_prefix(&PublicKey([9; 32])), Timestamp(77), 5);
        assert_eq!(split_suffix(&k), Some((Timestamp(77), 5)));
    }
}
