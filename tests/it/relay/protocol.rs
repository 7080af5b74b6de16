//! NIP-01, 09, 40 and 45 over a real WebSocket against one embedded node.

use std::time::Duration;

use eventstore::{EventBuilder, Keys, Kind, Timestamp};
use layer2_relay::config::Limits;
use serde_json::json;

use super::client::{TestRelay, event, note, relay_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ok_req_eose_then_live_then_close() {
    let (relay, keys, mut publisher) = relay_with(Limits::default()).await;
    let mut reader = relay.client().await;

    let first = note(&keys, "first");
    assert_eq!(publisher.publish(&first).await, (true, String::new()));
    // A second submission is accepted as a duplicate (NIP-01 `duplicate:` prefix).
    let (ok, msg) = publisher.publish(&first).await;
    assert!(ok && msg.starts_with("duplicate:"), "{msg}");

    let ids = reader
        .req("s1", &[json!({"authors": [keys.public_key().to_string()]})])
        .await;
    assert_eq!(ids, vec![first.id().to_string()]);

    // Live after EOSE, exactly once.
    let second = note(&keys, "second");
    assert!(publisher.publish(&second).await.0);
    let v = reader.expect("EVENT").await;
    assert_eq!(v[1], "s1");
    assert_eq!(v[2]["id"], second.id().to_string());
    reader.expect_silence(Duration::from_millis(200)).await;

    // CLOSE stops delivery.
    reader.send(r#"["CLOSE","s1"]"#).await;
    assert!(publisher.publish(&note(&keys, "third")).await.0);
    reader.expect_silence(Duration::from_millis(300)).await;
}

/// A client without `TCP_NODELAY` (this one, like most) that sends `CLOSE` and then
/// `REQ` has its REQ held by Nagle's algorithm until the node acknowledges the CLOSE,
/// and a kernel delays that ACK (40 ms at least on Linux) hoping to carry it on an
/// answer that CLOSE never gets. The node acknowledges at once (`relay/quickack.rs`).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_req_right_after_a_close_is_not_held_for_a_delayed_ack() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let e = note(&keys, "read again and again");
    assert!(c.publish(&e).await.0);
    let filter = json!({"authors": [keys.public_key().to_string()]});
    let mut took = Vec::new();
    for i in 0..30 {
        let start = std::time::Instant::now();
        c.send(&format!(r#"["CLOSE","s{i}"]"#)).await;
        let ids = c
            .req(&format!("s{}", i + 1), std::slice::from_ref(&filter))
            .await;
        took.push(start.elapsed());
        assert_eq!(ids, vec![e.id().to_string()]);
    }
    took.sort();
    // Held for a delayed ACK, most would take 40 ms or more.
    assert!(
        took[took.len() / 2] < Duration::from_millis(30),
        "CLOSE then REQ round trips: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_come_in_canonical_order_and_respect_limit() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let mut sent = Vec::new();
    for i in 0..5u64 {
        let e = EventBuilder::text_note(format!("n{i}"))
            .created_at(Timestamp(1_700_000_000 + i))
            .sign(&keys);
        assert!(c.publish(&e).await.0);
        sent.push(e.id().to_string());
    }
    sent.reverse(); // newest first
    let ids = c.req("all", &[json!({"kinds": [1]})]).await;
    assert_eq!(ids, sent);
    let ids = c.req("two", &[json!({"kinds": [1], "limit": 2})]).await;
    assert_eq!(ids, sent[..2].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_zero_answers_eose_at_once_then_streams() {
    let (relay, keys, mut c) = relay_with(Limits::default()).await;
    assert!(c.publish(&note(&keys, "old")).await.0);
    let ids = c.req("z", &[json!({"kinds": [1], "limit": 0})]).await;
    assert!(ids.is_empty(), "limit 0 sends no stored events");
    let new = note(&keys, "new");
    let mut p = relay.client().await;
    assert!(p.publish(&new).await.0);
    let v = c.expect("EVENT").await;
    assert_eq!(v[2]["id"], new.id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_req_reusing_an_id_replaces_the_subscription() {
    let (relay, keys, mut c) = relay_with(Limits::default()).await;
    let mut p = relay.client().await;
    c.req("x", &[json!({"kinds": [1]})]).await;
    c.req("x", &[json!({"kinds": [7]})]).await;
    assert!(p.publish(&note(&keys, "kind 1")).await.0);
    let reaction = event(&keys, 7, "+", &[]);
    assert!(p.publish(&reaction).await.0);
    let v = c.expect("EVENT").await;
    assert_eq!(
        v[2]["id"],
        reaction.id().to_string(),
        "only the new filter applies"
    );
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_answers_nip45() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    for i in 0..3 {
        assert!(c.publish(&note(&keys, &format!("c{i}"))).await.0);
    }
    c.send(
        &json!(["COUNT", "n", {"kinds": [1]}, {"authors": [keys.public_key().to_string()]}])
            .to_string(),
    )
    .await;
    let v = c.expect("COUNT").await;
    assert_eq!(v[1], "n");
    assert_eq!(v[2]["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_events_are_delivered_live_never_stored() {
    let (relay, keys, mut sub) = relay_with(Limits::default()).await;
    sub.req("e", &[json!({"kinds": [20001]})]).await;
    let mut p = relay.client().await;
    let eph = event(&keys, 20001, "now only", &[]);
    assert_eq!(p.publish(&eph).await, (true, String::new()));
    let v = sub.expect("EVENT").await;
    assert_eq!(v[2]["id"], eph.id().to_string());
    assert!(
        p.req("later", &[json!({"kinds": [20001]})])
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaceable_older_and_deleted_resubmissions_are_refused() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let newer = EventBuilder::new(Kind(0), "{\"name\":\"new\"}")
        .created_at(Timestamp(1_700_000_100))
        .sign(&keys);
    let older = EventBuilder::new(Kind(0), "{\"name\":\"old\"}")
        .created_at(Timestamp(1_700_000_000))
        .sign(&keys);
    assert!(c.publish(&newer).await.0);
    let (ok, msg) = c.publish(&older).await;
    assert!(!ok, "an older replaceable event is refused");
    assert!(msg.contains(':'), "the reason has a prefix: {msg}");
    let ids = c
        .req(
            "p",
            &[json!({"kinds": [0], "authors": [keys.public_key().to_string()]})],
        )
        .await;
    assert_eq!(ids, vec![newer.id().to_string()]);

    // NIP-09: a deletion removes the note; submitting it again is refused.
    let target = note(&keys, "regret");
    assert!(c.publish(&target).await.0);
    let deletion = event(&keys, 5, "", &[&["e", &target.id().to_string()]]);
    assert!(c.publish(&deletion).await.0);
    assert!(
        c.req("d", &[json!({"ids": [target.id().to_string()]})])
            .await
            .is_empty()
    );
    let (ok, msg) = c.publish(&target).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_are_refused_and_expiring_ones_stop_being_served() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let past = Timestamp::now().0 - 10;
    let expired = event(&keys, 1, "gone", &[&["expiration", &past.to_string()]]);
    let (ok, msg) = c.publish(&expired).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");

    let soon = (Timestamp::now().0 + 2).to_string();
    let expiring = event(&keys, 1, "brief", &[&["expiration", &soon]]);
    assert!(c.publish(&expiring).await.0);
    let f = json!({"ids": [expiring.id().to_string()]});
    assert_eq!(c.req("a", std::slice::from_ref(&f)).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert!(
        c.req("b", &[f]).await.is_empty(),
        "NIP-40: never served once expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_closes_connections_and_keeps_what_was_acknowledged() {
    let mut relay = TestRelay::embedded(Limits::default()).await;
    let keys = Keys::generate().unwrap();
    let mut c = relay.client().await;
    let e = note(&keys, "durable");
    assert!(c.publish(&e).await.0);
    relay.stop().await;
    assert!(
        c.is_closed().await,
        "clients are told the relay is going away"
    );
    let dir = relay.dir.take().expect("dir");
    relay.close().await;

    // A new node on the same directory serves the event.
    let config = layer2_relay::Config {
        data_dir: dir.path().to_path_buf(),
        l1_max_bytes: 8 << 20,
        ..layer2_relay::Config::default()
    };
    let relay = TestRelay::start(config).await;
    let mut c = relay.client().await;
    assert_eq!(
        c.req("r", &[json!({"ids": [e.id().to_string()]})])
            .await
            .len(),
        1
    );
}
