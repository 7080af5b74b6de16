//! `RedbStore`: the public face. Saves go to the writer thread; reads run against
//! their own snapshot, never waiting for the writer: short ones on their caller's
//! thread, the rest on the reader threads (`readers.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use eventstore::{
    Capabilities, Change, Event, EventId, EventStore, Filter, Purge, Ruled, Ruling, Rulings,
    SaveOutcome, StoreError, Timestamp,
};
use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};

use crate::config::RedbConfig;
use crate::error::backend;
use crate::query::{ReadContext, Reader};
use crate::room::open_db;
use crate::stats::Stats;
use crate::write::get_u64;
use crate::writer::{Request, Writer};

/// L1's answer to one filter with what it can prove about it, from one snapshot
/// ([`RedbStore::probe`]).
#[derive(Debug, Clone)]
pub struct Probe {
    /// The filter's answer from this store: canonical order, at most `limit`.
    pub events: Vec<Event>,
    /// Every source event matching the filter with `created_at >= floor` is held: the
    /// window `W`, or lower where completeness floors prove more (`floors.rs`).
    pub floor: Timestamp,
    /// When the filter's `until` lies below `floor - 1`: matches held in the gap
    /// `[until + 1, floor - 1]`, counted up to `limit + 1`; else 0.
    pub gap: usize,
    /// The eviction epoch of this snapshot; a [`crate::Learn`] built on this probe
    /// carries it.
    pub evictions: u64,
}

/// What a promotion did ([`RedbStore::promote`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Promoted {
    /// Events newly stored.
    pub stored: u64,
    /// Completeness floors lowered.
    pub floors_lowered: u64,
}

