//! Purges and cluster maintenance: what the operator's retention rules, NIP-40 expiry
//! and `delete --filter` remove, and the pruning of the `removed` log.
//!
//! A purge removes events without a tombstone and records each id in `removed`, the
//! log every node's poller follows, so every L1 forgets them within a poll. Each step is
//! one statement over at most `max` rows (row locks only, never long), and callers
//! repeat it, so retention never starves writers.
//!
//! Election: a node runs maintenance only while it holds a session advisory lock (so
//! two runs never overlap; a node that dies releases it with its connection, and any
//! other node takes over) and only when the shared `last_run` is at least the interval
//! old (so the nodes together run it once per interval, not once each).

use std::time::Duration;

use eventstore::{EventId, Filter, Purge, StoreError, Timestamp};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder};

use crate::error::db;
use crate::keys::ts;

/// The advisory lock key of the maintenance run ("layer2-m").
const LOCK: i64 = 0x6c61_7965_7232_2d6d;

fn ids_of(rows: Vec<Vec<u8>>) -> Vec<EventId> {
    rows.into_iter()
        .filter_map(|v| <[u8; 32]>::try_from(v).ok().map(EventId))
        .collect()
}

/// One step of a purge: up to `max` events removed into the `removed` log.
pub(crate) async fn step(
    pool: &PgPool,
    what: &Purge,
    max: usize,
) -> Result<Vec<EventId>, StoreError> {
    let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("WITH gone AS (DELETE FROM events WHERE id IN (");
    match what {
        Purge::Matching(f) => {
            if f.is_empty_result() {
                return Ok(Vec::new());
            }
            let f = Filter {
                limit: Some(max as usize),
                ..f.clone()
            };
            crate::query::push_select(&mut qb, &f, Timestamp::now(), "e.id");
        }
        Purge::ExpiredBy(t) => {
            // The partial index on expiration finds them.
            qb.push("SELECT id FROM events WHERE expiration IS NOT NULL AND expiration <= ");
            qb.push_bind(ts(*t));
            qb.push(" LIMIT ");
            qb.push_bind(max);
        }
        _ => return Err(StoreError::Unsupported("this kind of purge")),
    }
    qb.push(") RETURNING id) INSERT INTO removed (id) SELECT id FROM gone RETURNING id");
    let rows: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(pool).await.map_err(db)?;
    Ok(ids_of(rows))
}

/// Up to `max` authors with more than `keep` events of `kinds` (any: `None`): one pass
/// over the pubkey index (`events_pubkey`, or `events_pubkey_kind` with kinds), once per
/// maintenance run and rule.
pub(crate) async fn authors_over(
    pool: &PgPool,
    kinds: Option<&std::collections::BTreeSet<eventstore::Kind>>,
    keep: u64,
    max: usize,
) -> Result<Vec<eventstore::PublicKey>, StoreError> {
    let kinds: Option<Vec<i32>> = kinds.map(|k| k.iter().map(|k| i32::from(k.0)).collect());
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT pubkey FROM events WHERE ($1::integer[] IS NULL OR kind = ANY($1)) \
         GROUP BY pubkey HAVING count(*) > $2 LIMIT $3",
    )
    .bind(kinds)
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .filter_map(|v| <[u8; 32]>::try_from(v).ok().map(eventstore::PublicKey))
        .collect())
}

/// Removes up to `max` rows of the `removed` log older than `horizon`, and records the
/// horizon for starting nodes to compare their cursor with. Returns how many went.
pub(crate) async fn prune_removed(
    pool: &PgPool,
    horizon: Duration,
    max: usize,
) -> Result<u64, StoreError> {
    let us = i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX);
    // Recorded first: a node starting while rows go must already see the horizon.
    sqlx::query("UPDATE maintenance SET log_horizon_us = least(coalesce(log_horizon_us, $1), $1)")
        .bind(us)
        .execute(pool)
        .await
        .map_err(db)?;
    let n = sqlx::query(
        "DELETE FROM removed WHERE ctid = ANY(ARRAY(\
           SELECT ctid FROM removed \
           WHERE inserted_at < clock_timestamp() - $1 * interval '1 microsecond' \
           ORDER BY inserted_at, seq LIMIT $2))",
    )
    .bind(us)
    .bind(i64::try_from(max.max(1)).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(n)
}

/// The shortest horizon any pruner has used (`None`: the log was never pruned).
pub(crate) async fn log_horizon(pool: &PgPool) -> Result<Option<Duration>, StoreError> {
    let us: Option<i64> = sqlx::query_scalar("SELECT log_horizon_us FROM maintenance")
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .flatten();
    Ok(us.map(|u| Duration::from_micros(u.max(0) as u64)))
}

/// Whether a change-feed reader may resume from `from` (database microseconds), its
/// copy having been built from the feed since `warmed`: no wipe after `warmed`, and
/// `from` well inside the removal log's horizon. Half the horizon is the margin for
/// what a pruner may remove while the reader catches up.
pub(crate) async fn resumable(pool: &PgPool, from: i64, warmed: i64) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT (reset_at_us IS NULL OR $2 >= reset_at_us) AND (log_horizon_us IS NULL OR \
           $1 > (extract(epoch from clock_timestamp()) * 1000000)::int8 - log_horizon_us / 2) \
         FROM maintenance",
    )
    .bind(from)
    .bind(warmed)
    .fetch_optional(pool)
    .await
    .map_err(db)
    .map(|r| r.unwrap_or(true))
}

/// This node's turn at cluster maintenance, held until [`Turn::finish`] (or until the
/// connection drops, when the process dies).
#[derive(Debug)]
pub struct Turn {
    conn: PgConnection,
}

/// Takes the turn when no other node holds it and the last run is `every` old.
pub(crate) async fn take_turn(pool: &PgPool, every: Duration) -> Result<Option<Turn>, StoreError> {
    // Detached from the pool: a session lock must leave with its connection, never be
    // handed to the next borrower.
    let mut conn = pool.acquire().await.map_err(db)?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut conn)
        .await
        .map_err(db)?;
    if !locked {
        let _ = conn.close().await;
        return Ok(None);
    }
    let us = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
    let due = sqlx::query(
        "UPDATE maintenance SET last_run = clock_timestamp() \
         WHERE last_run <= clock_timestamp() - $1 * interval '1 microsecond'",
    )
    .bind(us)
    .execute(&mut conn)
    .await
    .map_err(db)?
    .rows_affected()
        > 0;
    let turn = Turn { conn };
    if due {
        Ok(Some(turn))
    } else {
        turn.finish(true).await;
        Ok(None)
    }
}

impl Turn {
    /// Ends the turn: the lock is released with the connection. A run that failed
    /// (`done` false) leaves maintenance due, so the next offer by any node retries.
    pub async fn finish(mut self, done: bool) {
        if !done {
            let again = sqlx::query("UPDATE maintenance SET last_run = 'epoch'")
                .execute(&mut self.conn)
                .await;
            if let Err(e) = again {
                tracing::warn!(error = %e, "a failed maintenance run waits for the next interval");
            }
        }
        // Unlocked explicitly first: closing the session releases its advisory locks
        // too, but only once the server has seen the connection go, a moment after
        // `close` returns, and another node's offer right after would still find the
        // turn held. Should the unlock fail, the close still releases it.
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK)
            .execute(&mut self.conn)
            .await;
        if let Err(e) = unlocked {
            tracing::debug!(error = %e, "maintenance lock left to the connection's close");
        }
        let _ = self.conn.close().await;
    }
}
