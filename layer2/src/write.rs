//! Saving a batch of events in one transaction, with exact per-event outcomes. A
//! batch's plain events (no address, no deletion request, none in the batch either)
//! take one self-committing statement instead (`plain.rs`); the rest come here.
//!
//! Concurrency across nodes:
//! - duplicates: `INSERT .. ON CONFLICT (id) DO NOTHING`; a row not inserted is a
//!   duplicate written by someone else meanwhile;
//! - replaceable/addressable events and `a` deletions: every writer first takes a
//!   transaction-scoped advisory lock per address (sorted, so batches never deadlock),
//!   then reads the current version: one winner by the NIP-01 rule;
//! - `e` deletions against re-submissions: after commit, the saver re-checks its new
//!   events against tombstones and the deleter re-runs its deletes. Whichever commits
//!   second sees the other's work, so the event ends deleted either way.

use std::collections::{HashMap, HashSet};

use eventstore::{
    Event, EventId, KindClass, Reason, SaveOutcome, StoreError, Timestamp, deletion_applies,
    supersedes,
};
use sqlx::{Acquire, PgConnection, Postgres, Row, Transaction};

use crate::error::db;
use crate::keys::{AddrKey, EventRows, addr_key, addr_lock, ts};
use crate::refusals::{load_tombstones, recheck_tombstones};
use crate::tags::tagged_cte;

/// What the database holds about one id of interest.
pub(crate) struct Held {
    pubkey: Vec<u8>,
    kind: i32,
    addr: Option<AddrKey>,
}

/// Deletions decided in this batch, to be written.
#[derive(Default)]
struct Deletions {
    /// (id, author) tombstones.
    ids: Vec<(Vec<u8>, Vec<u8>)>,
    /// (address, upto).
    addresses: Vec<(AddrKey, i64)>,
}

