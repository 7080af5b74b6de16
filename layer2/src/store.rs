//! `PgStore`: the shared L2. Saves are grouped by writer tasks into multi-row
//! transactions; queries go straight to the pool.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventstore::{
    Capabilities, Change, Event, EventId, EventStore, Filter, Purge, Ruled, Rulings, SaveOutcome,
    StoreError,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::db;
use crate::feed::{DbMicros, FeedPositions, Page};

/// Configuration of a [`PgStore`], with documented defaults.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:pass@host:port/db`.
    pub url: String,
    /// Pool size. Default 8: on a small machine, client and server share the cores,
    /// and more connections add no read throughput.
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the store unavailable.
    /// Default 5 s.
    pub acquire_timeout: Duration,
    /// Most events in one write transaction. Default 500.
    pub batch_max: usize,
    /// Concurrent write transactions for events with an address or deleting something.
    /// Plain events have one writer of their own besides (`plain.rs`). Default 4.
    pub writers: usize,
    /// Bound of the write queue; a full queue makes savers wait. Default 8,192.
    pub queue: usize,
    /// How long an open write transaction may hold the change feed's horizon back
    /// (see [`PgStore::feed_horizon`]). Each poll re-reads (ids only) what lies past
    /// the horizon, so this also bounds that work. Default 30 s.
    pub feed_max_holdback: Duration,
    /// The longest any one call (a write batch, a query, a feed read) may wait for the
    /// database before it fails as unavailable. A database that is paused or cut off
    /// by the network answers nothing and closes nothing; without this bound a call
    /// would wait for the kernel to give up on the connection (minutes). Default 10 s.
    pub call_timeout: Duration,
    /// The `application_name` of every connection (`pg_stat_activity` shows it).
    /// Default `layer2-relay`.
    pub application_name: String,
}

impl PgConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            batch_max: 500,
            writers: 4,
            queue: 8_192,
            feed_max_holdback: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            application_name: "layer2-relay".into(),
        }
    }
}

struct SaveReq {
    event: Event,
    reply: oneshot::Sender<Result<SaveOutcome, StoreError>>,
}

/// `f`, failing as unavailable when the database has not answered within `limit`. The
/// future is dropped then, and with it its connection: an open transaction rolls back
/// (one cut off during its commit may still have committed: writes are idempotent, and
/// the outbox's replay finds it a duplicate).
pub(crate) async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(
            format!("PostgreSQL did not answer within {limit:?}").into(),
        )),
    }
}

