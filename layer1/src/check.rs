//! Consistency check: every index entry points at an event, every event is in all its
//! indexes, and the byte count adds up. Used after crashes in tests and by operators.

use std::collections::HashSet;

use eventstore::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::error::backend;
use crate::keys::{IX_EXPIRES, address_key, split_suffix};
use crate::schema::*;
use crate::write::{decode, event_cost, get_u64};

/// What the check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events held.
    pub events: u64,
    /// Index entries.
    pub index_entries: u64,
    /// Every inconsistency found (empty when consistent).
    pub problems: Vec<String>,
}

impl Report {
    /// No problems found.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Records walked between two progress reports.
const PROGRESS_EVERY: u64 = 4_096;

pub(crate) fn check(db: &Database) -> Result<Report, StoreError> {
    check_with(db, &mut |_, _| {})
}

/// [`check`], reporting `(records walked, records to walk)` as it goes: the events, then
/// the index entries (the two long walks).
fn check_with(db: &Database, progress: &mut dyn FnMut(u64, u64)) -> Result<Report, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let events = txn.open_table(EVENTS).map_err(backend)?;
    let ids = txn.open_table(IDS).map_err(backend)?;
    let index = txn.open_table(INDEX).map_err(backend)?;
    let addresses = txn.open_table(ADDRESSES).map_err(backend)?;
    let deleted_ids = txn.open_table(DELETED_IDS).map_err(backend)?;
    let deleted_addresses = txn.open_table(DELETED_ADDRESSES).map_err(backend)?;
    let meta = txn.open_table(META).map_err(backend)?;
    let mut r = Report::default();
    let codec = match crate::reindex::read_codec(&meta) {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(e.to_string());
            return Ok(r);
        }
    };
    let mut keys_held = 0u64;
    let mut cost = 0u64;
    let mut serials = HashSet::new();
    let window = get_u64(&meta, META_WINDOW)?;
    let mut below_window = HashSet::new();
    let total = events.len().map_err(backend)? + index.len().map_err(backend)?;
    let mut walked = 0u64;
    let mut step = |walked: &mut u64| {
        *walked += 1;
        if *walked % PROGRESS_EVERY == 0 {
            progress(*walked, total);
        }
    };
    for entry in events.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let serial = k.value();
        serials.insert(serial);
        r.events += 1;
        step(&mut walked);
        let e = match decode(v.value()) {
            Ok(e) => e,
            Err(err) => {
                r.problems.push(format!("serial {serial}: {err}"));
                continue;
            }
        };
        let keys = codec.index_keys(&e, serial);
        keys_held += keys.len() as u64;
        cost += event_cost(&e, v.value().len(), &keys);
        if e.created_at().0 < window {
            below_window.insert(serial);
        }
        match ids.get(&e.id().0).map_err(backend)? {
            Some(s) if s.value() == serial => {}
            other => r.problems.push(format!(
                "event {} at serial {serial}: id entry is {:?}",
                e.id(),
                other.map(|s| s.value())
            )),
        }
        for key in &keys {
            if index.get(key.as_slice()).map_err(backend)?.is_none() {
                r.problems
                    .push(format!("event {} missing index key {key:?}", e.id()));
            }
        }
        if let Some(a) = e.address() {
            let held = addresses
                .get(address_key(&a).as_slice())
                .map_err(backend)?
                .map(|v| v.value());
            if held != Some(serial) {
                r.problems.push(format!(
                    "event {} at {a}: address entry is {held:?}",
                    e.id()
                ));
            }
        }
    }
    if ids.len().map_err(backend)? != r.events {
        r.problems.push(format!(
            "{} id entries for {} events",
            ids.len().map_err(backend)?,
            r.events
        ));
    }
    for entry in index.iter().map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        r.index_entries += 1;
        step(&mut walked);
        let key = k.value();
        match split_suffix(key) {
            Some((_, serial)) if serials.contains(&serial) => {}
            _ if key.first() == Some(&IX_EXPIRES) && key.len() != 17 => {
                r.problems.push(format!("malformed expiry key {key:?}"))
            }
            _ => r
                .problems
                .push(format!("index key {key:?} points at no event")),
        }
    }
    // Every entry points at a held event (above); as many as the events' keys means
    // none is stale (an entry of an older key format, or of a removed key).
    if r.index_entries != keys_held {
        r.problems.push(format!(
            "{} index entries for {keys_held} index keys of the events",
            r.index_entries
        ));
    }
    for entry in addresses.iter().map_err(backend)? {
        let (_, v) = entry.map_err(backend)?;
        if !serials.contains(&v.value()) {
            r.problems.push(format!(
                "address entry points at missing serial {}",
                v.value()
            ));
        }
    }
    let mut tomb = deleted_ids.len().map_err(backend)? * 64;
    // A file from before tombstones were filed by age has no such table.
    match txn.open_table(TOMBSTONE_AGE) {
        Ok(aged) => tomb += aged.len().map_err(backend)? * TOMBSTONE_AGE_COST,
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(backend(e)),
    }
    match txn.open_table(REQUESTED_IDS) {
        Ok(requested) => tomb += requested.len().map_err(backend)? * 64,
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(backend(e)),
    }
    for entry in deleted_addresses.iter().map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        tomb += k.value().len() as u64 + 8;
    }
    let floors = txn.open_table(FLOORS).map_err(backend)?;
    let floor_bytes = crate::floors::floor_bytes(&floors)?;
    let recorded = get_u64(&meta, META_BYTES)?;
    if recorded != cost + tomb + floor_bytes {
        r.problems.push(format!(
            "byte count {recorded} != {cost} (events) + {tomb} (tombstones) + {floor_bytes} (floors)"
        ));
    }
    check_order(&txn, &floors, &mut r, &below_window)?;
    progress(total, total);
    Ok(r)
}

