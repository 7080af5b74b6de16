//! The operator's rulings in a redb store (`eventstore::moderation`): kept in the
//! `rulings` table, versioned in meta, and the two bans enforced by `save` inside the
//! writer's transaction. The writer is the only one writing, so a ban recorded in one
//! transaction is seen by every save in the next: no event by a banned author can be
//! stored after the ban's purge.

use eventstore::{Change, Event, EventId, PublicKey, Ruling, Rulings, StoreError};
use redb::{ReadableTable, ReadableTableMetadata};

use crate::error::{backend, corrupt};
use crate::keys::author_prefix;
use crate::schema::{META_RULINGS, RULINGS};
use crate::write::{Tables, get_u64};

/// Events one transaction of a purge removes at most; a ban on a prolific author
/// continues in later transactions (the ban, recorded first, keeps new ones out).
pub(crate) const PURGE_BATCH: usize = 5_000;

impl Tables<'_> {
    /// Does a ban refuse `e`?
    pub fn banned(&self, e: &Event) -> Result<bool, StoreError> {
        if self.rulings.is_empty().map_err(backend)? {
            return Ok(false);
        }
        for r in [Ruling::BanPubkey(e.pubkey()), Ruling::BanEvent(e.id())] {
            let (list, subject) = r.encode();
            if self
                .rulings
                .get((list, subject.as_slice()))
                .map_err(backend)?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records `change` and bumps the version; a ban removes the first
    /// [`PURGE_BATCH`] events it names (see [`Tables::purge_author`] for the rest).
    pub fn rule(&mut self, change: &Change) -> Result<(u64, Vec<EventId>), StoreError> {
        let mut removed = Vec::new();
        match change {
            Change::Add(e) => {
                if let Some(o) = e.ruling.opposite() {
                    let (list, subject) = o.encode();
                    self.rulings
                        .remove((list, subject.as_slice()))
                        .map_err(backend)?;
                }
                let (list, subject) = e.ruling.encode();
                self.rulings
                    .insert((list, subject.as_slice()), e.note.as_str())
                    .map_err(backend)?;
                match e.ruling {
                    Ruling::BanPubkey(pk) => removed = self.purge_author(&pk, PURGE_BATCH)?,
                    Ruling::BanEvent(id) if self.forget(&id)? => removed.push(id),
                    _ => {}
                }
            }
            Change::Remove(r) => {
                let (list, subject) = r.encode();
                self.rulings
                    .remove((list, subject.as_slice()))
                    .map_err(backend)?;
            }
        }
        let version = get_u64(&self.meta, META_RULINGS)? + 1;
        self.meta
            .insert(META_RULINGS, version.to_be_bytes().as_slice())
            .map_err(backend)?;
        Ok((version, removed))
    }

    /// Removes up to `max` events by `author`, without tombstones. Returns their ids.
    pub fn purge_author(
        &mut self,
        author: &PublicKey,
        max: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        self.flush_index()?;
        let prefix = author_prefix(author);
        let mut serials = Vec::new();
        for entry in self.index.range(prefix.as_slice()..).map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            if !k.value().starts_with(&prefix) || serials.len() >= max {
                break;
            }
            // The author key holds the key's first bytes only (`keys.rs`).
            if let Some((_, serial)) = crate::keys::split_suffix(k.value()) {
                if self.load(serial)?.is_some_and(|e| e.pubkey() == *author) {
                    serials.push(serial);
                }
            }
        }
        let mut ids = Vec::with_capacity(serials.len());
        for s in serials {
            if let Some(e) = self.remove_serial(s)? {
                ids.push(e.id());
            }
        }
        Ok(ids)
    }
}

/// Every ruling in a read snapshot, unless still at `version`.
pub(crate) fn read(
    txn: &redb::ReadTransaction,
    version: u64,
) -> Result<Option<Rulings>, StoreError> {
    let meta = txn.open_table(crate::schema::META).map_err(backend)?;
    let now = get_u64(&meta, META_RULINGS)?;
    if now == version {
        return Ok(None);
    }
    let table = txn.open_table(RULINGS).map_err(backend)?;
    let mut out = Rulings {
        version: now,
        ..Rulings::default()
    };
    for entry in table.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (list, subject) = k.value();
        let ruling = Ruling::decode(list, subject)
            .ok_or_else(|| corrupt(format!("unknown ruling ({list}, {subject:?})")))?;
        out.entries.insert(ruling, v.value().to_owned());
    }
    Ok(Some(out))
}
