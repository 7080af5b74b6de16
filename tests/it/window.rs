//! The window rule at work: with a tiny L1, old events are evicted, W rises, queries
//! below W go to L2 (and are promoted), queries above W are L1 hits, and every answer
//! equals the authority's.

use std::sync::atomic::Ordering::Relaxed;

use eventstore::{EventBuilder, EventStore, Filter, Keys, MemoryStore, Timestamp};
use layer2::testsupport::test_database;

use crate::support::{TINY, node, until_trusted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_l1_evicts_and_answers_stay_exact() {
    let db = test_database().await;
    let dir = tempfile::tempdir().unwrap();
    let t = node(&db.url, dir.path(), TINY).await;
    until_trusted(&t).await;
    let oracle = MemoryStore::new();
    let keys = Keys::from_seed(9);
    for i in 0..400u64 {
        let e = EventBuilder::text_note(format!("note {i} {}", "x".repeat(200)))
            .created_at(Timestamp(1_700_000_000 + i))
            .sign(&keys);
        t.save(&e).await.unwrap();
        oracle.save(&e).await.unwrap();
    }
    let l1 = t.l1();
    assert!(
        l1.stats().evictions.load(Relaxed) > 0,
        "the tiny L1 evicted"
    );
    let w = l1.window();
    assert!(w > Timestamp(1_700_000_000), "W rose: {w:?}");

    // Above W: L1 alone.
    let hits = t.stats().l1_hits.load(Relaxed);
    let recent = [Filter::new().since(w).limit(5)];
    assert_eq!(
        t.query(&recent).await.unwrap(),
        oracle.query(&recent).await.unwrap()
    );
    assert_eq!(t.stats().l1_hits.load(Relaxed), hits + 1);

    // Reaching below W: L2 answers that part, and the answer is exact.
    let l2q = t.stats().l2_queries.load(Relaxed);
    let all = [Filter::new().author(keys.public_key())];
    let got = t.query(&all).await.unwrap();
    assert_eq!(got.len(), 400);
    assert_eq!(got, oracle.query(&all).await.unwrap());
    assert!(t.stats().l2_queries.load(Relaxed) > l2q, "L2 was asked");

    // An old event by id: an L2 miss promoted, then an L1 hit.
    let old = got.last().unwrap().clone();
    assert!(!l1.contains(&[old.id()]).await.unwrap()[0], "evicted");
    let by_id = [Filter::new().id(old.id())];
    assert_eq!(t.query(&by_id).await.unwrap(), vec![old.clone()]);
    for _ in 0..100 {
        if l1.contains(&[old.id()]).await.unwrap()[0] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(t.stats().promotions.load(Relaxed) > 0);
    let l2q = t.stats().l2_queries.load(Relaxed);
    assert_eq!(t.query(&by_id).await.unwrap(), vec![old]);
    assert_eq!(
        t.stats().l2_queries.load(Relaxed),
        l2q,
        "second fetch is an L1 hit"
    );

    // A missing id costs one L2 query, then the negative cache answers.
    let ghost = [Filter::new().id(eventstore::EventId([7; 32]))];
    assert!(t.query(&ghost).await.unwrap().is_empty());
    let l2q = t.stats().l2_queries.load(Relaxed);
    assert!(t.query(&ghost).await.unwrap().is_empty());
    assert_eq!(t.stats().l2_queries.load(Relaxed), l2q);
    assert!(t.stats().negative_hits.load(Relaxed) > 0);
}
