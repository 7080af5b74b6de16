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
    // Promotions are written behind the answer (on a busy machine, after the 400 of
    // the query above and their evictions): wait for this one, boundedly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !l1.contains(&[old.id()]).await.unwrap()[0] {
        assert!(
            std::time::Instant::now() < deadline,
            "the old event was never promoted"
        );
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

/// Regression: warm-up saved the newest events first, so once L1 was full each older
/// batch landed below the window as "promotions" and least-recently-used eviction pushed
/// the newest events out: W ended above every event and no query was an L1 hit (the
/// feed bench fell from 100% to 0%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_larger_than_l1_keeps_the_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = std::sync::Arc::new(
        layer1::RedbStore::open(layer1::RedbConfig::new(dir.path().join("l2.redb"))).unwrap(),
    );
    let keys = Keys::from_seed(10);
    let events: Vec<_> = (0..3_000u64)
        .map(|i| {
            EventBuilder::text_note(format!("warm {i} {}", "w".repeat(600)))
                .created_at(Timestamp(1_700_000_000 + i))
                .sign(&keys)
        })
        .collect();
    l2.save_many(&events).await.unwrap();
    let config = layer2_relay::TieredConfig {
        warm_events: 3_000,
        ..crate::support::fast_config()
    };
    let t = layer2_relay::Tiered::start(
        crate::support::l1_at(dir.path(), TINY * 4),
        l2,
        None,
        config,
    )
    .await
    .unwrap();
    let l1 = t.l1();
    assert!(l1.stats().evictions.load(Relaxed) > 0, "more than L1 holds");
    let newest = events.last().unwrap().created_at();
    assert!(
        l1.window() <= newest,
        "W {} passed the newest event",
        l1.window()
    );
    let before = t.stats().l2_queries.load(Relaxed);
    let got = t.query(&[Filter::new().limit(10)]).await.unwrap();
    let want: Vec<_> = events.iter().rev().take(10).map(|e| e.id()).collect();
    assert_eq!(got.iter().map(|e| e.id()).collect::<Vec<_>>(), want);
    assert_eq!(
        t.stats().l2_queries.load(Relaxed),
        before,
        "answered by L1 alone"
    );
    t.shutdown();
}
