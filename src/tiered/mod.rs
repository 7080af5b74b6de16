//! The tiered backend: L1 (a bounded `RedbStore`) in front of L2 (the authority: a
//! shared `PgStore`, or an unbounded `RedbStore` for a single node). DESIGN.md §5.
//!
//! - save: L2 decides; L1 mirrors what L2 accepted; the event is marked seen and
//!   broadcast to this node's live subscribers.
//! - query: see `query.rs` — L1 alone only when it provably holds the whole answer
//!   (the window, or completeness floors per query key); L2's answers teach floors.
//! - the poller (`poller.rs`) keeps L1 complete with what other nodes write.
//! - while a shared L2 is unreachable (`breaker.rs`), reads are L1's and writes go to
//!   the outbox, replayed when L2 answers (`degraded.rs`).
//! - single (`start_single`): one unbounded embedded redb is both tiers. It holds every
//!   event, so it answers everything; each event is written once; nothing is mirrored,
//!   warmed or promoted. The node's default without PostgreSQL.

pub mod breaker;
mod degraded;
mod poller;
mod promote;
mod query;
mod recent;
mod repair;
mod rulings;
pub mod stats;
mod unsettled;
mod warm;

pub use unsettled::Landing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventstore::{
    Capabilities, Change, Event, EventId, EventStore, Filter, Kind, Purge, Ruled, Rulings,
    SaveOutcome, StoreError,
};
use layer1::RedbStore;
use tokio::sync::{broadcast, mpsc, watch};

use crate::feed::ChangeFeed;
use recent::RecentIds;
pub use stats::{Shape, TieredStats};

/// L2's answer on its way into L1, with what it proved.
#[derive(Debug)]
struct Promotion {
    events: Vec<Event>,
    learn: Option<layer1::Learn>,
    /// Signalled once this and everything queued before it is in L1 ([`Tiered::settle`]).
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Tuning of the tiered backend, with documented defaults.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    /// How often the poller reads L2's change feed. Default 250 ms.
    pub poll_frequency: Duration,
    /// Look-back, in multiples of `poll_frequency`, to catch transactions that committed
    /// late: once per look-back span a poll reads back this far before the previous such
    /// poll; polls in between resume where the last one stopped (`poller.rs`). Default 4.
    pub poll_overlap: u32,
    /// Events a fresh L1 loads from L2 at start (the newest). Default 100,000.
    pub warm_events: usize,
    /// How long a missing id is remembered, sparing L2 repeated lookups. Default 5 s.
    pub negative_ttl: Duration,
    /// Batches of L2 results waiting to be promoted into L1. Default 256.
    pub promote_queue: usize,
    /// Live events buffered per subscriber. Default 16,384.
    pub broadcast_capacity: usize,
    /// Rows per change-feed page. Default 1,000.
    pub feed_page: usize,
    /// While a shared L2 is unreachable, answer reads from L1 alone (`true`, the
    /// default) or refuse them (`false`). See `degraded.rs`.
    pub serve_degraded: bool,
    /// Where writes go while a shared L2 is unreachable; `None`: they are refused.
    pub outbox: Option<Arc<layer1::Outbox>>,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            poll_frequency: Duration::from_millis(250),
            poll_overlap: 4,
            warm_events: 100_000,
            negative_ttl: Duration::from_secs(5),
            promote_queue: 256,
            broadcast_capacity: 16_384,
            feed_page: 1_000,
            serve_degraded: true,
            outbox: None,
        }
    }
}

impl TieredConfig {
    /// The look-back of each poll: `poll_frequency × poll_overlap`.
    pub fn lookback(&self) -> Duration {
        self.poll_frequency * self.poll_overlap.max(1)
    }
}

