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

/// Events as the column arrays of one multi-row insert, and their tag rows by the
/// event's place in those arrays (1-based, as SQL counts).
#[derive(Default)]
pub(crate) struct EventRows {
    pub ids: Vec<Vec<u8>>,
    pub pubkeys: Vec<Vec<u8>>,
    pub created_at: Vec<i64>,
    pub kinds: Vec<i32>,
    pub d_keys: Vec<Option<Vec<u8>>>,
    pub expirations: Vec<Option<i64>>,
    pub jsons: Vec<String>,
    pub tag_of: Vec<i32>,
    pub tag_names: Vec<String>,
    pub tag_values: Vec<Vec<u8>>,
}

impl EventRows {
    /// The rows of `batch[i]` for every `i` of `which`, in that order.
    pub fn of(batch: &[Event], which: &[usize]) -> EventRows {
        let mut r = EventRows::default();
        for (at, &i) in which.iter().enumerate() {
            let e = &batch[i];
            r.ids.push(e.id().0.to_vec());
            r.pubkeys.push(e.pubkey().0.to_vec());
            r.created_at.push(ts(e.created_at()));
            r.kinds.push(i32::from(e.kind().0));
            r.d_keys.push(e.address().map(|a| value_key(&a.d)));
            r.expirations.push(e.expiration().map(ts));
            r.jsons.push(e.as_json().to_owned());
            for (name, value) in tag_rows(e) {
                r.tag_of.push(at as i32 + 1);
                r.tag_names.push(name);
                r.tag_values.push(value);
            }
        }
        r
    }

    /// Binds the arrays as `$1` to `$10`, in the order the inserts name them.
    pub fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.pubkeys)
            .bind(&self.created_at)
            .bind(&self.kinds)
            .bind(&self.d_keys)
            .bind(&self.expirations)
            .bind(&self.jsons)
            .bind(&self.tag_of)
            .bind(&self.tag_names)
            .bind(&self.tag_values)
    }
}