/// Saves `batch` on `conn` in one transaction (its plain events alone: in one statement
/// that commits by itself, `plain.rs`). The transaction is bounded by `limit` (a
/// database that answers nothing fails it as unavailable, rolling it back); once it
/// committed, the saves stand whatever happens to the checks after it, which are
/// bounded on their own and logged when they fail. With the outcomes comes whether
/// `conn` may be used again: not after such a failure (a time-out may have left it
/// mid-statement).
pub(crate) async fn save_batch(
    conn: &mut PgConnection,
    batch: &[Event],
    limit: std::time::Duration,
) -> Result<(Vec<SaveOutcome>, bool), StoreError> {
    let now = Timestamp::now();
    let mut outcomes: Vec<Option<SaveOutcome>> = batch
        .iter()
        .map(|e| {
            if e.kind().class() == KindClass::Ephemeral {
                Some(SaveOutcome::Ephemeral)
            } else if e.is_expired(now) {
                Some(SaveOutcome::Rejected(Reason::Expired))
            } else {
                None
            }
        })
        .collect();
    let todo: Vec<usize> = (0..batch.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if todo.is_empty() {
        return Ok((outcomes.into_iter().flatten().collect(), true));
    }
    // Plain events take one statement (`plain.rs`): alone, committing by itself, when
    // they are the whole batch; otherwise in the batch's one transaction, so the batch
    // commits whole (a failed batch is retried event by event, which would call events
    // of a part already committed duplicates). A deletion request in the batch could
    // concern them: then all go the general way, decided together in batch order.
    let (plain, general): (Vec<usize>, Vec<usize>) = if todo
        .iter()
        .any(|&i| batch[i].kind() == eventstore::Kind::DELETION)
    {
        (Vec::new(), todo)
    } else {
        todo.iter()
            .partition(|&&i| crate::plain::is_plain(&batch[i]))
    };
    let first = commit(conn, batch, &plain, &general, &mut outcomes);
    let (insert, del) = match crate::store::bounded(limit, first).await {
        // Nothing was written (the statement or transaction failed whole).
        Err(e) if crate::tags::is_tag_conflict(&e) => {
            let removed = crate::store::bounded(
                limit,
                crate::tags::remove_orphans(conn, batch, &[&plain[..], &general[..]].concat()),
            )
            .await?;
            tracing::warn!(
                removed,
                "tag rows without their event removed; batch run again"
            );
            let again = commit(conn, batch, &plain, &general, &mut outcomes);
            crate::store::bounded(limit, again).await?
        }
        r => r?,
    };

    let mut reusable = true;
    // The post-commit double check (see the module docs).
    let fresh: Vec<usize> = insert
        .iter()
        .copied()
        .filter(|&i| outcomes[i].as_ref().is_some_and(SaveOutcome::is_new))
        .collect();
    // The batch is committed: a failure from here on must not be reported as a failed
    // save. It is logged; the next deletion or recheck touching these ids repeats it.
    match crate::store::bounded(limit, recheck_tombstones(conn, batch, &fresh)).await {
        Ok(hit) => {
            for (i, reason) in hit {
                outcomes[i] = Some(SaveOutcome::Rejected(reason));
            }
        }
        Err(e) => {
            reusable = false;
            tracing::warn!(error = %e, "post-commit tombstone recheck failed");
        }
    }
    if !del.ids.is_empty() || !del.addresses.is_empty() {
        let again = async {
            let mut tx = conn.begin().await.map_err(db)?;
            write_deletions(&mut tx, &del).await?;
            tx.commit().await.map_err(db)
        };
        if let Err(e) = crate::store::bounded(limit, again).await {
            reusable = false;
            tracing::warn!(error = %e, "post-commit deletion re-run failed");
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(SaveOutcome::Duplicate))
        .collect();
    Ok((outcomes, reusable))
}

/// Saves `plain` and `general` (see [`save_batch`]): the plain events alone in their
/// own statement, or all in [`commit_batch`].
async fn commit(
    conn: &mut PgConnection,
    batch: &[Event],
    plain: &[usize],
    general: &[usize],
    outcomes: &mut [Option<SaveOutcome>],
) -> Result<(Vec<usize>, Deletions), StoreError> {
    if general.is_empty() {
        let insert = crate::plain::save_plain(conn, batch, plain, outcomes).await?;
        return Ok((insert, Deletions::default()));
    }
    commit_batch(conn, batch, plain, general, outcomes).await
}

/// Saves the plain events of `plain` (`plain.rs`), decides every event of `todo` as if
/// saved one by one, writes the decisions and commits, all in one transaction. Returns
/// the batch indices inserted and the deletions written.
async fn commit_batch(
    conn: &mut PgConnection,
    batch: &[Event],
    plain: &[usize],
    todo: &[usize],
    outcomes: &mut [Option<SaveOutcome>],
) -> Result<(Vec<usize>, Deletions), StoreError> {
    let mut tx = conn.begin().await.map_err(db)?;
    let mut plain_inserted = Vec::new();
    if !plain.is_empty() {
        plain_inserted = crate::plain::save_plain(&mut tx, batch, plain, outcomes).await?;
    }
    lock_addresses(&mut tx, batch, todo).await?;

    // What the database holds for every id and address this batch touches.
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut addrs: Vec<AddrKey> = Vec::new();
    for &i in todo {
        let e = &batch[i];
        ids.push(e.id().0.to_vec());
        if let Some(a) = e.address() {
            addrs.push(addr_key(&a));
        }
        let t = e.deletion_targets();
        ids.extend(t.ids.iter().map(|id| id.0.to_vec()));
        addrs.extend(t.addresses.iter().map(addr_key));
    }
    let held = load_held(&mut tx, &ids).await?;
    let pubkeys: Vec<Vec<u8>> = todo.iter().map(|&i| batch[i].pubkey().0.to_vec()).collect();
    let (tombstones, bans) = load_tombstones(&mut tx, &ids, &pubkeys).await?;
    let (mut current, mut addr_deleted) = load_addresses(&mut tx, &addrs).await?;

    // Decide each event in batch order, as if saved one by one.
    let mut stored: HashSet<Vec<u8>> = held.keys().cloned().collect();
    let mut tombs = tombstones;
    let mut insert: Vec<usize> = Vec::new();
    let mut replaced_in_db: Vec<Vec<u8>> = Vec::new();
    let mut del = Deletions::default();
    for &i in todo {
        let e = &batch[i];
        let id = e.id().0.to_vec();
        let pk = e.pubkey().0.to_vec();
        if stored.contains(&id) {
            outcomes[i] = Some(SaveOutcome::Duplicate);
            continue;
        }
        // Before any rule that could change what is stored: a banned event must not
        // replace (remove) the version it would supersede.
        if bans.pubkeys.contains(&pk) || bans.ids.contains(&id) {
            outcomes[i] = Some(SaveOutcome::Rejected(Reason::Banned));
            continue;
        }
        if tombs.contains(&(id.clone(), pk.clone())) {
            outcomes[i] = Some(SaveOutcome::Rejected(Reason::Deleted));
            continue;
        }
        let mut outcome = SaveOutcome::Stored;
        if let Some(a) = e.address() {
            let ak = addr_key(&a);
            if addr_deleted
                .get(&ak)
                .is_some_and(|&upto| ts(e.created_at()) <= upto)
            {
                outcomes[i] = Some(SaveOutcome::Rejected(Reason::Deleted));
                continue;
            }
            if let Some((cur_id, cur_at)) = current.get(&ak).cloned() {
                let cur = (Timestamp(cur_at as u64), EventId(to32(&cur_id)));
                if !supersedes((e.created_at(), e.id()), cur) {
                    outcomes[i] = Some(SaveOutcome::Rejected(Reason::Superseded));
                    continue;
                }
                drop_version(&cur_id, &mut insert, batch, &mut replaced_in_db);
                stored.remove(&cur_id);
                outcome = SaveOutcome::Replaced { old: cur.1 };
            }
            current.insert(ak, (id.clone(), ts(e.created_at())));
        }
        stored.insert(id);
        insert.push(i);
        outcomes[i] = Some(outcome);
        apply_deletion(
            e,
            batch,
            &held,
            &mut insert,
            &mut stored,
            &mut tombs,
            &mut current,
            &mut addr_deleted,
            &mut del,
        );
    }

    if !replaced_in_db.is_empty() {
        sqlx::query(
            "WITH gone AS (DELETE FROM events WHERE id = ANY($1) RETURNING id) \
             INSERT INTO removed (id) SELECT id FROM gone",
        )
        .bind(&replaced_in_db)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    // Deletions first: a version this batch deletes must be gone before a newer one
    // takes its address (the address index is unique). Inserts last, so their
    // inserted_at is as close to the commit as possible (the feed's look-back covers
    // the gap).
    write_deletions(&mut tx, &del).await?;
    let inserted = insert_events(&mut tx, batch, &insert).await?;
    for &i in &insert {
        if !inserted.contains(batch[i].id().0.as_slice()) {
            // Written by another node between our read and our insert.
            outcomes[i] = Some(SaveOutcome::Duplicate);
        }
    }
    tx.commit().await.map_err(db)?;
    insert.extend(plain_inserted);
    Ok((insert, del))
}

fn to32(v: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    if v.len() == 32 {
        a.copy_from_slice(v);
    }
    a
}

/// A version leaves: if it was inserted earlier in this batch it is simply not written;
/// otherwise the database holds it (the only other source of `current`) and it is
/// deleted.
fn drop_version(id: &[u8], insert: &mut Vec<usize>, batch: &[Event], in_db: &mut Vec<Vec<u8>>) {
    if let Some(pos) = insert.iter().position(|&j| batch[j].id().0 == id) {
        insert.remove(pos);
    } else {
        in_db.push(id.to_vec());
    }
}

/// NIP-09 for a kind-5 event being stored: updates the in-batch state so that later
/// events in the batch see the deletion, and records what to write.
#[allow(clippy::too_many_arguments)]
fn apply_deletion(
    request: &Event,
    batch: &[Event],
    held: &HashMap<Vec<u8>, Held>,
    insert: &mut Vec<usize>,
    stored: &mut HashSet<Vec<u8>>,
    tombs: &mut HashSet<(Vec<u8>, Vec<u8>)>,
    current: &mut HashMap<AddrKey, (Vec<u8>, i64)>,
    addr_deleted: &mut HashMap<AddrKey, i64>,
    del: &mut Deletions,
) {
    let targets = request.deletion_targets();
    let pk = request.pubkey().0.to_vec();
    for id in &targets.ids {
        let idv = id.0.to_vec();
        // The target's author and kind: from this batch, or from the database.
        let in_batch = insert.iter().copied().find(|&j| batch[j].id() == *id);
        let applies = match in_batch {
            Some(j) => deletion_applies(request.pubkey(), &batch[j]),
            None => held.get(&idv).is_none_or(|h| {
                h.pubkey == pk && h.kind != i32::from(eventstore::Kind::DELETION.0)
            }),
        };
        if !applies {
            continue;
        }
        if stored.remove(&idv) {
            if let Some(pos) = insert.iter().position(|&j| batch[j].id() == *id) {
                insert.remove(pos);
            }
            let addr = match in_batch {
                Some(j) => batch[j].address().map(|a| addr_key(&a)),
                None => held.get(&idv).and_then(|h| h.addr.clone()),
            };
            if let Some(a) = addr {
                if current.get(&a).is_some_and(|(cur, _)| *cur == idv) {
                    current.remove(&a);
                }
            }
        }
        tombs.insert((idv.clone(), pk.clone()));
        del.ids.push((idv, pk.clone()));
    }
    let at = ts(request.created_at());
    for a in &targets.addresses {
        let ak = addr_key(a);
        if let Some((cur, cur_at)) = current.get(&ak).cloned() {
            if cur_at <= at {
                if let Some(pos) = insert.iter().position(|&j| batch[j].id().0 == cur[..]) {
                    insert.remove(pos);
                }
                stored.remove(&cur);
                current.remove(&ak);
            }
        }
        let upto = addr_deleted.entry(ak.clone()).or_insert(at);
        *upto = (*upto).max(at);
        del.addresses.push((ak, at));
    }
}

async fn lock_addresses(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Event],
    todo: &[usize],
) -> Result<(), StoreError> {
    let mut keys: Vec<i64> = Vec::new();
    for &i in todo {
        let e = &batch[i];
        if let Some(a) = e.address() {
            keys.push(addr_lock(&addr_key(&a)));
        }
        for a in e.deletion_targets().addresses {
            keys.push(addr_lock(&addr_key(&a)));
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    // Sorted and de-duplicated: two batches always take shared locks in one order.
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest($1::int8[]) AS k ORDER BY 1) s",
    )
    .bind(&keys)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn load_held(
    conn: &mut PgConnection,
    ids: &[Vec<u8>],
) -> Result<HashMap<Vec<u8>, Held>, StoreError> {
    // Planned on every call, not prepared once: on a fresh database the cached generic
    // plan was made while `events` was nearly empty and kept its sequential scan until
    // autovacuum first analyzed the table (a minute or more), each lookup reading the
    // whole table: nostr-bench's closed loop fell from 3,500 to 1,500 events/s within
    // 20 s, at 10 ms a lookup. A plan made per call sees the table's real size and takes
    // the primary key.
    let rows = sqlx::query("SELECT id, pubkey, kind, d_key FROM events WHERE id = ANY($1)")
        .persistent(false)
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(db)?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let pubkey: Vec<u8> = r.try_get("pubkey").map_err(db)?;
        let kind: i32 = r.try_get("kind").map_err(db)?;
        let d_key: Option<Vec<u8>> = r.try_get("d_key").map_err(db)?;
        out.insert(
            r.try_get("id").map_err(db)?,
            Held {
                addr: d_key.map(|d| (kind, pubkey.clone(), d)),
                pubkey,
                kind,
            },
        );
    }
    Ok(out)
}

type Current = HashMap<AddrKey, (Vec<u8>, i64)>;

async fn load_addresses(
    tx: &mut Transaction<'_, Postgres>,
    addrs: &[AddrKey],
) -> Result<(Current, HashMap<AddrKey, i64>), StoreError> {
    if addrs.is_empty() {
        return Ok(Default::default());
    }
    let mut current = HashMap::new();
    for r in rows_at(tx, addrs, "e.id, e.created_at", "events").await? {
        let id = r.try_get("id").map_err(db)?;
        current.insert(row_addr(&r)?, (id, r.try_get("created_at").map_err(db)?));
    }
    let mut deleted = HashMap::new();
    for r in rows_at(tx, addrs, "e.upto", "deleted_addresses").await? {
        deleted.insert(row_addr(&r)?, r.try_get("upto").map_err(db)?);
    }
    Ok((current, deleted))
}

/// Rows of `table` (aliased `e`, with kind, pubkey and d_key columns) at any of `addrs`.
async fn rows_at(
    tx: &mut Transaction<'_, Postgres>,
    addrs: &[AddrKey],
    columns: &'static str,
    table: &'static str,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    let kinds: Vec<i32> = addrs.iter().map(|a| a.0).collect();
    let pks: Vec<Vec<u8>> = addrs.iter().map(|a| a.1.clone()).collect();
    let ds: Vec<Vec<u8>> = addrs.iter().map(|a| a.2.clone()).collect();
    let sql = format!(
        "SELECT e.kind, e.pubkey, e.d_key, {columns} FROM {table} e \
         JOIN (SELECT DISTINCT * FROM unnest($1::int4[], $2::bytea[], $3::bytea[])) AS a(kind, pubkey, d_key) \
         ON e.kind = a.kind AND e.pubkey = a.pubkey AND e.d_key = a.d_key"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&kinds)
        .bind(&pks)
        .bind(&ds)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)
}

fn row_addr(r: &sqlx::postgres::PgRow) -> Result<AddrKey, StoreError> {
    Ok((
        r.try_get("kind").map_err(db)?,
        r.try_get("pubkey").map_err(db)?,
        r.try_get("d_key").map_err(db)?,
    ))
}

/// Multi-row insert of events and their tags in one statement (one round trip);
/// returns the ids actually inserted.
async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Event],
    which: &[usize],
) -> Result<HashSet<Vec<u8>>, StoreError> {
    if which.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = EventRows::of(batch, which);
    let q = sqlx::query(concat!(
        "WITH ins AS (\
           INSERT INTO events (id, pubkey, created_at, kind, d_key, expiration, json) \
           SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int4[], $5::bytea[], $6::int8[], $7::text[]) \
           ORDER BY 1 ON CONFLICT (id) DO NOTHING RETURNING id, created_at), ",
        tagged_cte!(),
        " SELECT id FROM ins"
    ));
    let inserted = rows.bind(q).fetch_all(&mut **tx).await.map_err(db)?;
    inserted
        .iter()
        .map(|r| r.try_get("id").map_err(db))
        .collect()
}

