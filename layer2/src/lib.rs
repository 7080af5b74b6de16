//! `layer2`: the shared PostgreSQL event store, the authority for every node.
//!
//! Writes are grouped into multi-row transactions by a few writer tasks; concurrent
//! writers on many nodes agree on one winner per replaceable/addressable address
//! (advisory lock per address) and on deletions (tombstones plus a post-commit check).
//! A change feed by the database clock lets every node's poller follow new events.
//!
//! # Layout
//! - [`admin`]: the operator's consistency check, figures and cluster wipe.
//! - [`store`]: [`PgStore`], [`PgConfig`]; implements `eventstore::EventStore`.
//! - `write`: one batch, one transaction, exact per-event outcomes; `plain`: a batch's
//!   plain events (no address, no deletion) in one self-committing statement;
//!   `refusals`: the tombstones and bans that refuse an event, in and after its batch;
//!   `tags`: the tag rows a batch writes, and the repair of rows without their event.
//! - `query`: filters to SQL in canonical order.
//! - [`purge`]: retention and `delete --filter` purges, log pruning, and which node
//!   runs cluster maintenance.
//! - `rulings`: the operator's bans and allow-lists (NIP-86), and the bans enforced.
//! - [`feed`]: the change feed ([`Changes`]).
//! - `keys`: column encodings (long values hashed, address lock keys).
//! - [`notify`]: LISTEN/NOTIFY, waking pollers at commit and relaying ephemeral events.
//! - [`testsupport`] (feature `test-support`): a real PostgreSQL for tests.
//!
//! Migrations live in `layer2/migrations` and are embedded with `sqlx::migrate!`.

pub mod admin;
mod error;
pub mod feed;
mod keys;
pub mod notify;
mod plain;
pub mod purge;
mod query;
mod refusals;
mod rulings;
pub mod store;
mod tags;
mod write;

#[cfg(feature = "test-support")]
pub mod testsupport;

pub use feed::{Changes, DbMicros, FeedPositions, LogPosition, Page};
pub use notify::Notifications;
pub use purge::Turn;
pub use store::{PgConfig, PgStore};
