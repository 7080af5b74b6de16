//! Retention and the removal log across a cluster: a run on one node empties every
//! node's L1 of what it purged, only one node runs it per interval, a purged event sent
//! again is held again everywhere, and a node away for longer than the log keeps (or
//! running through a wipe) starts with an empty L1 rather than trusting the log.

use std::time::{Duration, Instant};

use eventstore::{Event, EventBuilder, EventId, Keys, Kind, Timestamp};
use layer2::testsupport::test_database;
use layer2_relay::config::{Config, Retention, retention::Rule};
use layer2_relay::maintenance::run_if_due;
use layer2_relay::node::L2;
use serde_json::json;

use super::client::TestRelay;

/// A cluster node's configuration: PostgreSQL at `url`, fast polls, a small L1.
pub(super) fn config(dir: &std::path::Path, url: &str, retention: Retention) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database_url: Some(url.to_string()),
        l1_max_bytes: 8 << 20,
        l1_durable: Some(false),
        poll_frequency: Duration::from_millis(100),
        pg_max_connections: 4,
        retention,
        ..Config::default()
    }
}

fn aged(keys: &Keys, kind: u16, age: Duration, content: &str) -> Event {
    EventBuilder::new(Kind(kind), content)
        .created_at(Timestamp(Timestamp::now().0 - age.as_secs()))
        .sign(keys)
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(Event::id).collect()
}