/// The tiered store. Cheap to share (`Arc`); background tasks stop on [`Tiered::shutdown`].
pub struct Tiered {
    l1: Arc<RedbStore>,
    l2: Arc<dyn EventStore>,
    feed: Option<Arc<dyn ChangeFeed>>,
    config: TieredConfig,
    live: broadcast::Sender<Arc<Event>>,
    /// Ids this node has already saved into L1 (spares the poller repeated work).
    seen: RecentIds,
    /// Ids this node has broadcast. Claimed atomically, so an event stored here and
    /// also read back by this node's poller goes out once, whichever path is first.
    delivered: RecentIds,
    /// Ids known to be absent from L2, for a short while.
    missing: moka::sync::Cache<EventId, ()>,
    /// Versions L2 dropped without a tombstone (replaced, or deleted by address),
    /// recently. A promotion read from L2 before the drop must not bring one back: L1
    /// might then hold, and a floor serve, an event L2 no longer has.
    dropped: Arc<RecentIds>,
    promote_tx: mpsc::Sender<Promotion>,
    /// Whether the shared L2 answers (`breaker.rs`).
    breaker: Arc<breaker::Breaker>,
    stop: watch::Sender<bool>,
    /// Milliseconds since `started` of the last successful poll (0: none yet).
    last_poll_ok: AtomicU64,
    /// Events L1 failed to take after L2 accepted them.
    repairs: repair::Repairs,
    started: Instant,
    stats: Arc<TieredStats>,
    /// One store is both tiers (`start_single`).
    single: bool,
    /// Events L2 accepted that have not landed in L1 yet (`unsettled.rs`).
    unsettled: Arc<unsettled::Unsettled>,
    /// When L1 was last warmed afresh, by the database clock (0: unknown; `warm.rs`).
    warmed_at: std::sync::atomic::AtomicI64,
    /// Query routes counted before this start, from the L1 file (`stats::Routes`).
    routes_base: stats::Routes,
}

impl std::fmt::Debug for Tiered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("l1", &self.l1)
            .field("l2", &self.l2)
            .field("poller", &self.feed.is_some())
            .field("single", &self.single)
            .finish()
    }
}

impl Tiered {
    /// Builds the backend, warms a fresh L1 from L2, and starts the promoter and (with a
    /// change feed) the poller.
    pub async fn start(
        l1: Arc<RedbStore>,
        l2: Arc<dyn EventStore>,
        feed: Option<Arc<dyn ChangeFeed>>,
        config: TieredConfig,
    ) -> Result<Arc<Tiered>, StoreError> {
        Self::build(l1, l2, feed, config, false).await
    }

    /// One unbounded store as both tiers (a single node without PostgreSQL). It is the
    /// authority and holds every event, so it answers every query itself.
    pub async fn start_single(
        store: Arc<RedbStore>,
        config: TieredConfig,
    ) -> Result<Arc<Tiered>, StoreError> {
        if store.config().max_bytes.is_some() {
            return Err(StoreError::Backend(
                "a bounded store cannot serve as both tiers".into(),
            ));
        }
        Self::build(store.clone(), store, None, config, true).await
    }