/// The PostgreSQL event store.
pub struct PgStore {
    pool: PgPool,
    /// One connection of its own for [`PgStore::ping`], so that a check of the database
    /// never waits behind the calls that made someone ask.
    ping_pool: PgPool,
    /// The write queue of events with an address or deleting something.
    tx: mpsc::Sender<SaveReq>,
    /// The write queue of plain events (`plain.rs`): a lane of their own, so their
    /// batches stay whole and commit in one statement, never waiting behind the
    /// general path's transaction. Writers of the two lanes are concurrent writers like
    /// any others (those of other nodes): replacement and deletion stay exact between
    /// them (see `write.rs`).
    plain_tx: mpsc::Sender<SaveReq>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    config: PgConfig,
    notifications: std::sync::OnceLock<crate::notify::Notifications>,
    /// Woken by the writers after a commit that changed something (see `notify.rs`).
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("max_connections", &self.config.max_connections)
            .finish()
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl PgStore {
    /// Connects, applies migrations (safe when several nodes start at once: sqlx
    /// holds an advisory lock while migrating) and starts the writer tasks.
    pub async fn connect(config: PgConfig) -> Result<PgStore, StoreError> {
        let options = config
            .url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(db)?
            .application_name(&config.application_name);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let ping_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        let (tx, rx) = mpsc::channel(config.queue);
        let (plain_tx, plain_rx) = mpsc::channel(config.queue);
        let changed = Arc::new(tokio::sync::Notify::new());
        // Every writer keeps a connection only while the pool has one left over for
        // everything else (queries, the poller) when each holds one.
        let keep = config.max_connections as usize > config.writers.max(1) + 1;
        let spawn = |rx: &Arc<Mutex<mpsc::Receiver<SaveReq>>>| {
            tokio::spawn(writer(
                pool.clone(),
                rx.clone(),
                config.batch_max.max(1),
                changed.clone(),
                config.call_timeout,
                keep,
            ))
        };
        let rx = Arc::new(Mutex::new(rx));
        let mut writers: Vec<_> = (0..config.writers.max(1)).map(|_| spawn(&rx)).collect();
        writers.push(spawn(&Arc::new(Mutex::new(plain_rx))));
        tokio::spawn(crate::notify::announce_changes(
            pool.clone(),
            changed.clone(),
        ));
        Ok(PgStore {
            pool,
            ping_pool,
            tx,
            plain_tx,
            writers,
            config,
            notifications: std::sync::OnceLock::new(),
            changed,
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database clock now, in microseconds since the epoch.
    pub async fn db_now(&self) -> Result<DbMicros, StoreError> {
        bounded(self.config.call_timeout, crate::feed::db_now(&self.pool)).await
    }

    /// Asks the database's clock on a connection of its own (not the pool's): whether
    /// the database answers at all, however busy the pool is.
    pub async fn ping(&self) -> Result<DbMicros, StoreError> {
        bounded(
            self.config.call_timeout,
            crate::feed::db_now(&self.ping_pool),
        )
        .await
    }

    /// One page of the change feed after `from`, at most `limit` rows per log. Start a
    /// poll with [`FeedPositions::start`], continue with each page's `next` until a page
    /// is `complete`.
    pub async fn changes(&self, from: FeedPositions, limit: usize) -> Result<Page, StoreError> {
        self.changes_except(from, limit, &|_| false).await
    }

    /// [`PgStore::changes`], without fetching the events `known` says the reader has:
    /// a poll's look-back re-reads mostly known rows, and fetching only their ids keeps
    /// that cheap.
    pub async fn changes_except(
        &self,
        from: FeedPositions,
        limit: usize,
        known: &(dyn Fn(&EventId) -> bool + Sync + '_),
    ) -> Result<Page, StoreError> {
        let page = crate::feed::page(&self.pool, from, limit, known);
        bounded(self.config.call_timeout, page).await
    }

    /// The LISTEN/NOTIFY fast path (see `notify.rs`); the listener starts on first use.
    pub fn notifications(&self) -> crate::notify::Notifications {
        self.notifications
            .get_or_init(|| crate::notify::spawn_listener(self.pool.clone()))
            .clone()
    }

    /// Where a change-feed reader may safely resume next time: the database clock held
    /// back to the oldest open write transaction (see `feed::horizon`).
    pub async fn feed_horizon(&self) -> Result<DbMicros, StoreError> {
        self.feed_horizon_and_clock().await.map(|(h, _)| h)
    }

    /// [`PgStore::feed_horizon`], and the database clock when it was read.
    pub async fn feed_horizon_and_clock(&self) -> Result<(DbMicros, DbMicros), StoreError> {
        let cap = i64::try_from(self.config.feed_max_holdback.as_micros()).unwrap_or(i64::MAX);
        bounded(
            self.config.call_timeout,
            crate::feed::horizon(&self.pool, cap),
        )
        .await
    }

    /// Removes up to `max` rows of the `removed` log older than `horizon` (see
    /// `purge.rs`); returns how many went. Callers repeat it until fewer come back.
    pub async fn prune_removed(&self, horizon: Duration, max: usize) -> Result<u64, StoreError> {
        let q = crate::purge::prune_removed(&self.pool, horizon, max);
        bounded(self.config.call_timeout, q).await
    }

    /// The shortest horizon the `removed` log has been pruned to (`None`: never pruned).
    pub async fn log_horizon(&self) -> Result<Option<Duration>, StoreError> {
        bounded(
            self.config.call_timeout,
            crate::purge::log_horizon(&self.pool),
        )
        .await
    }

    /// Whether a change-feed reader may resume from `from`, its copy built from the feed
    /// since `warmed`: nothing it needs was pruned, nothing wiped since (`purge.rs`).
    pub async fn resumable(&self, from: DbMicros, warmed: DbMicros) -> Result<bool, StoreError> {
        bounded(
            self.config.call_timeout,
            crate::purge::resumable(&self.pool, from, warmed),
        )
        .await
    }

    /// This node's turn at cluster maintenance: `None` while another node holds it or
    /// when the last run, by any node, is less than `every` old (see `purge.rs`).
    pub async fn maintenance_turn(
        &self,
        every: Duration,
    ) -> Result<Option<crate::purge::Turn>, StoreError> {
        let q = crate::purge::take_turn(&self.pool, every);
        bounded(self.config.call_timeout, q).await
    }

    /// Every inconsistency between the tables and the events' JSON (see `admin.rs`);
    /// empty when none. Reads every event: not bounded by `call_timeout`.
    pub async fn check(&self) -> Result<Vec<crate::admin::Finding>, StoreError> {
        crate::admin::check(&self.pool).await
    }

    /// Figures for the `stats` command (events by kind, bytes, time range, log sizes).
    pub async fn figures(&self) -> Result<serde_json::Value, StoreError> {
        crate::admin::stats(&self.pool).await
    }

    /// Client sessions on this database other than `layer2-admin` ones (running
    /// nodes, other tools).
    pub async fn other_sessions(&self) -> Result<u64, StoreError> {
        crate::admin::other_sessions(&self.pool).await
    }

    /// Removes every event, tombstone and log row of the cluster (the rulings stay);
    /// every node starting afterwards empties its L1. Returns how many events went.
    pub async fn wipe(&self) -> Result<u64, StoreError> {
        crate::admin::wipe(&self.pool).await
    }

    /// Operator removal: deletes and tombstones `ids`; returns how many were stored.
    async fn delete_ids(&self, ids: Vec<Vec<u8>>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let n: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM events WHERE id = ANY($1) RETURNING id, pubkey), \
             t AS (INSERT INTO deleted_ids (id, pubkey) SELECT id, pubkey FROM gone ON CONFLICT DO NOTHING) \
             SELECT count(*) FROM gone",
        )
        .bind(&ids)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n as u64)
    }

    /// Stops the writers once queued saves are done, and closes the pool.
    pub async fn close(self) {
        let PgStore {
            pool,
            ping_pool,
            tx,
            plain_tx,
            writers,
            changed,
            ..
        } = self;
        ping_pool.close().await;
        drop((tx, plain_tx));
        // The writers finish what is queued, then see the closed channel and return.
        for w in writers {
            let _ = w.await;
        }
        pool.close().await;
        // Lets the announcer see the closed pool and end.
        changed.notify_one();
    }
}

/// One writer: takes what is queued (up to `max`) and saves it in one transaction.
async fn writer(
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<SaveReq>>>,
    max: usize,
    changed: Arc<tokio::sync::Notify>,
    limit: Duration,
    keep: bool,
) {
    let mut conn = Held { conn: None, keep };
    loop {
        let mut batch = Vec::new();
        {
            // A connection is kept only while batches follow each other: idle this
            // long, it goes back to the pool (which checks it before handing it out
            // again, and can close: `Pool::close` waits for every connection).
            let idle_until = tokio::time::Instant::now() + HELD_IDLE;
            let mut rx = conn.release_while(idle_until, rx.lock()).await;
            match conn.release_while(idle_until, rx.recv()).await {
                Some(r) => batch.push(r),
                None => return,
            }
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let events: Vec<Event> = batch.iter().map(|r| r.event.clone()).collect();
        match conn.save(&pool, &events, limit).await {
            Ok(outcomes) => {
                if outcomes.iter().any(SaveOutcome::is_new) {
                    changed.notify_one();
                }
                for (r, o) in batch.into_iter().zip(outcomes) {
                    let _ = r.reply.send(Ok(o));
                }
            }
            Err(StoreError::Unavailable(e)) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, n = batch.len(), "L2 unavailable; batch refused");
                for r in batch {
                    let _ = r
                        .reply
                        .send(Err(StoreError::Unavailable(msg.clone().into())));
                }
            }
            Err(e) if batch.len() > 1 => {
                // Isolate the cause (a deadlock, or one event the database refuses):
                // retry each event on its own.
                tracing::warn!(error = %e, n = batch.len(), "L2 batch failed; retrying one by one");
                for r in batch {
                    let one = std::slice::from_ref(&r.event);
                    let res = conn.save(&pool, one, limit).await.map(|mut o| o.remove(0));
                    if res.as_ref().is_ok_and(SaveOutcome::is_new) {
                        changed.notify_one();
                    }
                    let _ = r.reply.send(res);
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(StoreError::Backend(e.to_string().into())));
                }
            }
        }
    }
}

