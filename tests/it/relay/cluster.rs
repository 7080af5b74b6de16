//! Three relay nodes on one ephemeral PostgreSQL, each on its own loopback port, talked
//! to only over WebSocket.

use std::time::Duration;

use eventstore::{Keys, Timestamp};
use layer2::testsupport::{TestDb, test_database};
use layer2_relay::config::Config;
use serde_json::json;

use super::client::{Client, TestRelay, event, note};

pub struct Cluster {
    pub nodes: Vec<TestRelay>,
    _dirs: Vec<tempfile::TempDir>,
    _db: TestDb,
}

/// Three nodes sharing one database, with a fast poller.
pub async fn three_nodes() -> Cluster {
    let db = test_database().await;
    let (nodes, dirs) = nodes_on(&db.url, 3).await;
    Cluster {
        nodes,
        _dirs: dirs,
        _db: db,
    }
}

/// `n` nodes on the database at `url`, each with a small L1 in a directory of its own
/// and a fast poller.
pub async fn nodes_on(url: &str, n: usize) -> (Vec<TestRelay>, Vec<tempfile::TempDir>) {
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(url.to_string()),
            l1_max_bytes: 4 << 20,
            l1_durable: Some(false),
            poll_frequency: Duration::from_millis(50),
            pg_max_connections: 4,
            ..Config::default()
        };
        nodes.push(TestRelay::start(config).await);
        dirs.push(dir);
    }
    (nodes, dirs)
}

/// Polls REQs on `c` until `ids` of the filter equal `want` (the poller's look-back
/// bounds how long that takes) or a few seconds pass.
async fn eventually(c: &mut Client, filter: serde_json::Value, want: &[String]) -> Vec<String> {
    let mut got = Vec::new();
    for i in 0..100 {
        got = c
            .req(&format!("poll{i}"), std::slice::from_ref(&filter))
            .await;
        c.send(&format!("[\"CLOSE\",\"poll{i}\"]")).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_a_reaches_b_and_c_and_its_deletion_too() {
    let cluster = three_nodes().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let keys = Keys::generate().unwrap();
    let author = keys.public_key().to_string();
    let mut sub_b = b.client().await;
    assert!(
        sub_b
            .req("live", &[json!({"authors": [author]})])
            .await
            .is_empty()
    );

    let mut pa = a.client().await;
    let e = note(&keys, "from A");
    assert!(pa.publish(&e).await.0);
    let id = e.id().to_string();

    // B's live subscriber gets it once, via B's poller.
    let v = sub_b.expect("EVENT").await;
    assert_eq!(v[1], "live");
    assert_eq!(v[2]["id"], id);
    sub_b.expect_silence(Duration::from_millis(500)).await;

    // A REQ on C returns it.
    let mut rc = c.client().await;
    assert_eq!(rc.req("c", &[json!({"ids": [id]})]).await, vec![id.clone()]);
    assert_eq!(
        rc.req("c2", &[json!({"authors": [author]})]).await,
        vec![id.clone()]
    );

    // A deletion on A stops it being served on B and C.
    let deletion = event(&keys, 5, "", &[&["e", &id]]);
    assert!(pa.publish(&deletion).await.0);
    let filter = json!({"kinds": [1], "authors": [author]});
    let mut rb = b.client().await;
    assert!(
        eventually(&mut rb, filter.clone(), &[]).await.is_empty(),
        "B still serves it"
    );
    assert!(
        eventually(&mut rc, filter, &[]).await.is_empty(),
        "C still serves it"
    );
    assert!(rb.req("id", &[json!({"ids": [id]})]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_event_is_served_by_no_node() {
    let cluster = three_nodes().await;
    let keys = Keys::generate().unwrap();
    let mut pa = cluster.nodes[0].client().await;
    let soon = (Timestamp::now().0 + 2).to_string();
    let e = event(&keys, 1, "brief", &[&["expiration", &soon]]);
    assert!(pa.publish(&e).await.0);
    let id = e.id().to_string();
    // Before expiry, every node serves it.
    for n in &cluster.nodes {
        let mut c = n.client().await;
        let got = eventually(&mut c, json!({"ids": [id]}), std::slice::from_ref(&id)).await;
        assert_eq!(got, vec![id.clone()]);
    }
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    for n in &cluster.nodes {
        let mut c = n.client().await;
        assert!(c.req("x", &[json!({"ids": [id]})]).await.is_empty());
        assert!(c.req("y", &[json!({"kinds": [1]})]).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_poller_in_cluster_mode() {
    let cluster = three_nodes().await;
    for n in &cluster.nodes {
        let mut state = String::new();
        for _ in 0..100 {
            let (status, _, body) = n.get("/health", "*/*").await;
            assert_eq!(status, 200, "{body}");
            let h: serde_json::Value = serde_json::from_str(&body).unwrap();
            state = h["poller"]["state"].as_str().unwrap().to_string();
            if state == "healthy" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, "healthy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_l2_is_gone_and_degraded_reads_are_refused() {
    let db = test_database().await;
    let dir = tempfile::tempdir().unwrap();
    // The strict behaviour: no L1-only answers, no outbox (`relay/outage.rs` tests the
    // default, which keeps serving).
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        l1_max_bytes: 4 << 20,
        poll_frequency: Duration::from_millis(50),
        pg_max_connections: 2,
        serve_degraded: false,
        outbox_max_bytes: 0,
        ..Config::default()
    };
    let relay = TestRelay::start(config).await;
    assert_eq!(relay.get("/health", "*/*").await.0, 200);
    // Take the node's database away underneath it.
    let admin = layer2::testsupport::cluster_url().expect("cluster");
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let (status, _, body) = relay.get("/health", "*/*").await;
    assert_eq!(status, 503, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["serving"], false);
    assert_eq!(h["l2"]["ok"], false);
    assert!(h["l2"]["error"].is_string());
    // Publishing now fails visibly with `error:`, and the connection survives.
    let keys = Keys::generate().unwrap();
    let mut c = relay.client().await;
    let (ok, msg) = c.publish(&note(&keys, "nowhere to go")).await;
    assert!(!ok && msg.starts_with("error:"), "{msg}");
    c.send("[\"COUNT\",\"n\",{}]").await;
    let v = c.expect("CLOSED").await;
    assert!(v[2].as_str().unwrap().starts_with("error:"), "{v}");
}

/// Regression: an event fetched from L2 for a REQ on B, then read back by B's poller,
/// was sent to the subscription a second time after EOSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fetched_from_l2_is_not_sent_again_when_the_poller_brings_it() {
    let cluster = three_nodes().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let keys = Keys::generate().unwrap();
    let mut pa = a.client().await;
    let mut cb = b.client().await;
    for i in 0..5 {
        let e = note(&keys, &format!("fetched early {i}"));
        assert!(pa.publish(&e).await.0);
        let sub = format!("early{i}");
        // Straight after the OK: B's poller has most likely not read it yet.
        let got = cb.req(&sub, &[json!({"ids": [e.id().to_string()]})]).await;
        assert_eq!(got, vec![e.id().to_string()]);
    }
    // Every poll has passed by now; nothing may arrive a second time.
    cb.expect_silence(Duration::from_millis(800)).await;
}
