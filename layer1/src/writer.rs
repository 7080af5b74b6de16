//! The writer thread: one thread owns every write transaction and groups concurrent
//! requests into one commit (group commit). Savers are answered only after the commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use eventstore::{Event, EventId, SaveOutcome, StoreError, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTableMetadata};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Durability, RedbConfig};
use crate::error::backend;
use crate::evict::{evict_to, raise_window};
use crate::floors::Learn;
use crate::stats::Stats;
use crate::store::Promoted;
use crate::write::Tables;

/// A request to the writer.
pub(crate) enum Request {
    Save(Event, oneshot::Sender<Result<SaveOutcome, StoreError>>),
    Delete(Vec<EventId>, oneshot::Sender<Result<u64, StoreError>>),
    Forget(Vec<EventId>, oneshot::Sender<Result<u64, StoreError>>),
    Tombstone(
        Vec<(EventId, eventstore::PublicKey)>,
        oneshot::Sender<Result<u64, StoreError>>,
    ),
    SetWindow(Timestamp, oneshot::Sender<Result<(), StoreError>>),
    SetCursor(Vec<u8>, oneshot::Sender<Result<(), StoreError>>),
    /// A change to the operator's rulings (`rulings.rs`).
    Rule(
        eventstore::Change,
        oneshot::Sender<Result<eventstore::Ruled, StoreError>>,
    ),
    /// The rest of a banned author's events, a batch at a time.
    PurgeAuthor(
        eventstore::PublicKey,
        oneshot::Sender<Result<Vec<EventId>, StoreError>>,
    ),
    /// Removes these events without tombstones; answers with those that were held
    /// (`EventStore::purge`).
    Purge(
        Vec<EventId>,
        oneshot::Sender<Result<Vec<EventId>, StoreError>>,
    ),
    /// Removes up to this many events expired by this time (NIP-40).
    PurgeExpired(
        Timestamp,
        usize,
        oneshot::Sender<Result<Vec<EventId>, StoreError>>,
    ),
    /// L2's answer, and what it proved (recorded only if every event was saved).
    Promote(
        Vec<Event>,
        Option<Learn>,
        oneshot::Sender<Result<Promoted, StoreError>>,
    ),
}

impl Request {
    /// Event bytes this request writes (for the per-transaction cap).
    fn bytes(&self) -> usize {
        match self {
            Request::Save(e, _) => e.json_len() + 256,
            Request::Promote(events, _, _) => events.iter().map(|e| e.json_len() + 256).sum(),
            _ => 64,
        }
    }
}

enum Reply {
    Save(
        oneshot::Sender<Result<SaveOutcome, StoreError>>,
        SaveOutcome,
    ),
    Delete(oneshot::Sender<Result<u64, StoreError>>, u64),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    Promote(oneshot::Sender<Result<Promoted, StoreError>>, Promoted),
    Rule(
        oneshot::Sender<Result<eventstore::Ruled, StoreError>>,
        eventstore::Ruled,
    ),
    Purged(
        oneshot::Sender<Result<Vec<EventId>, StoreError>>,
        Vec<EventId>,
    ),
}

impl Reply {
    fn send(self) {
        // A saver that gave up waiting is not an error: the write is committed anyway.
        match self {
            Reply::Save(tx, o) => drop(tx.send(Ok(o))),
            Reply::Delete(tx, n) => drop(tx.send(Ok(n))),
            Reply::Unit(tx) => drop(tx.send(Ok(()))),
            Reply::Promote(tx, p) => drop(tx.send(Ok(p))),
            Reply::Rule(tx, r) => drop(tx.send(Ok(r))),
            Reply::Purged(tx, ids) => drop(tx.send(Ok(ids))),
        }
    }

