//! Serving through a PostgreSQL outage (DESIGN.md §5b), on a PostgreSQL cluster of
//! the test's own that it stops (`pg_ctl stop -m immediate`) and starts again: reads
//! are answered from L1 at once, writes go to the durable outbox, and once PostgreSQL
//! is back every acknowledged write reaches L2 and every node, replaceable events
//! converge to the NIP-01 winner, and a deletion made during the outage wins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{
    Event, EventBuilder, EventStore, Filter, Keys, Kind, SaveOutcome, StoreError, Timestamp,
};
use layer2::testsupport::OwnCluster;
use layer2::{PgConfig, PgStore};
use layer2_relay::{Tiered, TieredConfig};

use crate::support::{fast_config, l1_at, until_trusted};

/// A node on `url` with an outbox of `outbox_bytes` beside its L1 in `dir`.
async fn node(url: &str, dir: &std::path::Path, outbox_bytes: u64) -> (Arc<Tiered>, Arc<PgStore>) {
    let pg = Arc::new(
        PgStore::connect(PgConfig::new(url))
            .await
            .expect("connect L2"),
    );
    let outbox = layer1::Outbox::open(dir.join("outbox.redb"), outbox_bytes).expect("outbox");
    let config = TieredConfig {
        outbox: Some(Arc::new(outbox)),
        ..fast_config()
    };
    let t = Tiered::start(l1_at(dir, 8 << 20), pg.clone(), Some(pg.clone()), config)
        .await
        .expect("start node");
    until_trusted(&t).await;
    (t, pg)
}

/// Waits for `a`'s outbox to drain, then returns the ids of `keys`' events in L2, sorted.
async fn drained_into_l2(a: &Tiered, l2: &PgStore, keys: &Keys) -> Vec<eventstore::EventId> {
    eventually(15, "the outbox drains", async || {
        a.outbox().unwrap().is_empty()
    })
    .await;
    let in_l2 = l2
        .query(&[Filter::new().author(keys.public_key())])
        .await
        .unwrap();
    let mut got: Vec<_> = in_l2.iter().map(Event::id).collect();
    got.sort();
    got
}

fn note(keys: &Keys, i: u64, t: u64) -> Event {
    EventBuilder::text_note(format!("outage note {i}"))
        .created_at(Timestamp(t))
        .sign(keys)
}

