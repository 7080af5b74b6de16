//! Plain events (regular kinds other than NIP-09 deletion requests) saved in one
//! statement, committed on its own.
//!
//! Such an event takes no address and deletes nothing, so its outcome depends only on
//! what the database holds for its own id: stored already (a duplicate), an author or
//! id the operator banned, or a NIP-09 tombstone for (id, author). One statement reads
//! those and inserts the rest with their tag rows; run outside an explicit transaction
//! it commits by itself. The general path (`write.rs`) takes a transaction, reads the
//! same facts in two more statements and commits in another: six round trips per batch
//! against two here (this statement and the post-commit recheck). With a closed loop of
//! clients waiting on every batch, each round trip is latency on two busy cores.
//!
//! Concurrency is as on the general path: a duplicate another writer inserts meanwhile
//! is caught by `ON CONFLICT`, and tombstones or bans committed meanwhile by the
//! post-commit recheck (`refusals.rs`).

use eventstore::{Event, Reason, SaveOutcome, StoreError};
use sqlx::{PgConnection, Row};

use crate::error::db;
use crate::keys::EventRows;
use crate::refusals::ban_lists;
use crate::tags::tagged_cte;
use crate::write::load_held;

/// Whether `e` may take this path: it neither takes an address (replaceable and
/// addressable kinds) nor requests deletions. Ephemeral events are never written.
pub(crate) fn is_plain(e: &Event) -> bool {
    e.address().is_none() && e.kind() != eventstore::Kind::DELETION
}