    fn fail(self, e: &StoreError) {
        let err = || StoreError::Backend(e.to_string().into());
        match self {
            Reply::Save(tx, _) => drop(tx.send(Err(err()))),
            Reply::Delete(tx, _) => drop(tx.send(Err(err()))),
            Reply::Unit(tx) => drop(tx.send(Err(err()))),
            Reply::Promote(tx, _) => drop(tx.send(Err(err()))),
            Reply::Rule(tx, _) => drop(tx.send(Err(err()))),
            Reply::Purged(tx, _) => drop(tx.send(Err(err()))),
        }
    }
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub config: RedbConfig,
    pub stats: Arc<Stats>,
    /// Access ticks recorded by readers, not yet flushed.
    pub access: Arc<Mutex<HashMap<u64, u64>>>,
    /// The access clock, shared with readers.
    pub clock: Arc<std::sync::atomic::AtomicU64>,
    /// Allocated file bytes per budget byte, measured now and then (`evict_step`).
    pub ratio: f64,
    /// Request bytes written so far, and at the last measurement of `ratio` (`None`:
    /// not measured since opening; the first check after opening always measures).
    pub written: u64,
    pub calibrated: Option<u64>,
    /// Commits of a bounded store so far.
    pub commits: u64,
    /// Above the low-water mark after the last step: keep evicting.
    pub evicting: bool,
    /// When the last synced commit was.
    pub synced: std::time::Instant,
    /// Hashes of every floor key held (a superset; `floors.rs`). Lent to each
    /// transaction, and rebuilt from the file when one fails.
    pub floor_hint: HashSet<u64>,
}

/// Room kept free in the file once it may not grow again: copy-on-write needs free
/// pages for every page a transaction touches (random index inserts touch many), and
/// pages freed by one commit are reused only after it. A share of the file, more of a
/// small one (up to [`FILE_HEADROOM_MIN`]). Measured with `cargo bench -p layer1
/// --bench density`: 0.3 of the file wasted a third of a 100 MiB budget; 0.15 of a
/// 17 MiB file let it double.
const FILE_HEADROOM_SHARE: f64 = 0.15;
const FILE_HEADROOM_SMALL_SHARE: f64 = 0.3;
const FILE_HEADROOM_MIN: f64 = 6.0 * 1024.0 * 1024.0;

/// The free room kept in a file of `file` bytes once it may not grow again.
fn file_headroom(file: f64) -> f64 {
    (FILE_HEADROOM_SHARE * file).max((FILE_HEADROOM_SMALL_SHARE * file).min(FILE_HEADROOM_MIN))
}

