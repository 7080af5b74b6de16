//! The write side: NIP rules applied inside one redb write transaction. Only the writer
//! thread (`writer.rs`) uses this, so each batch sees its own earlier writes.

use eventstore::{
    Event, EventId, Kind, KindClass, PublicKey, Reason, SaveOutcome, StoreError, Timestamp,
    deletion_applies, supersedes,
};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::{backend, corrupt};
use crate::keys::{Codec, address_key, tombstone_key};
use crate::schema::*;

/// Bytes an event costs in the budget: its stored record (`stored` bytes: `record.rs`)
/// plus every key and value written for it. The budget compares this (scaled by a
/// measured overhead ratio) with `max_bytes`.
pub(crate) fn event_cost(e: &Event, stored: usize, index: &[Vec<u8>]) -> u64 {
    let keys: usize = index.iter().map(Vec::len).sum();
    let addr = e.address().map_or(0, |a| 34 + a.d.len() + 8);
    (stored + 8 + 40 + 16 + keys + addr) as u64
}

/// The open tables of one write transaction.
pub(crate) struct Tables<'t> {
    pub events: Table<'t, u64, &'static [u8]>,
    pub ids: Table<'t, &'static [u8; 32], u64>,
    pub index: Table<'t, &'static [u8], ()>,
    pub addresses: Table<'t, &'static [u8], u64>,
    pub deleted_ids: Table<'t, &'static [u8; 64], ()>,
    /// NIP-09 requests for ids a bounded store did not hold (`schema::REQUESTED_IDS`).
    pub requested_ids: Table<'t, &'static [u8; 64], ()>,
    /// Id tombstones by age (bounded stores only; see `schema::TOMBSTONE_AGE`).
    pub tombstone_age: Table<'t, &'static [u8], ()>,
    pub deleted_addresses: Table<'t, &'static [u8], u64>,
    pub recency: Table<'t, u64, u64>,
    /// Promoted events by last use (bounded stores only; see `schema::LRU`).
    pub lru: Table<'t, (u64, u64), ()>,
    pub floors: Table<'t, &'static [u8], (u64, u64)>,
    pub floor_order: Table<'t, u64, &'static [u8]>,
    pub rulings: Table<'t, (u8, &'static [u8]), &'static str>,
    /// Hashes of every floor key held, and maybe more (`floors.rs`).
    pub floor_hint: std::collections::HashSet<u64>,
    /// Floor changes made by this transaction (for the counters).
    pub floor_changes: crate::floors::FloorChanges,
    /// A bounded store: keeps the LRU order of promoted events.
    pub bounded: bool,
    pub meta: Table<'t, &'static str, &'static [u8]>,
    /// Index keys written by this transaction, inserted in key order at `flush_index`
    /// (sorted inserts touch each B-tree page once, in order).
    pub pending_index: std::collections::BTreeSet<Vec<u8>>,
    pub bytes: u64,
    pub window: Timestamp,
    /// The logical clock shared with readers (`RedbStore::touch`). Serials are drawn
    /// from it too, so an event never accessed has its serial as its access tick.
    pub clock: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Events removed in this transaction by eviction (for the counters).
    pub evicted: u64,
    /// Events evicted since the file began (`META_EVICTIONS`): the epoch of the last
    /// eviction.
    pub evictions: u64,
    /// This transaction's evictions with their epochs, for the writer's recent log
    /// once committed (`floors::Learn::evictions`).
    pub evicted_log: Vec<crate::floors::Evicted>,
    /// This file's index key codec.
    pub codec: Codec,
}

pub(crate) fn get_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, StoreError> {
    match meta.get(key).map_err(backend)? {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| corrupt(format!("meta {key} is not 8 bytes")))?;
            Ok(u64::from_be_bytes(b))
        }
    }
}

