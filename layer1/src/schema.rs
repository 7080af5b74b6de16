//! Table definitions and the meta slots.

use redb::TableDefinition;

/// Event records (`record.rs`; JSON in files written before) by local serial (monotonic,
/// so inserts append).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Event id → serial.
pub(crate) const IDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("ids");
/// Every ordering index in one table; keys start with an index-kind byte (`keys.rs`).
pub(crate) const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("index");
/// Address (`kind | pubkey | d`) → serial of the version held.
pub(crate) const ADDRESSES: TableDefinition<&[u8], u64> = TableDefinition::new("addresses");
/// NIP-09 id tombstones: `id | author`.
pub(crate) const DELETED_IDS: TableDefinition<&[u8; 64], ()> = TableDefinition::new("deleted_ids");
/// NIP-09 requests a bounded store saw for ids it did not hold: `id | author`. They
/// refuse the id like a tombstone, except a deletion request's: L2 may hold that id, a
/// kind-5 event, which no request deletes, and this store could not tell (see
/// `Tables::apply_deletion`). Tombstones decided elsewhere go to `DELETED_IDS`.
pub(crate) const REQUESTED_IDS: TableDefinition<&[u8; 64], ()> =
    TableDefinition::new("requested_ids");
/// The id tombstones of a bounded store by age: `unix seconds (8 bytes, big-endian) |
/// id | author`, so the oldest can be forgotten (`Tables::expire_tombstones`).
pub(crate) const TOMBSTONE_AGE: TableDefinition<&[u8], ()> = TableDefinition::new("tombstone_age");
/// Budget bytes an entry of `TOMBSTONE_AGE` counts for.
pub(crate) const TOMBSTONE_AGE_COST: u64 = 72;
/// NIP-09 address tombstones: address → deleted up to this `created_at`.
pub(crate) const DELETED_ADDRESSES: TableDefinition<&[u8], u64> =
    TableDefinition::new("deleted_addresses");
/// Access recency by serial (a logical clock), flushed in batches.
pub(crate) const RECENCY: TableDefinition<u64, u64> = TableDefinition::new("recency");
/// Promoted events (`created_at < W`) in least-recently-used order: `(tick, serial)`,
/// where the tick is the event's last access (its serial when never accessed). Eviction
/// walks it from the cold end. Kept by bounded stores only.
pub(crate) const LRU: TableDefinition<(u64, u64), ()> = TableDefinition::new("lru");
/// Completeness floors (`floors.rs`): encoded key → `(floor, tick learned)`.
pub(crate) const FLOORS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("floors");
/// Floors by the tick they were learned at, to forget the least recently learned.
pub(crate) const FLOOR_ORDER: TableDefinition<u64, &[u8]> = TableDefinition::new("floor_order");
/// The operator's rulings (`eventstore::moderation`): `(list, subject)` → note.
pub(crate) const RULINGS: TableDefinition<(u8, &[u8]), &str> = TableDefinition::new("rulings");
/// Counters, watermarks and the poller's cursor.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const META_BYTES: &str = "bytes";
pub(crate) const META_WINDOW: &str = "window";
pub(crate) const META_TICK: &str = "tick";
pub(crate) const META_CURSOR: &str = "cursor";
/// The index key format (`reindex.rs`); absent in files written before format 2.
pub(crate) const META_INDEX_FORMAT: &str = "index_format";
/// The secret of the tag-value hash in index keys (`keys::Codec`), 16 bytes.
pub(crate) const META_INDEX_SECRET: &str = "index_secret";
/// Prefix of the callers' own META values (`RedbStore::annotation`), apart from ours.
pub(crate) const META_ANNOTATION: &str = "note.";
/// Events evicted since the file began: the eviction epoch a probe's snapshot saw
/// (`floors::Learn::evictions`).
pub(crate) const META_EVICTIONS: &str = "evictions";
/// The rulings' version (bumped by every change).
pub(crate) const META_RULINGS: &str = "rulings";

/// Per-table use of the file (see `RedbStore::storage`).
pub(crate) fn storage(
    db: &redb::Database,
    path: &std::path::Path,
) -> Result<crate::stats::Storage, eventstore::StoreError> {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

    use crate::error::backend;
    use crate::stats::{Storage, TableUse};

    fn table_use(
        name: &'static str,
        t: &impl ReadableTableMetadata,
    ) -> Result<TableUse, eventstore::StoreError> {
        let s = t.stats().map_err(backend)?;
        Ok(TableUse {
            name,
            entries: t.len().map_err(backend)?,
            stored: s.stored_bytes(),
            pages: (s.leaf_pages() + s.branch_pages()) * 4096,
            fragmented: s.fragmented_bytes(),
        })
    }
    let txn = db.begin_read().map_err(backend)?;
    let events = txn.open_table(EVENTS).map_err(backend)?;
    let tables = vec![
        table_use("events", &events)?,
        table_use("ids", &txn.open_table(IDS).map_err(backend)?)?,
        table_use("index", &txn.open_table(INDEX).map_err(backend)?)?,
        table_use("addresses", &txn.open_table(ADDRESSES).map_err(backend)?)?,
        table_use(
            "deleted_ids",
            &txn.open_table(DELETED_IDS).map_err(backend)?,
        )?,
        table_use("recency", &txn.open_table(RECENCY).map_err(backend)?)?,
        table_use("lru", &txn.open_table(LRU).map_err(backend)?)?,
        table_use("floors", &txn.open_table(FLOORS).map_err(backend)?)?,
    ];
    let n = events.len().map_err(backend)?;
    // The JSON the records stand for (`record.rs`: a record is smaller than its JSON).
    let mut json_bytes = 0u64;
    for entry in events.iter().map_err(backend)? {
        let (_, v) = entry.map_err(backend)?;
        json_bytes += crate::record::decode(v.value())?.json_len() as u64;
    }
    drop(events);
    // Allocated pages: from a write transaction's statistics (redb keeps them there).
    drop(txn);
    let allocated = {
        let w = db.begin_write().map_err(backend)?;
        let s = w.stats().map_err(backend)?;
        let a = s.allocated_pages() * s.page_size() as u64;
        w.abort().map_err(backend)?;
        a
    };
    Ok(Storage {
        json_bytes,
        events: n,
        allocated,
        file: std::fs::metadata(path).map_or(0, |m| m.len()),
        tables,
    })
}