    async fn build(
        l1: Arc<RedbStore>,
        l2: Arc<dyn EventStore>,
        feed: Option<Arc<dyn ChangeFeed>>,
        config: TieredConfig,
        single: bool,
    ) -> Result<Arc<Tiered>, StoreError> {
        let (live, _) = broadcast::channel(config.broadcast_capacity.max(16));
        let (promote_tx, promote_rx) = mpsc::channel(config.promote_queue.max(1));
        let (stop, _) = watch::channel(false);
        let seen_ttl = (config.lookback() * 20).max(Duration::from_secs(120));
        let routes_base = stats::Routes::load(&l1).await;
        let t = Arc::new(Tiered {
            seen: RecentIds::new(2_000_000, seen_ttl),
            delivered: RecentIds::new(2_000_000, seen_ttl),
            missing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.negative_ttl)
                .build(),
            dropped: Arc::new(RecentIds::new(1_000_000, seen_ttl)),
            l1,
            l2,
            feed,
            config,
            live,
            promote_tx,
            breaker: Arc::new(breaker::Breaker::default()),
            stop,
            last_poll_ok: AtomicU64::new(0),
            repairs: repair::Repairs::default(),
            started: Instant::now(),
            stats: Arc::new(TieredStats::default()),
            single,
            unsettled: Arc::default(),
            warmed_at: std::sync::atomic::AtomicI64::new(0),
            routes_base,
        });
        let cursor = if single {
            // Nothing to warm or recover: queries go straight to the one store (see
            // `query`), which answers everything it holds, whatever its window says.
            0
        } else {
            repair::recover(&t.l1).await?;
            warm::warm_up(&t).await?
        };
        tokio::spawn(promote::promoter(
            t.l1.clone(),
            promote_rx,
            t.stats.clone(),
            t.dropped.clone(),
        ));
        tokio::spawn(repair::run(Arc::downgrade(&t), t.stop.subscribe()));
        tokio::spawn(stats::keep_routes(Arc::downgrade(&t), t.stop.subscribe()));
        if let Some(n) = t.feed.as_ref().and_then(|f| f.notifications()) {
            tokio::spawn(breaker::watch_listener(
                Arc::downgrade(&t.breaker),
                n.lost.clone(),
                t.stop.subscribe(),
            ));
            tokio::spawn(relay_ephemeral(
                Arc::downgrade(&t),
                n.ephemeral.subscribe(),
                t.stop.subscribe(),
            ));
        }
        if let Some(feed) = t.feed.clone() {
            tokio::spawn(breaker::probe(
                t.breaker.clone(),
                feed.clone(),
                t.stop.subscribe(),
            ));
        }
        if let Some(outbox) = t.config.outbox.clone() {
            tokio::spawn(degraded::replay(
                Arc::downgrade(&t),
                outbox,
                t.stop.subscribe(),
            ));
        }
        if let Some(feed) = t.feed.clone() {
            tokio::spawn(poller::run(
                Arc::downgrade(&t),
                feed,
                cursor,
                t.stop.subscribe(),
            ));
        }
        Ok(t)
    }

    /// Live events: everything newly stored on this node or brought in by its poller,
    /// and ephemeral events. A receiver that falls behind gets `Lagged`, which the
    /// relay must turn into a visible `CLOSED`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> &TieredStats {
        &self.stats
    }

    /// The L1 store.
    pub fn l1(&self) -> &Arc<RedbStore> {
        &self.l1
    }

    /// True when one unbounded store is both tiers (`start_single`).
    pub fn single(&self) -> bool {
        self.single
    }

    /// The circuit breaker in front of a shared L2.
    pub fn breaker(&self) -> &breaker::Breaker {
        &self.breaker
    }

    /// The outbox, when writes may outlive an L2 outage.
    pub fn outbox(&self) -> Option<&Arc<layer1::Outbox>> {
        self.config.outbox.as_ref()
    }

    /// True while a shared L2 is unreachable and this node answers from L1 alone.
    pub fn degraded(&self) -> bool {
        self.feed.is_some() && self.breaker.is_open()
    }

    /// Is the window trusted: no poller needed (single node), or a poll succeeded
    /// within the look-back?
    pub fn window_trusted(&self) -> bool {
        if self.repairs.outstanding() {
            return false;
        }
        if self.feed.is_none() {
            return true;
        }
        let last = self.last_poll_ok.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let limit = (self.config.lookback() + self.config.poll_frequency).as_millis() as u64;
        now.saturating_sub(last) <= limit
    }

    /// Stops the poller and promoter.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Sends `e` to this node's live subscribers unless it already went out. Returns
    /// whether it was sent now.
    fn broadcast(&self, e: &Event) -> bool {
        self.broadcast_with(e.id(), || e.clone())
    }

    /// [`Self::broadcast`] of an event the caller gives up (no copy is made).
    fn broadcast_owned(&self, e: Event) -> bool {
        self.broadcast_with(e.id(), || e)
    }

    fn broadcast_with(&self, id: EventId, event: impl FnOnce() -> Event) -> bool {
        if !self.delivered.claim(id) {
            return false;
        }
        // No receivers is not an error: nobody is listening right now.
        let _ = self.live.send(Arc::new(event()));
        true
    }

    /// Queues L2's answer (and what it proved) for promotion into L1, never blocking
    /// the query. A promotion dropped on a full queue lowers no floor either.
    fn promote(&self, events: &[Event], learn: Option<layer1::Learn>) {
        if events.is_empty() && learn.is_none() {
            return;
        }
        let p = Promotion {
            events: events.to_vec(),
            learn,
            done: None,
        };
        if self.promote_tx.try_send(p).is_err() {
            self.stats
                .promotions_dropped
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
    }

    /// Remembers the version a replacement dropped (see `dropped`).
    fn note_dropped(&self, o: &SaveOutcome) {
        if let SaveOutcome::Replaced { old } = o {
            self.dropped.insert(*old);
        }
    }

    /// Waits until every promotion queued before this call has reached L1 (for tests
    /// and benchmarks that need a deterministic L1).
    pub async fn settle(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = Promotion {
            events: Vec::new(),
            learn: None,
            done: Some(tx),
        };
        if self.promote_tx.send(p).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// [`EventStore::save`] up to the store's decision, which is final and durable once
    /// this returns. With it, for an event accepted into L2 but not yet in L1, comes a
    /// [`Landing`] to hand to [`Self::land`]; the caller may answer the publisher first
    /// (the relay does: the `OK` does not wait on L1's commit as well). Until it has
    /// landed, reads it would match wait for it, and live subscribers have not had it
    /// (`unsettled.rs`).
    pub async fn decide(
        &self,
        event: &Event,
    ) -> Result<(SaveOutcome, Option<Landing>), StoreError> {
        if self.single {
            let outcome = self.l1.save(event).await?;
            match outcome {
                // One store as both tiers has one path to live subscribers (no poller)
                // and calls an event new once: nothing to de-duplicate, no id to keep.
                SaveOutcome::Stored | SaveOutcome::Replaced { .. } => {
                    let _ = self.live.send(Arc::new(event.clone()));
                }
                // Never stored, so the same one may come again: sent once.
                SaveOutcome::Ephemeral => {
                    self.broadcast(event);
                }
                _ => {}
            }
            return Ok((outcome, None));
        }
        // L2 is the arbiter of duplicates, replacement and deletion; while it cannot
        // be reached, the outbox takes the write (`degraded.rs`).
        let started = Instant::now();
        let saved = self.l2_call(self.l2.save(event)).await;
        self.stats
            .latency
            .l2_write
            .observe(crate::latency::since(started));
        let outcome = match saved {
            Ok(o) => o,
            Err(e @ StoreError::Unavailable(_)) => {
                return Ok((self.save_degraded(event, e).await?, None));
            }
            Err(e) => return Err(e),
        };
        match &outcome {
            SaveOutcome::Stored | SaveOutcome::Replaced { .. } => {
                self.note_dropped(&outcome);
                // Back in L2 after a removal (a purged or banned event sent again).
                self.dropped.remove(&event.id());
                self.missing.invalidate(&event.id());
                let landing = self.unsettled.enter(Arc::new(event.clone()));
                // A new version or a deletion takes something out of L1, and a read
                // waits only for landing events its filters match, which what they
                // take out may not be: they land before the answer, so no read after
                // it finds what they removed. Only plain events are answered first.
                // Nor while L1's writer is behind (`unsettled::MAX_UNSETTLED`).
                let plain = event.address().is_none() && event.kind() != Kind::DELETION;
                let behind = self.unsettled.len() > unsettled::MAX_UNSETTLED;
                if outcome != SaveOutcome::Stored || !plain || behind {
                    self.land(event, landing).await;
                    return Ok((outcome, None));
                }
                return Ok((outcome, Some(landing)));
            }
            SaveOutcome::Ephemeral => {
                self.broadcast(event);
            }
            _ => {}
        }
        Ok((outcome, None))
    }

    /// The rest of saving an event L2 accepted ([`Self::decide`]): into L1, then to live
    /// subscribers (who may ask L1 about it as soon as they have it).
    pub async fn land(&self, event: &Event, landing: Landing) {
        // Marked seen only once L1 holds it. A poll meanwhile skips it (it is still
        // landing) but persists its cursor only once it has landed: were the cursor
        // committed in L1 before this mirror, a crash between the two would leave L1
        // without the event and the cursor past it, for good (`poller.rs`). Failed,
        // it is left to `repairs` and to the poller's next full look-back; dropped
        // before it got here (a cancelled task), to the poller, which hands it to
        // `repairs` before it persists its cursor.
        let refused = match self.mirror(event).await {
            Some(o) => {
                self.seen.insert(event.id());
                matches!(o, SaveOutcome::Rejected(_))
            }
            None => false,
        };
        landing.landed();
        // L1 refuses what a later deletion, ban or version (landed first, or brought
        // by the poller) took away since L2 accepted it: not delivered, as the poller
        // would not deliver it either.
        if !refused {
            self.broadcast(event);
        }
    }

    /// Queues for repair the events whose landing was given up before L1's write was
    /// tried (`unsettled.rs`): the repairs write them into L1, and L1's window is not
    /// trusted meanwhile. The poller calls this before it persists its cursor, and the
    /// repair task once a second.
    fn repair_abandoned(&self) {
        for e in self.unsettled.take_abandoned() {
            tracing::warn!(id = %e.id(), "an accepted event's L1 write was abandoned; repairing");
            self.repairs.push((*e).clone(), &self.l1);
        }
    }

    /// Mirrors into L1 what L2 accepted. An L1 failure is logged and counted, not
    /// reported: the event is durable in L2. It is queued for repair, and the window is
    /// not trusted until the repair lands (see `repair.rs`).
    async fn mirror(&self, e: &Event) -> Option<SaveOutcome> {
        let started = Instant::now();
        let saved = self.l1.save(e).await;
        self.stats
            .latency
            .l1_write
            .observe(crate::latency::since(started));
        match saved {
            Ok(o) => Some(o),
            Err(err) => {
                self.stats.l1_write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %e.id(), error = %err, "L1 write failed after L2 accepted");
                self.repairs.push(e.clone(), &self.l1);
                None
            }
        }
    }
}

