//! Index key format 2 (`layer1/src/reindex.rs`): a file whose index predates it is
//! rebuilt when opened and answers as before; `check` finds an index left in an old
//! format and entries that belong to no event's keys.

use std::collections::BTreeMap;

use eventstore::conformance::workload;
use eventstore::{EventStore, Filter, Kind, Timestamp};
use redb::{ReadableTable, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("index");

fn filters() -> Vec<Filter> {
    let tag = |letter: char, value: String| Filter {
        tags: BTreeMap::from([(letter as u8, [value].into())]),
        ..Filter::default()
    };
    vec![
        Filter {
            authors: Some([workload::author(0), workload::author(3)].into()),
            ..Filter::default()
        },
        Filter {
            authors: Some([workload::author(1)].into()),
            kinds: Some([Kind(1), Kind(7)].into()),
            limit: Some(5),
            ..Filter::default()
        },
        tag('p', workload::hex64(2, 1)),
        tag('t', "topic1".into()),
        Filter {
            kinds: Some([Kind(30023)].into()),
            until: Some(Timestamp(1_600_000_400)),
            ..Filter::default()
        },
    ]
}

/// Opens `path` with redb itself and runs `f` in a write transaction.
fn tamper(path: &std::path::Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).expect("open with redb");
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

#[tokio::test]
async fn an_index_of_an_older_format_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let events = workload::events(600);
    let before = {
        let store = crate::support::open(&dir, None);
        store.save_many(&events).await.unwrap();
        let mut answers = Vec::new();
        for f in filters() {
            answers.push(store.query(&[f]).await.unwrap());
        }
        store.close().await.unwrap();
        answers
    };
    assert!(
        before.iter().all(|a| !a.is_empty()),
        "a probe matched nothing"
    );
    // What a file of format 1 looks like to the opener: no format or secret, and index
    // entries that are no key of this format (their bytes counted in the total).
    tamper(&path, |txn| {
        let mut meta = txn.open_table(META).unwrap();
        assert!(meta.remove("index_format").unwrap().is_some());
        assert!(meta.remove("index_secret").unwrap().is_some());
        let bytes = u64::from_be_bytes(
            meta.get("bytes")
                .unwrap()
                .unwrap()
                .value()
                .try_into()
                .unwrap(),
        );
        meta.insert("bytes", (bytes + 51).to_be_bytes().as_slice())
            .unwrap();
        let mut index = txn.open_table(INDEX).unwrap();
        index.insert([2u8; 51].as_slice(), ()).unwrap();
    });
    let report = layer1::check::check_file(&path).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("index format 0")),
        "{report:?}"
    );
    let store = crate::support::open(&dir, None);
    let report = store.check().await.unwrap();
    assert!(report.is_consistent(), "{report:?}");
    for (f, want) in filters().into_iter().zip(before) {
        let got = store.query(std::slice::from_ref(&f)).await.unwrap();
        assert_eq!(got, want, "{f:?}");
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn check_finds_an_index_entry_that_is_no_key_of_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = crate::support::open(&dir, None);
    store.save_many(&workload::events(50)).await.unwrap();
    store.close().await.unwrap();
    tamper(&path, |txn| {
        let mut index = txn.open_table(INDEX).unwrap();
        // A kind key for kind 65535 with the suffix of a real event's time key.
        let first = index.first().unwrap().unwrap().0.value().to_vec();
        assert_eq!(first[0], 1, "the time index sorts first");
        let mut stray = vec![3u8, 0xff, 0xff];
        stray.extend_from_slice(&first[1..]);
        index.insert(stray.as_slice(), ()).unwrap();
    });
    let report = layer1::check::check_file(&path).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("index entries for")),
        "{report:?}"
    );
}

#[tokio::test]
async fn check_reports_its_progress_up_to_every_record_it_walks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = crate::support::open(&dir, None);
    store.save_many(&workload::events(1_500)).await.unwrap();
    store.close().await.unwrap();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let report =
        layer1::check_file_with(&path, &mut |walked, total| seen.push((walked, total))).unwrap();
    assert!(report.is_consistent(), "{report:?}");
    let total = report.events + report.index_entries;
    assert!(seen.len() >= 2, "one report per 4,096 records: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "progress goes forward: {seen:?}"
    );
    assert!(seen.iter().all(|&(_, t)| t == total), "{seen:?}");
    assert_eq!(seen.last(), Some(&(total, total)), "it ends at the whole");
}

#[tokio::test]
async fn an_annotation_outlives_a_reopen_and_stays_apart_from_the_stores_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::open(&dir, None);
    assert_eq!(store.annotation("cursor").await.unwrap(), None);
    store.save_many(&workload::events(20)).await.unwrap();
    store.set_cursor(b"c1".to_vec()).await.unwrap();
    store
        .set_annotation("cursor", b"mine".to_vec())
        .await
        .unwrap();
    let bytes = store.bytes_used();
    store.close().await.unwrap();
    let store = crate::support::open(&dir, None);
    assert_eq!(
        store.annotation("cursor").await.unwrap(),
        Some(b"mine".to_vec())
    );
    assert_eq!(
        store.cursor().await.unwrap(),
        Some(b"c1".to_vec()),
        "the store's own"
    );
    assert_eq!(
        store.bytes_used(),
        bytes,
        "annotations are not budget bytes"
    );
    let report = store.check().await.unwrap();
    assert!(report.is_consistent(), "{report:?}");
    store.close().await.unwrap();
}