/// A writer's own connection, kept from one batch to the next while batches keep
/// coming. Taking one from the pool for every batch cost two round trips more than the
/// batch's own statements (the pool checks an idle connection with a ping before
/// handing it out, for the transaction and again for the check after it), and a task
/// to hand it back each time: with a closed loop of clients waiting on each batch,
/// every round trip is latency (a batch of ~20 events made ten). Idle for
/// [`HELD_IDLE`] it goes back to the pool, which checks it before its next use; one
/// that failed is closed, not used again.
struct Held {
    /// Whether to keep it: only while the pool has a connection left over for everything
    /// else (queries, the poller) when every writer holds one.
    keep: bool,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// A writer idle this long gives its kept connection back to the pool.
const HELD_IDLE: Duration = Duration::from_millis(500);

impl Held {
    /// Gives the kept connection back to the pool.
    fn release(&mut self) {
        self.conn = None;
    }

    /// Waits for `wait`, giving the kept connection back if it is not done by `until`.
    async fn release_while<T>(
        &mut self,
        until: tokio::time::Instant,
        wait: impl std::future::Future<Output = T>,
    ) -> T {
        let mut wait = std::pin::pin!(wait);
        match tokio::time::timeout_at(until, wait.as_mut()).await {
            Ok(v) => v,
            Err(_) => {
                self.release();
                wait.await
            }
        }
    }

