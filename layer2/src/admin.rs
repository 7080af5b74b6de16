//! Operator commands on the shared database: a consistency check, figures, and a wipe
//! of the whole cluster's data. None of them runs on a node's request path.

use std::collections::{BTreeMap, BTreeSet};

use eventstore::{Event, Ruling, StoreError};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::db;
use crate::keys::{tag_rows, ts, value_key};

/// One kind of inconsistency and how many rows show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub name: &'static str,
    pub about: &'static str,
    pub count: u64,
}

/// Checks answered by one SQL count each: rows that contradict the rules every write
/// keeps.
const SQL_CHECKS: &[(&str, &str, &str)] = &[
    (
        "tag_time_mismatch",
        "tag rows whose created_at differs from their event's",
        "SELECT count(*) FROM tags t JOIN events e ON e.id = t.event_id \
         WHERE t.created_at <> e.created_at",
    ),
    (
        "orphan_tags",
        "tag rows whose event is not stored",
        "SELECT count(*) FROM tags t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = t.event_id)",
    ),
    (
        "stored_and_tombstoned",
        "events stored although their author deleted them (NIP-09)",
        "SELECT count(*) FROM events e JOIN deleted_ids d ON d.id = e.id AND d.pubkey = e.pubkey",
    ),
    (
        "deleted_address_still_stored",
        "versions of an address at or before its NIP-09 deletion, still stored",
        "SELECT count(*) FROM events e JOIN deleted_addresses a \
         ON a.kind = e.kind AND a.pubkey = e.pubkey AND a.d_key = e.d_key \
         WHERE e.created_at <= a.upto",
    ),
    (
        "several_versions_per_address",
        "addresses (kind, author, d) holding more than one version",
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE d_key IS NOT NULL \
         GROUP BY kind, pubkey, d_key HAVING count(*) > 1) x",
    ),
    (
        "address_missing",
        "replaceable or addressable events without an address key",
        "SELECT count(*) FROM events WHERE d_key IS NULL AND (kind IN (0, 3) \
         OR kind BETWEEN 10000 AND 19999 OR kind BETWEEN 30000 AND 39999)",
    ),
];

/// Events read per page of the JSON check.
const PAGE: i64 = 2_000;

/// Every inconsistency found (empty: none). Reads every event once, page by page.
pub(crate) async fn check(pool: &PgPool) -> Result<Vec<Finding>, StoreError> {
    let mut out = Vec::new();
    for (name, about, sql) in SQL_CHECKS {
        let n: i64 = sqlx::query_scalar(*sql).fetch_one(pool).await.map_err(db)?;
        out.push(Finding {
            name,
            about,
            count: n as u64,
        });
    }
    let banned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN rulings r ON r.list = $1 AND r.subject = e.pubkey",
    )
    .bind(i16::from(
        Ruling::BanPubkey(eventstore::PublicKey([0; 32])).encode().0,
    ))
    .fetch_one(pool)
    .await
    .map_err(db)?;
    out.push(Finding {
        name: "banned_author_stored",
        about: "events by an author the operator banned, still stored",
        count: banned as u64,
    });
    out.extend(check_json(pool).await?);
    out.retain(|f| f.count > 0);
    Ok(out)
}

