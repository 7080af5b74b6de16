//! Who may write and read, over real WebSockets: NIP-42 AUTH and each of its refusals,
//! NIP-70 protected events, private kinds in REQ, COUNT and live delivery, and the
//! configured write and read policy.

use eventstore::{EventBuilder, Keys, Kind, Timestamp};
use layer2_relay::config::{Access, Config, Limits};
use serde_json::{Value, json};

use super::client::{Client, TestRelay, event, note};
use super::http::metric;

/// An embedded node with `access`.
pub async fn relay_with_access(access: Access) -> TestRelay {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        limits: Limits::default(),
        access,
        ..Config::default()
    };
    let mut r = TestRelay::start(config).await;
    r.dir = Some(dir);
    r
}

async fn metrics(relay: &TestRelay) -> String {
    relay.get("/metrics", "text/plain").await.2
}

/// Sends an `AUTH` with `e` and returns the `OK`.
async fn send_auth(c: &mut Client, e: &eventstore::Event) -> (bool, String) {
    c.send(&format!("[\"AUTH\",{}]", e.as_json())).await;
    c.ok_for(&e.id().to_string()).await
}

fn auth_event(
    keys: &Keys,
    relay: &str,
    challenge: &str,
    kind: u16,
    at: Timestamp,
) -> eventstore::Event {
    EventBuilder::new(Kind(kind), "")
        .tag(["relay", relay])
        .tag(["challenge", challenge])
        .created_at(at)
        .sign(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_refused_for_every_wrong_field_and_accepted_when_right() {
    let relay = relay_with_access(Access::default()).await;
    let mut c = relay.client().await;
    let keys = Keys::generate().unwrap();
    let now = Timestamp::now();
    let url = c.url.clone();
    let ch = c.challenge.clone();
    let cases = [
        (auth_event(&keys, &url, &ch, 1, now), "kind"),
        (
            auth_event(&keys, &url, "not-the-challenge", 22242, now),
            "challenge",
        ),
        (
            auth_event(&keys, "wss://elsewhere.example", &ch, 22242, now),
            "relay",
        ),
        (
            auth_event(&keys, &url, &ch, 22242, Timestamp(now.0 - 3_600)),
            "created_at",
        ),
        (
            auth_event(&keys, &url, &ch, 22242, Timestamp(now.0 + 3_600)),
            "created_at",
        ),
    ];
    for (e, needle) in &cases {
        let (ok, msg) = send_auth(&mut c, e).await;
        assert!(
            !ok && msg.starts_with("invalid:") && msg.contains(needle),
            "{needle}: {msg}"
        );
    }
    // A valid event whose signature was tampered with.
    let good = c.auth_event(&keys);
    let forged: Value = {
        let mut v: Value = serde_json::from_str(good.as_json()).unwrap();
        let sig = v["sig"].as_str().unwrap().to_string();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        v["sig"] = json!(format!("{flipped}{}", &sig[1..]));
        v
    };
    c.send(&format!("[\"AUTH\",{forged}]")).await;
    let (ok, msg) = c.ok_for(&good.id().to_string()).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    // A challenge from another connection does not work here.
    let other = relay.client().await;
    let stolen = auth_event(&keys, &url, &other.challenge, 22242, now);
    let (ok, _) = send_auth(&mut c, &stolen).await;
    assert!(!ok);
    // Missing tags are named.
    let bare = EventBuilder::new(Kind(22242), "").sign(&keys);
    let (ok, msg) = send_auth(&mut c, &bare).await;
    assert!(!ok && msg.contains("challenge"), "{msg}");

    assert_eq!(c.auth(&keys).await, (true, String::new()));
    // A second pubkey on the same connection.
    let second = Keys::generate().unwrap();
    assert!(c.auth(&second).await.0);
    // AUTH events never pass as EVENTs (NIP-42: never broadcast).
    let e = c.auth_event(&keys);
    let (ok, msg) = c.publish(&e).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");

    let m = metrics(&relay).await;
    assert_eq!(metric(&m, "layer2_auth_total{outcome=\"ok\"}"), 2.0);
    assert!(metric(&m, "layer2_auth_total{outcome=\"refused\"}") >= 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_event_is_taken_only_from_its_authenticated_author() {
    let relay = relay_with_access(Access::default()).await;
    let author = Keys::generate().unwrap();
    let other = Keys::generate().unwrap();
    let protected = event(&author, 1, "mine only", &[&["-"]]);

    let mut c = relay.client().await;
    let (ok, msg) = c.publish(&protected).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");
    assert!(c.auth(&other).await.0);
    let (ok, msg) = c.publish(&protected).await;
    assert!(!ok && msg.starts_with("restricted:"), "{msg}");
    assert!(c.auth(&author).await.0);
    assert_eq!(c.publish(&protected).await, (true, String::new()));

    // Anyone may read it.
    let mut reader = relay.client().await;
    let got = reader
        .req("r", &[json!({"ids": [protected.id().to_string()]})])
        .await;
    assert_eq!(got, vec![protected.id().to_string()]);
    let m = metrics(&relay).await;
    assert_eq!(
        metric(&m, "layer2_refusals_total{reason=\"protected\"}"),
        2.0
    );
}

fn dm(from: &Keys, to: &Keys, text: &str) -> eventstore::Event {
    event(from, 4, text, &[&["p", &to.public_key().to_string()]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_kinds_never_reach_a_stranger_in_req_count_or_live() {
    let relay = relay_with_access(Access::default()).await;
    let (alice, bob, eve) = (
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
    );
    let mut publisher = relay.client().await;
    let old_dm = dm(&alice, &bob, "old secret");
    let public = note(&alice, "public");
    assert!(publisher.publish(&old_dm).await.0);
    assert!(publisher.publish(&public).await.0);
    let wrap = event(
        &eve,
        1059,
        "wrapped",
        &[&["p", &bob.public_key().to_string()]],
    );
    assert!(publisher.publish(&wrap).await.0);

    // Unauthenticated: asking for the kind is refused; a wider filter leaves it out.
    let mut stranger = relay.client().await;
    stranger.send(r#"["REQ","dms",{"kinds":[4]}]"#).await;
    let v = stranger.expect("CLOSED").await;
    assert!(v[2].as_str().unwrap().starts_with("auth-required:"), "{v}");
    stranger.send(r#"["COUNT","c",{"kinds":[1059]}]"#).await;
    let v = stranger.expect("CLOSED").await;
    assert!(v[2].as_str().unwrap().starts_with("auth-required:"), "{v}");
    let all = stranger.req("all", &[json!({})]).await;
    assert_eq!(all, vec![public.id().to_string()]);
    let by_alice = stranger
        .req("a", &[json!({"authors": [alice.public_key().to_string()]})])
        .await;
    assert_eq!(by_alice, vec![public.id().to_string()]);
    stranger.send(r#"["COUNT","n",{}]"#).await;
    assert_eq!(stranger.expect("COUNT").await[2]["count"], 1);

    // Authenticated as a third party: still nothing private.
    let mut eve_c = relay.client().await;
    assert!(eve_c.auth(&eve).await.0);
    let got = eve_c.req("dms", &[json!({"kinds": [4]})]).await;
    assert!(got.is_empty(), "{got:?}");
    // Eve wrote the gift wrap (as its throw-away author), so she sees that one.
    let got = eve_c.req("w", &[json!({"kinds": [1059]})]).await;
    assert_eq!(got, vec![wrap.id().to_string()]);
    eve_c.send(r#"["COUNT","n",{"kinds":[4,1059]}]"#).await;
    assert_eq!(eve_c.expect("COUNT").await[2]["count"], 1);

    // The recipient sees both; the author sees her DM.
    let mut bob_c = relay.client().await;
    assert!(bob_c.auth(&bob).await.0);
    let mut got = bob_c.req("dms", &[json!({"kinds": [4, 1059]})]).await;
    got.sort();
    let mut want = vec![old_dm.id().to_string(), wrap.id().to_string()];
    want.sort();
    assert_eq!(got, want);
    bob_c.send(r#"["COUNT","n",{}]"#).await;
    assert_eq!(bob_c.expect("COUNT").await[2]["count"], 3);
    let mut alice_c = relay.client().await;
    assert!(alice_c.auth(&alice).await.0);
    let got = alice_c.req("dms", &[json!({"kinds": [4]})]).await;
    assert_eq!(got, vec![old_dm.id().to_string()]);

    // Live: a stranger subscribed to everything gets the public note, not the DM.
    stranger.send(r#"["CLOSE","all"]"#).await;
    stranger.send(r#"["CLOSE","a"]"#).await;
    let _ = stranger.req("live", &[json!({})]).await;
    let _ = bob_c
        .req("live", &[json!({"#p": [bob.public_key().to_string()]})])
        .await;
    let new_dm = dm(&alice, &bob, "new secret");
    let new_note = note(&alice, "new public");
    assert!(publisher.publish(&new_dm).await.0);
    assert!(publisher.publish(&new_note).await.0);
    let v = bob_c.expect("EVENT").await;
    assert_eq!(v[2]["id"], new_dm.id().to_string());
    let v = stranger.expect("EVENT").await;
    assert_eq!(v[2]["id"], new_note.id().to_string(), "a stranger got {v}");
    stranger
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_policy_refuses_with_the_right_prefixes() {
    let (allowed, denied, outsider) = (
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
        Keys::generate().unwrap(),
    );
    let access = Access {
        auth_required_for_writes: true,
        allowed_pubkeys: [allowed.public_key(), denied.public_key()]
            .into_iter()
            .collect(),
        denied_pubkeys: [denied.public_key()].into_iter().collect(),
        denied_kinds: [Kind(7)].into_iter().collect(),
        min_pow_difficulty: 1,
        ..Access::default()
    };
    let relay = relay_with_access(access).await;
    let mut c = relay.client().await;
    // A note whose id starts with a zero bit (one in two do).
    let mined = |keys: &Keys| loop {
        let e = note(keys, "mined");
        if e.id().0[0] < 0x80 {
            break e;
        }
    };
    let (ok, msg) = c.publish(&mined(&allowed)).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");
    assert!(c.auth(&outsider).await.0);
    let (ok, msg) = c.publish(&mined(&outsider)).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    let (ok, msg) = c.publish(&mined(&denied)).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    let reaction = loop {
        let e = event(&allowed, 7, "+", &[]);
        if e.id().0[0] < 0x80 {
            break e;
        }
    };
    let (ok, msg) = c.publish(&reaction).await;
    assert!(
        !ok && msg.starts_with("blocked:") && msg.contains('7'),
        "{msg}"
    );
    let lazy = loop {
        let e = note(&allowed, "no work");
        if e.id().0[0] >= 0x80 {
            break e;
        }
    };
    let (ok, msg) = c.publish(&lazy).await;
    assert_eq!(
        (ok, msg.as_str()),
        (false, "pow: difficulty 0 is less than 1")
    );
    assert!(c.publish(&mined(&allowed)).await.0);

    // NIP-11 says what is asked.
    let (_, _, body) = relay.get("/", "application/nostr+json").await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["limitation"]["restricted_writes"], true);
    assert_eq!(doc["limitation"]["min_pow_difficulty"], 1);
    assert_eq!(doc["limitation"]["auth_required"], false);
    for nip in [42, 70] {
        assert!(
            doc["supported_nips"]
                .as_array()
                .unwrap()
                .contains(&json!(nip))
        );
    }
    assert!(
        !doc["supported_nips"]
            .as_array()
            .unwrap()
            .contains(&json!(86))
    );
    let m = metrics(&relay).await;
    for (reason, n) in [
        ("auth_required_write", 1.0),
        ("not_allowed_pubkey", 1.0),
        ("denied_pubkey", 1.0),
        ("denied_kind", 1.0),
        ("pow", 1.0),
    ] {
        assert_eq!(
            metric(&m, &format!("layer2_refusals_total{{reason=\"{reason}\"}}")),
            n,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_require_auth() {
    let relay = relay_with_access(Access {
        auth_required_for_reads: true,
        ..Access::default()
    })
    .await;
    let mut c = relay.client().await;
    c.send(r#"["REQ","s",{}]"#).await;
    let v = c.expect("CLOSED").await;
    assert!(v[2].as_str().unwrap().starts_with("auth-required:"), "{v}");
    c.send(r#"["COUNT","n",{}]"#).await;
    let v = c.expect("CLOSED").await;
    assert!(v[2].as_str().unwrap().starts_with("auth-required:"), "{v}");
    // Writes stay open.
    let keys = Keys::generate().unwrap();
    assert!(c.publish(&note(&keys, "hi")).await.0);
    assert!(c.auth(&keys).await.0);
    assert_eq!(c.req("s", &[json!({})]).await.len(), 1);
}
