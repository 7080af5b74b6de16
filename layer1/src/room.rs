//! The file's room (DESIGN.md §3): a bounded store's file is sized near its bound
//! once, and eviction holds the events' pages under it, leaving room for
//! copy-on-write. The writer measures how many file bytes a budget byte takes now and
//! then, and its high-water mark follows from that and the file.

use eventstore::StoreError;
use redb::{Database, ReadableDatabase};

use crate::config::{Durability, RedbConfig};
use crate::error::backend;
use crate::evict::evict_to;
use crate::write::Tables;
use crate::writer::Writer;

/// Room kept free in the file once it may not grow again: copy-on-write needs free
/// pages for every page a transaction touches (random index inserts touch many), and
/// pages freed by one commit are reused only after it. A share of the file, more of a
/// small one (up to [`FILE_HEADROOM_MIN`]). Measured with `cargo bench -p layer1
/// --bench density`: 0.3 of the file wasted a third of a 100 MiB budget; 0.15 of a
/// 17 MiB file let it double.
const FILE_HEADROOM_SHARE: f64 = 0.15;
const FILE_HEADROOM_SMALL_SHARE: f64 = 0.3;
const FILE_HEADROOM_MIN: f64 = 6.0 * 1024.0 * 1024.0;

/// An eventual store keeps more: up to a second of unsynced commits allocate pages
/// without reusing any. At 0.15 its 100 MiB L1 aborted 45 batches that would have grown
/// the file (`commit`) and wrote at half the speed; at 0.25, 3, at 0.54 x budget held.
const EVENTUAL_HEADROOM_SHARE: f64 = 0.25;

/// The free room kept in a file of `file` bytes once it may not grow again.
fn file_headroom(file: f64) -> f64 {
    (FILE_HEADROOM_SHARE * file).max((FILE_HEADROOM_SMALL_SHARE * file).min(FILE_HEADROOM_MIN))
}

/// Commits between measurements of the file-bytes-per-budget-byte ratio, at least.
const CALIBRATE_EVERY: u64 = 32;
/// The least an eviction step takes, however little was written since the last one.
const EVICT_STEP_MIN: u64 = 256 * 1024;

/// And at least this share of the bytes held must have been written since the last
/// one: a measurement walks every page of the file (redb's `stats`), so its cost grows
/// with the file. Every 32 commits, a full 512 MiB L1 under a steady write load spent a
/// third of the node's CPU walking it; once per eighth of the data written, the walk
/// costs a fixed share of the writing.
const CALIBRATE_SHARE: u64 = 8;

impl Writer {
    /// The high-water mark in budget bytes: `high_water` of the budget, and the pages
    /// it takes (bytes x the measured ratio) at most `high_water` of the file bound
    /// (1.3 x the budget: the presized file). redb doubles its file while it is under
    /// 4 GiB, so once one more doubling would pass the bound, the pages are also held
    /// under the file already there, less room for copy-on-write. A file already past
    /// its bound (a budget under redb's smallest file, tens of KiB) says nothing about
    /// the events' pages: its pages are held to `high_water` of the budget.
    pub(crate) fn high_mark(&self, max: u64) -> f64 {
        let budget = max as f64;
        let bound = PRESIZE_SHARE * budget;
        let file = self.file_len() as f64;
        let mut alloc = self.config.high_water * if file <= bound { bound } else { budget };
        if 2.0 * file > bound {
            let mut room = file_headroom(file);
            if self.config.durability == Durability::Eventual {
                room = room.max(EVENTUAL_HEADROOM_SHARE * file);
            }
            alloc = alloc.min(file - room);
        }
        (alloc / self.ratio).min(self.config.high_water * budget)
    }

    /// One bounded step of eviction: starts above the high-water mark, and goes on in
    /// later transactions until the low-water mark is reached.
    pub(crate) fn evict_step(
        &mut self,
        txn: &redb::WriteTransaction,
        t: &mut Tables<'_>,
    ) -> Result<(), StoreError> {
        let Some(max) = self.config.max_bytes else {
            return Ok(());
        };
        self.commits += 1;
        // Written by this transaction's batch (or since the last step).
        let since = self.written.saturating_sub(self.evict_written);
        self.evict_written = self.written;
        let due = (t.bytes / CALIBRATE_SHARE).max(64 * 1024);
        let due = self
            .calibrated
            .is_none_or(|at| self.written.saturating_sub(at) >= due);
        // Measured in the transaction right after a synced commit, when the pages that
        // unsynced commits freed are free again: the count is then closest to the live
        // pages (measured after unsynced commits, it swung from 1.6 to 2.1 per byte).
        let periodic = self.commits >= self.calibrated_commit + CALIBRATE_EVERY && due;
        if self.force_calibrate || (self.after_sync && periodic) {
            self.force_calibrate = false;
            self.calibrated = Some(self.written);
            self.calibrated_commit = self.commits;
            self.calibrate(txn, t.bytes);
        }
        if self.quiet
            || (!self.evicting && !self.evict_deep && (t.bytes as f64) <= self.high_mark(max))
        {
            return Ok(());
        }
        let high = self.high_mark(max);
        let low = (high * self.config.low_water / self.config.high_water) as u64;
        // Twice what was written since the last step: eviction outpaces the writes
        // while spreading over the transactions, instead of taking two batches' cap
        // (16 MiB for a 512 MiB budget, about 30,000 events and seconds of L1's writer)
        // in one go while every write waits.
        let step = (since * 2)
            .max(EVICT_STEP_MIN)
            .min(self.batch_bytes_cap() as u64 * 2);
        let target = if std::mem::take(&mut self.evict_deep) {
            low
        } else {
            low.max(t.bytes.saturating_sub(step))
        };
        let before = t.evicted;
        evict_to(t, target)?;
        // Stop when nothing is left to evict (what remains is tombstones): going on would
        // spin on empty transactions.
        self.evicting = t.bytes > low && t.evicted > before;
        Ok(())
    }

