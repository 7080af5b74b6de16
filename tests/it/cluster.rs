//! Several nodes on one PostgreSQL, in one process: what one node stores reaches the
//! others' live subscribers and L1s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{EventBuilder, EventId, EventStore, Filter, Keys, Kind, Timestamp};
use layer2::testsupport::test_database;

use crate::support::{node, until_trusted};

/// Collects what a node broadcasts until `n` distinct events arrived or time runs out.
async fn collect(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<eventstore::Event>>,
    want: usize,
    within: Duration,
) -> HashMap<EventId, usize> {
    let mut got: HashMap<EventId, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => *got.entry(e.id()).or_default() += 1,
            Ok(Err(e)) => panic!("subscriber lagged or closed: {e}"),
            Err(_) => break,
        }
    }
    // Anything else that arrives shortly after would be a duplicate delivery.
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        *got.entry(e.id()).or_default() += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_on_a_reaches_b_and_c_exactly_once() {
    let db = test_database().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(&db.url, dirs[0].path(), 4 << 20).await;
    let b = node(&db.url, dirs[1].path(), 4 << 20).await;
    let c = node(&db.url, dirs[2].path(), 4 << 20).await;
    for n in [&a, &b, &c] {
        until_trusted(n).await;
    }
    let (mut rb, mut rc) = (b.subscribe(), c.subscribe());
    let keys = Keys::from_seed(1);
    let events: Vec<_> = (0..30)
        .map(|i| EventBuilder::text_note(format!("hello {i}")).sign(&keys))
        .collect();
    for e in &events {
        a.save(e).await.unwrap();
    }
    // Within poll_frequency × poll_overlap plus one poll (and slack for CI).
    let within = Duration::from_secs(3);
    for (name, rx) in [("B", &mut rb), ("C", &mut rc)] {
        let got = collect(rx, events.len(), within).await;
        for e in &events {
            assert_eq!(
                got.get(&e.id()),
                Some(&1),
                "node {name}: {} delivered once",
                e.id()
            );
        }
        assert_eq!(
            got.len(),
            events.len(),
            "node {name}: nothing else delivered"
        );
    }
    // And B's L1 holds them: answered without L2.
    let before = b
        .stats()
        .l2_queries
        .load(std::sync::atomic::Ordering::Relaxed);
    let held = b
        .l1()
        .contains(&events.iter().map(|e| e.id()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(held.iter().all(|h| *h), "B's L1 holds every event");
    let r = b
        .query(&[Filter::new().author(keys.public_key()).limit(10)])
        .await
        .unwrap();
    assert_eq!(r.len(), 10);
    let after = b
        .stats()
        .l2_queries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, after, "answered from L1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_on_a_removes_from_b_l1() {
    let db = test_database().await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&db.url, da.path(), 4 << 20).await;
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    until_trusted(&b).await;
    let keys = Keys::from_seed(2);
    let e = EventBuilder::text_note("soon gone").sign(&keys);
    a.save(&e).await.unwrap();
    wait_for(|| async { b.l1().contains(&[e.id()]).await.unwrap()[0] }).await;
    let del = EventBuilder::new(Kind::DELETION, "")
        .tag(["e".to_owned(), e.id().to_hex()])
        .sign(&keys);
    a.save(&del).await.unwrap();
    wait_for(|| async { !b.l1().contains(&[e.id()]).await.unwrap()[0] }).await;
    assert!(
        b.query(&[Filter::new().id(e.id())])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replaceable_writes_converge_in_every_l1() {
    let db = test_database().await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&db.url, da.path(), 4 << 20).await;
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    let keys = Keys::from_seed(3);
    let versions: Vec<_> = (0..20u64)
        .map(|i| {
            EventBuilder::new(Kind(0), format!("{{\"name\":\"v{i}\"}}"))
                .created_at(Timestamp(1_700_000_000 + i % 7))
                .sign_deterministic(&keys)
        })
        .collect();
    let (va, vb): (Vec<_>, Vec<_>) = versions
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let ta = {
        let a = a.clone();
        tokio::spawn(async move {
            for (_, e) in va {
                a.save(&e).await.unwrap();
            }
        })
    };
    let tb = {
        let b = b.clone();
        tokio::spawn(async move {
            for (_, e) in vb {
                b.save(&e).await.unwrap();
            }
        })
    };
    ta.await.unwrap();
    tb.await.unwrap();
    let oracle = eventstore::MemoryStore::new();
    for e in &versions {
        oracle.save(e).await.unwrap();
    }
    let f = [Filter::new().kind(Kind(0)).author(keys.public_key())];
    let winner = oracle.query(&f).await.unwrap()[0].id();
    for n in [&a, &b] {
        wait_for(|| async {
            let held = n.l1().query(&f).await.unwrap();
            held.len() == 1 && held[0].id() == winner
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_catches_up_after_restart() {
    let db = test_database().await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&db.url, da.path(), 4 << 20).await;
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    until_trusted(&b).await;
    let keys = Keys::from_seed(4);
    let first = EventBuilder::text_note("before the stop").sign(&keys);
    a.save(&first).await.unwrap();
    wait_for(|| async { b.l1().contains(&[first.id()]).await.unwrap()[0] }).await;
    // Stop B: its poller ends and its L1 is closed.
    stop(b).await;
    let missed: Vec<_> = (0..20)
        .map(|i| EventBuilder::text_note(format!("while B was down {i}")).sign(&keys))
        .collect();
    for e in &missed {
        a.save(e).await.unwrap();
    }
    // Restart B on the same L1 file: it resumes from its saved cursor.
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    let ids: Vec<_> = missed.iter().map(|e| e.id()).collect();
    wait_for(|| async { b.l1().contains(&ids).await.unwrap().iter().all(|h| *h) }).await;
}

/// Stops a node: its poller ends and its L1 file is closed, ready to reopen.
async fn stop(node: Arc<layer2_relay::Tiered>) {
    node.shutdown();
    let l1 = node.l1().clone();
    drop(node);
    // The poller task holds only a weak reference; give it a moment to notice.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Arc::into_inner(l1)
        .expect("L1 released")
        .close()
        .await
        .unwrap();
}

async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 6 s");
}

/// Another writer's transaction: `e` inserted (an early `inserted_at`), not committed.
async fn insert_uncommitted(
    pool: &sqlx::PgPool,
    e: &eventstore::Event,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, pubkey, created_at, kind, json) VALUES ($1, $2, $3, 1, $4)",
    )
    .bind(e.id().0.to_vec())
    .bind(e.pubkey().0.to_vec())
    .bind(e.created_at().0 as i64)
    .bind(e.as_json().to_owned())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_is_not_missed() {
    let db = test_database().await;
    let dir = tempfile::tempdir().unwrap();
    let b = node(&db.url, dir.path(), 4 << 20).await;
    until_trusted(&b).await;
    let mut rx = b.subscribe();
    let keys = Keys::from_seed(6);
    let slow = EventBuilder::text_note("inserted early, committed late").sign(&keys);
    // Another writer's transaction: inserted now (early inserted_at), committed after
    // later events have been polled past.
    let a_dir = tempfile::tempdir().unwrap();
    let a = node(&db.url, a_dir.path(), 4 << 20).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let tx = insert_uncommitted(&pool, &slow).await;
    let fast = EventBuilder::text_note("committed first").sign(&keys);
    a.save(&fast).await.unwrap();
    // Let B's poller move past the fast event, then commit the slow one, still within
    // the look-back (4 × 40 ms) of its insert time.
    tokio::time::sleep(Duration::from_millis(60)).await;
    tx.commit().await.unwrap();
    let got = collect(&mut rx, 2, Duration::from_secs(3)).await;
    assert_eq!(got.get(&fast.id()), Some(&1));
    assert_eq!(
        got.get(&slow.id()),
        Some(&1),
        "the late commit reached B once"
    );
}

/// Regression: the poller advanced its cursor to the clock, so a writer whose commit
/// came later than the look-back after its insert was never seen by other nodes. The
/// cursor now stops at the oldest open write transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_far_later_than_the_look_back_is_not_missed() {
    let db = test_database().await;
    let dir = tempfile::tempdir().unwrap();
    let b = node(&db.url, dir.path(), 4 << 20).await;
    until_trusted(&b).await;
    let mut rx = b.subscribe();
    let keys = Keys::from_seed(16);
    let slow = EventBuilder::text_note("held open for many look-backs").sign(&keys);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let tx = insert_uncommitted(&pool, &slow).await;
    // Six look-backs (4 × 40 ms each) of polls pass while it stays uncommitted.
    let polls = b
        .stats()
        .poll_runs
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        b.stats()
            .poll_runs
            .load(std::sync::atomic::Ordering::Relaxed)
            >= polls + 10
    );
    tx.commit().await.unwrap();
    let got = collect(&mut rx, 1, Duration::from_secs(3)).await;
    assert_eq!(
        got.get(&slow.id()),
        Some(&1),
        "the late commit reached B once"
    );
    assert!(
        b.l1().contains(&[slow.id()]).await.unwrap()[0],
        "and B's L1 holds it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_version_leaves_b_even_when_the_new_one_never_arrives() {
    //! Regression: B kept serving v1 when v2 replaced it in L2 and was deleted before
    //! B's next poll, because nothing in the feed said v1 was gone.
    let db = test_database().await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&db.url, da.path(), 4 << 20).await;
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    until_trusted(&b).await;
    let keys = Keys::from_seed(8);
    let v1 = EventBuilder::new(Kind(30023), "v1")
        .tag(["d", "article"])
        .created_at(Timestamp(1_700_000_000))
        .sign(&keys);
    a.save(&v1).await.unwrap();
    wait_for(|| async { b.l1().contains(&[v1.id()]).await.unwrap()[0] }).await;
    // B goes down; meanwhile v2 replaces v1 and is deleted, so B never sees v2 itself.
    stop(b).await;
    let v2 = EventBuilder::new(Kind(30023), "v2")
        .tag(["d", "article"])
        .created_at(Timestamp(1_700_000_001))
        .sign(&keys);
    let del = EventBuilder::new(Kind::DELETION, "")
        .tag(["e".to_owned(), v2.id().to_hex()])
        .created_at(Timestamp(1_700_000_002))
        .sign(&keys);
    a.save(&v2).await.unwrap();
    a.save(&del).await.unwrap();
    let b = node(&db.url, dbb.path(), 4 << 20).await;
    wait_for(|| async { !b.l1().contains(&[v1.id()]).await.unwrap()[0] }).await;
    until_trusted(&b).await;
    let f = [Filter::new().kind(Kind(30023)).author(keys.public_key())];
    assert!(
        b.query(&f).await.unwrap().is_empty(),
        "no version is served anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_events_reach_the_other_nodes_live() {
    let db = test_database().await;
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&db.url, da.path(), 4 << 20).await;
    let b = node(&db.url, db_dir.path(), 4 << 20).await;
    until_trusted(&a).await;
    until_trusted(&b).await;
    let (mut ra, mut rb) = (a.subscribe(), b.subscribe());
    let keys = Keys::from_seed(21);
    let eph = EventBuilder::new(Kind(20_001), "typing...").sign(&keys);
    assert_eq!(
        a.save(&eph).await.unwrap(),
        eventstore::SaveOutcome::Ephemeral
    );
    for (name, rx) in [("A", &mut ra), ("B", &mut rb)] {
        let got = collect(rx, 1, Duration::from_secs(3)).await;
        assert_eq!(got.get(&eph.id()), Some(&1), "node {name}: delivered once");
    }
    // Never stored anywhere.
    assert!(
        b.query(&[Filter::new().id(eph.id())])
            .await
            .unwrap()
            .is_empty()
    );
}

/// LISTEN/NOTIFY wakes pollers at commit: with a two-second poll period, events still
/// cross nodes in well under a period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_notifications_wake_the_other_pollers() {
    let db = test_database().await;
    let slow = layer2_relay::TieredConfig {
        poll_frequency: Duration::from_secs(2),
        ..crate::support::fast_config()
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(crate::support::node_with(&db.url, dir.path(), 4 << 20, slow.clone()).await);
    }
    for n in &nodes {
        // The first poll comes one (long) period after start.
        for _ in 0..500 {
            if n.window_trusted() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(n.window_trusted());
    }
    let mut rb = nodes[1].subscribe();
    let keys = Keys::from_seed(22);
    for i in 0..5 {
        let e = EventBuilder::text_note(format!("fast {i}")).sign(&keys);
        let started = tokio::time::Instant::now();
        nodes[0].save(&e).await.unwrap();
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), rb.recv())
                .await
                .expect("delivered")
                .unwrap();
            if got.id() == e.id() {
                break;
            }
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(700),
            "event {i} took {took:?} with a 2 s poll period"
        );
    }
}