/// An eventual store syncs a commit at least this often (see `commit`).
const SYNC_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Commits between measurements of the file-bytes-per-budget-byte ratio, at least.
const CALIBRATE_EVERY: u64 = 32;
/// And at least this share of the bytes held must have been written since the last
/// one: a measurement walks every page of the file (redb's `stats`), so its cost grows
/// with the file. Every 32 commits, a full 512 MiB L1 under a steady write load spent a
/// third of the node's CPU walking it; once per eighth of the data written, the walk
/// costs a fixed share of the writing.
const CALIBRATE_SHARE: u64 = 8;

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        loop {
            // While eviction is behind, keep evicting between requests instead of
            // sleeping; otherwise wait for work.
            if batch.is_empty() {
                if self.evicting {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            self.evicting = false;
                            continue;
                        }
                    }
                } else {
                    match rx.blocking_recv() {
                        Some(r) => batch.push(r),
                        None => return,
                    }
                }
            }
            let cap = self.batch_bytes_cap();
            let mut bytes: usize = batch.iter().map(Request::bytes).sum();
            while batch.len() < self.config.max_batch && bytes < cap {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.written += bytes as u64;
            let n = batch.len();
            let mut replies = Vec::with_capacity(n);
            match self.commit(&mut batch, &mut replies) {
                Ok(()) => replies.into_iter().for_each(Reply::send),
                Err(e) => {
                    tracing::error!(error = %e, batch = n, "L1 write batch failed");
                    replies.into_iter().for_each(|r| r.fail(&e));
                    self.evicting = false;
                    self.reload_hint();
                }
            }
            batch.clear();
        }
    }

    /// Bytes of events one transaction may take. A copy-on-write B-tree rewrites every
    /// page a transaction touches, so with a budget the work per transaction is kept to
    /// a small share of it; unbounded, batches are limited by count only.
    fn batch_bytes_cap(&self) -> usize {
        match self.config.max_bytes {
            Some(max) => ((max / 64) as usize).max(16 * 1024),
            None => usize::MAX,
        }
    }

    fn commit(
        &mut self,
        batch: &mut Vec<Request>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        // The cursor is the point a crash rolls back to: its commit is always synced
        // (and with it every commit before it), or an eventual store could lose any
        // amount of history that its poller would then not read again. At least one
        // commit a second is synced too, cursor or not (no poller runs during an L2
        // outage): redb reuses the pages a commit frees only after a synced commit, so
        // the file would otherwise grow without bound. Any synced state is consistent
        // with the cursor it holds, so a crash still rolls back to one the poller
        // repairs from.
        let records_cursor = batch.iter().any(|r| matches!(r, Request::SetCursor(..)));
        let sync = records_cursor || self.synced.elapsed() >= SYNC_AT_LEAST_EVERY;
        let durability = match self.config.durability {
            Durability::Eventual if !sync => redb::Durability::None,
            _ => redb::Durability::Immediate,
        };
        let synced_commit = !matches!(durability, redb::Durability::None);
        txn.set_durability(durability).map_err(backend)?;
        let pending = std::mem::take(&mut *self.access.lock().unwrap_or_else(|p| p.into_inner()));
        let committed;
        {
            let mut t = Tables::open(&txn, self.clock.clone())?;
            t.bounded = self.config.max_bytes.is_some();
            t.floor_hint = std::mem::take(&mut self.floor_hint);
            let now = Timestamp::now();
            for req in batch.drain(..) {
                match req {
                    Request::Save(e, tx) => {
                        let o = t.save(&e, now)?;
                        replies.push(Reply::Save(tx, o));
                    }
                    Request::Delete(ids, tx) => {
                        let mut n = 0;
                        for id in &ids {
                            n += u64::from(t.delete(id)?);
                        }
                        replies.push(Reply::Delete(tx, n));
                    }
                    Request::Forget(ids, tx) => {
                        let mut n = 0;
                        for id in &ids {
                            n += u64::from(t.forget(id)?);
                        }
                        replies.push(Reply::Delete(tx, n));
                    }
                    Request::Tombstone(pairs, tx) => {
                        let mut n = 0;
                        for (id, author) in &pairs {
                            n += u64::from(t.tombstone_pair(id, author)?);
                        }
                        replies.push(Reply::Delete(tx, n));
                    }
                    Request::SetWindow(w, tx) => {
                        // Only ever raised: eviction may already have raised it past
                        // `w`, and lowering it would claim events no longer held. A
                        // window set by decree means L1 may lack events of any age, so
                        // no floor below it can stand either.
                        t.flush_index()?;
                        raise_window(&mut t, w)?;
                        t.clear_floors()?;
                        replies.push(Reply::Unit(tx));
                    }
                    Request::Promote(events, learn, tx) => {
                        let mut p = Promoted::default();
                        for e in &events {
                            p.stored += u64::from(t.save(e, now)?.is_new());
                        }
                        if let Some(l) = learn {
                            p.floors_lowered = t.learn(&l, self.config.max_floors)?;
                        }
                        replies.push(Reply::Promote(tx, p));
                    }
                    Request::Rule(change, tx) => {
                        let (version, removed) = t.rule(&change)?;
                        let ruled = eventstore::Ruled { version, removed };
                        replies.push(Reply::Rule(tx, ruled));
                    }
                    Request::PurgeAuthor(pk, tx) => {
                        let ids = t.purge_author(&pk, crate::rulings::PURGE_BATCH)?;
                        replies.push(Reply::Purged(tx, ids));
                    }
                    Request::Purge(ids, tx) => {
                        let mut held = Vec::with_capacity(ids.len());
                        for id in ids {
                            if t.forget(&id)? {
                                held.push(id);
                            }
                        }
                        replies.push(Reply::Purged(tx, held));
                    }
                    Request::PurgeExpired(by, max, tx) => {
                        let ids = t.purge_expired(by, max)?;
                        replies.push(Reply::Purged(tx, ids));
                    }
                    Request::SetCursor(c, tx) => {
                        t.meta
                            .insert(crate::schema::META_CURSOR, c.as_slice())
                            .map_err(backend)?;
                        replies.push(Reply::Unit(tx));
                    }
                }
            }
            t.purge_expired(now, 1_000)?;
            if t.bounded {
                let before = now.0.saturating_sub(self.config.tombstone_ttl.as_secs());
                t.expire_tombstones(before, 1_000)?;
            }
            self.flush_access(&mut t, &pending)?;
            self.evict_step(&txn, &mut t)?;
            t.flush_index()?;
            t.store_meta()?;
            let floors = t.floors.len().map_err(backend)?;
            committed = (t.bytes, t.window, t.evicted, floors, t.floor_changes);
            self.floor_hint = std::mem::take(&mut t.floor_hint);
        }
        txn.commit().map_err(backend)?;
        if synced_commit {
            self.synced = std::time::Instant::now();
        }
        self.stats.floors.store(committed.3, Ordering::Relaxed);
        // The prefilter only grows between rebuilds (forgotten floors stay in it); keep
        // it near the floors' own size.
        if self.floor_hint.len() as u64 > 2 * committed.3 + 1_024 {
            self.reload_hint();
        }
        committed.4.publish(&self.stats);
        // Published only once committed, so readers never see counters ahead of data.
        self.stats.bytes.store(committed.0, Ordering::Relaxed);
        self.stats.window.store(committed.1.0, Ordering::Relaxed);
        if committed.2 > 0 {
            self.stats
                .evictions
                .fetch_add(committed.2, Ordering::Relaxed);
            self.stats.eviction_runs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The high-water mark in budget bytes. redb doubles its file while it is under
    /// 4 GiB, so once one more doubling would pass 1.3 x the budget, the mark is also
    /// held under the file already there (with room for pages freed but not yet reusable).
    fn high_mark(&self, max: u64) -> f64 {
        let budget = max as f64;
        let mut alloc = self.config.high_water * budget;
        let file = std::fs::metadata(&self.config.path).map_or(0, |m| m.len()) as f64;
        if 2.0 * file > 1.3 * budget {
            alloc = alloc.min(file - file_headroom(file));
        }
        alloc / self.ratio
    }

    /// One bounded step of eviction: starts above the high-water mark, and goes on in
    /// later transactions until the low-water mark is reached.
    fn evict_step(
        &mut self,
        txn: &redb::WriteTransaction,
        t: &mut Tables<'_>,
    ) -> Result<(), StoreError> {
        let Some(max) = self.config.max_bytes else {
            return Ok(());
        };
        self.commits += 1;
        let due = (t.bytes / CALIBRATE_SHARE).max(64 * 1024);
        let due = self
            .calibrated
            .is_none_or(|at| self.written.saturating_sub(at) >= due);
        if self.commits % CALIBRATE_EVERY == 0 && due {
            self.calibrated = Some(self.written);
            self.calibrate(txn, t.bytes);
        }
        if !self.evicting && (t.bytes as f64) <= self.high_mark(max) {
            return Ok(());
        }
        let high = self.high_mark(max);
        let low = (high * self.config.low_water / self.config.high_water) as u64;
        let step = self.batch_bytes_cap() as u64 * 2;
        let target = low.max(t.bytes.saturating_sub(step));
        let before = t.evicted;
        evict_to(t, target)?;
        // Stop when nothing is left to evict (what remains is tombstones): going on would
        // spin on empty transactions.
        self.evicting = t.bytes > low && t.evicted > before;
        Ok(())
    }

    fn flush_access(
        &self,
        t: &mut Tables<'_>,
        pending: &HashMap<u64, u64>,
    ) -> Result<(), StoreError> {
        use redb::ReadableTable;
        for (&serial, &tick) in pending {
            // Ticks come from the shared clock, so they order with insert ticks.
            // Only events still held: a tick for an evicted serial would leak.
            if t.events.get(serial).map_err(backend)?.is_none() {
                continue;
            }
            let old = t
                .recency
                .insert(serial, tick)
                .map_err(backend)?
                .map_or(serial, |v| v.value());
            // A promoted event moves to its new place in the LRU order.
            if t.lru.remove((old, serial)).map_err(backend)?.is_some() {
                t.lru.insert((tick, serial), ()).map_err(backend)?;
            }
        }
        Ok(())
    }

    /// Rebuilds the floor prefilter from the last committed state (after a failed
    /// transaction, whose changes to it may not match the file).
    pub fn reload_hint(&mut self) {
        let hints = self
            .db
            .begin_read()
            .map_err(backend)
            .and_then(|txn| txn.open_table(crate::schema::FLOORS).map_err(backend))
            .and_then(|t| crate::floors::all_hints(&t));
        match hints {
            Ok(h) => self.floor_hint = h,
            Err(e) => {
                // Without it, evictions could miss a floor: forget them all instead.
                tracing::error!(error = %e, "cannot read L1 floors; clearing them");
                self.floor_hint.clear();
                self.clear_floors_now();
            }
        }
    }

    fn clear_floors_now(&mut self) {
        let r = self.db.begin_write().map_err(backend).and_then(|txn| {
            {
                let mut t = Tables::open(&txn, self.clock.clone())?;
                t.clear_floors()?;
                t.store_meta()?;
            }
            txn.commit().map_err(backend)
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot clear L1 floors");
        }
    }

    /// Measures how many file bytes the store uses per budget byte.
    fn calibrate(&mut self, txn: &redb::WriteTransaction, bytes: u64) {
        if bytes < 64 * 1024 {
            return;
        }
        if let Ok(s) = txn.stats() {
            let allocated = s.allocated_pages() as f64 * s.page_size() as f64;
            let r = allocated / bytes as f64;
            if r.is_finite() && r > 0.5 {
                self.ratio = r.clamp(1.0, 4.0);
            }
        }
    }
}

/// Opens the file and makes sure every table exists, so readers never meet a missing one.
pub(crate) fn open_db(config: &RedbConfig) -> Result<Database, StoreError> {
    if let Some(parent) = config.path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
    }
    let db = Database::builder()
        .set_cache_size(config.cache_bytes)
        .create(&config.path)
        .map_err(backend)?;
    let txn = db.begin_write().map_err(backend)?;
    crate::reindex::ensure(&txn)?;
    drop(Tables::open(&txn, Default::default())?);
    txn.commit().map_err(backend)?;
    if let Some(max) = config.max_bytes {
        presize(&db, &config.path, max)?;
    }
    // A read to surface a broken file at open time, not at the first query.
    drop(db.begin_read().map_err(backend)?);
    Ok(db)
}

/// The file size a bounded store may reach: the 1.3 x budget bound.
const PRESIZE_SHARE: f64 = 1.3;

/// Grows a fresh bounded store's file close to its budget at once. redb doubles a file
/// under 4 GiB each time it runs out of pages, so left alone a file settles at the last
/// power of two under 1.3 x the budget: 68 MiB for 100 MiB, which eviction must then
/// stay within. One value of `R` bytes makes redb grow the file to about twice that at
/// once, so a value of at most (1.3 x budget - file) / 2 (rounded down to redb's
/// power-of-two allocation orders) sizes the file near the budget; removing it again
/// leaves that room free for events. Done with durable commits, so the freed pages are
/// reusable at once; a file that is already large is left as it is.
fn presize(db: &Database, path: &std::path::Path, max: u64) -> Result<(), StoreError> {
    const SCRATCH: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("presize");
    let target = (PRESIZE_SHARE * max as f64) as u64;
    let file = std::fs::metadata(path).map_or(0, |m| m.len());
    if file >= target / 2 || max > (2 << 30) {
        return Ok(());
    }
    // The largest power of two with file + 2 x value <= target.
    let room = (target - file) / 2;
    if room < (1 << 20) {
        return Ok(());
    }
    let value = 1u64 << (63 - room.leading_zeros());
    // Less the page header redb adds, so the allocation stays in that order.
    let len = usize::try_from(value - 4096).map_err(|e| StoreError::Backend(Box::new(e)))?;
    // Reserved, not copied in: redb's own write buffer for the page is the only
    // transient memory this costs (at most half the budget, once, at creation).
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut t = txn.open_table(SCRATCH).map_err(backend)?;
        drop(t.insert_reserve(0, len).map_err(backend)?);
    }
    txn.commit().map_err(backend)?;
    let txn = db.begin_write().map_err(backend)?;
    txn.delete_table(SCRATCH).map_err(backend)?;
    txn.commit().map_err(backend)?;
    Ok(())
}
