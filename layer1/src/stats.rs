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
}