/// A node's own event, answered before it lands in L1 (`Tiered::decide`), is left to
/// its landing by the node's poller: not read back from L2 and written twice, and the
/// poller's cursor is not persisted past it until it has landed (a crash in between
/// would leave L1 without it for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_leaves_an_event_still_landing_to_its_landing() {
    use std::sync::atomic::Ordering;
    let db = test_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = node(&db.url, dir.path(), 4 << 20).await;
    until_trusted(&a).await;
    let read = || a.stats().poll_read.load(Ordering::Relaxed);
    let runs = || a.stats().poll_runs.load(Ordering::Relaxed);
    let mut attempt = 0;
    let (e, landing, cursor, read_before) = loop {
        attempt += 1;
        let e =
            EventBuilder::text_note(format!("still landing {attempt}")).sign(&Keys::from_seed(23));
        let read_before = read();
        let (outcome, landing) = a.decide(&e).await.unwrap();
        assert_eq!(outcome, eventstore::SaveOutcome::Stored);
        let landing = landing.expect("a plain event is answered before it lands");
        // Once a poll that began after the event was entered has ended, no poll in
        // flight (or cursor write) is older than the entry.
        let after = runs();
        wait_for(|| async { runs() >= after + 2 }).await;
        // A poll can read the event in the moment between PostgreSQL's commit and its
        // entry among the landing events, and take it in as before: try another.
        if read() != read_before {
            assert!(attempt < 5, "a poll read the event every time");
            a.land(&e, landing).await;
            continue;
        }
        break (e, landing, a.l1().cursor().await.unwrap(), read_before);
    };
    let runs_before = runs();
    // Polls every 40 ms, persisting the cursor at most once a second; each persisting
    // poll now waits (250 ms) for the landing first, then leaves the cursor.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(runs() >= runs_before + 2);
    assert_eq!(
        read(),
        read_before,
        "the poller read the landing event from L2"
    );
    assert!(!a.l1().contains(&[e.id()]).await.unwrap()[0]);
    assert_eq!(
        a.l1().cursor().await.unwrap(),
        cursor,
        "the cursor was persisted past an event L1 does not hold yet"
    );
    a.land(&e, landing).await;
    assert!(a.l1().contains(&[e.id()]).await.unwrap()[0]);
    wait_for(|| async { a.l1().cursor().await.unwrap() != cursor }).await;
    assert_eq!(read(), read_before);
}