/// Waits until `relay`'s L1 holds (`want`) or lacks (`!want`) every one of `ids`.
async fn until_l1(relay: &TestRelay, ids: &[EventId], want: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = relay.state.node.tiered.l1().contains(ids).await.unwrap();
        if held.iter().all(|h| *h == want) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_run_on_one_node_empties_every_l1_of_what_it_purged() {
    let db = test_database().await;
    let day = Duration::from_secs(86_400);
    let retention = Retention {
        rules: vec![Rule {
            kinds: Some([Kind(7)].into_iter().collect()),
            older_than: Some(day),
            max_per_author: None,
        }],
        // Runs only when the test asks (the first offer would come after 5 min).
        interval: Duration::from_secs(3_600),
        ..Retention::default()
    };
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestRelay::start(config(da.path(), &db.url, retention.clone())).await;
    let b = TestRelay::start(config(db_dir.path(), &db.url, retention)).await;
    let k = Keys::generate().unwrap();
    let old: Vec<_> = (0..20)
        .map(|i| aged(&k, 7, 2 * day, &format!("old {i}")))
        .collect();
    let fresh: Vec<_> = (0..5)
        .map(|i| aged(&k, 7, Duration::ZERO, &format!("new {i}")))
        .collect();
    let notes: Vec<_> = (0..5)
        .map(|i| aged(&k, 1, 2 * day, &format!("note {i}")))
        .collect();
    let mut on_a = a.client().await;
    for e in old.iter().chain(&fresh).chain(&notes) {
        let (ok, msg) = on_a.publish(e).await;
        assert!(ok, "{msg}");
    }
    let kept: Vec<_> = ids(&fresh).into_iter().chain(ids(&notes)).collect();
    until_l1(
        &b,
        &ids(&old),
        true,
        "B's poller never brought the old reactions",
    )
    .await;
    until_l1(&b, &kept, true, "B's poller never brought the rest").await;

    let report = run_if_due(&a.state.node).await.unwrap().expect("A's turn");
    assert_eq!(report.retention.values().sum::<u64>(), 20, "{report:?}");
    // The purging node's L1 forgets at once; another node's within a poll.
    let held = a.state.node.tiered.l1().contains(&ids(&old)).await.unwrap();
    assert!(held.iter().all(|h| !h), "A's L1 still holds purged events");
    until_l1(&b, &ids(&old), false, "B's L1 still holds purged events").await;
    until_l1(&b, &kept, true, "B lost what retention keeps").await;
    let mut on_b = b.client().await;
    let served = on_b.req("r", &[json!({"kinds": [7]})]).await;
    assert_eq!(served.len(), 5, "{served:?}");
    // A ran within the interval: nobody else runs now.
    assert!(run_if_due(&b.state.node).await.unwrap().is_none());
    assert!(run_if_due(&a.state.node).await.unwrap().is_none());
    drop((on_a, on_b));
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_longer_than_the_removal_log_keeps_starts_with_an_empty_l1() {
    let db = test_database().await;
    let (da, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestRelay::start(config(da.path(), &db.url, Retention::default())).await;
    let b = TestRelay::start(config(dir_b.path(), &db.url, Retention::default())).await;
    let k = Keys::generate().unwrap();
    let (spam, kept) = (
        aged(&k, 1, Duration::ZERO, "spam"),
        aged(&k, 1, Duration::ZERO, "ok"),
    );
    let mut on_a = a.client().await;
    for e in [&spam, &kept] {
        assert!(on_a.publish(e).await.0);
    }
    until_l1(&b, &[spam.id(), kept.id()], true, "B never got the events").await;
    b.close().await;
    // While B is away: the spam is purged (into the removal log) and the log pruned.
    let purged = a
        .state
        .node
        .store()
        .purge(
            &eventstore::Purge::Matching(eventstore::Filter::new().id(spam.id())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(purged, vec![spam.id()]);
    let L2::Postgres(pg) = &a.state.node.l2 else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        pg.prune_removed(Duration::from_millis(50), 1_000)
            .await
            .unwrap()
            >= 1
    );
    // B comes back: its cursor is older than half the horizon, so it trusts nothing.
    let b = TestRelay::start(config(dir_b.path(), &db.url, Retention::default())).await;
    let tiered = &b.state.node.tiered;
    assert_eq!(
        tiered
            .stats()
            .l1_resets
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let held = tiered.l1().contains(&[spam.id()]).await.unwrap();
    assert_eq!(held, vec![false], "B's L1 kept an event L2 purged");
    let mut on_b = b.client().await;
    let served = on_b
        .req("s", &[json!({"authors": [k.public_key().to_string()]})])
        .await;
    assert_eq!(served, vec![kept.id().to_string()]);
    drop((on_a, on_b));
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_event_sent_again_is_held_and_served_by_every_node() {
    let db = test_database().await;
    let (da, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestRelay::start(config(da.path(), &db.url, Retention::default())).await;
    let b = TestRelay::start(config(dir_b.path(), &db.url, Retention::default())).await;
    let k = Keys::generate().unwrap();
    let e = aged(&k, 1, Duration::ZERO, "purged, then sent again");
    let mut on_a = a.client().await;
    assert!(on_a.publish(&e).await.0);
    until_l1(&b, &[e.id()], true, "B never got the event").await;
    let what = eventstore::Purge::Matching(eventstore::Filter::new().id(e.id()));
    let purged = a.state.node.store().purge(&what, 10).await.unwrap();
    assert_eq!(purged, vec![e.id()]);
    // Sent again at once: L2 stores it again (a purge leaves no tombstone), while the
    // old removal is still in every poller's look-back.
    let (ok, msg) = on_a.publish(&e).await;
    assert!(ok && msg.is_empty(), "{msg}");
    // Well past the look-back (4 x 100 ms) and a full re-read: still held everywhere.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (relay, name) in [(&a, "A"), (&b, "B")] {
        until_l1(
            relay,
            &[e.id()],
            true,
            &format!("{name} lost the event sent again"),
        )
        .await;
        let mut c = relay.client().await;
        let got = c.req("e", &[json!({"ids": [e.id().to_string()]})]).await;
        assert_eq!(got, vec![e.id().to_string()], "{name}");
    }
    drop(on_a);
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_finds_a_wipe_and_starts_its_l1_afresh() {
    let db = test_database().await;
    let (da, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestRelay::start(config(da.path(), &db.url, Retention::default())).await;
    let b = TestRelay::start(config(dir_b.path(), &db.url, Retention::default())).await;
    let k = Keys::generate().unwrap();
    let e = aged(&k, 1, Duration::ZERO, "wiped while B runs");
    let mut on_a = a.client().await;
    assert!(on_a.publish(&e).await.0);
    until_l1(&b, &[e.id()], true, "B never got the event").await;
    let L2::Postgres(pg) = &a.state.node.l2 else {
        unreachable!()
    };
    assert_eq!(pg.wipe().await.unwrap(), 1);
    // B asks the feed whether it still covers its position every 10 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let resets = &b.state.node.tiered.stats().l1_resets;
    while resets.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "B never noticed the wipe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_l1(&b, &[e.id()], false, "B's L1 kept a wiped event").await;
    let mut on_b = b.client().await;
    assert!(on_b.req("all", &[json!({})]).await.is_empty());
    drop((on_a, on_b));
    b.close().await;
    a.close().await;
}

/// `max_per_author`: each author keeps its newest N events of the rule's kinds (and
/// those sharing the second of the N-th: a filter cannot split a second); the rest
/// leave L2 and every node's L1, and other kinds and other authors are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_author_keeps_each_authors_newest_on_every_node() {
    let db = test_database().await;
    let retention = Retention {
        rules: vec![Rule {
            kinds: Some([Kind(1)].into_iter().collect()),
            older_than: None,
            max_per_author: Some(5),
        }],
        interval: Duration::from_secs(3_600),
        ..Retention::default()
    };
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestRelay::start(config(da.path(), &db.url, retention.clone())).await;
    let b = TestRelay::start(config(db_dir.path(), &db.url, retention)).await;
    let minute = Duration::from_secs(60);
    let (heavy, light, tied) = (
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
    );
    // Newest first: heavy has 12 notes a minute apart, and reactions (another kind).
    let heavy_notes: Vec<_> = (1..=12)
        .map(|i| aged(&heavy, 1, minute * i, &format!("heavy {i}")))
        .collect();
    let reactions: Vec<_> = (1..=8)
        .map(|i| aged(&heavy, 7, minute * i, &format!("+{i}")))
        .collect();
    let light_notes: Vec<_> = (1..=3)
        .map(|i| aged(&light, 1, minute * i, &format!("light {i}")))
        .collect();
    // The 5th and 6th newest share a second: both stay, the 7th goes.
    let tied_notes: Vec<_> = [1, 2, 3, 4, 5, 5, 6]
        .iter()
        .enumerate()
        .map(|(n, &i)| aged(&tied, 1, minute * i, &format!("tied {n}")))
        .collect();
    let mut on_a = a.client().await;
    let all: Vec<&Event> = heavy_notes
        .iter()
        .chain(&reactions)
        .chain(&light_notes)
        .chain(&tied_notes)
        .collect();
    for e in &all {
        let (ok, msg) = on_a.publish(e).await;
        assert!(ok, "{msg}");
    }
    let all_ids: Vec<EventId> = all.iter().map(|e| e.id()).collect();
    until_l1(&b, &all_ids, true, "B's poller never brought the events").await;

    let report = run_if_due(&a.state.node).await.unwrap().expect("A's turn");
    assert_eq!(
        report.retention.get("kinds=1,max_per_author=5"),
        Some(&8),
        "{report:?}"
    );
    let gone: Vec<EventId> = ids(&heavy_notes[5..])
        .into_iter()
        .chain([tied_notes[6].id()])
        .collect();
    let kept: Vec<EventId> = ids(&heavy_notes[..5])
        .into_iter()
        .chain(ids(&reactions))
        .chain(ids(&light_notes))
        .chain(ids(&tied_notes[..6]))
        .collect();
    until_l1(&b, &gone, false, "B's L1 still holds trimmed notes").await;
    until_l1(&b, &kept, true, "B lost what the rule keeps").await;
    let mut on_b = b.client().await;
    let served = on_b
        .req(
            "r",
            &[json!({"authors": [heavy.public_key().to_hex()], "kinds": [1]})],
        )
        .await;
    let mut served = served;
    served.sort();
    let mut want: Vec<String> = ids(&heavy_notes[..5]).iter().map(EventId::to_hex).collect();
    want.sort();
    assert_eq!(served, want);
    // A second run finds nothing more to trim.
    let again = retention_again(&a).await;
    assert_eq!(again, 0);
    drop((on_a, on_b));
    b.close().await;
    a.close().await;
}

/// Runs the cluster's maintenance on `relay` now, whenever the last run was, and
/// returns how many events its rules purged.
async fn retention_again(relay: &TestRelay) -> u64 {
    let node = &relay.state.node;
    let L2::Postgres(pg) = &node.l2 else {
        panic!("a PostgreSQL node")
    };
    let store = node.store();
    let report = layer2_relay::maintenance::run_now(
        store.as_ref(),
        Some(pg.as_ref()),
        &node.config.retention,
    )
    .await
    .unwrap()
    .expect("nobody else runs");
    report.retention.values().sum()
}
