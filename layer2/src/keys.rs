//! Column encodings shared by writes and queries.

use eventstore::{Address, Event};
use sha2::{Digest, Sha256};

/// Values longer than this are stored as a hash: PostgreSQL's btree refuses entries
/// over ~2.7 kB.
const INLINE_MAX: usize = 256;

/// The indexed form of a tag value or `d`: its bytes, or 0xff + sha256 when long.
/// 0xff never occurs in UTF-8, so the two forms cannot collide.
pub(crate) fn value_key(v: &str) -> Vec<u8> {
    if v.len() <= INLINE_MAX {
        v.as_bytes().to_vec()
    } else {
        let mut k = Vec::with_capacity(33);
        k.push(0xff);
        k.extend_from_slice(&Sha256::digest(v.as_bytes()));
        k
    }
}

/// The address as stored: (kind, pubkey, d_key).
pub(crate) type AddrKey = (i32, Vec<u8>, Vec<u8>);

pub(crate) fn addr_key(a: &Address) -> AddrKey {
    (i32::from(a.kind.0), a.pubkey.0.to_vec(), value_key(&a.d))
}

/// The advisory-lock key of an address: writers of one address serialise on it.
pub(crate) fn addr_lock(a: &AddrKey) -> i64 {
    let mut h = Sha256::new();
    h.update(a.0.to_be_bytes());
    h.update(&a.1);
    h.update(&a.2);
    let d = h.finalize();
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// `created_at` as a bigint. Values past i64::MAX cannot be stored; the relay bounds
/// `created_at` long before that.
pub(crate) fn ts(t: eventstore::Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// The single-letter tags to index, each (letter, value) once per event.
pub(crate) fn tag_rows(e: &Event) -> Vec<(String, Vec<u8>)> {
    let mut rows: Vec<(String, Vec<u8>)> = e
        .indexable_tags()
        .map(|(l, v)| ((l as char).to_string(), value_key(v)))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}
