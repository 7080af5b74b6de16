//! Tag rows: how a batch writes them, and the repair of rows left without their event.
//!
//! A tag row is written only in the statement that inserted its event, each (letter,
//! value) once per event (`keys::tag_rows`), and every statement that deletes events
//! deletes their tag rows (the trigger of migration 0005). So the rows a batch writes
//! cannot already exist, and the insert takes no `ON CONFLICT`: PostgreSQL's
//! speculative insertion for one (a probe of `tags_key` before each row, a token and a
//! confirmation record after it) was a tenth of its CPU per event under a closed loop
//! of clients. Should a row without its event exist all the same (written by hand, or
//! left by a delete with triggers off), the insert of that event fails on `tags_key`:
//! the batch then removes such rows for its own events and runs once more
//! ([`is_tag_conflict`], [`remove_orphans`]).

use eventstore::{Event, StoreError};

use crate::error::db;

/// The tag rows of the events an `ins` CTE (returning `id, created_at`) inserted, with
/// the arrays bound by [`crate::keys::EventRows::bind`]: a tag row is written only for
/// an event this statement inserted, never for a duplicate another writer stored first.
macro_rules! tagged_cte {
    () => {
        "tagged AS (\
           INSERT INTO tags (event_id, name, value_key, created_at) \
           SELECT ins.id, t.n::\"char\", t.v, ins.created_at \
           FROM unnest($8::int4[], $9::text[], $10::bytea[]) AS t(at, n, v) \
           JOIN ins ON ins.id = ($1::bytea[])[t.at])"
    };
}
pub(crate) use tagged_cte;

/// Whether `e` is the unique violation of `tags_key` that a tag row without its event
/// causes (see the module docs).
pub(crate) fn is_tag_conflict(e: &StoreError) -> bool {
    let StoreError::Backend(b) = e else {
        return false;
    };
    matches!(
        b.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Database(d)) if d.constraint() == Some("tags_key")
    )
}

/// Removes the tag rows of `batch[i]`'s ids, for every `i` of `which`, whose event is
/// not stored. Returns how many it removed.
pub(crate) async fn remove_orphans(
    conn: &mut sqlx::PgConnection,
    batch: &[Event],
    which: &[usize],
) -> Result<u64, StoreError> {
    let ids: Vec<Vec<u8>> = which.iter().map(|&i| batch[i].id().0.to_vec()).collect();
    let done = sqlx::query(
        "DELETE FROM tags t WHERE t.event_id = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = t.event_id)",
    )
    .bind(&ids)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use std::time::Duration;

    use eventstore::{Event, EventBuilder, EventStore, Filter, Keys, Kind, SaveOutcome, Timestamp};

    use crate::testsupport::test_database;
    use crate::write::save_batch;
    use crate::{PgConfig, PgStore};

    fn tagged(keys: &Keys, kind: Kind, at: u64) -> Event {
        EventBuilder::new(kind, "orphaned")
            .tag(["t".to_owned(), "orphan".to_owned()])
            .tag(["d".to_owned(), "x".to_owned()])
            .created_at(Timestamp(1_700_000_000 + at))
            .sign_deterministic(keys)
    }

    /// A tag row left without its event (written by hand here) would make the insert of
    /// that event fail on `tags_key` for good: the batch removes it and is saved, on the
    /// plain path (a note) and on the general one (an addressable event).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_row_without_its_event_does_not_block_the_event() {
        let db = test_database().await;
        let store = PgStore::connect(PgConfig::new(db.url.clone()))
            .await
            .expect("connect to the test database");
        let alice = Keys::from_seed(1);
        let note = tagged(&alice, Kind::TEXT_NOTE, 1);
        let listing = tagged(&alice, Kind(30_023), 2);
        assert!(crate::plain::is_plain(&note));
        assert!(!crate::plain::is_plain(&listing));
        for e in [&note, &listing] {
            for (name, value) in [("t", "orphan"), ("d", "x")] {
                sqlx::query(
                    "INSERT INTO tags (event_id, name, value_key, created_at) \
                     VALUES ($1, $2::\"char\", $3, $4)",
                )
                .bind(e.id().0.to_vec())
                .bind(name)
                .bind(value.as_bytes())
                .bind(crate::keys::ts(e.created_at()))
                .execute(store.pool())
                .await
                .unwrap();
            }
        }
        let findings = store.check().await.unwrap();
        let names: Vec<(&str, u64)> = findings.iter().map(|f| (f.name, f.count)).collect();
        assert_eq!(names, vec![("orphan_tags", 4)], "{findings:?}");

        let mut conn = store.pool().acquire().await.unwrap();
        let limit = Duration::from_secs(10);
        for e in [&note, &listing] {
            let (got, reusable) = save_batch(&mut conn, std::slice::from_ref(e), limit)
                .await
                .expect("the batch repairs the orphaned rows and saves");
            assert_eq!(got, vec![SaveOutcome::Stored]);
            assert!(reusable);
        }
        let found = store
            .query(&[Filter::new().tag('t', "orphan")])
            .await
            .unwrap();
        let mut ids: Vec<_> = found.iter().map(Event::id).collect();
        ids.sort();
        let mut expect = vec![note.id(), listing.id()];
        expect.sort();
        assert_eq!(ids, expect);
        let findings = store.check().await.unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        // Saved again: duplicates, and nothing written twice.
        let (got, _) = save_batch(&mut conn, &[note.clone(), listing.clone()], limit)
            .await
            .unwrap();
        assert_eq!(got, vec![SaveOutcome::Duplicate, SaveOutcome::Duplicate]);
    }
}
