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
    // Page on (inserted_at, seq): strictly after the last row seen.
    let mut after = (from, -1i64);
    loop {
        let sql = format!(
            "SELECT json, (extract(epoch from inserted_at) * 1000000)::int8 AS at, seq FROM events \
             WHERE (inserted_at, seq) > ({EPOCH_PLUS}, $2) ORDER BY inserted_at, seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.0)
            .bind(after.1)
            .bind(page)
            .fetch_all(pool)
            .await
            .map_err(db)?;
        let n = rows.len() as i64;
        for r in rows {
            let json: String = r.try_get("json").map_err(db)?;
            after = (r.try_get("at").map_err(db)?, r.try_get("seq").map_err(db)?);
            match Event::from_stored_json(&json) {
                Ok(e) => out.events.push(e),
                // One bad row must not stop every poller for good.
                Err(e) => {
                    out.corrupt += 1;
                    tracing::error!(error = %e, seq = after.1, "undecodable event in the feed; skipped");
                }
            }
        }
        if n < page {
            break;
        }
    }
    let mut after = (from, -1i64);
    loop {
        let sql = format!(
            "SELECT id, pubkey, (extract(epoch from inserted_at) * 1000000)::int8 AS at, seq \
             FROM deleted_ids WHERE (inserted_at, seq) > ({EPOCH_PLUS}, $2) \
             ORDER BY inserted_at, seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.0)
            .bind(after.1)
            .bind(page)
            .fetch_all(pool)
            .await
            .map_err(db)?;
        let n = rows.len() as i64;
        for r in rows {
            let id: Vec<u8> = r.try_get("id").map_err(db)?;
            let pk: Vec<u8> = r.try_get("pubkey").map_err(db)?;
            after = (r.try_get("at").map_err(db)?, r.try_get("seq").map_err(db)?);
            if let (Ok(id), Ok(pk)) = (<[u8; 32]>::try_from(id), <[u8; 32]>::try_from(pk)) {
                out.deleted.push((EventId(id), PublicKey(pk)));
            }
        }
        if n < page {
            break;
        }
    }
    let mut after = (from, -1i64);
    loop {
        let sql = format!(
            "SELECT id, (extract(epoch from inserted_at) * 1000000)::int8 AS at, seq \
             FROM removed WHERE (inserted_at, seq) > ({EPOCH_PLUS}, $2) \
             ORDER BY inserted_at, seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.0)
            .bind(after.1)
            .bind(page)
            .fetch_all(pool)
            .await
            .map_err(db)?;
        let n = rows.len() as i64;
        for r in rows {
            let id: Vec<u8> = r.try_get("id").map_err(db)?;
            after = (r.try_get("at").map_err(db)?, r.try_get("seq").map_err(db)?);
            if let Ok(id) = <[u8; 32]>::try_from(id) {
                out.removed.push(EventId(id));
            }
        }
        if n < page {
            break;
        }
    }
    Ok(out)
}