/// The redb event store: bounded (an L1 cache) or unbounded (the embedded L2).
pub struct RedbStore {
    db: Arc<Database>,
    tx: mpsc::Sender<Request>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    config: RedbConfig,
    stats: Arc<Stats>,
    access: Arc<Mutex<HashMap<u64, u64>>>,
    tick: Arc<AtomicU64>,
    /// The key codec and the decoded events, shared by every reader.
    reads: Arc<ReadContext>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.config.path)
            .field("max_bytes", &self.config.max_bytes)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store and starts its writer thread.
    pub fn open(config: RedbConfig) -> Result<RedbStore, StoreError> {
        config
            .validate()
            .map_err(|e| StoreError::Backend(e.into()))?;
        let db = Arc::new(open_db(&config)?);
        let stats = Arc::new(Stats::default());
        let (bytes, window, tick, codec) = {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(crate::schema::META).map_err(backend)?;
            (
                get_u64(&meta, crate::schema::META_BYTES)?,
                get_u64(&meta, crate::schema::META_WINDOW)?,
                get_u64(&meta, crate::schema::META_TICK)?,
                crate::reindex::read_codec(&meta)?,
            )
        };
        stats.bytes.store(bytes, Ordering::Relaxed);
        stats.window.store(window, Ordering::Relaxed);
        let floor_hint = {
            let txn = db.begin_read().map_err(backend)?;
            let floors = txn.open_table(crate::schema::FLOORS).map_err(backend)?;
            stats.floors.store(
                redb::ReadableTableMetadata::len(&floors).map_err(backend)?,
                Ordering::Relaxed,
            );
            crate::floors::all_hints(&floors)?
        };
        let access = Arc::new(Mutex::new(HashMap::new()));
        let clock = Arc::new(AtomicU64::new(tick));
        let (tx, rx) = mpsc::channel(config.queue);
        let writer = Writer {
            db: db.clone(),
            config: config.clone(),
            stats: stats.clone(),
            access: access.clone(),
            clock: clock.clone(),
            // Measured soon after start; until then assume B-tree pages half full.
            ratio: 2.0,
            written: 0,
            synced_written: 0,
            evict_written: 0,
            calibrated: None,
            calibrated_commit: 0,
            after_sync: true,
            force_calibrate: false,
            evict_deep: false,
            quiet: false,
            sync_every: crate::writer::SYNC_AT_LEAST_EVERY,
            commits: 0,
            evicting: false,
            synced: std::time::Instant::now(),
            floor_hint,
            recent_evictions: std::collections::VecDeque::new(),
            recent_eviction_bytes: 0,
        };
        let handle = std::thread::Builder::new()
            .name("layer1-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(RedbStore {
            db,
            tx,
            writer: Mutex::new(Some(handle)),
            reads: Arc::new(ReadContext {
                codec,
                hot: crate::hot::Hot::new(config.event_cache_bytes),
            }),
            config,
            stats,
            access,
            tick: clock,
        })
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let reads = self.reads.clone();
        let job = move || {
            let txn = db.begin_read().map_err(backend)?;
            f(&Reader::new(txn, crate::query::UNLIMITED, &reads))
        };
        crate::readers::run(job).await
    }

    /// Runs `f` on this thread if it takes no more than `steps` (see
    /// [`Self::inline_steps`]); `None`: the caller reads with [`Self::read`].
    fn read_inline<T>(
        &self,
        steps: u32,
        f: impl FnOnce(&Reader) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        // `UNLIMITED` is no budget at all: a configured one stays below it.
        let steps = steps.min(crate::query::UNLIMITED - 1);
        crate::readers::inline(steps, |steps| {
            let txn = self.db.begin_read().map_err(backend)?;
            f(&Reader::new(txn, steps, &self.reads))
        })
    }

    /// The steps a read answering `filters` may take on its caller's thread, or 0 when
    /// one of them would surely spend more: each event it may return costs at least two
    /// (its index entry and its record).
    fn inline_steps(&self, filters: &[Filter]) -> u32 {
        let sure = filters.iter().map(|f| {
            let most = f
                .limit
                .unwrap_or(0)
                .max(f.ids.as_ref().map_or(0, |ids| ids.len()));
            most.saturating_mul(2)
        });
        self.inline_steps_for(sure.max().unwrap_or(0))
    }

    /// `RedbConfig::inline_read_steps`, or 0 when a read surely needs more than that.
    fn inline_steps_for(&self, sure: usize) -> u32 {
        let steps = self.config.inline_read_steps;
        if sure <= steps as usize { steps } else { 0 }
    }

    /// Saves many events, in order, as few transactions as the writer can group them
    /// into (an import or a poll). Outcomes are in the order of `events`.
    pub async fn save_many(&self, events: &[Event]) -> Result<Vec<SaveOutcome>, StoreError> {
        let mut waiting = Vec::with_capacity(events.len());
        for e in events {
            let (tx, rx) = oneshot::channel();
            self.tx
                .send(Request::Save(e.clone(), tx))
                .await
                .map_err(|_| StoreError::Closed)?;
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(rx.await.map_err(|_| StoreError::Closed)??);
        }
        Ok(out)
    }

    /// Removes events without tombstoning them (mirroring a removal decided elsewhere,
    /// e.g. a replacement in L2). Returns how many were held.
    pub async fn forget(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.request(|tx| Request::Forget(ids, tx)).await
    }

    /// Applies (id, author) tombstones decided elsewhere: removes each event held and
    /// written by that author, and refuses it from now on even when not held (see
    /// `Tables::tombstone_pair`). Returns how many were removed.
    pub async fn tombstone(
        &self,
        pairs: &[(EventId, eventstore::PublicKey)],
    ) -> Result<u64, StoreError> {
        let pairs = pairs.to_vec();
        self.request(|tx| Request::Tombstone(pairs, tx)).await
    }

    /// Answers `f` from this store and says how far the answer is provably complete
    /// (see [`Probe`]), all from one snapshot, so an eviction committing meanwhile
    /// cannot make the proof claim what the answer lacks.
    pub async fn probe(&self, f: &Filter) -> Result<Probe, StoreError> {
        let steps = self.inline_steps(std::slice::from_ref(f));
        let (probe, serials) = match self.read_inline(steps, |r| r.probe(f, Timestamp::now())) {
            Some(r) => r?,
            None => {
                let f = f.clone();
                self.read(move |r| r.probe(&f, Timestamp::now())).await?
            }
        };
        self.touch(&serials);
        Ok(probe)
    }

    /// Stores L2's answer to a query and, in the same transaction, what it proved
    /// (`learn`; see [`Learn`]). A promotion that fails records nothing.
    pub async fn promote(
        &self,
        events: Vec<Event>,
        learn: Option<crate::floors::Learn>,
    ) -> Result<Promoted, StoreError> {
        self.request(|tx| Request::Promote(events, learn, tx)).await
    }

    /// Which of `ids` are held, from one snapshot. Unlike a query, this does not count
    /// as an access for eviction.
    pub async fn contains(&self, ids: &[EventId]) -> Result<Vec<bool>, StoreError> {
        // One step an id.
        let steps = self.inline_steps_for(ids.len());
        if let Some(r) = self.read_inline(steps, |r| r.contains(ids)) {
            return r;
        }
        let ids = ids.to_vec();
        self.read(move |r| r.contains(&ids)).await
    }

    /// Records that these events were served, for least-recently-used eviction.
    fn touch(&self, serials: &[u64]) {
        if self.config.max_bytes.is_none() || serials.is_empty() {
            return;
        }
        let mut map = self.access.lock().unwrap_or_else(|p| p.into_inner());
        for s in serials {
            let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
            map.insert(*s, tick);
        }
    }

    /// The window watermark `W`: this store claims to hold every event of its source
    /// with `created_at >= W`. Raised by eviction; set by the owner after a warm-up.
    pub fn window(&self) -> Timestamp {
        Timestamp(self.stats.window.load(Ordering::Relaxed))
    }

    /// Raises `W` to at least `w` (never lowers it: eviction may have raised it
    /// further) and forgets every completeness floor: a window set by decree means L1
    /// may lack events of any age. Persisted with the next commit, which this waits for.
    pub async fn set_window(&self, w: Timestamp) -> Result<(), StoreError> {
        self.request(|tx| Request::SetWindow(w, tx)).await
    }

    /// The poller's saved cursor, if any.
    pub async fn cursor(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(crate::schema::META).map_err(backend)?;
            Ok(meta
                .get(crate::schema::META_CURSOR)
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Saves the poller's cursor. It commits in the writer's order, so a cursor never
    /// becomes durable before the events saved ahead of it.
    pub async fn set_cursor(&self, cursor: Vec<u8>) -> Result<(), StoreError> {
        self.request(|tx| Request::SetCursor(cursor, tx)).await
    }

    /// A value the caller keeps in this file under `name` (see [`Self::set_annotation`]).
    pub async fn annotation(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db.clone();
        let key = format!("{}{name}", crate::schema::META_ANNOTATION);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(crate::schema::META).map_err(backend)?;
            Ok(meta
                .get(key.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Keeps `value` under `name` in this file, apart from the store's own records: the
    /// caller's counters that should outlive a restart. It commits in the writer's order
    /// and is as durable as the store's other writes (an eventual store may lose the
    /// last second of them in a crash). Not counted in the budget: a few small values.
    pub async fn set_annotation(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = format!("{}{name}", crate::schema::META_ANNOTATION);
        self.request(|tx| Request::Annotate(key, value, tx)).await
    }

    /// Finishes queued writes, stops the writer and closes the file. Savers still
    /// holding the store get [`StoreError::Closed`] afterwards.
    pub async fn close(self) -> Result<(), StoreError> {
        let RedbStore { db, tx, writer, .. } = self;
        drop(tx);
        let handle = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        tokio::task::spawn_blocking(move || {
            if let Some(h) = handle {
                // The writer drains its queue, then returns when every sender is gone.
                h.join()
                    .map_err(|_| StoreError::Backend("L1 writer panicked".into()))?;
            }
            // A read whose caller gave up still holds the database until it has run on
            // a reader thread; the file is closed (and its lock released) only then,
            // so a store reopened right after this returns finds it free.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while Arc::strong_count(&db) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(db);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Budget bytes in use (what eviction compares with `max_bytes`).
    pub fn bytes_used(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    /// Size of the database file on disk.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.config.path).map_or(0, |m| m.len())
    }

    /// Live counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the decoded-event cache holds and has done (all zero when it is off).
    pub fn event_cache(&self) -> crate::EventCacheTotals {
        self.reads
            .hot
            .as_ref()
            .map(|h| h.totals())
            .unwrap_or_default()
    }

    /// The configuration.
    pub fn config(&self) -> &RedbConfig {
        &self.config
    }

    /// How the file's bytes are used, table by table (for density measurements).
    pub async fn storage(&self) -> Result<crate::stats::Storage, StoreError> {
        let db = self.db.clone();
        let path = self.config.path.clone();
        tokio::task::spawn_blocking(move || crate::schema::storage(&db, &path))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Verifies that every index entry points at an event and every event is in all its
    /// indexes. See `check.rs`.
    pub async fn check(&self) -> Result<crate::check::Report, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || crate::check::check(&db))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

#[async_trait]
impl EventStore for RedbStore {
    async fn save(&self, event: &Event) -> Result<SaveOutcome, StoreError> {
        let e = event.clone();
        self.request(|tx| Request::Save(e, tx)).await
    }

    async fn query(&self, filters: &[Filter]) -> Result<Vec<Event>, StoreError> {
        let steps = self.inline_steps(filters);
        let (events, serials) =
            match self.read_inline(steps, |r| r.query(filters, Timestamp::now())) {
                Some(r) => r?,
                None => {
                    let filters = filters.to_vec();
                    self.read(move |r| r.query(&filters, Timestamp::now()))
                        .await?
                }
            };
        self.touch(&serials);
        Ok(events)
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64, StoreError> {
        let filters = filters.to_vec();
        self.read(move |r| r.count(&filters, Timestamp::now()))
            .await
    }

    async fn delete(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.request(|tx| Request::Delete(ids, tx)).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            change_feed: false,
            persistent: true,
            bounded: self.config.max_bytes.is_some(),
        }
    }

    async fn rulings_since(&self, version: u64) -> Result<Option<Rulings>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            crate::rulings::read(&txn, version)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    async fn purge(&self, what: &Purge, max: usize) -> Result<Vec<EventId>, StoreError> {
        match what {
            Purge::Matching(f) => {
                // The ids from a snapshot, then removed by the writer: one that went
                // meanwhile (replaced, deleted) is simply not held any more, and one
                // that arrived meanwhile waits for the caller's next step.
                let f = Filter {
                    limit: Some(max),
                    ..f.clone()
                };
                let ids: Vec<EventId> = self
                    .read(move |r| r.query(&[f], Timestamp::now()))
                    .await?
                    .0
                    .iter()
                    .map(Event::id)
                    .collect();
                if ids.is_empty() {
                    return Ok(ids);
                }
                self.request(|tx| Request::Purge(ids, tx)).await
            }
            Purge::ExpiredBy(t) => {
                let t = *t;
                self.request(|tx| Request::PurgeExpired(t, max, tx)).await
            }
            _ => Err(StoreError::Unsupported("this kind of purge")),
        }
    }

    async fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<eventstore::Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<eventstore::PublicKey>, StoreError> {
        let kinds = kinds.cloned();
        self.read(move |r| r.authors_over(kinds.as_ref(), keep, max))
            .await
    }

    async fn rule(&self, change: &Change) -> Result<Ruled, StoreError> {
        let c = change.clone();
        let mut ruled = self.request(|tx| Request::Rule(c, tx)).await?;
        // The ban is recorded: the writer refuses the author's new events from here on,
        // so a purge that goes on in later transactions, a batch each, ends.
        if let Change::Add(e) = change {
            if let Ruling::BanPubkey(pk) = e.ruling {
                let mut last = ruled.removed.len();
                while last == crate::rulings::PURGE_BATCH {
                    let more = self.request(|tx| Request::PurgeAuthor(pk, tx)).await?;
                    last = more.len();
                    ruled.removed.extend(more);
                }
            }
        }
        Ok(ruled)
    }
}
