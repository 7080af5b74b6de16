//! `layer1`: the redb event store. With a byte budget it is a node's L1 cache; without
//! one it is the embedded single-node L2 (the zero-setup default).
//!
//! One writer thread groups concurrent saves into one write transaction (group commit);
//! readers run on a few reader threads (`readers`) against their own snapshots and
//! never wait for it. Above the budget's high-water mark the writer evicts, promoted
//! events (below the window watermark `W`) least recently used first, then the window
//! from its old end.
//!
//! # Layout
//! - [`config`]: [`RedbConfig`], [`Durability`], with documented defaults.
//! - `schema`: table definitions and meta slots.
//! - `keys`: index key encoding (prefix | created_at | serial).
//! - `write`: the NIP rules inside a write transaction.
//! - `writer`: the writer thread and group commit.
//! - `evict`: what to evict, and the window watermark.
//! - `floors`: completeness floors per query key, the proof behind L1-only answers
//!   below the window.
//! - `query`: the planner and the merged index walk.
//! - `rulings`: the operator's bans and allow-lists (NIP-86), and the bans enforced.
//! - [`check`]: the consistency check.
//! - [`outbox`]: the durable queue of writes waiting for an unreachable L2.
//! - [`store`]: [`RedbStore`], implementing `eventstore::EventStore`.

pub mod check;
pub mod config;
mod error;
mod evict;
mod floors;
mod hot;
mod keys;
pub mod outbox;
mod query;
mod readers;
mod record;
mod reindex;
mod room;
mod rulings;
mod schema;
pub mod stats;
pub mod store;
mod write;
mod writer;

pub use check::{Report, check_file, check_file_with, compact_file, remove_file};
pub use config::{Durability, RedbConfig};
pub use floors::Learn;
pub use hot::EventCacheTotals;
pub use outbox::Outbox;
pub use readers::{ReadPlaces, read_places, reads_rescued};
pub use stats::Stats;
pub use store::{Probe, Promoted, RedbStore};
