//! The embedded default: one unbounded redb file serves as both tiers, and a separate
//! bounded L1 in front of it (`embedded_l1`) can be switched on and off over the same
//! data directory without losing or hiding anything.

use std::path::Path;

use layer2_relay::Config;
use layer2_relay::eventstore::Keys;
use serde_json::json;

use super::client::{TestRelay, note};
use super::http::metric;

fn config(dir: &Path, embedded_l1: bool) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        l1_max_bytes: 8 << 20,
        embedded_l1,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_by_default_and_a_separate_l1_on_request_over_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate().unwrap();

    // Default: every event written once, into l2.redb; no L1 file.
    let relay = TestRelay::start(config(dir.path(), false)).await;
    let mut c = relay.client().await;
    let first = note(&keys, "written once");
    assert!(c.publish(&first).await.0);
    let mine = json!({"authors": [keys.public_key().to_string()]});
    assert_eq!(c.req("a", std::slice::from_ref(&mine)).await.len(), 1);
    let (_, _, text) = relay.get("/metrics", "*/*").await;
    assert_eq!(
        metric(&text, "layer2_l1_budget_bytes"),
        0.0,
        "one unbounded file: no budget"
    );
    assert_eq!(
        metric(&text, "layer2_l2_queries_total"),
        0.0,
        "the one file answers everything itself"
    );
    assert_eq!(
        metric(&text, "layer2_l1_write_seconds_count"),
        0.0,
        "one file: nothing to mirror"
    );
    assert!(
        !text.contains("layer2_l2_event_cache_hits_total"),
        "one file: its decoded events are reported once, as L1's"
    );
    assert!(dir.path().join("l2.redb").exists());
    assert!(!dir.path().join("l1.redb").exists());
    relay.close().await;

    // A bounded L1 in front: it warms from l2.redb and serves what was written before.
    let relay = TestRelay::start(config(dir.path(), true)).await;
    let mut c = relay.client().await;
    let ids = json!({"ids": [first.id().to_string()]});
    assert_eq!(c.req("b", std::slice::from_ref(&ids)).await.len(), 1);
    let second = note(&keys, "written twice");
    assert!(c.publish(&second).await.0);
    // Answered as soon as L2 holds it; a read that matches it waits until L1 does too.
    let theirs = json!({"ids": [second.id().to_string()]});
    assert_eq!(c.req("c", std::slice::from_ref(&theirs)).await.len(), 1);
    let (_, _, text) = relay.get("/metrics", "*/*").await;
    assert_eq!(metric(&text, "layer2_l1_budget_bytes"), (8u64 << 20) as f64);
    // Two files, two caches: L1 was warmed by reading the embedded L2, through its own.
    let l2_reads = metric(&text, "layer2_l2_event_cache_hits_total")
        + metric(&text, "layer2_l2_event_cache_misses_total");
    assert!(
        l2_reads >= 1.0,
        "the embedded L2's cache saw no read: {l2_reads}"
    );
    assert!(metric(&text, "layer2_l2_event_cache_bytes") > 0.0);
    // Written into L2, then mirrored into L1: one mirror timed.
    assert_eq!(metric(&text, "layer2_l1_write_seconds_count"), 1.0);
    assert!(dir.path().join("l1.redb").exists());
    relay.close().await;

    // Back to one file: everything is there (l2.redb was the authority all along).
    let relay = TestRelay::start(config(dir.path(), false)).await;
    let mut c = relay.client().await;
    assert_eq!(c.req("c", &[mine]).await.len(), 2);
    relay.close().await;
}

/// Switching the separate L1 off and on again: the L1 file of the first period must not
/// come back with what it held (events deleted or replaced meanwhile) nor hide what was
/// written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_l1_switched_off_and_on_again_never_serves_stale_events() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate().unwrap();
    let mine = json!({"authors": [keys.public_key().to_string()]});

    let relay = TestRelay::start(config(dir.path(), true)).await;
    let mut c = relay.client().await;
    let doomed = note(&keys, "to be deleted while L1 is off");
    assert!(c.publish(&doomed).await.0);
    assert_eq!(c.req("a", std::slice::from_ref(&mine)).await.len(), 1);
    relay.close().await;

    // One file: delete it (NIP-09) and write another.
    let relay = TestRelay::start(config(dir.path(), false)).await;
    assert!(
        !dir.path().join("l1.redb").exists(),
        "the stale L1 file is removed"
    );
    let mut c = relay.client().await;
    let deletion =
        layer2_relay::eventstore::EventBuilder::new(layer2_relay::eventstore::Kind(5), "")
            .tags(vec![vec!["e".into(), doomed.id().to_string()]])
            .sign(&keys);
    assert!(c.publish(&deletion).await.0);
    let fresh = note(&keys, "written while L1 is off");
    assert!(c.publish(&fresh).await.0);
    relay.close().await;

    // The separate L1 again: it warms from l2.redb, never from what it held before.
    let relay = TestRelay::start(config(dir.path(), true)).await;
    let mut c = relay.client().await;
    let mut got = c.req("b", std::slice::from_ref(&mine)).await;
    got.sort();
    let mut want = vec![deletion.id().to_string(), fresh.id().to_string()];
    want.sort();
    assert_eq!(
        got, want,
        "the deleted note is gone and the new one is there"
    );
    let ids = json!({"ids": [doomed.id().to_string()]});
    assert!(c.req("c", &[ids]).await.is_empty());
    relay.close().await;
}