impl<'t> Tables<'t> {
    pub fn open(
        txn: &'t WriteTransaction,
        clock: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Tables<'t>, StoreError> {
        let meta = txn.open_table(META).map_err(backend)?;
        let bytes = get_u64(&meta, META_BYTES)?;
        let window = Timestamp(get_u64(&meta, META_WINDOW)?);
        let evictions = get_u64(&meta, META_EVICTIONS)?;
        let codec = crate::reindex::read_codec(&meta)?;
        Ok(Tables {
            events: txn.open_table(EVENTS).map_err(backend)?,
            ids: txn.open_table(IDS).map_err(backend)?,
            index: txn.open_table(INDEX).map_err(backend)?,
            addresses: txn.open_table(ADDRESSES).map_err(backend)?,
            deleted_ids: txn.open_table(DELETED_IDS).map_err(backend)?,
            requested_ids: txn.open_table(REQUESTED_IDS).map_err(backend)?,
            tombstone_age: txn.open_table(TOMBSTONE_AGE).map_err(backend)?,
            deleted_addresses: txn.open_table(DELETED_ADDRESSES).map_err(backend)?,
            recency: txn.open_table(RECENCY).map_err(backend)?,
            lru: txn.open_table(LRU).map_err(backend)?,
            floors: txn.open_table(FLOORS).map_err(backend)?,
            floor_order: txn.open_table(FLOOR_ORDER).map_err(backend)?,
            rulings: txn.open_table(RULINGS).map_err(backend)?,
            floor_hint: std::collections::HashSet::new(),
            floor_changes: Default::default(),
            bounded: false,
            meta,
            pending_index: std::collections::BTreeSet::new(),
            bytes,
            window,
            clock,
            evicted: 0,
            evictions,
            evicted_log: Vec::new(),
            codec,
        })
    }

    /// Writes the counters back to the meta table.
    pub fn store_meta(&mut self) -> Result<(), StoreError> {
        for (k, v) in [
            (META_BYTES, self.bytes),
            (META_WINDOW, self.window.0),
            (META_EVICTIONS, self.evictions),
            (
                META_TICK,
                self.clock.load(std::sync::atomic::Ordering::Relaxed),
            ),
        ] {
            self.meta
                .insert(k, v.to_be_bytes().as_slice())
                .map_err(backend)?;
        }
        Ok(())
    }

    pub fn load(&self, serial: u64) -> Result<Option<Event>, StoreError> {
        Ok(self.load_sized(serial)?.map(|(e, _)| e))
    }

    /// The event at `serial` and the bytes its record takes.
    fn load_sized(&self, serial: u64) -> Result<Option<(Event, usize)>, StoreError> {
        match self.events.get(serial).map_err(backend)? {
            None => Ok(None),
            Some(v) => Ok(Some((decode(v.value())?, v.value().len()))),
        }
    }

