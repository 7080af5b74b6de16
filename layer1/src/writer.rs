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
use crate::evict::raise_window;
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
    /// A caller's own value in META (`RedbStore::set_annotation`), under its full key.
    Annotate(String, Vec<u8>, oneshot::Sender<Result<(), StoreError>>),
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

/// What one request came to inside a transaction; answered only once it committed.
enum Outcome {
    Save(SaveOutcome),
    Count(u64),
    Unit,
    Promoted(Promoted),
    Ruled(eventstore::Ruled),
    Ids(Vec<EventId>),
}

impl Request {
    fn answer(self, out: Outcome) {
        // A saver that gave up waiting is not an error: the write is committed anyway.
        match (self, out) {
            (Request::Save(_, tx), Outcome::Save(o)) => drop(tx.send(Ok(o))),
            (
                Request::Delete(_, tx) | Request::Forget(_, tx) | Request::Tombstone(_, tx),
                Outcome::Count(n),
            ) => drop(tx.send(Ok(n))),
            (
                Request::SetWindow(_, tx) | Request::SetCursor(_, tx) | Request::Annotate(_, _, tx),
                Outcome::Unit,
            ) => drop(tx.send(Ok(()))),
            (Request::Promote(_, _, tx), Outcome::Promoted(p)) => drop(tx.send(Ok(p))),
            (Request::Rule(_, tx), Outcome::Ruled(r)) => drop(tx.send(Ok(r))),
            (
                Request::PurgeAuthor(_, tx)
                | Request::Purge(_, tx)
                | Request::PurgeExpired(_, _, tx),
                Outcome::Ids(ids),
            ) => drop(tx.send(Ok(ids))),
            (r, _) => r.fail(&StoreError::Backend(
                "internal: an L1 write answered with the wrong outcome".into(),
            )),
        }
    }