/// The `OK` comes once L2 holds an event, before L1 does (`tiered/unsettled.rs`); a
/// client told of it (here: by the publisher, at once) finds it on this node however
/// soon it asks, on any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_answered_ok_is_found_at_once_from_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(config(dir.path(), true)).await;
    let (mut publisher, mut reader) = (relay.client().await, relay.client().await);
    // Other publishers keep L1's writer busy, so landings take a while.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut c = relay.client().await;
        let stop = stop.clone();
        others.push(tokio::spawn(async move {
            let keys = Keys::generate().unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(c.publish(&note(&keys, &format!("load {n}"))).await.0);
                n += 1;
            }
        }));
    }
    let keys = Keys::generate().unwrap();
    for i in 0..100 {
        let e = note(&keys, &format!("read at once {i}"));
        assert!(publisher.publish(&e).await.0);
        // A subscription per round, closed after: the last round's, left open, would
        // get this event live, and that copy is no part of this answer.
        let sub = format!("r{i}");
        let by_author = json!({"authors": [keys.public_key().to_string()]});
        let got = reader.req(&sub, std::slice::from_ref(&by_author)).await;
        reader.send(&json!(["CLOSE", sub]).to_string()).await;
        assert_eq!(got.len(), i + 1, "round {i}");
        assert!(
            got.iter().any(|g| g.contains(&e.id().to_string())),
            "round {i}: {got:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for o in others {
        o.await.unwrap();
    }
    relay.close().await;
}

/// What a deletion or a new version removes is gone for a read right after its `OK`:
/// such events land in L1 before they are answered (a read waits only for landing
/// events its filters match, and what they remove need not match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_deletion_or_a_new_version_removes_is_gone_at_its_ok() {
    use layer2_relay::eventstore::{EventBuilder, Kind, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(config(dir.path(), true)).await;
    let (mut writer, mut reader) = (relay.client().await, relay.client().await);
    let keys = Keys::generate().unwrap();
    let base = Timestamp::now().0 - 1_000;
    for i in 0..20u64 {
        let doomed = note(&keys, &format!("doomed {i}"));
        assert!(writer.publish(&doomed).await.0);
        let deletion = EventBuilder::new(Kind::DELETION, "")
            .tag(["e".to_owned(), doomed.id().to_string()])
            .sign(&keys);
        assert!(writer.publish(&deletion).await.0);
        let (d, r) = (format!("d{i}"), format!("r{i}"));
        let by_id = json!({"ids": [doomed.id().to_string()]});
        let got = reader.req(&d, std::slice::from_ref(&by_id)).await;
        reader.send(&json!(["CLOSE", d]).to_string()).await;
        assert!(got.is_empty(), "round {i}: deleted, yet served: {got:?}");

        let old = EventBuilder::new(Kind::METADATA, format!("{{\"name\":\"v{i}\"}}"))
            .created_at(Timestamp(base + 2 * i))
            .sign(&keys);
        let new = EventBuilder::new(Kind::METADATA, format!("{{\"name\":\"w{i}\"}}"))
            .created_at(Timestamp(base + 2 * i + 1))
            .sign(&keys);
        assert!(writer.publish(&old).await.0);
        assert!(writer.publish(&new).await.0);
        let by_id = json!({"ids": [old.id().to_string()]});
        let got = reader.req(&r, std::slice::from_ref(&by_id)).await;
        reader.send(&json!(["CLOSE", r]).to_string()).await;
        assert!(got.is_empty(), "round {i}: replaced, yet served: {got:?}");
    }
    relay.close().await;
}
