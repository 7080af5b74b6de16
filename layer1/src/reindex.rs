//! The index key format. Format 2 (`keys.rs`: 8-byte author prefixes, keyed 8-byte tag
//! hashes) replaced full values; a file written before it (no `META_INDEX_FORMAT`) has
//! its index rebuilt once, when it is opened, inside the opening transaction: a crash
//! part way leaves the old index and format as they were, and the next open starts
//! again. Events, ids, addresses and tombstones are untouched, so an embedded L2 keeps
//! every event; only the byte count changes, by the difference in key lengths (each
//! event's budget cost counts its keys, `write::event_cost`).
//!
//! There is no way back: a binary from before format 2 reads this index wrongly (it
//! does not look at the format), so a downgrade needs a fresh L1, or an export and an
//! import for an embedded L2.

use eventstore::StoreError;
use redb::{ReadableTable, WriteTransaction};

use crate::error::{backend, corrupt};
use crate::keys::Codec;
use crate::schema::*;
use crate::write::{decode, get_u64};

/// The index key format this build writes.
pub(crate) const FORMAT: u64 = 2;

/// Keys inserted per sorted batch while rebuilding (sorted inserts touch each B-tree
/// page once).
const BATCH_KEYS: usize = 200_000;

/// The file's key codec, after rebuilding an index of an older format.
pub(crate) fn ensure(txn: &WriteTransaction) -> Result<Codec, StoreError> {
    let mut meta = txn.open_table(META).map_err(backend)?;
    match get_u64(&meta, META_INDEX_FORMAT)? {
        FORMAT => return read_codec(&meta),
        0 | 1 => {}
        newer => {
            return Err(corrupt(format!(
                "index format {newer} is newer than this build reads ({FORMAT})"
            )));
        }
    }
    let codec = Codec::random();
    let mut old_bytes = 0u64;
    {
        let index = txn.open_table(INDEX).map_err(backend)?;
        for entry in index.iter().map_err(backend)? {
            old_bytes += entry.map_err(backend)?.0.value().len() as u64;
        }
    }
    txn.delete_table(INDEX).map_err(backend)?;
    let mut new_bytes = 0u64;
    {
        let mut index = txn.open_table(INDEX).map_err(backend)?;
        let events = txn.open_table(EVENTS).map_err(backend)?;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut flush = |batch: &mut Vec<Vec<u8>>| -> Result<(), StoreError> {
            batch.sort_unstable();
            for k in batch.drain(..) {
                index.insert(k.as_slice(), ()).map_err(backend)?;
            }
            Ok(())
        };
        for entry in events.iter().map_err(backend)? {
            let (serial, value) = entry.map_err(backend)?;
            let e = decode(value.value())?;
            for k in codec.index_keys(&e, serial.value()) {
                new_bytes += k.len() as u64;
                batch.push(k);
            }
            if batch.len() >= BATCH_KEYS {
                flush(&mut batch)?;
            }
        }
        flush(&mut batch)?;
    }
    if old_bytes != new_bytes {
        let bytes = get_u64(&meta, META_BYTES)?.saturating_sub(old_bytes) + new_bytes;
        meta.insert(META_BYTES, bytes.to_be_bytes().as_slice())
            .map_err(backend)?;
    }
    meta.insert(META_INDEX_SECRET, codec.to_bytes().as_slice())
        .map_err(backend)?;
    meta.insert(META_INDEX_FORMAT, FORMAT.to_be_bytes().as_slice())
        .map_err(backend)?;
    if old_bytes > 0 {
        tracing::info!(
            old_key_bytes = old_bytes,
            new_key_bytes = new_bytes,
            "rebuilt the redb index in key format {FORMAT}"
        );
    }
    Ok(codec)
}

/// The codec of a file already in the current format.
pub(crate) fn read_codec(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Codec, StoreError> {
    let format = get_u64(meta, META_INDEX_FORMAT)?;
    if format != FORMAT {
        return Err(corrupt(format!(
            "index format {format}, this build reads {FORMAT}: open the store once to rebuild it"
        )));
    }
    let secret = meta.get(META_INDEX_SECRET).map_err(backend)?;
    secret
        .and_then(|v| Codec::from_bytes(v.value()))
        .ok_or_else(|| corrupt("index secret missing or not 16 bytes"))
}