    /// The serial of the version held at an address key, if any.
    fn address_serial(&self, ak: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.addresses.get(ak).map_err(backend)?.map(|v| v.value()))
    }

    fn serial_of(&self, id: &EventId) -> Result<Option<u64>, StoreError> {
        Ok(self.ids.get(&id.0).map_err(backend)?.map(|v| v.value()))
    }

    /// Saves one verified event under NIP-01/09/40 rules.
    pub fn save(&mut self, e: &Event, now: Timestamp) -> Result<SaveOutcome, StoreError> {
        if e.kind().class() == KindClass::Ephemeral {
            return Ok(SaveOutcome::Ephemeral);
        }
        if e.is_expired(now) {
            return Ok(SaveOutcome::Rejected(Reason::Expired));
        }
        if self.serial_of(&e.id())?.is_some() {
            return Ok(SaveOutcome::Duplicate);
        }
        if self.banned(e)? {
            return Ok(SaveOutcome::Rejected(Reason::Banned));
        }
        let tomb = tombstone_key(&e.id(), &e.pubkey());
        if self.deleted_ids.get(&tomb).map_err(backend)?.is_some() {
            return Ok(SaveOutcome::Rejected(Reason::Deleted));
        }
        // NIP-09: no request deletes a deletion request.
        if e.kind() != Kind::DELETION && self.requested_ids.get(&tomb).map_err(backend)?.is_some() {
            return Ok(SaveOutcome::Rejected(Reason::Deleted));
        }
        let mut replaced = None;
        if let Some(addr) = e.address() {
            let ak = address_key(&addr);
            if let Some(upto) = self.deleted_addresses.get(ak.as_slice()).map_err(backend)? {
                if e.created_at().0 <= upto.value() {
                    return Ok(SaveOutcome::Rejected(Reason::Deleted));
                }
            }
            let current = self.address_serial(&ak)?;
            if let Some(serial) = current {
                let cur = self
                    .load(serial)?
                    .ok_or_else(|| corrupt(format!("address points at missing serial {serial}")))?;
                if !supersedes((e.created_at(), e.id()), (cur.created_at(), cur.id())) {
                    return Ok(SaveOutcome::Rejected(Reason::Superseded));
                }
                self.remove_serial(serial)?;
                replaced = Some(cur.id());
            }
        }
        self.insert(e)?;
        self.apply_deletion(e)?;
        Ok(match replaced {
            Some(old) => SaveOutcome::Replaced { old },
            None => SaveOutcome::Stored,
        })
    }

    fn insert(&mut self, e: &Event) -> Result<u64, StoreError> {
        let serial = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let index = self.codec.index_keys(e, serial);
        let record = crate::record::encode(e);
        self.events
            .insert(serial, record.as_slice())
            .map_err(backend)?;
        self.ids.insert(&e.id().0, serial).map_err(backend)?;
        let cost = event_cost(e, record.len(), &index);
        self.pending_index.extend(index);
        if let Some(addr) = e.address() {
            self.addresses
                .insert(address_key(&addr).as_slice(), serial)
                .map_err(backend)?;
        }
        if self.bounded && e.created_at() < self.window {
            // Below the window: a promoted event, evicted by last use.
            self.lru.insert((serial, serial), ()).map_err(backend)?;
        }
        self.bytes += cost;
        Ok(serial)
    }

    /// Removes the event at `serial` and every entry that points at it.
    pub fn remove_serial(&mut self, serial: u64) -> Result<Option<Event>, StoreError> {
        let Some((e, stored)) = self.load_sized(serial)? else {
            return Ok(None);
        };
        let index = self.codec.index_keys(&e, serial);
        self.events.remove(serial).map_err(backend)?;
        self.ids.remove(&e.id().0).map_err(backend)?;
        for k in &index {
            if !self.pending_index.remove(k) {
                self.index.remove(k.as_slice()).map_err(backend)?;
            }
        }
        if let Some(addr) = e.address() {
            let ak = address_key(&addr);
            let points_here = self.address_serial(&ak)? == Some(serial);
            if points_here {
                self.addresses.remove(ak.as_slice()).map_err(backend)?;
            }
        }
        let tick = self
            .recency
            .remove(serial)
            .map_err(backend)?
            .map(|v| v.value());
        if self.bounded {
            self.lru
                .remove((tick.unwrap_or(serial), serial))
                .map_err(backend)?;
        }
        self.bytes = self.bytes.saturating_sub(event_cost(&e, stored, &index));
        Ok(Some(e))
    }

    /// NIP-09: a stored kind-5 request removes its author's targets and tombstones them.
    fn apply_deletion(&mut self, request: &Event) -> Result<(), StoreError> {
        let targets = request.deletion_targets();
        for id in targets.ids {
            if let Some(serial) = self.serial_of(&id)? {
                let Some(target) = self.load(serial)? else {
                    continue;
                };
                if !deletion_applies(request.pubkey(), &target) {
                    continue;
                }
                self.remove_serial(serial)?;
            } else if self.bounded {
                // Not held here, which in a cache of L2 does not mean L2 lacks it: it
                // may be a deletion request L2 holds (and keeps), evicted here. A
                // tombstone would refuse that event's promotion for good, while a floor
                // learned from the same answer claimed it was held.
                self.request_tombstone(&tombstone_key(&id, &request.pubkey()))?;
                continue;
            }
            self.tombstone(&tombstone_key(&id, &request.pubkey()))?;
        }
        for addr in targets.addresses {
            let ak = address_key(&addr);
            let current = self.address_serial(&ak)?;
            if let Some(serial) = current {
                if let Some(cur) = self.load(serial)? {
                    if cur.created_at() <= request.created_at() {
                        self.remove_serial(serial)?;
                    }
                }
            }
            let old = self
                .deleted_addresses
                .get(ak.as_slice())
                .map_err(backend)?
                .map(|v| v.value());
            let upto = old.unwrap_or(0).max(request.created_at().0);
            if old.is_none() {
                self.bytes += ak.len() as u64 + 8;
            }
            self.deleted_addresses
                .insert(ak.as_slice(), upto)
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Operator removal: delete and tombstone. Returns whether the id was stored.
    pub fn delete(&mut self, id: &EventId) -> Result<bool, StoreError> {
        let Some(serial) = self.serial_of(id)? else {
            return Ok(false);
        };
        let Some(e) = self.remove_serial(serial)? else {
            return Ok(false);
        };
        self.tombstone(&tombstone_key(&e.id(), &e.pubkey()))?;
        Ok(true)
    }

    /// A tombstone decided elsewhere (NIP-09 in L2, or an operator's removal there):
    /// removes the event when held and written by `author`, and refuses it from now on
    /// even when not held yet, so a promotion racing the tombstone cannot bring it back.
    /// Returns whether an event was removed.
    pub fn tombstone_pair(&mut self, id: &EventId, author: &PublicKey) -> Result<bool, StoreError> {
        let mut removed = false;
        if let Some(serial) = self.serial_of(id)? {
            if let Some(e) = self.load(serial)? {
                if e.pubkey() == *author {
                    removed = self.remove_serial(serial)?.is_some();
                }
            }
        }
        self.tombstone(&tombstone_key(id, author))?;
        Ok(removed)
    }

    /// Records an id tombstone, counting its bytes only the first time. A bounded store
    /// also files it by age, to forget it once old (`expire_tombstones`).
    fn tombstone(&mut self, key: &[u8; 64]) -> Result<(), StoreError> {
        // A request recorded for it becomes this tombstone: same bytes, same age.
        if self.requested_ids.remove(key).map_err(backend)?.is_some() {
            self.deleted_ids.insert(key, ()).map_err(backend)?;
            return Ok(());
        }
        if self.deleted_ids.insert(key, ()).map_err(backend)?.is_none() {
            self.count_tombstone(key)?;
        }
        Ok(())
    }

    /// Records a NIP-09 request for an id this bounded store does not hold
    /// (`schema::REQUESTED_IDS`), unless a tombstone already refuses it.
    fn request_tombstone(&mut self, key: &[u8; 64]) -> Result<(), StoreError> {
        if self.deleted_ids.get(key).map_err(backend)?.is_some() {
            return Ok(());
        }
        if self
            .requested_ids
            .insert(key, ())
            .map_err(backend)?
            .is_none()
        {
            self.count_tombstone(key)?;
        }
        Ok(())
    }

    /// Counts a new id tombstone or request, and files it by age in a bounded store.
    fn count_tombstone(&mut self, key: &[u8; 64]) -> Result<(), StoreError> {
        self.bytes += 64;
        if self.bounded {
            let mut aged = Timestamp::now().0.to_be_bytes().to_vec();
            aged.extend_from_slice(key);
            self.tombstone_age
                .insert(aged.as_slice(), ())
                .map_err(backend)?;
            self.bytes += TOMBSTONE_AGE_COST;
        }
        Ok(())
    }

    /// Forgets up to `max` id tombstones recorded before `before` (unix seconds), in a
    /// bounded store: an L1's tombstones only mirror L2's, which L2 keeps for good, and
    /// they matter here only while a promotion or poll read from L2 before the deletion
    /// may still arrive (milliseconds to seconds), or while L2 is unreachable and this
    /// store answers alone. Returns how many went.
    pub fn expire_tombstones(&mut self, before: u64, max: usize) -> Result<usize, StoreError> {
        let hi = before.to_be_bytes();
        let mut old = Vec::new();
        for entry in self.tombstone_age.range(..hi.as_slice()).map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            old.push(k.value().to_vec());
            if old.len() >= max {
                break;
            }
        }
        for k in &old {
            self.tombstone_age.remove(k.as_slice()).map_err(backend)?;
            self.bytes = self.bytes.saturating_sub(TOMBSTONE_AGE_COST);
            if let Ok(key) = <&[u8; 64]>::try_from(&k[8..]) {
                if self.deleted_ids.remove(key).map_err(backend)?.is_some()
                    || self.requested_ids.remove(key).map_err(backend)?.is_some()
                {
                    self.bytes = self.bytes.saturating_sub(64);
                }
            }
        }
        Ok(old.len())
    }

    /// Removes events without tombstoning them: what another node's replacement or
    /// removal did in L2, mirrored here. Returns how many were held.
    pub fn forget(&mut self, id: &EventId) -> Result<bool, StoreError> {
        match self.serial_of(id)? {
            Some(serial) => Ok(self.remove_serial(serial)?.is_some()),
            None => Ok(false),
        }
    }

    /// Writes the pending index keys, in key order. Runs before anything reads the
    /// index table in this transaction, and before commit.
    pub fn flush_index(&mut self) -> Result<(), StoreError> {
        for k in std::mem::take(&mut self.pending_index) {
            self.index.insert(k.as_slice(), ()).map_err(backend)?;
        }
        Ok(())
    }

    /// Removes up to `max` events whose NIP-40 expiration has passed; returns their ids.
    pub fn purge_expired(
        &mut self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        self.flush_index()?;
        let lo = crate::keys::with_suffix(&crate::keys::expires_prefix(), Timestamp(0), 0);
        let hi = crate::keys::with_suffix(&crate::keys::expires_prefix(), now, u64::MAX);
        let mut serials = Vec::new();
        for entry in self
            .index
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(backend)?
        {
            let (k, _) = entry.map_err(backend)?;
            if let Some((_, serial)) = crate::keys::split_suffix(k.value()) {
                serials.push(serial);
            }
            if serials.len() >= max {
                break;
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

/// Decodes a stored event (this crate wrote it; no re-verification).
pub(crate) use crate::record::decode;
