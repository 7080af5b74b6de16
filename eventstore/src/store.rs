//! The store contract every backend implements.

use std::fmt;

use async_trait::async_trait;

use crate::event::Event;
use crate::filter::Filter;
use crate::moderation::{Change, Ruled, Rulings};
use crate::types::{EventId, Kind, PublicKey, Timestamp};

/// Why a store refused an event. A normal answer, not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The event was deleted (NIP-09) and may not be stored again.
    Deleted,
    /// A newer (or equally new with a lower id) version holds its address.
    Superseded,
    /// Its NIP-40 expiration time has passed.
    Expired,
    /// The operator banned its author or the event itself ([`crate::moderation`]).
    Banned,
}

impl Reason {
    /// The NIP-01 `OK` message, with its machine-readable prefix.
    pub fn message(&self) -> &'static str {
        match self {
            Reason::Deleted => "blocked: this event has been deleted",
            Reason::Superseded => "duplicate: a newer version of this event is already stored",
            Reason::Expired => "invalid: this event has expired",
            Reason::Banned => "blocked: banned by the relay's operator",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// What saving one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveOutcome {
    /// Newly stored.
    Stored,
    /// Already stored; nothing changed.
    Duplicate,
    /// Stored, and it replaced the older version `old` at its address.
    Replaced { old: EventId },
    /// Ephemeral (NIP-01): accepted for live delivery, never stored.
    Ephemeral,
    /// Refused by the NIP rules.
    Rejected(Reason),
}

impl SaveOutcome {
    /// Did the store newly keep the event (so it should be broadcast)?
    pub fn is_new(&self) -> bool {
        matches!(self, SaveOutcome::Stored | SaveOutcome::Replaced { .. })
    }
}

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure (as opposed to a refusal, which is a [`SaveOutcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached (network, pool exhausted, shut down database).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The backend failed while doing the work.
    #[error("store failure: {0}")]
    Backend(#[source] BoxError),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The store does not offer this operation.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
}

/// What a purge removes ([`EventStore::purge`]): the operator's retention rules and
/// `delete --filter`, not a NIP-09 deletion (no tombstone is written, so a purged event
/// may be saved again).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purge {
    /// The events `query` would return for this filter, ignoring its `limit`.
    Matching(Filter),
    /// Events whose NIP-40 expiration is at or before this time (never served any more,
    /// but still taking room).
    ExpiredBy(Timestamp),
}

/// What a backend can do beyond the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Offers a change feed of new events and tombstones (a shared L2).
    pub change_feed: bool,
    /// Keeps data across restarts.
    pub persistent: bool,
    /// Holds a bounded number of bytes and may evict (an L1 cache).
    pub bounded: bool,
}

/// An event store.
///
/// # Contract
/// - `save` applies NIP-01 and NIP-09/40 rules: ephemeral events are not stored;
///   expired ones are refused; one event per replaceable/addressable address (newest
///   `created_at`, ties to the lowest id); a kind-5 request deletes its author's targets
///   and leaves tombstones so deleted events are refused again.
/// - `query` returns the union of the filters' matches, each filter contributing at most
///   its `limit` newest events, without repeats, in canonical order (see
///   [`crate::order`]). Expired events are never returned.
/// - `count` is the number of distinct events `query` would return with no limits.
/// - `delete` removes events by id and tombstones them (an operator's removal).
/// - rulings (NIP-86, [`crate::moderation`]): `save` refuses events by a banned author
///   and banned events with [`Reason::Banned`]; recording such a ban removes what it
///   names, without a tombstone. A store that keeps no rulings answers
///   [`StoreError::Unsupported`].
/// - `purge` removes without a tombstone, in bounded steps (see [`Purge`]); a shared
///   store records the removals where other nodes' caches follow them.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    /// Saves one event, which the caller has already verified.
    async fn save(&self, event: &Event) -> Result<SaveOutcome, StoreError>;

    /// Events matching any of `filters`, in canonical order.
    async fn query(&self, filters: &[Filter]) -> Result<Vec<Event>, StoreError>;

    /// Distinct events matching any of `filters`, ignoring `limit` (NIP-45).
    async fn count(&self, filters: &[Filter]) -> Result<u64, StoreError>;

    /// Removes these events and refuses them from now on. Returns how many were stored.
    async fn delete(&self, ids: &[EventId]) -> Result<u64, StoreError>;

    /// What this backend offers.
    fn capabilities(&self) -> Capabilities;

    /// The rulings, unless they are still at `version`. A reader holding none passes 0:
    /// no rulings at all are version 0.
    async fn rulings_since(&self, version: u64) -> Result<Option<Rulings>, StoreError> {
        let _ = version;
        Err(StoreError::Unsupported("rulings"))
    }

    /// Records a change to the rulings; a ban also removes the events it names.
    async fn rule(&self, change: &Change) -> Result<Ruled, StoreError> {
        let _ = change;
        Err(StoreError::Unsupported("rulings"))
    }

    /// Removes up to `max` of the events `what` names, without tombstones, and returns
    /// their ids. Callers repeat it until fewer than `max` come back, so that no single
    /// step holds the store for long.
    async fn purge(&self, what: &Purge, max: usize) -> Result<Vec<EventId>, StoreError> {
        let _ = (what, max);
        Err(StoreError::Unsupported("purge"))
    }

    /// Up to `max` authors holding more than `keep` stored events of `kinds` (of any
    /// kind: `None`), in no particular order: the candidates of the retention rule
    /// `max_per_author`, which keeps each author's newest `keep`. A store may count
    /// events it no longer serves (expired, not yet purged), so callers check each
    /// author's events with a query before removing any.
    async fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<PublicKey>, StoreError> {
        let _ = (kinds, keep, max);
        Err(StoreError::Unsupported("authors_over"))
    }
}