    /// Measures how many file bytes the store uses per budget byte.
    pub(crate) fn calibrate(&mut self, txn: &redb::WriteTransaction, bytes: u64) {
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

/// Pages a commit needs beyond those its transaction wrote: redb writes the list of
/// pages the transaction freed (and its other bookkeeping) while committing, after the
/// writer's file-length check, and a commit that finds no free page there doubles the
/// file (4 -> 8.5 MiB under a 4 MiB budget: the fast-writer budget test failed about one
/// run in three under load, every time in the commit itself). So the writer checks that
/// this much room is still free before it commits: pages taken and given back in one
/// transaction are free again at once. One page's worth per value, so the probe asks
/// for single pages, as the commit does, not one contiguous block.
const PROBE_VALUE: usize = 3 * 1024;

impl Writer {
    /// Takes about `bytes` of single pages in `txn` and gives them back, so that a file
    /// with less free room than that grows now, where the writer can still abort. The
    /// pages go back by deleting the probe's table: one walk of its pages, which were
    /// all allocated in this transaction and so are free again at once (a remove per
    /// value cost as much again as the inserts).
    pub(crate) fn probe_room(
        &self,
        txn: &redb::WriteTransaction,
        bytes: usize,
    ) -> Result<(), StoreError> {
        const PROBE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("room_probe");
        let mut t = txn.open_table(PROBE).map_err(backend)?;
        let n = bytes.div_ceil(PROBE_VALUE) as u64;
        for k in 0..n {
            drop(t.insert_reserve(k, PROBE_VALUE).map_err(backend)?);
        }
        drop(t);
        txn.delete_table(PROBE).map_err(backend)?;
        Ok(())
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

/// The file bound of a budget of `max` bytes.
pub(crate) fn file_bound(max: u64) -> u64 {
    (PRESIZE_SHARE * max as f64) as u64
}

/// Grows a fresh bounded store's file close to its 1.3 x budget bound at once.
///
/// While a file is one region (under 4 GiB), redb grows it, when no free block fits an
/// allocation of `R` bytes (a power of two), to max(2 x file, file + 2 x R). Left alone
/// it doubles, and settles at the last power of two under the bound: 16 MiB for a
/// 16 MiB budget, 1 GiB for 1 GiB, which eviction must then stay within. Two scratch
/// values reach much closer: a first of `R1` grows the file to about 2 x `R1`, then a
/// second of `R2` (the largest power of two with 2 x `R2` under the bound, larger than
/// any block the first left free) grows it by 2 x `R2` more. 16 MiB -> 20 MiB, 100 MiB
/// -> 129 MiB, 1 GiB -> 1.25 GiB. Each value is removed again in a synced commit, so the
/// room is free for events at once; a file that is already large is left as it is.
fn presize(db: &Database, path: &std::path::Path, max: u64) -> Result<(), StoreError> {
    let bound = file_bound(max);
    let file = std::fs::metadata(path).map_or(0, |m| m.len());
    if file >= bound / 2 || max > (2 << 30) {
        return Ok(());
    }
    let pow2_at_most = |x: u64| 1u64 << (63 - x.max(1).leading_zeros());
    let second = pow2_at_most((bound - file) / 2);
    let rest = bound - file - 2 * second;
    if rest >= (2 << 20) {
        grow_by(db, pow2_at_most(rest / 2))?;
    }
    let file = std::fs::metadata(path).map_or(0, |m| m.len());
    if second >= (1 << 20) && file + 2 * second <= bound {
        grow_by(db, second)?;
    }
    Ok(())
}

/// Stores and removes one value of about `value` bytes (a power of two), so redb grows
/// the file to hold it and keeps the room.
fn grow_by(db: &Database, value: u64) -> Result<(), StoreError> {
    const SCRATCH: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("presize");
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