    fn fail(self, e: &StoreError) {
        let err = || StoreError::Backend(e.to_string().into());
        match self {
            Request::Save(_, tx) => drop(tx.send(Err(err()))),
            Request::Delete(_, tx) | Request::Forget(_, tx) | Request::Tombstone(_, tx) => {
                drop(tx.send(Err(err())))
            }
            Request::SetWindow(_, tx) | Request::SetCursor(_, tx) | Request::Annotate(_, _, tx) => {
                drop(tx.send(Err(err())))
            }
            Request::Promote(_, _, tx) => drop(tx.send(Err(err()))),
            Request::Rule(_, tx) => drop(tx.send(Err(err()))),
            Request::PurgeAuthor(_, tx)
            | Request::Purge(_, tx)
            | Request::PurgeExpired(_, _, tx) => drop(tx.send(Err(err()))),
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
    /// `written` at the last synced commit (`commit_room`).
    pub synced_written: u64,
    /// `written` at the last eviction step (`evict_step`).
    pub evict_written: u64,
    pub calibrated: Option<u64>,
    /// The commit count at the last measurement.
    pub calibrated_commit: u64,
    /// The last commit was synced (`evict_step` measures the ratio after one).
    pub after_sync: bool,
    /// Measure the ratio in the next transaction, due or not.
    pub force_calibrate: bool,
    /// The next eviction step goes down to the low-water mark at once (`commit`).
    pub evict_deep: bool,
    /// Transactions write only what they are asked to: no purges, no eviction (`commit`).
    pub quiet: bool,
    /// How long an eventual store goes between synced commits (`commit`).
    pub sync_every: std::time::Duration,
    /// Commits of a bounded store so far.
    pub commits: u64,
    /// Above the low-water mark after the last step: keep evicting.
    pub evicting: bool,
    /// When the last synced commit was.
    pub synced: std::time::Instant,
    /// Hashes of every floor key held (a superset; `floors.rs`). Lent to each
    /// transaction, and rebuilt from the file when one fails.
    pub floor_hint: HashSet<u64>,
    /// The last committed evictions, oldest first, with their epochs
    /// (`evicted_since`): at most [`RECENT_EVICTIONS`], in at most
    /// [`RECENT_EVICTION_BYTES`].
    pub recent_evictions: std::collections::VecDeque<crate::floors::Evicted>,
    /// Bytes the log holds.
    pub recent_eviction_bytes: usize,
}

/// Evictions kept for checking lowerings against (`Writer::evicted_since`): more than
/// happen between a probe and its promotion unless L1 churns much of its budget
/// meanwhile, when lowerings are dropped (always safe).
pub(crate) const RECENT_EVICTIONS: usize = 4_096;
/// The log's memory bound (events with thousands of tags cost more).
pub(crate) const RECENT_EVICTION_BYTES: usize = 4 << 20;

/// An eventual store syncs a commit at least this often (see `commit`), and sooner
/// while its batches would grow a bounded file, down to this.
pub(crate) const SYNC_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const SYNC_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Attempts at a batch that would grow the file before it is committed anyway.
const GROWTH_ATTEMPTS: u32 = 2;

/// What a committed transaction changed, published to the counters after the commit.
struct Committed {
    bytes: u64,
    window: Timestamp,
    evicted: u64,
    floors: u64,
    floor_changes: crate::floors::FloorChanges,
    evicted_log: Vec<crate::floors::Evicted>,
}

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
            match self.commit(&batch) {
                Ok(outcomes) => batch.drain(..).zip(outcomes).for_each(|(r, o)| r.answer(o)),
                Err(e) => {
                    tracing::error!(error = %e, batch = n, "L1 write batch failed");
                    batch.drain(..).for_each(|r| r.fail(&e));
                    self.evicting = false;
                    self.reload_hint();
                }
            }
        }
    }

    /// Bytes of events one transaction may take. A copy-on-write B-tree rewrites every
    /// page a transaction touches, so with a budget the work per transaction is kept to
    /// a small share of it; unbounded, batches are limited by count only.
    pub(crate) fn batch_bytes_cap(&self) -> usize {
        match self.config.max_bytes {
            Some(max) => ((max / 64) as usize).max(16 * 1024),
            None => usize::MAX,
        }
    }

    /// Free room a commit of an eventual bounded store must still find (`probe_room`).
    /// An unsynced commit writes little beyond its batch (the table roots: eight pages
    /// are ample). A synced one also writes the list of every page the unsynced
    /// commits since the last synced one freed, at 8 bytes a page: a random index
    /// insert frees a few pages per event, about a page number per 100 request bytes,
    /// so a quarter of the bytes written since then covers it with room to spare. At
    /// most a sixteenth of the file bound, so the probe cannot ask for more than the
    /// room eviction keeps free (`high_mark`). Sized by the work, not the batch cap:
    /// probing for a quarter MiB before every commit of a node's ~20-event batches
    /// took 45% of its L1 writer's time.
    fn commit_room(&self, unsynced: bool) -> usize {
        const FLOOR: usize = 32 * 1024;
        if unsynced {
            return FLOOR;
        }
        let since =
            usize::try_from(self.written.saturating_sub(self.synced_written)).unwrap_or(usize::MAX);
        let most = self
            .config
            .max_bytes
            .map_or(usize::MAX, |m| (crate::room::file_bound(m) / 16) as usize);
        (FLOOR + since / 4).min(most.max(FLOOR))
    }

    /// Commits one batch and returns each request's outcome, in order.
    ///
    /// A bounded eventual store's commits never grow the file: redb reuses the pages a
    /// commit frees only after a synced commit, so at a fast write rate the free room
    /// runs out between the once-a-second syncs and redb doubles the file (2.01 x a
    /// 16 MiB budget in the density bench; a synced commit right after unsynced ones
    /// grew it too). So when a batch made the file longer, it is aborted (redb gives
    /// back its pages and the length), quiet synced commits make the freed pages
    /// reusable, syncs come twice as often for a while, and the batch is written
    /// again. A file length is one `fstat`; the abort costs one batch's work, and only
    /// when the file would otherwise have grown. The commit itself takes pages after
    /// that check, so the batch first proves a little more room free (`probe_room`).
    fn commit(&mut self, batch: &[Request]) -> Result<Vec<Outcome>, StoreError> {
        // The cursor is the point a crash rolls back to: its commit is always synced
        // (and with it every commit before it), or an eventual store could lose any
        // amount of history that its poller would then not read again. At least one
        // commit a second is synced too, cursor or not (no poller runs during an L2
        // outage): redb reuses the pages a commit frees only after a synced commit, so
        // the file would otherwise grow without bound. Any synced state is consistent
        // with the cursor it holds, so a crash still rolls back to one the poller
        // repairs from.
        let records_cursor = batch.iter().any(|r| matches!(r, Request::SetCursor(..)));
        let sync = records_cursor || self.synced.elapsed() >= self.sync_every;
        let unsynced = self.config.durability == Durability::Eventual && !sync;
        let pending = std::mem::take(&mut *self.access.lock().unwrap_or_else(|p| p.into_inner()));
        // Synced or not: a synced commit does not yet reuse what the unsynced ones
        // before it freed either. Only growth past the file bound counts: a file under
        // it (a budget too small to presize for) grows as redb needs, and one already
        // past it (a budget under redb's smallest file) cannot be held there anyway.
        let bound = self.config.max_bytes.map_or(0, crate::room::file_bound);
        let before = self.file_len();
        let guard = self.config.durability == Durability::Eventual && before <= bound;
        let mut attempt = 0;
        loop {
            let (txn, outcomes, committed) = self.apply(batch, &pending, unsynced)?;
            if guard {
                self.probe_room(&txn, self.commit_room(unsynced))?;
            }
            let grew = guard && self.file_len() > bound;
            if !grew || attempt == GROWTH_ATTEMPTS {
                if grew {
                    tracing::warn!(
                        file = self.file_len(),
                        "L1 file grew: a batch found no room even after syncs and an eviction"
                    );
                }
                self.finish(txn, committed, unsynced)?;
                return Ok(outcomes);
            }
            // Aborted, the batch gives back every page it took (and the file length).
            txn.abort().map_err(backend)?;
            // The aborted batch may have added floor hints, or cleared them.
            self.reload_hint();
            // Syncs come sooner from now on (and drift back to once a second while
            // batches find room, in `finish`).
            self.sync_every = (self.sync_every / 2).max(SYNC_AT_MOST_EVERY);
            // Then two synced commits that write next to nothing (no eviction, no
            // purges: the pages the aborted batch gave back are all the room there
            // is), which make the pages unsynced commits freed reusable (pages a
            // commit frees are reused only once a later one is synced too); the ratio
            // of pages per budget byte is measured right after them, when it is
            // closest to the live pages. If the batch still finds no room, the live
            // pages themselves are too many: the next time, eviction goes down to the
            // low-water mark first, in a synced commit of its own.
            self.quiet = true;
            for _ in 0..2 {
                self.force_calibrate = true;
                let (txn, _, committed) = self.apply(&[], &HashMap::new(), false)?;
                self.finish(txn, committed, false)?;
            }
            self.quiet = false;
            if attempt > 0 {
                self.evict_deep = true;
                let (txn, _, committed) = self.apply(&[], &HashMap::new(), false)?;
                self.finish(txn, committed, false)?;
            }
            self.stats.growth_syncs.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
        }
    }

    /// Commits a transaction `apply` wrote, and publishes what it changed.
    fn finish(
        &mut self,
        txn: redb::WriteTransaction,
        committed: Committed,
        unsynced: bool,
    ) -> Result<(), StoreError> {
        txn.commit().map_err(backend)?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.after_sync = !unsynced;
        if !unsynced {
            self.stats.synced_commits.fetch_add(1, Ordering::Relaxed);
            self.synced = std::time::Instant::now();
            self.synced_written = self.written;
            self.sync_every = self.sync_every.mul_f64(1.02).min(SYNC_AT_LEAST_EVERY);
        }
        self.stats.floors.store(committed.floors, Ordering::Relaxed);
        // The prefilter only grows between rebuilds (forgotten floors stay in it); keep
        // it near the floors' own size.
        if self.floor_hint.len() as u64 > 2 * committed.floors + 1_024 {
            self.reload_hint();
        }
        committed.floor_changes.publish(&self.stats);
        // Published only once committed, so readers never see counters ahead of data.
        self.stats.bytes.store(committed.bytes, Ordering::Relaxed);
        self.stats
            .window
            .store(committed.window.0, Ordering::Relaxed);
        // Only committed evictions: an aborted batch's epochs are drawn again.
        for e in committed.evicted_log {
            self.recent_eviction_bytes += e.size();
            self.recent_evictions.push_back(e);
        }
        while self.recent_evictions.len() > RECENT_EVICTIONS
            || self.recent_eviction_bytes > RECENT_EVICTION_BYTES
        {
            let Some(e) = self.recent_evictions.pop_front() else {
                break;
            };
            self.recent_eviction_bytes -= e.size();
        }
        if committed.evicted > 0 {
            self.stats
                .evictions
                .fetch_add(committed.evicted, Ordering::Relaxed);
            self.stats.eviction_runs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn file_len(&self) -> u64 {
        std::fs::metadata(&self.config.path).map_or(0, |m| m.len())
    }

    /// Writes one batch into a new transaction, which the caller commits or aborts.
    fn apply(
        &mut self,
        batch: &[Request],
        pending: &HashMap<u64, u64>,
        unsynced: bool,
    ) -> Result<(redb::WriteTransaction, Vec<Outcome>, Committed), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        let durability = if unsynced {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        };
        txn.set_durability(durability).map_err(backend)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let committed;
        {
            let mut t = Tables::open(&txn, self.clock.clone())?;
            t.bounded = self.config.max_bytes.is_some();
            t.floor_hint = std::mem::take(&mut self.floor_hint);
            let now = Timestamp::now();
            for req in batch {
                outcomes.push(self.apply_one(&mut t, req, now)?);
            }
            if !self.quiet {
                t.purge_expired(now, 1_000)?;
            }
            if t.bounded && !self.quiet {
                let before = now.0.saturating_sub(self.config.tombstone_ttl.as_secs());
                t.expire_tombstones(before, 1_000)?;
            }
            self.flush_access(&mut t, pending)?;
            self.evict_step(&txn, &mut t)?;
            t.flush_index()?;
            t.store_meta()?;
            committed = Committed {
                bytes: t.bytes,
                window: t.window,
                evicted: t.evicted,
                floors: t.floors.len().map_err(backend)?,
                floor_changes: std::mem::take(&mut t.floor_changes),
                evicted_log: std::mem::take(&mut t.evicted_log),
            };
            self.floor_hint = std::mem::take(&mut t.floor_hint);
        }
        Ok((txn, outcomes, committed))
    }

    fn apply_one(
        &self,
        t: &mut Tables<'_>,
        req: &Request,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        Ok(match req {
            Request::Save(e, _) => Outcome::Save(t.save(e, now)?),
            Request::Delete(ids, _) => {
                let mut n = 0;
                for id in ids {
                    n += u64::from(t.delete(id)?);
                }
                Outcome::Count(n)
            }
            Request::Forget(ids, _) => {
                let mut n = 0;
                for id in ids {
                    n += u64::from(t.forget(id)?);
                }
                Outcome::Count(n)
            }
            Request::Tombstone(pairs, _) => {
                let mut n = 0;
                for (id, author) in pairs {
                    n += u64::from(t.tombstone_pair(id, author)?);
                }
                Outcome::Count(n)
            }
            Request::SetWindow(w, _) => {
                // Only ever raised: eviction may already have raised it past `w`, and
                // lowering it would claim events no longer held. A window set by decree
                // means L1 may lack events of any age, so no floor below it can stand
                // either.
                t.flush_index()?;
                raise_window(t, *w)?;
                t.clear_floors()?;
                Outcome::Unit
            }
            Request::Promote(events, learn, _) => {
                let mut p = Promoted::default();
                for e in events {
                    p.stored += u64::from(t.save(e, now)?.is_new());
                }
                if let Some(l) = learn
                    && !self.evicted_since(l)
                {
                    p.floors_lowered = t.learn(l, self.config.max_floors)?;
                }
                Outcome::Promoted(p)
            }
            Request::Rule(change, _) => {
                let (version, removed) = t.rule(change)?;
                Outcome::Ruled(eventstore::Ruled { version, removed })
            }
            Request::PurgeAuthor(pk, _) => {
                Outcome::Ids(t.purge_author(pk, crate::rulings::PURGE_BATCH)?)
            }
            Request::Purge(ids, _) => {
                let mut held = Vec::with_capacity(ids.len());
                for id in ids {
                    if t.forget(id)? {
                        held.push(*id);
                    }
                }
                Outcome::Ids(held)
            }
            Request::PurgeExpired(by, max, _) => Outcome::Ids(t.purge_expired(*by, *max)?),
            Request::SetCursor(c, _) => {
                t.meta
                    .insert(crate::schema::META_CURSOR, c.as_slice())
                    .map_err(backend)?;
                Outcome::Unit
            }
            Request::Annotate(key, v, _) => {
                t.meta.insert(key.as_str(), v.as_slice()).map_err(backend)?;
                Outcome::Unit
            }
        })
    }

    /// Whether an event that `l` would claim may have been evicted since the probe it
    /// was built on (`floors.rs`, the rule on lowering): a kept eviction after the
    /// probe's epoch that matches its filter, or evictions since then no longer all
    /// kept. Evictions in the current transaction come after its promotions, and
    /// raise the floors those lowered.
    fn evicted_since(&self, l: &crate::floors::Learn) -> bool {
        let Some(oldest) = self.recent_evictions.front() else {
            return false;
        };
        if oldest.epoch > l.evictions.saturating_add(1) {
            return true;
        }
        self.recent_evictions
            .iter()
            .rev()
            .take_while(|e| e.epoch > l.evictions)
            .any(|e| e.may_match(&l.filter))
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
}
