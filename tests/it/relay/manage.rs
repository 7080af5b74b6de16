//! NIP-86 relay management over HTTP, authorised by NIP-98: refusals of every
//! unauthorised call, and rulings made on one node enforced by every node of a
//! three-node cluster.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use eventstore::{EventBuilder, Keys, Kind, Timestamp};
use layer2::testsupport::test_database;
use layer2_relay::config::{Access, Config};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::access::relay_with_access;
use super::client::{TestRelay, http_post, note};

const RPC: &str = "application/nostr+json+rpc";

/// A NIP-98 `Authorization` value for a POST of `body` to `url`.
fn authorization(keys: &Keys, url: &str, body: &str, at: Timestamp) -> String {
    let digest = eventstore::hex::encode(&sha2::Sha256::digest(body.as_bytes()));
    let e = EventBuilder::new(Kind(27235), "")
        .tag(["u", url])
        .tag(["method", "POST"])
        .tag(["payload", digest.as_str()])
        .created_at(at)
        .sign(keys);
    let token = base64::engine::general_purpose::STANDARD.encode(e.as_json());
    format!("Nostr {token}")
}

/// Calls `method` on the node at `addr` as `keys`: (status, answer).
async fn call(addr: SocketAddr, keys: &Keys, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"method": method, "params": params}).to_string();
    let auth = authorization(keys, &format!("http://{addr}/"), &body, Timestamp::now());
    let (status, _, text) = http_post(
        addr,
        &[("Content-Type", RPC), ("Authorization", &auth)],
        &body,
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Header lines of a request.
type Headers = Vec<(&'static str, String)>;

fn admin_access(admin: &Keys) -> Access {
    Access {
        admins: [admin.public_key()].into_iter().collect(),
        ..Access::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_calls_are_refused() {
    let admin = Keys::generate().unwrap();
    let relay = relay_with_access(admin_access(&admin)).await;
    let addr = relay.addr;
    let url = format!("http://{addr}/");
    let body =
        json!({"method": "banpubkey", "params": [admin.public_key().to_string()]}).to_string();
    let now = Timestamp::now();
    let cases: Vec<(Headers, u16, &str)> = vec![
        (vec![("Content-Type", RPC.into())], 401, "no Authorization"),
        (
            vec![
                ("Content-Type", RPC.into()),
                ("Authorization", "Basic abc".into()),
            ],
            401,
            "another scheme",
        ),
        (
            vec![
                ("Content-Type", RPC.into()),
                ("Authorization", authorization(&admin, &url, "{}", now)),
            ],
            401,
            "another body's payload",
        ),
        (
            vec![
                ("Content-Type", RPC.into()),
                (
                    "Authorization",
                    authorization(&admin, &url, &body, Timestamp(now.0 - 600)),
                ),
            ],
            401,
            "stale",
        ),
        (
            vec![
                ("Content-Type", RPC.into()),
                (
                    "Authorization",
                    authorization(&admin, "https://elsewhere.example/", &body, now),
                ),
            ],
            401,
            "another relay",
        ),
        (
            vec![
                ("Content-Type", RPC.into()),
                (
                    "Authorization",
                    authorization(&Keys::generate().unwrap(), &url, &body, now),
                ),
            ],
            403,
            "not an admin",
        ),
        (
            vec![
                ("Content-Type", "application/json".into()),
                ("Authorization", authorization(&admin, &url, &body, now)),
            ],
            415,
            "another content type",
        ),
    ];
    for (headers, want, what) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, _) = http_post(addr, &h, &body).await;
        assert_eq!(status, *want, "{what}");
    }
    // Nothing was banned: the admin still publishes.
    let mut c = relay.client().await;
    assert!(c.publish(&note(&admin, "still here")).await.0);
    let m = relay.get("/metrics", "text/plain").await.2;
    let unauthorized = super::http::metric(
        &m,
        "layer2_management_calls_total{outcome=\"unauthorized\"}",
    );
    assert_eq!(unauthorized, 5.0);
    // A relay without admins says nothing of NIP-86 and refuses every call.
    let plain = relay_with_access(Access::default()).await;
    let (status, _) = call(plain.addr, &admin, "supportedmethods", json!([])).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_answer_in_nip86_shapes_on_the_embedded_default() {
    let admin = Keys::generate().unwrap();
    let relay = relay_with_access(admin_access(&admin)).await;
    let a = relay.addr;
    let (status, v) = call(a, &admin, "supportedmethods", json!([])).await;
    assert_eq!(status, 200);
    let methods = v["result"].as_array().unwrap();
    for m in [
        "banpubkey",
        "listbannedpubkeys",
        "banevent",
        "allowkind",
        "changerelayname",
    ] {
        assert!(methods.contains(&json!(m)), "{m}");
    }
    let spammer = Keys::generate().unwrap();
    let mut c = relay.client().await;
    let spam = note(&spammer, "spam");
    assert!(c.publish(&spam).await.0);
    let pk = spammer.public_key().to_string();
    assert_eq!(
        call(a, &admin, "banpubkey", json!([pk, "spam"])).await.1["result"],
        true
    );
    let (_, v) = call(a, &admin, "listbannedpubkeys", json!([])).await;
    assert_eq!(v["result"], json!([{"pubkey": pk, "reason": "spam"}]));
    assert!(c.req("s", &[json!({"authors": [pk]})]).await.is_empty());
    let (ok, msg) = c.publish(&note(&spammer, "more")).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    assert_eq!(
        call(a, &admin, "unbanpubkey", json!([pk])).await.1["result"],
        true
    );
    assert!(c.publish(&note(&spammer, "reformed")).await.0);

    // Kinds: allowing one means only allowed kinds are taken.
    call(a, &admin, "allowkind", json!([1])).await;
    call(a, &admin, "disallowkind", json!([7])).await;
    let (_, v) = call(a, &admin, "listallowedkinds", json!([])).await;
    assert_eq!(v["result"], json!([1]));
    let (_, v) = call(a, &admin, "listdisallowedkinds", json!([])).await;
    assert_eq!(v["result"], json!([7]));
    let writer = Keys::generate().unwrap();
    assert!(c.publish(&note(&writer, "a note")).await.0);
    let (ok, msg) = c
        .publish(&super::client::event(&writer, 30023, "article", &[]))
        .await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");

    // Events, settings, and bad calls.
    let target = note(&writer, "illegal");
    assert!(c.publish(&target).await.0);
    let id = target.id().to_string();
    assert_eq!(
        call(a, &admin, "banevent", json!([id, "illegal"])).await.1["result"],
        true
    );
    let (_, v) = call(a, &admin, "listbannedevents", json!([])).await;
    assert_eq!(v["result"], json!([{"id": id, "reason": "illegal"}]));
    assert!(c.req("e", &[json!({"ids": [id]})]).await.is_empty());
    call(a, &admin, "changerelayname", json!(["renamed"])).await;
    call(
        a,
        &admin,
        "changerelayicon",
        json!(["https://example.com/icon.png"]),
    )
    .await;
    let doc: Value =
        serde_json::from_str(&relay.get("/", "application/nostr+json").await.2).unwrap();
    assert_eq!(doc["name"], "renamed");
    assert_eq!(doc["icon"], "https://example.com/icon.png");
    assert!(
        doc["supported_nips"]
            .as_array()
            .unwrap()
            .contains(&json!(86))
    );
    let (status, v) = call(a, &admin, "banpubkey", json!(["not hex"])).await;
    assert!(status == 200 && v["error"].as_str().is_some(), "{v}");
    let (_, v) = call(a, &admin, "nosuchmethod", json!([])).await;
    assert!(v["error"].as_str().unwrap().contains("unsupported"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_holds_on_every_node_of_the_cluster() {
    let db = test_database().await;
    let admin = Keys::generate().unwrap();
    // Dirs before nodes: the nodes are dropped first, then their directories.
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.url.clone()),
            l1_max_bytes: 4 << 20,
            l1_durable: Some(false),
            poll_frequency: Duration::from_millis(100),
            pg_max_connections: 4,
            access: admin_access(&admin),
            ..Config::default()
        };
        nodes.push(TestRelay::start(config).await);
        dirs.push(dir);
    }
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let spammer = Keys::generate().unwrap();
    let pk = spammer.public_key().to_string();
    let mut on_a = a.client().await;
    let spam: Vec<_> = (0..20)
        .map(|i| note(&spammer, &format!("spam {i}")))
        .collect();
    for e in &spam {
        assert!(on_a.publish(e).await.0);
    }
    // Every node holds them (its L1 too: the poller brought them).
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    for client in [&mut on_b, &mut on_c] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.req("s", &[json!({"authors": [pk]})]).await.len() < 20 {
            assert!(
                Instant::now() < deadline,
                "the spam never reached every node"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.send(r#"["CLOSE","s"]"#).await;
    }

    let (status, v) = call(a.addr, &admin, "banpubkey", json!([pk, "spam"])).await;
    assert_eq!((status, &v["result"]), (200, &json!(true)), "{v}");
    let banned_at = Instant::now();
    // B refuses at once: L2 itself enforces the ban, whatever B's copy of the rulings.
    let (ok, msg) = on_b.publish(&note(&spammer, "after the ban")).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    // And every node stops serving what was stored, from its L1 as well.
    for (client, name) in [(&mut on_b, "B"), (&mut on_c, "C")] {
        let mut i = 0;
        loop {
            let sub = format!("after{i}");
            let left = client.req(&sub, &[json!({"authors": [pk]})]).await;
            client.send(&format!("[\"CLOSE\",\"{sub}\"]")).await;
            if left.is_empty() {
                break;
            }
            assert!(
                banned_at.elapsed() < Duration::from_secs(2),
                "{name} still serves {} banned events",
                left.len()
            );
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // C's own policy has the ban within a poll period (its refusal then comes from the
    // relay, before the signature check; the message is the policy's).
    let deadline = Instant::now() + Duration::from_millis(1_000);
    loop {
        let (ok, msg) = on_c.publish(&note(&spammer, "probe")).await;
        assert!(!ok);
        if msg.contains("not accepted here") {
            break;
        }
        assert!(Instant::now() < deadline, "C never learned the ban: {msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v) = call(c.addr, &admin, "listbannedpubkeys", json!([])).await;
    assert_eq!(v["result"], json!([{"pubkey": pk, "reason": "spam"}]));
    // A rename on B shows on C's NIP-11 document.
    call(b.addr, &admin, "changerelayname", json!(["cluster"])).await;
    let deadline = Instant::now() + Duration::from_millis(1_000);
    loop {
        let doc: Value =
            serde_json::from_str(&c.get("/", "application/nostr+json").await.2).unwrap();
        if doc["name"] == "cluster" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "C still calls itself {}",
            doc["name"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Lifting the ban on C lets the author publish on A again.
    call(c.addr, &admin, "unbanpubkey", json!([pk])).await;
    let deadline = Instant::now() + Duration::from_millis(1_000);
    while !on_a.publish(&note(&spammer, "reformed")).await.0 {
        assert!(Instant::now() < deadline, "A still refuses after the unban");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
