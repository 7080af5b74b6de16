//! Counters for metrics, shared by readers and the writer.

use std::sync::atomic::AtomicU64;

/// Live counters of one store.
#[derive(Debug, Default)]
pub struct Stats {
    /// Budget bytes in use (see `write::event_cost`).
    pub bytes: AtomicU64,
    /// The window watermark `W`.
    pub window: AtomicU64,
    /// Events removed by eviction.
    pub evictions: AtomicU64,
    /// Eviction rounds run.
    pub eviction_runs: AtomicU64,
    /// Completeness floors held (a gauge).
    pub floors: AtomicU64,
    /// Floors lowered by L2 answers.
    pub floors_learned: AtomicU64,
    /// Floors raised (or dropped) because an event they covered was evicted.
    pub floors_raised: AtomicU64,
    /// Floors forgotten to stay within `max_floors`.
    pub floors_forgotten: AtomicU64,
    /// Floors cleared because the window was reset.
    pub floors_cleared: AtomicU64,
    /// Unsynced batches written again after a synced commit because they would have
    /// grown the file (`writer.rs`).
    pub growth_syncs: AtomicU64,
    /// Write transactions committed (events saved over commits is the batch size).
    pub commits: AtomicU64,
    /// Of those, the ones synced to disk.
    pub synced_commits: AtomicU64,
}

/// Where one table's bytes go (from redb's own accounting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUse {
    pub name: &'static str,
    /// Entries.
    pub entries: u64,
    /// Key and value bytes stored.
    pub stored: u64,
    /// Leaf and branch pages, in bytes.
    pub pages: u64,
    /// Unused bytes inside those pages.
    pub fragmented: u64,
}

/// How the file's bytes are used ([`crate::RedbStore::storage`]): what the budget buys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// Event JSON bytes held.
    pub json_bytes: u64,
    /// Events held.
    pub events: u64,
    /// Pages allocated in the file, in bytes.
    pub allocated: u64,
    /// The file's size.
    pub file: u64,
    pub tables: Vec<TableUse>,
}
