//! Every limit and every kind of bad input gets a clear reply with a NIP-01 prefix; the
//! connection and the node survive, and nothing stored is harmed.

use eventstore::{EventBuilder, Timestamp};
use layer2_relay::config::Limits;
use serde_json::{Value, json};

use super::client::{Client, event, note, relay_with};

/// The relay still answers on this connection and still holds `id`.
async fn still_serving(c: &mut Client, id: &str) {
    let ids = c.req("alive", &[json!({"ids": [id]})]).await;
    assert_eq!(ids, vec![id.to_string()], "stored event still served");
    c.send(r#"["CLOSE","alive"]"#).await;
}

async fn notice_for(c: &mut Client, text: &str) -> String {
    c.send(text).await;
    let v = c.expect("NOTICE").await;
    let msg = v[1].as_str().expect("message").to_string();
    assert!(msg.starts_with("invalid:"), "{text} -> {msg}");
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_notices_and_the_connection_survives() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let kept = note(&keys, "kept");
    assert!(c.publish(&kept).await.0);
    for text in [
        "not json",
        "{\"an\":\"object\"}",
        "[]",
        "[42]",
        "[\"HELLO\",1]",
        "[\"EVENT\"]",
        "[\"EVENT\",{},{}]",
        "[\"CLOSE\"]",
        "[\"REQ\"]",
        "[\"REQ\",7,{}]",
        "\"just a string\"",
        "[\"EVENT\",\"not an object\"]",
    ] {
        notice_for(&mut c, text).await;
    }
    c.send_binary(vec![0, 1, 2]).await;
    let v = c.expect("NOTICE").await;
    assert!(v[1].as_str().unwrap().contains("binary"), "{v}");
    still_serving(&mut c, &kept.id().to_string()).await;
}

/// An event JSON with one field changed, keeping its (now wrong) id and signature.
fn tampered(e: &eventstore::Event, field: &str, value: Value) -> String {
    let mut v: Value = serde_json::from_str(e.as_json()).unwrap();
    v[field] = value;
    json!(["EVENT", v]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_ok_false_invalid() {
    let (_relay, keys, mut c) = relay_with(Limits::default()).await;
    let e = note(&keys, "honest");
    let id = e.id().to_string();
    for (field, value, needle) in [
        ("content", json!("forged"), "id does not match"),
        ("kind", json!("one"), "malformed"),
        ("created_at", json!(-5), "malformed"),
        ("tags", json!([["e", 5]]), "malformed"),
        ("sig", json!("00".repeat(64)), "signature"),
        ("sig", json!("zz"), "sig"),
        ("pubkey", json!("ab"), "pubkey"),
    ] {
        c.send(&tampered(&e, field, value)).await;
        let (ok, msg) = c.ok_for(&id).await;
        assert!(!ok, "{field}");
        assert!(
            msg.starts_with("invalid:") && msg.contains(needle),
            "{field}: {msg}"
        );
    }
    // An event whose id is itself unreadable can only be answered with a NOTICE.
    c.send(&tampered(&e, "id", json!("xyz"))).await;
    c.expect("NOTICE").await;
    assert!(
        c.req("none", &[json!({"ids": [id]})]).await.is_empty(),
        "nothing forged was stored"
    );
    // The genuine event is still accepted on the same connection.
    assert!(c.publish(&e).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_limits_are_enforced() {
    let limits = Limits {
        max_event_bytes: 2_000,
        max_event_tags: 3,
        created_at_lower_limit: 3_600,
        ..Limits::default()
    };
    let (_relay, keys, mut c) = relay_with(limits).await;
    let cases = [
        (note(&keys, &"x".repeat(3_000)), "bytes"),
        (
            event(
                &keys,
                1,
                "t",
                &[&["t", "a"], &["t", "b"], &["t", "c"], &["t", "d"]],
            ),
            "tags",
        ),
        (
            EventBuilder::text_note("future")
                .created_at(Timestamp(Timestamp::now().0 + 3_600))
                .sign(&keys),
            "future",
        ),
        (
            EventBuilder::text_note("ancient")
                .created_at(Timestamp(Timestamp::now().0 - 7_200))
                .sign(&keys),
            "past",
        ),
    ];
    for (e, needle) in &cases {
        let (ok, msg) = c.publish(e).await;
        assert!(
            !ok && msg.starts_with("invalid:") && msg.contains(needle),
            "{needle}: {msg}"
        );
    }
    // NIP-70 protected events need their author's AUTH first.
    let (ok, msg) = c.publish(&event(&keys, 1, "mine", &[&["-"]])).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");
    let fine = note(&keys, "fine");
    assert!(c.publish(&fine).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_get_a_notice_and_huge_frames_close_only_that_connection() {
    let limits = Limits {
        max_message_bytes: 4_096,
        max_event_bytes: 4_096,
        ..Limits::default()
    };
    let (relay, keys, mut c) = relay_with(limits).await;
    let kept = note(&keys, "kept");
    assert!(c.publish(&kept).await.0);
    let msg = notice_for(
        &mut c,
        &format!("[\"REQ\",\"big\",{{\"search\":\"{}\"}}]", "a".repeat(6_000)),
    )
    .await;
    assert!(msg.contains("limit"), "{msg}");
    still_serving(&mut c, &kept.id().to_string()).await;

    // Past four times the limit the frame is refused and this connection closes.
    c.send(&"b".repeat(40_000)).await;
    assert!(c.is_closed().await);
    let mut other = relay.client().await;
    still_serving(&mut other, &kept.id().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_are_enforced() {
    let limits = Limits {
        max_subscriptions: 2,
        max_filters: 2,
        max_limit: 3,
        ..Limits::default()
    };
    let (_relay, keys, mut c) = relay_with(limits).await;
    for i in 0..5 {
        assert!(c.publish(&note(&keys, &format!("n{i}"))).await.0);
    }
    // `limit` is clamped to max_limit, and a filter without one gets at most that.
    assert_eq!(
        c.req("a", &[json!({"kinds": [1], "limit": 100})])
            .await
            .len(),
        3
    );
    assert_eq!(c.req("b", &[json!({"kinds": [1]})]).await.len(), 3);

    let closed = |v: &Value, sub: &str, prefix: &str| {
        assert_eq!(v[0], "CLOSED", "{v}");
        assert_eq!(v[1], sub);
        assert!(v[2].as_str().unwrap().starts_with(prefix), "{v}");
    };
    c.send(r#"["REQ","c",{"kinds":[1]}]"#).await;
    closed(&c.recv().await, "c", "blocked:");
    // Replacing an open subscription is not a new one.
    assert_eq!(
        c.req("b", &[json!({"kinds": [1], "limit": 1})]).await.len(),
        1
    );
    c.send(r#"["CLOSE","a"]"#).await;
    c.send(r#"["REQ","d",{},{},{}]"#).await;
    closed(&c.recv().await, "d", "invalid:");
    let long = "s".repeat(65);
    c.send(&json!(["REQ", long, {}]).to_string()).await;
    closed(&c.recv().await, &long, "invalid:");
    c.send(r#"["REQ","e",{"kinds":"one"}]"#).await;
    closed(&c.recv().await, "e", "invalid:");
    c.send(r#"["REQ","f",{"search":"unsupported"}]"#).await;
    closed(&c.recv().await, "f", "invalid:");
    c.send(r#"["REQ","g"]"#).await;
    closed(&c.recv().await, "g", "invalid:");
    c.send(r#"["COUNT","h",{},{},{}]"#).await;
    closed(&c.recv().await, "h", "invalid:");
    // After closing "a", a new subscription fits again.
    assert_eq!(
        c.req("a2", &[json!({"kinds": [1], "limit": 2})])
            .await
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_per_connection() {
    let limits = Limits {
        events_per_second: 5,
        reqs_per_second: 5,
        ..Limits::default()
    };
    let (relay, keys, mut c) = relay_with(limits).await;
    let events: Vec<_> = (0..30).map(|i| note(&keys, &format!("f{i}"))).collect();
    for e in &events {
        c.send(&format!("[\"EVENT\",{}]", e.as_json())).await;
    }
    // OKs may come in any order: refusals are immediate, acceptances wait for storage.
    let mut limited = 0;
    for _ in &events {
        let v = c.expect("OK").await;
        if v[2] == false {
            assert!(v[3].as_str().unwrap().starts_with("rate-limited:"), "{v}");
            limited += 1;
        }
    }
    assert!(limited >= 15, "only {limited} of 30 refused");
    for i in 0..30 {
        c.send(&format!("[\"REQ\",\"q{i}\",{{\"limit\":0}}]")).await;
    }
    let mut refused = 0;
    for _ in 0..30 {
        let v = c.recv().await;
        if v[0] == "CLOSED" {
            assert!(
                v[2].as_str().unwrap().starts_with("rate-limited:")
                    || v[2].as_str().unwrap().starts_with("blocked:"),
                "{v}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused}");
    // A garbage flood: every message answered, the node still fine for others.
    for _ in 0..2_000 {
        c.send("garbage").await;
    }
    for _ in 0..2_000 {
        c.expect("NOTICE").await;
    }
    let mut other = relay.client().await;
    assert!(other.publish(&note(&keys, "after the flood")).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_with_503() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (relay, keys, mut a) = relay_with(limits).await;
    let _b = relay.client().await;
    let refused = tokio_tungstenite::connect_async(relay.url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!(
            "a third connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // The open ones still work, and the refusal is counted.
    assert!(a.publish(&note(&keys, "still fine")).await.0);
    let (_, _, text) = relay.get("/metrics", "*/*").await;
    assert!(
        text.contains("layer2_connections_refused_total 1"),
        "{text}"
    );
}

/// Regression: a REQ refused under the id of an open subscription got `CLOSED` but
/// left the old subscription delivering under that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_req_closes_the_subscription_it_names() {
    let (relay, keys, mut c) = relay_with(Limits::default()).await;
    let mut p = relay.client().await;
    c.req("x", &[json!({"kinds": [1]})]).await;
    c.send(r#"["REQ","x",{"kinds":"bad"}]"#).await;
    let v = c.expect("CLOSED").await;
    assert_eq!(v[1], "x");
    assert!(p.publish(&note(&keys, "after the refusal")).await.0);
    c.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_gets_ok_false_when_its_id_is_readable() {
    let limits = Limits {
        max_message_bytes: 4_096,
        max_event_bytes: 4_096,
        ..Limits::default()
    };
    let (_relay, keys, mut c) = relay_with(limits).await;
    let big = note(&keys, &"y".repeat(6_000));
    let (ok, msg) = c.publish(&big).await;
    assert!(
        !ok && msg.starts_with("invalid:") && msg.contains("limit"),
        "{msg}"
    );
}
