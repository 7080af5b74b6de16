//! The change feed for pollers: what was inserted, deleted or removed after a
//! position, by the database's clock (`clock_timestamp()` at insert), so node clocks
//! never matter.
//!
//! A poll reads from its cursor minus a look-back (to catch transactions that
//! committed late), one bounded page at a time: each of the three logs resumes
//! strictly after the last row it returned, so a node catching up after a long outage
//! never holds more than a page in memory.

use std::time::Duration;

use eventstore::{Event, EventId, PublicKey, StoreError};
use sqlx::{PgPool, Row};

use crate::error::db;

/// Microseconds since the Unix epoch, by the database's clock.
pub type DbMicros = i64;

/// A position in one log: (inserted_at in microseconds, seq); rows strictly after it
/// come next.
pub type LogPosition = (DbMicros, i64);

/// Where a poll has got to in each of the three logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPositions {
    pub events: LogPosition,
    pub deleted: LogPosition,
    pub removed: LogPosition,
}

impl FeedPositions {
    /// The start of a poll: everything inserted from `cursor - lookback` on.
    pub fn start(cursor: DbMicros, lookback: Duration) -> FeedPositions {
        let from = cursor.saturating_sub(i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX));
        FeedPositions {
            events: (from, -1),
            deleted: (from, -1),
            removed: (from, -1),
        }
    }
}

/// One page of changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Events inserted, in insert order. Overlapping reads repeat some: the reader
    /// de-duplicates.
    pub events: Vec<Event>,
    /// When each of `events` was inserted, by the database clock (for delivery lag).
    pub events_at: Vec<DbMicros>,
    /// (id, author) tombstones.
    pub deleted: Vec<(EventId, PublicKey)>,
    /// Ids removed without a tombstone (replaced versions, address deletions): caches
    /// drop them.
    pub removed: Vec<EventId>,
    /// Rows skipped because they could not be decoded.
    pub corrupt: u64,
}

/// A page and where the next one starts; `complete` when every log is exhausted.
#[derive(Debug)]
pub struct Page {
    pub changes: Changes,
    pub next: FeedPositions,
    pub complete: bool,
}

const EPOCH_PLUS: &str = "'epoch'::timestamptz + $1 * interval '1 microsecond'";

/// Up to `limit` rows of `table` strictly after `after`, and the position of the last.
async fn rows_after(
    pool: &PgPool,
    columns: &'static str,
    table: &'static str,
    after: LogPosition,
    limit: i64,
) -> Result<(Vec<sqlx::postgres::PgRow>, LogPosition), StoreError> {
    let sql = format!(
        "SELECT {columns}, (extract(epoch from inserted_at) * 1000000)::int8 AS at, seq \
         FROM {table} WHERE (inserted_at, seq) > ({EPOCH_PLUS}, $2) \
         ORDER BY inserted_at, seq LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    let last = match rows.last() {
        Some(r) => (r.try_get("at").map_err(db)?, r.try_get("seq").map_err(db)?),
        None => after,
    };
    Ok((rows, last))
}

