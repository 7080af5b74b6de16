//! The nostr event model and the store contract that every layer2 backend implements.
//!
//! This crate knows nothing of redb, PostgreSQL or WebSockets: it defines what an event
//! is, what a filter matches, which NIP rules a store applies, and the reference store
//! that every other store is tested against.
//!
//! # Layout
//! - [`types`]: `EventId`, `PublicKey`, `Signature`, `Kind`, `Timestamp`.
//! - [`event`]: the signed [`Event`], strict parsing and [`Event::verify`].
//! - [`canonical`]: NIP-01 serialization (what ids hash) and the compact stored JSON.
//! - [`keys`]: [`Keys`] and [`EventBuilder`] for signing.
//! - [`kind`]: kind classes (regular, replaceable, ephemeral, addressable).
//! - [`rules`]: addresses, replacement and deletion rules (NIP-01, NIP-09).
//! - [`filter`]: NIP-01 [`Filter`] with its JSON form and [`Filter::matches`].
//! - [`order`]: the canonical order (created_at desc, id asc), defined once.
//! - [`store`]: the [`EventStore`] trait, [`SaveOutcome`], [`StoreError`].
//! - [`memory`]: [`MemoryStore`], the reference implementation and test oracle.
//! - [`moderation`]: the operator's rulings (NIP-86 bans and allow-lists) a store keeps.
//! - `conformance` (feature `conformance`): the suite every store runs, and a
//!   property-test harness against `MemoryStore`.

pub mod canonical;
pub mod event;
pub mod filter;
pub mod hex;
pub mod keys;
pub mod kind;
pub mod memory;
pub mod moderation;
pub mod order;
pub mod rules;
pub mod store;
pub mod tags;
pub mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use event::{Event, EventError};
pub use filter::{Filter, Known};
pub use keys::{EventBuilder, KeyError, Keys};
pub use kind::KindClass;
pub use memory::MemoryStore;
pub use moderation::{Change, Entry, Ruled, Ruling, Rulings, Setting};
pub use order::{OrderKey, canonical_cmp, sort_canonical};
pub use rules::{Address, DeletionTargets, deletion_applies, supersedes};
pub use store::{BoxError, Capabilities, EventStore, Purge, Reason, SaveOutcome, StoreError};
pub use tags::{Tag, Tags, TagsBuilder};
pub use types::{EventId, Kind, PublicKey, Signature, Timestamp};
