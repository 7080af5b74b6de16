//! The operator's rulings in PostgreSQL (`eventstore::moderation`), shared by every node.
//!
//! Bans against concurrent writes on any node, by the same argument as NIP-09 deletions
//! (`write.rs`): a ban commits first, then removes what it names; every write batch,
//! after its commit, removes its own new events that a ban names. Whichever of the two
//! commits second sees the other's work, so a banned author's event never stays. The
//! removals go into the `removed` log, which every node's poller follows, so each L1
//! forgets them too; no tombstone is written, so lifting a ban lets them in again.

use std::time::Duration;

use eventstore::{Change, EventId, Ruled, Ruling, Rulings, StoreError};
use sqlx::{PgPool, Row};

use crate::error::db;
use crate::store::bounded;

/// Events one statement of a purge removes at most, so that banning a prolific author
/// never holds long locks on `events` (the ban, committed first, keeps new ones out).
const PURGE_BATCH: i64 = 5_000;

/// Every ruling, unless still at `version`.
pub(crate) async fn since(pool: &PgPool, version: u64) -> Result<Option<Rulings>, StoreError> {
    let now: i64 = sqlx::query_scalar("SELECT version FROM rulings_version")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let now = now as u64;
    if now == version {
        return Ok(None);
    }
    // Read after the version: these entries are at least as new as it, and a change
    // committed in between bumps the version again, so the next call reloads.
    let rows = sqlx::query("SELECT list, subject, note FROM rulings")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    let mut out = Rulings {
        version: now,
        ..Rulings::default()
    };
    for r in rows {
        let list: i16 = r.try_get("list").map_err(db)?;
        let subject: Vec<u8> = r.try_get("subject").map_err(db)?;
        match u8::try_from(list)
            .ok()
            .and_then(|l| Ruling::decode(l, &subject))
        {
            Some(ruling) => {
                out.entries.insert(ruling, r.try_get("note").map_err(db)?);
            }
            // Written by a newer version of this software: not ours to enforce.
            None => tracing::warn!(list, "unknown ruling in the database; ignored"),
        }
    }
    Ok(Some(out))
}

/// Records `change`; a ban then removes the events it names (see the module notes).
/// The change and each statement of the purge are bounded by `limit`.
pub(crate) async fn rule(
    pool: &PgPool,
    change: &Change,
    limit: Duration,
) -> Result<Ruled, StoreError> {
    let version = bounded(limit, record(pool, change)).await?;
    let removed = match change {
        Change::Add(e) => match e.ruling {
            Ruling::BanPubkey(pk) => purge(pool, "pubkey", &pk.0, limit).await?,
            Ruling::BanEvent(id) => purge(pool, "id", &id.0, limit).await?,
            _ => Vec::new(),
        },
        Change::Remove(_) => Vec::new(),
    };
    Ok(Ruled { version, removed })
}

/// Records `change` in one transaction; returns the new version.
async fn record(pool: &PgPool, change: &Change) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let version: i64 =
        sqlx::query_scalar("UPDATE rulings_version SET version = version + 1 RETURNING version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    let remove = |r: Ruling| {
        let (list, subject) = r.encode();
        sqlx::query("DELETE FROM rulings WHERE list = $1 AND subject = $2")
            .bind(i16::from(list))
            .bind(subject)
    };
    match change {
        Change::Add(e) => {
            if let Some(o) = e.ruling.opposite() {
                remove(o).execute(&mut *tx).await.map_err(db)?;
            }
            let (list, subject) = e.ruling.encode();
            sqlx::query(
                "INSERT INTO rulings (list, subject, note) VALUES ($1, $2, $3) \
                 ON CONFLICT (list, subject) DO UPDATE SET note = EXCLUDED.note",
            )
            .bind(i16::from(list))
            .bind(subject)
            .bind(&e.note)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        Change::Remove(r) => {
            remove(*r).execute(&mut *tx).await.map_err(db)?;
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(version as u64)
}

/// Removes the events whose `column` is `value`, a batch per statement, into the
/// `removed` log. Returns their ids.
async fn purge(
    pool: &PgPool,
    column: &'static str,
    value: &[u8],
    limit: Duration,
) -> Result<Vec<EventId>, StoreError> {
    let sql = format!(
        "WITH gone AS (DELETE FROM events WHERE id IN \
           (SELECT id FROM events WHERE {column} = $1 LIMIT $2) RETURNING id) \
         INSERT INTO removed (id) SELECT id FROM gone RETURNING id"
    );
    let mut out = Vec::new();
    loop {
        let batch = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(value)
            .bind(PURGE_BATCH)
            .fetch_all(pool);
        let ids: Vec<Vec<u8>> = bounded(limit, async { batch.await.map_err(db) }).await?;
        let n = ids.len() as i64;
        out.extend(
            ids.into_iter()
                .filter_map(|v| <[u8; 32]>::try_from(v).ok().map(EventId)),
        );
        if n < PURGE_BATCH {
            return Ok(out);
        }
    }
}