/// The database clock now.
pub(crate) async fn db_now(pool: &PgPool) -> Result<DbMicros, StoreError> {
    sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000000)::int8")
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// The feed's safe horizon, and the database clock it was taken at: the clock, held back to the start of the oldest
/// write transaction still open in this database. Such a transaction's rows are not
/// visible yet, but their `inserted_at` (`clock_timestamp()` at insert) is at or after
/// its start, so a poller that resumes below the horizon finds them once they commit,
/// however late that is. A transaction open longer than `max_holdback` stops holding the
/// horizon back (re-reading ever more rows each poll would cost more than it saves);
/// the look-back then covers what it can. Only client sessions count: autovacuum's
/// long ANALYZE transactions never insert events, and holding the horizon back for them
/// made every poll re-read everything since (the feed bench showed polls so slow that
/// the window stopped being trusted). PostgreSQL shows `xact_start` only for the
/// reader's own role (or with `pg_read_all_stats`): every node must connect as the same
/// role, and other writers to this database need that grant to be seen.
pub(crate) async fn horizon(
    pool: &PgPool,
    max_holdback_us: i64,
) -> Result<(DbMicros, DbMicros), StoreError> {
    let row = sqlx::query(
        "SELECT (extract(epoch from clock_timestamp()) * 1000000)::int8 AS now, \
                (extract(epoch from min(xact_start)) * 1000000)::int8 AS oldest \
         FROM pg_stat_activity \
         WHERE datname = current_database() AND backend_xid IS NOT NULL \
           AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let now: i64 = row.try_get("now").map_err(db)?;
    let oldest: Option<i64> = row.try_get("oldest").map_err(db)?;
    let h = match oldest {
        Some(o) if o < now - max_holdback_us => {
            tracing::warn!(
                open_for_ms = (now - o) / 1_000,
                "a write transaction has been open longer than the feed's hold-back; \
                 its rows may be missed by other nodes' pollers"
            );
            now - max_holdback_us
        }
        Some(o) if o < now => o,
        _ => now,
    };
    Ok((h, now))
}

/// One page: at most `limit` rows from each log, after `from`. Events `known` accepts
/// are skipped (only their ids and positions are read).
pub(crate) async fn page(
    pool: &PgPool,
    from: FeedPositions,
    limit: usize,
    known: &(dyn Fn(&EventId) -> bool + Sync + '_),
) -> Result<Page, StoreError> {
    let limit = i64::try_from(limit.max(1)).unwrap_or(1_000);
    let mut out = Changes::default();
    let (rows, events) = rows_after(pool, "id", "events", from.events, limit).await?;
    let mut complete = (rows.len() as i64) < limit;
    let mut wanted: Vec<Vec<u8>> = Vec::new();
    let mut wanted_at: Vec<DbMicros> = Vec::new();
    for row in rows {
        let id: Vec<u8> = row.try_get("id").map_err(db)?;
        let skip = <[u8; 32]>::try_from(id.as_slice()).is_ok_and(|a| known(&EventId(a)));
        if !skip {
            wanted.push(id);
            wanted_at.push(row.try_get("at").map_err(db)?);
        }
    }
    if !wanted.is_empty() {
        // In insert order; a row deleted since (replaced) is simply gone, and the
        // `removed` log says so.
        let rows = sqlx::query(
            "SELECT e.json, w.n FROM unnest($1::bytea[]) WITH ORDINALITY AS w(id, n) \
             JOIN events e ON e.id = w.id ORDER BY w.n",
        )
        .bind(&wanted)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        for row in rows {
            let json: String = row.try_get("json").map_err(db)?;
            let n: i64 = row.try_get("n").map_err(db)?;
            match Event::from_stored_json(&json) {
                Ok(e) => {
                    out.events.push(e);
                    let at = usize::try_from(n - 1).ok().and_then(|i| wanted_at.get(i));
                    out.events_at.push(at.copied().unwrap_or_default());
                }
                // One bad row must not stop every poller for good.
                Err(e) => {
                    out.corrupt += 1;
                    tracing::error!(error = %e, "undecodable event in the feed; skipped");
                }
            }
        }
    }
    let (rows, deleted) =
        rows_after(pool, "id, pubkey", "deleted_ids", from.deleted, limit).await?;
    complete &= (rows.len() as i64) < limit;
    for row in rows {
        let id: Vec<u8> = row.try_get("id").map_err(db)?;
        let pk: Vec<u8> = row.try_get("pubkey").map_err(db)?;
        if let (Ok(id), Ok(pk)) = (<[u8; 32]>::try_from(id), <[u8; 32]>::try_from(pk)) {
            out.deleted.push((EventId(id), PublicKey(pk)));
        }
    }
    let (rows, removed) = rows_after(pool, "id", "removed", from.removed, limit).await?;
    complete &= (rows.len() as i64) < limit;
    for row in rows {
        let id: Vec<u8> = row.try_get("id").map_err(db)?;
        if let Ok(id) = <[u8; 32]>::try_from(id) {
            out.removed.push(EventId(id));
        }
    }
    Ok(Page {
        changes: out,
        next: FeedPositions {
            events,
            deleted,
            removed,
        },
        complete,
    })
}