/// Tombstones and the deletes they imply. Idempotent: run again after commit.
async fn write_deletions(
    tx: &mut Transaction<'_, Postgres>,
    del: &Deletions,
) -> Result<(), StoreError> {
    if !del.ids.is_empty() {
        let ids: Vec<Vec<u8>> = del.ids.iter().map(|d| d.0.clone()).collect();
        let pks: Vec<Vec<u8>> = del.ids.iter().map(|d| d.1.clone()).collect();
        sqlx::query(
            "INSERT INTO deleted_ids (id, pubkey) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&pks)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        // NIP-09: only the author's own events, and never a deletion request.
        sqlx::query(
            "DELETE FROM events e USING unnest($1::bytea[], $2::bytea[]) AS t(id, pk) \
             WHERE e.id = t.id AND e.pubkey = t.pk AND e.kind <> 5",
        )
        .bind(&ids)
        .bind(&pks)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    if !del.addresses.is_empty() {
        let kinds: Vec<i32> = del.addresses.iter().map(|d| d.0.0).collect();
        let pks: Vec<Vec<u8>> = del.addresses.iter().map(|d| d.0.1.clone()).collect();
        let ds: Vec<Vec<u8>> = del.addresses.iter().map(|d| d.0.2.clone()).collect();
        let upto: Vec<i64> = del.addresses.iter().map(|d| d.1).collect();
        sqlx::query(
            "INSERT INTO deleted_addresses (kind, pubkey, d_key, upto) \
             SELECT k, p, d, max(u) FROM unnest($1::int4[], $2::bytea[], $3::bytea[], $4::int8[]) AS t(k, p, d, u) \
             GROUP BY k, p, d \
             ON CONFLICT (kind, pubkey, d_key) DO UPDATE SET upto = GREATEST(deleted_addresses.upto, EXCLUDED.upto)",
        )
        .bind(&kinds)
        .bind(&pks)
        .bind(&ds)
        .bind(&upto)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "WITH gone AS (DELETE FROM events e \
               USING unnest($1::int4[], $2::bytea[], $3::bytea[], $4::int8[]) AS t(k, p, d, u) \
               WHERE e.kind = t.k AND e.pubkey = t.p AND e.d_key = t.d AND e.created_at <= t.u \
               RETURNING e.id) \
             INSERT INTO removed (id) SELECT id FROM gone",
        )
        .bind(&kinds)
        .bind(&pks)
        .bind(&ds)
        .bind(&upto)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}