/// Each event's columns and tag rows against its JSON, the source of truth.
async fn check_json(pool: &PgPool) -> Result<Vec<Finding>, StoreError> {
    let (mut undecodable, mut columns, mut tags) = (0u64, 0u64, 0u64);
    let mut after: Vec<u8> = Vec::new();
    loop {
        // Events and their tag rows from one snapshot: an event replaced or purged
        // between two reads would otherwise look inconsistent while nodes write.
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let rows = sqlx::query(
            "SELECT id, pubkey, created_at, kind, d_key, json FROM events \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id").map_err(db)?;
        let ids: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(db)?;
        let mut stored: BTreeMap<Vec<u8>, BTreeSet<(String, Vec<u8>)>> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT event_id, name::text AS name, value_key FROM tags WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        {
            stored
                .entry(r.try_get("event_id").map_err(db)?)
                .or_default()
                .insert((
                    r.try_get("name").map_err(db)?,
                    r.try_get("value_key").map_err(db)?,
                ));
        }
        tx.commit().await.map_err(db)?;
        for r in &rows {
            let id: Vec<u8> = r.try_get("id").map_err(db)?;
            let json: String = r.try_get("json").map_err(db)?;
            let Ok(e) = Event::from_stored_json(&json) else {
                undecodable += 1;
                continue;
            };
            let pubkey: Vec<u8> = r.try_get("pubkey").map_err(db)?;
            let created_at: i64 = r.try_get("created_at").map_err(db)?;
            let kind: i32 = r.try_get("kind").map_err(db)?;
            let d_key: Option<Vec<u8>> = r.try_get("d_key").map_err(db)?;
            if id != e.id().0
                || pubkey != e.pubkey().0
                || created_at != ts(e.created_at())
                || kind != i32::from(e.kind().0)
                || d_key != e.address().map(|a| value_key(&a.d))
            {
                columns += 1;
            }
            let want: BTreeSet<(String, Vec<u8>)> = tag_rows(&e).into_iter().collect();
            if stored.get(&id).map_or(!want.is_empty(), |s| *s != want) {
                tags += 1;
            }
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(vec![
        Finding {
            name: "undecodable_json",
            about: "events whose stored JSON does not parse",
            count: undecodable,
        },
        Finding {
            name: "columns_vs_json",
            about: "events whose id, author, created_at, kind or address columns differ from their JSON",
            count: columns,
        },
        Finding {
            name: "tags_vs_json",
            about: "events whose tag rows differ from the single-letter tags in their JSON",
            count: tags,
        },
    ])
}

/// Figures for `stats`: events by kind, bytes, the time range, and the logs' sizes.
pub(crate) async fn stats(pool: &PgPool) -> Result<serde_json::Value, StoreError> {
    let kinds = sqlx::query(
        "SELECT kind, count(*) AS n, sum(length(json))::int8 AS bytes FROM events \
         GROUP BY kind ORDER BY count(*) DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut by_kind = serde_json::Map::new();
    let (mut events, mut json_bytes) = (0i64, 0i64);
    for r in kinds {
        let (k, n, b): (i32, i64, i64) = (
            r.try_get("kind").map_err(db)?,
            r.try_get("n").map_err(db)?,
            r.try_get("bytes").map_err(db)?,
        );
        events += n;
        json_bytes += b;
        by_kind.insert(
            k.to_string(),
            serde_json::json!({ "events": n, "json_bytes": b }),
        );
    }
    let r = sqlx::query(
        "SELECT min(created_at) AS oldest, max(created_at) AS newest, \
         (SELECT count(*) FROM tags) AS tags, \
         (SELECT count(*) FROM deleted_ids) AS tombstones, \
         (SELECT count(*) FROM deleted_addresses) AS deleted_addresses, \
         (SELECT count(*) FROM removed) AS removed, \
         (SELECT count(*) FROM events WHERE expiration IS NOT NULL \
            AND expiration <= extract(epoch from now())::int8) AS expired, \
         pg_database_size(current_database()) AS database_bytes, \
         (SELECT last_run FROM maintenance)::text AS last_maintenance \
         FROM events",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let get = |c: &str| r.try_get::<Option<i64>, _>(c).map_err(db);
    Ok(serde_json::json!({
        "events": events,
        "json_bytes": json_bytes,
        "oldest": get("oldest")?,
        "newest": get("newest")?,
        "by_kind": by_kind,
        "tag_rows": get("tags")?,
        "expired_waiting_for_purge": get("expired")?,
        "database_bytes": get("database_bytes")?,
        "logs": {
            "tombstones": get("tombstones")?,
            "deleted_addresses": get("deleted_addresses")?,
            "removed": get("removed")?,
        },
        "last_maintenance": r.try_get::<Option<String>, _>("last_maintenance").map_err(db)?,
    }))
}

/// Other client sessions connected to this database (running nodes, tools).
pub(crate) async fn other_sessions(pool: &PgPool) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
         AND application_name <> 'layer2-admin'",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(n as u64)
}

/// Removes every event, tombstone and log row (the rulings stay), and records the wipe
/// so that every node starting afterwards empties its L1 (`purge::resumable`).
pub(crate) async fn wipe(pool: &PgPool) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("TRUNCATE tags, events, deleted_ids, deleted_addresses, removed")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query(
        "UPDATE maintenance SET reset_at_us = (extract(epoch from clock_timestamp()) * 1000000)::int8",
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(n as u64)
}