/// Saves `batch[i]` for every `i` of `which` (plain events, see [`is_plain`]) and sets
/// their outcomes as if they were saved one by one in that order. Returns the indices
/// inserted.
pub(crate) async fn save_plain(
    conn: &mut PgConnection,
    batch: &[Event],
    which: &[usize],
    outcomes: &mut [Option<SaveOutcome>],
) -> Result<Vec<usize>, StoreError> {
    // A repeat within the batch is decided by its first copy: only first copies are
    // sent, each once.
    let mut first: Vec<usize> = Vec::with_capacity(which.len());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    {
        let mut seen = std::collections::HashMap::with_capacity(which.len());
        for &i in which {
            match seen.entry(batch[i].id()) {
                std::collections::hash_map::Entry::Occupied(o) => repeats.push((i, *o.get())),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    first.push(i);
                }
            }
        }
    }
    let rows = EventRows::of(batch, &first);
    let (ban_pubkey, ban_event) = ban_lists();
    let q = sqlx::query(concat!(
        "WITH v AS (\
           SELECT i.*, \
             EXISTS (SELECT 1 FROM rulings r WHERE (r.list = $11 AND r.subject = i.pubkey) \
                                              OR (r.list = $12 AND r.subject = i.id)) AS banned, \
             EXISTS (SELECT 1 FROM deleted_ids d WHERE d.id = i.id AND d.pubkey = i.pubkey) AS tombstoned \
           FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int4[], $5::bytea[], $6::int8[], $7::text[]) \
             WITH ORDINALITY AS i(id, pubkey, created_at, kind, d_key, expiration, json, n)), \
         ins AS (\
           INSERT INTO events (id, pubkey, created_at, kind, d_key, expiration, json) \
           SELECT id, pubkey, created_at, kind, d_key, expiration, json FROM v \
           WHERE NOT banned AND NOT tombstoned ORDER BY id \
           ON CONFLICT (id) DO NOTHING RETURNING id, created_at), ",
        tagged_cte!(),
        " SELECT v.n, v.banned, v.tombstoned, ins.id IS NOT NULL AS inserted \
          FROM v LEFT JOIN ins ON ins.id = v.id"
    ));
    let answer = rows
        .bind(q)
        .bind(ban_pubkey)
        .bind(ban_event)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;

    let mut inserted = Vec::new();
    let mut refused: Vec<(usize, Reason)> = Vec::new();
    for r in answer {
        let n: i64 = r.try_get("n").map_err(db)?;
        let i = usize::try_from(n - 1)
            .ok()
            .and_then(|at| first.get(at).copied())
            .ok_or_else(|| db(sqlx::Error::Protocol(format!("row {n} out of range"))))?;
        if r.try_get::<bool, _>("inserted").map_err(db)? {
            outcomes[i] = Some(SaveOutcome::Stored);
            inserted.push(i);
        } else if r.try_get::<bool, _>("banned").map_err(db)? {
            refused.push((i, Reason::Banned));
        } else if r.try_get::<bool, _>("tombstoned").map_err(db)? {
            refused.push((i, Reason::Deleted));
        } else {
            // Stored already, or by another writer since this statement began.
            outcomes[i] = Some(SaveOutcome::Duplicate);
        }
    }
    if !refused.is_empty() {
        // One stored already is a duplicate before it is refused (the general path's
        // order); rare, so asked only here.
        let ids: Vec<Vec<u8>> = refused
            .iter()
            .map(|&(i, _)| batch[i].id().0.to_vec())
            .collect();
        // After the statement committed on its own, a failure here must not fail the
        // batch (a retry would find its events stored and call them duplicates): the
        // refusal stands. Inside a transaction the failure aborts it, and the batch is
        // retried whole.
        let held = load_held(conn, &ids).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "looking up refused events failed; refused");
            Default::default()
        });
        for (i, reason) in refused {
            outcomes[i] = Some(if held.contains_key(batch[i].id().0.as_slice()) {
                SaveOutcome::Duplicate
            } else {
                SaveOutcome::Rejected(reason)
            });
        }
    }
    for (i, of) in repeats {
        outcomes[i] = match &outcomes[of] {
            Some(o) if o.is_new() => Some(SaveOutcome::Duplicate),
            o => o.clone(),
        };
    }
    Ok(inserted)
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use std::time::Duration;

    use eventstore::{
        Event, EventBuilder, EventStore, Filter, Keys, Kind, Reason, SaveOutcome, Timestamp,
    };

    use crate::refusals::ban_lists;
    use crate::testsupport::test_database;
    use crate::write::save_batch;
    use crate::{PgConfig, PgStore};

    fn note(keys: &Keys, text: &str, at: u64) -> Event {
        EventBuilder::text_note(text)
            .tag(["t".to_owned(), "plain".to_owned()])
            .created_at(Timestamp(1_700_000_000 + at))
            .sign_deterministic(keys)
    }

    /// Every way the database can refuse or already hold a plain event, and repeats
    /// within one batch, decided as if the batch's events were saved one by one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_batch_is_decided_as_if_saved_one_by_one() {
        let db = test_database().await;
        let store = PgStore::connect(PgConfig::new(db.url.clone()))
            .await
            .expect("connect to the test database");
        let (alice, mallory, trudy) = (Keys::from_seed(1), Keys::from_seed(2), Keys::from_seed(3));
        let held = note(&alice, "held", 1);
        let doomed = note(&alice, "doomed", 2);
        let held_then_banned = note(&trudy, "held, then banned", 3);
        for e in [&held, &doomed, &held_then_banned] {
            assert_eq!(store.save(e).await.unwrap(), SaveOutcome::Stored);
        }
        let deletion = EventBuilder::new(Kind::DELETION, "")
            .tag(["e".to_owned(), doomed.id().to_hex()])
            .created_at(Timestamp(1_700_000_010))
            .sign_deterministic(&alice);
        assert_eq!(store.save(&deletion).await.unwrap(), SaveOutcome::Stored);
        // Bans written as rulings rows only, as by a ban committing while a batch runs:
        // a ban through the store would also remove what the authors stored.
        let (ban_pubkey, _) = ban_lists();
        for k in [&mallory, &trudy] {
            sqlx::query("INSERT INTO rulings (list, subject) VALUES ($1, $2)")
                .bind(ban_pubkey)
                .bind(k.public_key().0.to_vec())
                .execute(store.pool())
                .await
                .unwrap();
        }
        let fresh = note(&alice, "fresh", 4);
        let banned = note(&mallory, "banned", 5);
        let batch = vec![
            fresh.clone(),
            held.clone(),
            doomed.clone(),
            banned.clone(),
            held_then_banned.clone(),
            fresh.clone(),
            banned.clone(),
        ];
        let which: Vec<usize> = (0..batch.len()).collect();
        assert!(batch.iter().all(super::is_plain));
        let mut conn = store.pool().acquire().await.unwrap();
        let mut outcomes = vec![None; batch.len()];
        let inserted = super::save_plain(&mut conn, &batch, &which, &mut outcomes)
            .await
            .unwrap();
        assert_eq!(inserted, vec![0]);
        let want = vec![
            SaveOutcome::Stored,
            SaveOutcome::Duplicate,
            SaveOutcome::Rejected(Reason::Deleted),
            SaveOutcome::Rejected(Reason::Banned),
            // Held already: a duplicate before it is refused.
            SaveOutcome::Duplicate,
            SaveOutcome::Duplicate,
            SaveOutcome::Rejected(Reason::Banned),
        ];
        assert_eq!(outcomes, want.into_iter().map(Some).collect::<Vec<_>>());
        // The one inserted came with its tag rows, and nothing else did.
        let tagged = store
            .query(&[Filter::new().tag('t', "plain")])
            .await
            .unwrap();
        let mut ids: Vec<_> = tagged.iter().map(Event::id).collect();
        ids.sort();
        let mut expect = vec![fresh.id(), held.id(), held_then_banned.id()];
        expect.sort();
        assert_eq!(ids, expect);

        // Through `save_batch`, a batch that mixes plain events with a replaceable one
        // and, separately, one with a deletion request (all taken the general way).
        let later = note(&alice, "later", 6);
        let profile = EventBuilder::new(Kind::METADATA, "{}")
            .created_at(Timestamp(1_700_000_020))
            .sign_deterministic(&alice);
        let limit = Duration::from_secs(10);
        let (got, _) = save_batch(&mut conn, &[later.clone(), profile, later.clone()], limit)
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                SaveOutcome::Stored,
                SaveOutcome::Stored,
                SaveOutcome::Duplicate
            ]
        );
        let gone = EventBuilder::new(Kind::DELETION, "")
            .tag(["e".to_owned(), later.id().to_hex()])
            .created_at(Timestamp(1_700_000_030))
            .sign_deterministic(&alice);
        let again = note(&alice, "later", 6);
        let (got, _) = save_batch(&mut conn, &[gone, again], limit).await.unwrap();
        assert_eq!(
            got,
            vec![SaveOutcome::Stored, SaveOutcome::Rejected(Reason::Deleted)]
        );
        // Nothing amiss but the one event whose author was banned behind the store's
        // back (no orphan tag rows, no tag rows missing).
        let findings = store.check().await.unwrap();
        let names: Vec<(&str, u64)> = findings.iter().map(|f| (f.name, f.count)).collect();
        assert_eq!(names, vec![("banned_author_stored", 1)], "{findings:?}");
    }
}