/// The LRU order holds exactly the events below `W` (in a bounded store), and every
/// floor has its place in the learning order.
fn check_order(
    txn: &redb::ReadTransaction,
    floors: &redb::ReadOnlyTable<&'static [u8], (u64, u64)>,
    r: &mut Report,
    below_window: &HashSet<u64>,
) -> Result<(), StoreError> {
    let lru = txn.open_table(LRU).map_err(backend)?;
    let recency = txn.open_table(RECENCY).map_err(backend)?;
    let mut in_lru = HashSet::new();
    for entry in lru.iter().map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        let (tick, serial) = k.value();
        let want = recency
            .get(serial)
            .map_err(backend)?
            .map_or(serial, |v| v.value());
        if tick != want {
            r.problems
                .push(format!("LRU entry ({tick}, {serial}): its tick is {want}"));
        }
        if !below_window.contains(&serial) {
            r.problems.push(format!(
                "LRU entry for serial {serial}, which is not a held event below W"
            ));
        }
        in_lru.insert(serial);
    }
    // Unbounded stores keep no LRU order, and their W stays 0.
    if !below_window.is_empty() {
        for s in below_window.difference(&in_lru) {
            r.problems
                .push(format!("serial {s} is below W but not in the LRU order"));
        }
    }
    let order = txn.open_table(FLOOR_ORDER).map_err(backend)?;
    for entry in floors.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (_, tick) = v.value();
        let back = order
            .get(tick)
            .map_err(backend)?
            .map(|g| g.value().to_vec());
        if back.as_deref() != Some(k.value()) {
            r.problems.push(format!(
                "floor {:?} missing from the learning order",
                k.value()
            ));
        }
    }
    if order.len().map_err(backend)? != floors.len().map_err(backend)? {
        r.problems
            .push("floor order and floors differ in size".into());
    }
    Ok(())
}

/// Checks the redb store at `path`, which no process may have open (a stopped node's).
pub fn check_file(path: &std::path::Path) -> Result<Report, StoreError> {
    check_file_with(path, &mut |_, _| {})
}

/// [`check_file`], calling `progress(walked, total)` every few thousand records walked
/// (events and index entries) and once at the end with `walked == total`.
pub fn check_file_with(
    path: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, StoreError> {
    let db = Database::open(path).map_err(backend)?;
    check_with(&db, progress)
}

/// Compacts the redb store at `path`, which no process may have open: freed pages are
/// given back and the file shrinks. Returns the file's size before and after.
pub fn compact_file(path: &std::path::Path) -> Result<(u64, u64), StoreError> {
    let size = || {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| StoreError::Backend(Box::new(e)))
    };
    let before = size()?;
    let mut db = Database::open(path).map_err(backend)?;
    // Each pass moves pages towards the front; a few passes reach the end.
    for _ in 0..16 {
        if !db.compact().map_err(backend)? {
            break;
        }
    }
    drop(db);
    Ok((before, size()?))
}

/// Deletes the redb store at `path` unless a process has it open (redb's file lock
/// says so); a damaged file is deleted too. Returns whether there was one.
pub fn remove_file(path: &std::path::Path) -> Result<bool, StoreError> {
    if !path.exists() {
        return Ok(false);
    }
    // Held open (its lock taken) until unlinked, so no node opens it in between.
    let held = match Database::open(path) {
        Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => return Err(backend(e)),
        r => r.ok(),
    };
    let removed = std::fs::remove_file(path).map_err(|e| StoreError::Backend(Box::new(e)));
    drop(held);
    removed.map(|()| true)
}
