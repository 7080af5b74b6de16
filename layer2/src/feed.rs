//! The change feed for pollers: what was inserted, and what was deleted, after a
//! position, by the database's clock (`clock_timestamp()` at insert), so node clocks
//! never matter.

use std::time::Duration;

use eventstore::{Event, EventId, PublicKey, StoreError};
use sqlx::{PgPool, Row};

use crate::error::db;

/// Microseconds since the Unix epoch, by the database's clock.
pub type DbMicros = i64;

/// One poll's worth of changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Events inserted in the window read, in insert order. Overlapping reads repeat
    /// some: the reader de-duplicates.
    pub events: Vec<Event>,
    /// (id, author) tombstones written in the window read.
    pub deleted: Vec<(EventId, PublicKey)>,
    /// Ids removed without a tombstone (replaced versions, address deletions): caches
    /// drop them.
    pub removed: Vec<EventId>,
    /// Rows skipped because they could not be decoded.
    pub corrupt: u64,
    /// Where the next poll starts (before its look-back): the database clock when this
    /// read began.
    pub next: DbMicros,
}

const EPOCH_PLUS: &str = "'epoch'::timestamptz + $1 * interval '1 microsecond'";

/// Every row of `table` inserted after `from`, read in pages of `page` rows on
/// (inserted_at, seq): each page starts strictly after the last row of the one before.
async fn page_after(
    pool: &PgPool,
    columns: &'static str,
    table: &'static str,
    from: DbMicros,
    page: i64,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    let sql = format!(
        "SELECT {columns}, (extract(epoch from inserted_at) * 1000000)::int8 AS at, seq \
         FROM {table} WHERE (inserted_at, seq) > ({EPOCH_PLUS}, $2) \
         ORDER BY inserted_at, seq LIMIT $3"
    );
    let mut rows = Vec::new();
    let mut after = (from, -1i64);
    loop {
        let batch = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(after.0)
            .bind(after.1)
            .bind(page)
            .fetch_all(pool)
            .await
            .map_err(db)?;
        let n = batch.len() as i64;
        if let Some(last) = batch.last() {
            after = (
                last.try_get("at").map_err(db)?,
                last.try_get("seq").map_err(db)?,
            );
        }
        rows.extend(batch);
        if n < page {
            return Ok(rows);
        }
    }
}

/// The database clock now.
pub(crate) async fn db_now(pool: &PgPool) -> Result<DbMicros, StoreError> {
    sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000000)::int8")
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// Everything inserted from `cursor - lookback` on, paged `page` rows at a time.
pub(crate) async fn changes(
    pool: &PgPool,
    cursor: DbMicros,
    lookback: Duration,
    page: usize,
) -> Result<Changes, StoreError> {
    let next = db_now(pool).await?;
    let from = cursor.saturating_sub(i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX));
    let page = i64::try_from(page.max(1)).unwrap_or(1_000);
    let mut out = Changes {
        next,
        ..Changes::default()
    };
    for row in page_after(pool, "json", "events", from, page).await? {
        let json: String = row.try_get("json").map_err(db)?;
        match Event::from_stored_json(&json) {
            Ok(e) => out.events.push(e),
            // One bad row must not stop every poller for good.
            Err(e) => {
                out.corrupt += 1;
                tracing::error!(error = %e, "undecodable event in the feed; skipped");
            }
        }
    }
    for row in page_after(pool, "id, pubkey", "deleted_ids", from, page).await? {
        let id: Vec<u8> = row.try_get("id").map_err(db)?;
        let pk: Vec<u8> = row.try_get("pubkey").map_err(db)?;
        if let (Ok(id), Ok(pk)) = (<[u8; 32]>::try_from(id), <[u8; 32]>::try_from(pk)) {
            out.deleted.push((EventId(id), PublicKey(pk)));
        }
    }
    for row in page_after(pool, "id", "removed", from, page).await? {
        let id: Vec<u8> = row.try_get("id").map_err(db)?;
        if let Ok(id) = <[u8; 32]>::try_from(id) {
            out.removed.push(EventId(id));
        }
    }
    Ok(out)
}
