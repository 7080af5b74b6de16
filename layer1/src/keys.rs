//! Index key encoding. Every ordering index key ends in `created_at (8, BE) | serial (8,
//! BE)`, so one prefix range walked backwards yields events newest first. Ties on
//! `created_at` come out by serial, not id: the query walk completes the last timestamp
//! and re-sorts it into canonical order (see `query.rs`).
//!
//! Keys are short on purpose (format 2, see `reindex.rs`): an author is its first 8
//! bytes and a tag value an 8-byte keyed hash, so an event's index costs about a third
//! of what full values did and a budget holds more events. Such a prefix can match
//! events of another author or value; every candidate is re-checked with
//! `Filter::matches`, so that costs a read, never a wrong answer:
//! - an author prefix is a signed event's public key: finding a key pair whose public
//!   key shares 64 chosen bits costs about 2^64 curve operations;
//! - a tag value is anything a client writes, so its hash is SipHash-2-4 keyed with a
//!   secret drawn when the file was created (`META_INDEX_SECRET`): without it nobody can
//!   aim values at a popular note's index range to slow its readers down.

use eventstore::{Event, Kind, PublicKey, Timestamp};

/// Index kinds, the first byte of every index key.
pub(crate) const IX_CREATED: u8 = 1;
pub(crate) const IX_AUTHOR: u8 = 2;
pub(crate) const IX_KIND: u8 = 3;
pub(crate) const IX_AUTHOR_KIND: u8 = 4;
pub(crate) const IX_TAG: u8 = 5;
pub(crate) const IX_EXPIRES: u8 = 6;

/// Length of the `created_at | serial` suffix.
pub(crate) const SUFFIX: usize = 16;

/// Bytes of a public key kept in author keys.
const AUTHOR_PREFIX: usize = 8;

/// How the keys of one file are made: the secret of its tag-value hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Codec {
    secret: [u64; 2],
}

impl Codec {
    pub fn new(secret: [u64; 2]) -> Codec {
        Codec { secret }
    }

    /// The secret as stored in the meta table.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.secret[0].to_be_bytes());
        b[8..].copy_from_slice(&self.secret[1].to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Codec> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let (k0, k1) = b.split_at(8);
        Some(Codec::new([
            u64::from_be_bytes(k0.try_into().ok()?),
            u64::from_be_bytes(k1.try_into().ok()?),
        ]))
    }

    /// A fresh secret from the process's random hasher keys (the OS's randomness).
    pub fn random() -> Codec {
        use std::hash::{BuildHasher, Hasher};
        let draw = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        Codec::new([draw(1), draw(2)])
    }

    /// The prefix of a tag index key: letter, then the value's keyed hash.
    pub fn tag_prefix(&self, letter: u8, value: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(2 + 8 + SUFFIX);
        k.push(IX_TAG);
        k.push(letter);
        k.extend_from_slice(&siphash24(self.secret, value.as_bytes()).to_be_bytes());
        k
    }

    /// Every index key of an event. Tag keys are de-duplicated (an event may repeat a
    /// tag, and two values may share a hash).
    pub fn index_keys(&self, e: &Event, serial: u64) -> Vec<Vec<u8>> {
        let t = e.created_at();
        let mut keys = vec![
            with_suffix(&created_prefix(), t, serial),
            with_suffix(&author_prefix(&e.pubkey()), t, serial),
            with_suffix(&kind_prefix(e.kind()), t, serial),
            with_suffix(&author_kind_prefix(&e.pubkey(), e.kind()), t, serial),
        ];
        let mut tags: Vec<Vec<u8>> = e
            .indexable_tags()
            .map(|(l, v)| with_suffix(&self.tag_prefix(l, v), t, serial))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        keys.extend(tags);
        if let Some(exp) = e.expiration() {
            keys.push(with_suffix(&expires_prefix(), exp, serial));
        }
        keys
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under the 128-bit key `k`.
fn siphash24(k: [u64; 2], data: &[u8]) -> u64 {
    let mut v = [
        k[0] ^ 0x736f_6d65_7073_6575,
        k[1] ^ 0x646f_7261_6e64_6f6d,
        k[0] ^ 0x6c79_6765_6e65_7261,
        k[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    fn compress(m: u64, v: &mut [u64; 4]) {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        compress(u64::from_le_bytes(c.try_into().expect("8 bytes")), &mut v);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

pub(crate) fn author_prefix(pk: &PublicKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + AUTHOR_PREFIX + SUFFIX);
    k.push(IX_AUTHOR);
    k.extend_from_slice(&pk.0[..AUTHOR_PREFIX]);
    k
}

pub(crate) fn kind_prefix(kind: Kind) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + SUFFIX);
    k.push(IX_KIND);
    k.extend_from_slice(&kind.0.to_be_bytes());
    k
}

pub(crate) fn author_kind_prefix(pk: &PublicKey, kind: Kind) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + AUTHOR_PREFIX + SUFFIX);
    k.push(IX_AUTHOR_KIND);
    k.extend_from_slice(&pk.0[..AUTHOR_PREFIX]);
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
    fn tag_prefixes_have_one_length_and_depend_on_the_secret() {
        let c = Codec::new([1, 2]);
        let a = c.tag_prefix(b't', "ab");
        let b = c.tag_prefix(b't', "abc");
        let long = "x".repeat(5_000);
        for p in [&a, &b, &c.tag_prefix(b't', &long)] {
            assert_eq!(p.len(), 10);
        }
        assert_ne!(a, b);
        assert_ne!(c.tag_prefix(b't', "ab"), c.tag_prefix(b'p', "ab"));
        assert_ne!(a, Codec::new([1, 3]).tag_prefix(b't', "ab"));
        assert_eq!(Codec::from_bytes(&c.to_bytes()), Some(c));
        assert_ne!(Codec::random(), Codec::random());
    }

    /// The reference vectors of the SipHash paper (key 00..0f, message 00..len-1).
    #[test]
    fn siphash_matches_the_reference() {
        let k = [
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        ];
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(k, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn suffix_round_trip() {
        let k = with_suffix(&author_prefix(&PublicKey([9; 32])), Timestamp(77), 5);
        assert_eq!(split_suffix(&k), Some((Timestamp(77), 5)));
    }
}
