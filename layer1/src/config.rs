//! Store configuration, with its defaults documented where they are defined.

use std::path::PathBuf;

/// When a write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every batch is fsynced before its savers are answered. For a store that is the
    /// authority (the embedded L2).
    Immediate,
    /// Batches commit without fsync, except a batch that records the cursor
    /// ([`crate::RedbStore::set_cursor`]), which is synced with everything before it,
    /// and at least one commit a second.
    /// A crash rolls the file back to the last synced commit: a consistent state whose
    /// cursor rolled back with its events, so a poller resuming from that cursor reads
    /// again everything the lost commits held. For an L1 cache with a poller only.
    Eventual,
}

/// Configuration of a [`crate::RedbStore`].
#[derive(Debug, Clone)]
pub struct RedbConfig {
    /// The database file.
    pub path: PathBuf,
    /// Byte budget for the file. `None`: unbounded (the embedded single-node L2).
    pub max_bytes: Option<u64>,
    /// Eviction starts above this share of `max_bytes`. Default 0.9.
    pub high_water: f64,
    /// Eviction stops at this share of `max_bytes`. Default 0.85.
    pub low_water: f64,
    /// Default [`Durability::Immediate`].
    pub durability: Durability,
    /// redb page cache in bytes. Default 64 MiB.
    pub cache_bytes: usize,
    /// Most saves grouped into one write transaction. Default 2,000.
    pub max_batch: usize,
    /// Bound of the write queue; a full queue makes savers wait. Default 8,192.
    pub queue: usize,
    /// Completeness floors kept at most (the least recently learned are forgotten,
    /// which is always safe). Default 100,000 (a few MiB).
    pub max_floors: u64,
    /// How long a bounded store keeps an id tombstone it mirrors (unbounded stores keep
    /// theirs for good: they are the deletion's memory). Default 24 h: far beyond any
    /// promotion or poll still in flight; past it, L2's own tombstone refuses the event.
    pub tombstone_ttl: std::time::Duration,
    /// Steps (index entries walked, records and ids looked up) a query, probe or
    /// membership check may take on its caller's thread before it is handed to the
    /// reader threads instead; 0 sends every read there. Default 512: under half a
    /// millisecond of a runtime worker (a step costs about 0.75 µs), enough for
    /// most REQs (a feed of 100 authors with a limit of 20 takes about 160).
    pub inline_read_steps: u32,
    /// Decoded events kept in memory by serial, in bytes (`hot.rs`): the events read
    /// most are then served without a lookup and a decode. 0: none. Default 32 MiB.
    pub event_cache_bytes: usize,
}

impl RedbConfig {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> RedbConfig {
        RedbConfig {
            path: path.into(),
            max_bytes: None,
            high_water: 0.9,
            low_water: 0.85,
            durability: Durability::Immediate,
            cache_bytes: 64 << 20,
            max_batch: 2_000,
            queue: 8_192,
            max_floors: 100_000,
            tombstone_ttl: std::time::Duration::from_secs(24 * 3_600),
            inline_read_steps: 512,
            event_cache_bytes: 32 << 20,
        }
    }

    /// Sets the byte budget.
    pub fn max_bytes(mut self, n: u64) -> RedbConfig {
        self.max_bytes = Some(n);
        self
    }

    /// Sets the durability.
    pub fn durability(mut self, d: Durability) -> RedbConfig {
        self.durability = d;
        self
    }

    /// Checks the marks: `0 < low < high <= 1`.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.low_water > 0.0 && self.low_water < self.high_water && self.high_water <= 1.0) {
            return Err(format!(
                "water marks must satisfy 0 < low ({}) < high ({}) <= 1",
                self.low_water, self.high_water
            ));
        }
        if self.max_bytes == Some(0) {
            return Err("max_bytes must be positive".into());
        }
        Ok(())
    }
}
