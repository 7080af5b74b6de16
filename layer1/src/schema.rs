//! Table definitions and the meta slots.

use redb::TableDefinition;

/// Event JSON by local serial (monotonic, so inserts append).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Event id → serial.
pub(crate) const IDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("ids");
/// Every ordering index in one table; keys start with an index-kind byte (`keys.rs`).
pub(crate) const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("index");
/// Address (`kind | pubkey | d`) → serial of the version held.
pub(crate) const ADDRESSES: TableDefinition<&[u8], u64> = TableDefinition::new("addresses");
/// NIP-09 id tombstones: `id | author`.
pub(crate) const DELETED_IDS: TableDefinition<&[u8; 64], ()> = TableDefinition::new("deleted_ids");
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
/// Counters, watermarks and the poller's cursor.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const META_BYTES: &str = "bytes";
pub(crate) const META_WINDOW: &str = "window";
pub(crate) const META_TICK: &str = "tick";
pub(crate) const META_CURSOR: &str = "cursor";