    async fn save(
        &mut self,
        pool: &PgPool,
        events: &[Event],
        limit: Duration,
    ) -> Result<Vec<SaveOutcome>, StoreError> {
        if pool.is_closed() {
            self.release();
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => bounded(limit, async { pool.acquire().await.map_err(db) }).await?,
        };
        match crate::write::save_batch(&mut conn, events, limit).await {
            Ok((outcomes, reusable)) => {
                if !reusable {
                    conn.close_on_drop();
                } else if self.keep {
                    self.conn = Some(conn);
                }
                Ok(outcomes)
            }
            Err(e) => {
                conn.close_on_drop();
                Err(e)
            }
        }
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn save(&self, event: &Event) -> Result<SaveOutcome, StoreError> {
        if event.kind().class() == eventstore::KindClass::Ephemeral {
            // Never stored; relayed to the other nodes when it fits a NOTIFY payload.
            // Failing to relay only narrows who sees it live, which NIP-01 allows.
            if event.json_len() <= crate::notify::MAX_EPHEMERAL {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::notify::EPHEMERAL)
                    .bind(event.as_json())
                    .execute(&self.pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "relaying an ephemeral event failed");
                }
            }
            return Ok(SaveOutcome::Ephemeral);
        }
        let (reply, rx) = oneshot::channel();
        let lane = if crate::plain::is_plain(event) {
            &self.plain_tx
        } else {
            &self.tx
        };
        lane.send(SaveReq {
            event: event.clone(),
            reply,
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn query(&self, filters: &[Filter]) -> Result<Vec<Event>, StoreError> {
        let q = crate::query::query(&self.pool, filters);
        bounded(self.config.call_timeout, q).await
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64, StoreError> {
        let q = crate::query::count(&self.pool, filters);
        bounded(self.config.call_timeout, q).await
    }

    async fn delete(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        let ids: Vec<Vec<u8>> = ids.iter().map(|i| i.0.to_vec()).collect();
        bounded(self.config.call_timeout, self.delete_ids(ids)).await
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            change_feed: true,
            persistent: true,
            bounded: false,
        }
    }

    async fn rulings_since(&self, version: u64) -> Result<Option<Rulings>, StoreError> {
        let q = crate::rulings::since(&self.pool, version);
        bounded(self.config.call_timeout, q).await
    }

    async fn purge(&self, what: &Purge, max: usize) -> Result<Vec<EventId>, StoreError> {
        let ids = bounded(
            self.config.call_timeout,
            crate::purge::step(&self.pool, what, max),
        )
        .await?;
        if !ids.is_empty() {
            // Other nodes' pollers read the removals at once.
            self.changed.notify_one();
        }
        Ok(ids)
    }

    async fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<eventstore::Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<eventstore::PublicKey>, StoreError> {
        // One pass over the pubkey index: on a large table far longer than a request,
        // and off every request path (maintenance only).
        let q = crate::purge::authors_over(&self.pool, kinds, keep, max);
        bounded(self.config.call_timeout * 30, q).await
    }

    async fn rule(&self, change: &Change) -> Result<Ruled, StoreError> {
        let ruled = crate::rulings::rule(&self.pool, change, self.config.call_timeout).await?;
        // Other nodes' pollers read the removals at once, not at their next tick.
        self.changed.notify_one();
        Ok(ruled)
    }
}