/// Waits until `cond` holds, polling every 20 ms for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {secs} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_through_an_outage_and_converges() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _pa) = node(&pg.url, da.path(), 1 << 20).await;
    let (b, _pb) = node(&pg.url, db.path(), 1 << 20).await;
    let now = Timestamp::now().0;
    let alice = Keys::from_seed(71);
    let carol = Keys::from_seed(72);
    let before: Vec<Event> = (0..10).map(|i| note(&alice, i, now - 100 + i)).collect();
    for e in &before {
        assert!(a.save(e).await.unwrap().is_new());
    }
    let profile = |v: u64| {
        EventBuilder::new(Kind(0), format!("{{\"name\":\"carol v{v}\"}}"))
            .created_at(Timestamp(now - 50 + v))
            .sign(&carol)
    };
    assert!(a.save(&profile(1)).await.unwrap().is_new());
    let by_alice = Filter::new().author(alice.public_key()).limit(50);
    eventually(5, "B sees A's events", async || {
        b.query(std::slice::from_ref(&by_alice))
            .await
            .unwrap()
            .len()
            == 10
    })
    .await;

    pg.stop_immediate().expect("stop PostgreSQL");
    let stopped = Instant::now();
    eventually(10, "both nodes notice the outage", async || {
        a.degraded() && b.degraded()
    })
    .await;
    let noticed = stopped.elapsed();
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );

    // Reads: answered from L1, never refused; once the breaker has opened, at once.
    let mut slowest_after_first = Duration::ZERO;
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        let t = Instant::now();
        let got = node.query(std::slice::from_ref(&by_alice)).await.unwrap();
        if i > 1 {
            slowest_after_first = slowest_after_first.max(t.elapsed());
        }
        assert_eq!(got.len(), 10, "read {i} during the outage");
    }
    assert!(a.degraded() && b.degraded(), "both nodes know L2 is down");
    assert!(
        slowest_after_first < Duration::from_millis(500),
        "reads waited {slowest_after_first:?} during the outage"
    );

    // Writes on both nodes: acknowledged once in the outbox.
    let on_a = note(&alice, 100, now - 10);
    let on_b = note(&alice, 101, now - 9);
    assert_eq!(a.save(&on_a).await.unwrap(), SaveOutcome::Stored);
    assert_eq!(b.save(&on_b).await.unwrap(), SaveOutcome::Stored);
    // Carol's profile replaced on both nodes: v3 (on B) is the NIP-01 winner.
    assert!(a.save(&profile(2)).await.unwrap().is_new());
    assert!(b.save(&profile(3)).await.unwrap().is_new());
    // Alice deletes one of her earlier notes on B.
    let deletion = EventBuilder::new(Kind::DELETION, "")
        .tag(["e".to_owned(), before[0].id().to_hex()])
        .created_at(Timestamp(now - 5))
        .sign(&alice);
    assert!(b.save(&deletion).await.unwrap().is_new());
    assert_eq!(a.outbox().unwrap().len(), 2);
    assert_eq!(b.outbox().unwrap().len(), 3);
    // Served locally at once.
    let got = a.query(std::slice::from_ref(&by_alice)).await.unwrap();
    assert!(got.iter().any(|e| e.id() == on_a.id()));

    pg.restart().expect("start PostgreSQL again");
    for (name, n) in [("A", &a), ("B", &b)] {
        eventually(15, &format!("{name} drains its outbox"), async || {
            n.outbox().unwrap().is_empty() && !n.degraded() && n.window_trusted()
        })
        .await;
    }
    // Every node serves every acknowledged event, the winner and the deletion.
    let carols = Filter::new().author(carol.public_key()).kind(Kind(0));
    for (name, n) in [("A", &a), ("B", &b)] {
        eventually(5, &format!("{name} converges"), async || {
            // Nine notes from before, two from the outage, and the deletion itself.
            let notes = n.query(std::slice::from_ref(&by_alice)).await.unwrap();
            let ids: Vec<_> = notes.iter().map(Event::id).collect();
            let profiles = n.query(std::slice::from_ref(&carols)).await.unwrap();
            ids.contains(&on_a.id())
                && ids.contains(&on_b.id())
                && !ids.contains(&before[0].id())
                && ids.len() == 12
                && profiles.len() == 1
                && profiles[0].id() == profile(3).id()
        })
        .await;
    }
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_and_loses_nothing_it_took() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::from_seed(73);
    let now = Timestamp::now().0;
    let events: Vec<Event> = (0..20).map(|i| note(&keys, i, now - 100 + i)).collect();
    // Room for about five of them.
    let room = 5 * (events[0].json_len() as u64 + 8) + 4;
    let (a, l2) = node(&pg.url, dir.path(), room).await;
    pg.stop_immediate().expect("stop PostgreSQL");
    let mut taken = Vec::new();
    let mut refused = 0;
    for e in &events {
        match a.save(e).await {
            Ok(o) => {
                assert_eq!(o, SaveOutcome::Stored);
                taken.push(e.clone());
            }
            Err(StoreError::Unavailable(msg)) => {
                assert!(msg.to_string().contains("storage unavailable"), "{msg}");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(taken.len(), 5, "the outbox took what fits");
    assert_eq!(refused, 15);
    pg.restart().expect("start PostgreSQL again");
    let mut want: Vec<_> = taken.iter().map(Event::id).collect();
    want.sort();
    assert_eq!(
        drained_into_l2(&a, &l2, &keys).await,
        want,
        "every event the outbox took is in L2, and only those"
    );
    a.shutdown();
}

/// A node stopped abruptly with events in its outbox replays them when it starts again
/// (the outbox's commits are durable before `OK`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_survives_a_stop_and_replays_at_the_next_start() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::from_seed(74);
    let now = Timestamp::now().0;
    let events: Vec<Event> = (0..8).map(|i| note(&keys, i, now - 100 + i)).collect();
    {
        let (a, _l2) = node(&pg.url, dir.path(), 1 << 20).await;
        pg.stop_immediate().expect("stop PostgreSQL");
        for e in &events {
            assert_eq!(a.save(e).await.unwrap(), SaveOutcome::Stored);
        }
        assert_eq!(a.outbox().unwrap().len(), 8);
        // Gone without a word: no replay, no close.
        a.shutdown();
    }
    // The outbox file is free again once its writer thread has seen the store dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.restart().expect("start PostgreSQL again");
    let (a, l2) = node(&pg.url, dir.path(), 1 << 20).await;
    let mut want: Vec<_> = events.iter().map(Event::id).collect();
    want.sort();
    assert_eq!(
        drained_into_l2(&a, &l2, &keys).await,
        want,
        "nothing acknowledged was lost"
    );
    a.shutdown();
}

/// A database that hangs (every process stopped, connections open, nothing answered:
/// a paused container, a network that drops packets) opens the breaker within a few
/// seconds: a write then goes to the outbox and a read to L1, instead of each waiting
/// for minutes. Once it runs again, the outbox drains into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_opens_the_breaker_and_nothing_waits_for_it() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let dir = tempfile::tempdir().unwrap();
    let (a, l2) = node(&pg.url, dir.path(), 64 << 20).await;
    let keys = Keys::generate().unwrap();
    let now = Timestamp::now().0;
    let before = note(&keys, 0, now);
    assert_eq!(a.save(&before).await.unwrap(), SaveOutcome::Stored);

    pg.pause().expect("pause PostgreSQL");
    let started = Instant::now();
    let during = note(&keys, 1, now + 1);
    let saved = tokio::time::timeout(Duration::from_secs(15), a.save(&during)).await;
    let took = started.elapsed();
    let outcome = saved.expect("a write while PostgreSQL hangs answers");
    assert_eq!(outcome.unwrap(), SaveOutcome::Stored, "into the outbox");
    assert!(a.degraded(), "the breaker is open");
    // A check after 1 s of waiting, failing after 2 more: about 3 s. (Without it, the
    // pool's 5 s acquire time-out would be the first error.)
    assert!(
        took < Duration::from_millis(4_600),
        "the write waited {took:?}"
    );
    let started = Instant::now();
    let got = a
        .query(&[Filter::new().author(keys.public_key())])
        .await
        .expect("a read while PostgreSQL hangs answers from L1");
    assert_eq!(got.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2));

    pg.resume().expect("resume PostgreSQL");
    let mut want = vec![before.id(), during.id()];
    want.sort();
    assert_eq!(drained_into_l2(&a, &l2, &keys).await, want);
    eventually(10, "the breaker closes", async || !a.degraded()).await;
    a.shutdown();
}