/// Delivers ephemeral events other nodes relayed through L2 (this node's own come back
/// too; the delivered-set drops them).
async fn relay_ephemeral(
    tiered: std::sync::Weak<Tiered>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let e = tokio::select! {
            e = rx.recv() => e,
            _ = stop.changed() => return,
        };
        match e {
            Ok(e) => match tiered.upgrade() {
                Some(t) => {
                    t.broadcast(&e);
                }
                None => return,
            },
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "relayed ephemeral events dropped: node too busy"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl EventStore for Tiered {
    async fn save(&self, event: &Event) -> Result<SaveOutcome, StoreError> {
        let (outcome, landing) = self.decide(event).await?;
        if let Some(landing) = landing {
            self.land(event, landing).await;
        }
        Ok(outcome)
    }

    async fn query(&self, filters: &[Filter]) -> Result<Vec<Event>, StoreError> {
        if self.single {
            for f in filters {
                self.stats.routed(Shape::of(f), true);
            }
            return self.l1.query(filters).await;
        }
        // After what was answered and still lands in L1, if the read would match it
        // (`unsettled.rs`). A landing that takes longer than an L1 write ever should
        // sends the read to L2, which holds the event already.
        let landed = self
            .unsettled
            .wait_for(filters, unsettled::LANDING_WAIT)
            .await;
        let mut out = Vec::new();
        for f in filters {
            let r = if landed {
                self.query_one(f).await
            } else {
                self.stats.routed(Shape::of(f), false);
                self.ask_l2(f, None).await
            };
            out.extend(self.or_degraded(f, r).await?);
        }
        eventstore::sort_canonical(&mut out);
        Ok(out)
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64, StoreError> {
        if self.single {
            return self.l1.count(filters).await;
        }
        // NIP-45 counts are answered by the authority.
        self.stats.l2_queries.fetch_add(1, Ordering::Relaxed);
        let r = self.l2_call(self.l2.count(filters)).await;
        self.count_degraded(filters, r).await
    }

    async fn delete(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        if self.single {
            return self.l1.delete(ids).await;
        }
        // The authors, for L1's (id, author) tombstones: written even where L1 does not
        // hold the event, so a promotion still queued cannot bring it back.
        let held = self
            .l2_call(self.l2.query(&[Filter {
                ids: Some(ids.iter().copied().collect()),
                ..Filter::default()
            }]))
            .await?;
        let n = self.l2_call(self.l2.delete(ids)).await?;
        let pairs: Vec<_> = held.iter().map(|e| (e.id(), e.pubkey())).collect();
        let applied = match self.l1.tombstone(&pairs).await {
            Ok(_) => self.l1.delete(ids).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            self.stats.l1_write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "L1 delete failed; the poller's tombstones will repeat it");
        }
        Ok(n)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            change_feed: false,
            persistent: true,
            bounded: false,
        }
    }

    async fn rulings_since(&self, version: u64) -> Result<Option<Rulings>, StoreError> {
        self.rulings_from_l2(version).await
    }

    async fn rule(&self, change: &Change) -> Result<Ruled, StoreError> {
        self.rule_in_l2(change).await
    }

    async fn purge(&self, what: &Purge, max: usize) -> Result<Vec<EventId>, StoreError> {
        self.purge_in_l2(what, max).await
    }

    /// L2 is the authority on what each author has (a single node's one store: L1).
    async fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<eventstore::Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<eventstore::PublicKey>, StoreError> {
        if self.single {
            self.l1.authors_over(kinds, keep, max).await
        } else {
            self.l2_call(self.l2.authors_over(kinds, keep, max)).await
        }
    }
}
