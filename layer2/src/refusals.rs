//! What refuses an event inside and after a write batch (`write.rs`): NIP-09
//! tombstones and the operator's bans (`rulings.rs`), read in the batch's transaction,
//! and checked again after its commit against deletions and bans that committed
//! meanwhile.

use std::collections::{HashMap, HashSet};

use eventstore::{Event, EventId, Reason, StoreError};
use sqlx::{Postgres, Row, Transaction};

use crate::error::db;

/// Tombstones among `ids`, and the bans among `ids` and `pubkeys` (ids and authors
/// named by a `BanEvent` or `BanPubkey` ruling), in one round trip.
pub(crate) async fn load_tombstones(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Vec<u8>],
    pubkeys: &[Vec<u8>],
) -> Result<(HashSet<(Vec<u8>, Vec<u8>)>, Bans), StoreError> {
    let (ban_pubkey, ban_event) = ban_lists();
    let rows = sqlx::query(
        "SELECT id, pubkey, 0::int2 AS list FROM deleted_ids WHERE id = ANY($1) \
         UNION ALL \
         SELECT subject, subject, list FROM rulings \
         WHERE (list = $3 AND subject = ANY($2)) OR (list = $4 AND subject = ANY($1))",
    )
    .bind(ids)
    .bind(pubkeys)
    .bind(ban_pubkey)
    .bind(ban_event)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    let mut tombs = HashSet::new();
    let mut bans = Bans::default();
    for r in rows {
        let list: i16 = r.try_get("list").map_err(db)?;
        let id: Vec<u8> = r.try_get("id").map_err(db)?;
        if list == ban_pubkey {
            bans.pubkeys.insert(id);
        } else if list == ban_event {
            bans.ids.insert(id);
        } else {
            tombs.insert((id, r.try_get("pubkey").map_err(db)?));
        }
    }
    Ok((tombs, bans))
}

/// Authors and events the operator banned (`rulings.rs`), among those a batch touches.
#[derive(Default)]
pub(crate) struct Bans {
    pub pubkeys: HashSet<Vec<u8>>,
    pub ids: HashSet<Vec<u8>>,
}

/// The `rulings.list` codes of the two bans.
pub(crate) fn ban_lists() -> (i16, i16) {
    use eventstore::{PublicKey, Ruling};
    (
        i16::from(Ruling::BanPubkey(PublicKey([0; 32])).encode().0),
        i16::from(Ruling::BanEvent(EventId([0; 32])).encode().0),
    )
}

/// Events just stored that a concurrent deletion tombstoned, or that a ban committed
/// meanwhile names (`rulings.rs`): delete them again and report them deleted or
/// banned. A banned one goes into the `removed` log (tombstoned ones travel on
/// `deleted_ids`). One statement, so the common case (nothing hit) costs one round trip.
pub(crate) async fn recheck_tombstones(
    conn: &mut sqlx::PgConnection,
    batch: &[Event],
    fresh: &[usize],
) -> Result<Vec<(usize, Reason)>, StoreError> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Vec<u8>> = fresh.iter().map(|&i| batch[i].id().0.to_vec()).collect();
    let pks: Vec<Vec<u8>> = fresh
        .iter()
        .map(|&i| batch[i].pubkey().0.to_vec())
        .collect();
    let (ban_pubkey, ban_event) = ban_lists();
    // NIP-09 never deletes a deletion request; a ban removes anything its author wrote.
    let rows = sqlx::query(
        "WITH t AS (SELECT * FROM unnest($1::bytea[], $2::bytea[]) AS t(id, pk)), \
         hit AS (SELECT t.id, \
             EXISTS (SELECT 1 FROM rulings r WHERE (r.list = $3 AND r.subject = t.pk) \
                                              OR (r.list = $4 AND r.subject = t.id)) AS banned, \
             EXISTS (SELECT 1 FROM deleted_ids d WHERE d.id = t.id AND d.pubkey = t.pk) AS tombstoned \
           FROM t), \
         gone AS (DELETE FROM events e USING hit \
           WHERE e.id = hit.id AND (hit.banned OR (hit.tombstoned AND e.kind <> 5)) \
           RETURNING e.id, hit.banned AND NOT (hit.tombstoned AND e.kind <> 5) AS banned), \
         logged AS (INSERT INTO removed (id) SELECT id FROM gone WHERE banned) \
         SELECT id, banned FROM gone",
    )
    .bind(&ids)
    .bind(&pks)
    .bind(ban_pubkey)
    .bind(ban_event)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    let mut hit: HashMap<Vec<u8>, Reason> = HashMap::with_capacity(rows.len());
    for r in rows {
        let banned: bool = r.try_get("banned").map_err(db)?;
        let reason = if banned {
            Reason::Banned
        } else {
            Reason::Deleted
        };
        hit.insert(r.try_get("id").map_err(db)?, reason);
    }
    Ok(fresh
        .iter()
        .filter_map(|&i| hit.get(batch[i].id().0.as_slice()).map(|r| (i, r.clone())))
        .collect())
}
