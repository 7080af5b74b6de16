//! Three relay nodes through a PostgreSQL outage, over WebSocket and HTTP only: while
//! PostgreSQL is stopped (`pg_ctl stop -m immediate`), every REQ gets its events and
//! `EOSE` (never `CLOSED`), quickly; every EVENT gets `OK true` (into the outbox);
//! `/health` says 200 and `"degraded": true`. Once PostgreSQL is back, every event
//! acknowledged before, during or after the outage is served by every node within 5 s.

use std::time::{Duration, Instant};

use eventstore::Keys;
use layer2::testsupport::OwnCluster;
use serde_json::json;

use super::client::note;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_through_an_outage_and_lose_nothing() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let (mut nodes, _dirs) = super::cluster::nodes_on(&pg.url, 3).await;
    let keys = Keys::from_seed(81);
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.client().await);
    }
    let mut acked = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let e = note(&keys, &format!("before the outage, node {i}"));
        assert_eq!(c.publish(&e).await, (true, String::new()));
        acked.push(e.id().to_string());
    }
    let by_author = json!({"authors": [keys.public_key().to_hex()], "limit": 100});

    pg.stop_immediate().expect("stop PostgreSQL");

    // Writes on every node: OK true.
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            let e = note(&keys, &format!("during the outage {round}, node {i}"));
            let (ok, msg) = c.publish(&e).await;
            assert!(ok, "EVENT during the outage on node {i}: {msg}");
            acked.push(e.id().to_string());
        }
    }
    // Reads on every node: EOSE, not CLOSED; after the first few, fast.
    let mut times = Vec::new();
    for round in 0..10 {
        for c in clients.iter_mut() {
            let t = Instant::now();
            let got = c
                .req(&format!("r{round}"), std::slice::from_ref(&by_author))
                .await;
            times.push(t.elapsed());
            c.send(&format!("[\"CLOSE\",\"r{round}\"]")).await;
            // Each node serves at least what was published on it.
            assert!(got.len() >= 4, "a degraded read returned {}", got.len());
        }
    }
    times.sort();
    let p99 = times[times.len() * 99 / 100 - 1];
    assert!(
        p99 < Duration::from_millis(250),
        "REQ p99 during the outage: {p99:?}"
    );
    for n in &nodes {
        let (status, _, body) = n.get("/health", "application/json").await;
        assert_eq!(status, 200, "{body}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["degraded"], true, "{body}");
        assert!(h["outbox"].as_u64().unwrap() >= 3, "{body}");
    }

    pg.restart().expect("start PostgreSQL again");
    let back = Instant::now();
    let after = note(&keys, "after the outage");
    let (ok, msg) = clients[0].publish(&after).await;
    assert!(ok, "{msg}");
    acked.push(after.id().to_string());
    acked.sort();

    // Every acknowledged event, on every node, within a few seconds.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        for round in 0..150 {
            got = c
                .req(&format!("a{round}"), std::slice::from_ref(&by_author))
                .await;
            c.send(&format!("[\"CLOSE\",\"a{round}\"]")).await;
            got.sort();
            if got == acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if got != acked {
            let mut health = Vec::new();
            for n in &nodes {
                health.push(n.get("/health", "application/json").await.2);
            }
            eprintln!("{}", pg.server_log());
            panic!(
                "node {i} serves {got:?}, not every acknowledged event {acked:?}; health: {health:?}"
            );
        }
    }
    // About 0.4 s on an idle 2-core machine; 5 s is the bound a client may expect.
    let converged = back.elapsed();
    assert!(
        converged < Duration::from_secs(5),
        "every node served every acknowledged event only {converged:?} after PostgreSQL returned"
    );
    // An outbox entry leaves only after PostgreSQL committed it, a moment after the
    // event became visible: every outbox drains within the same 5 s.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _, body) = n.get("/health", "application/json").await;
            assert_eq!(status, 200, "{body}");
            let h: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(h["degraded"], false, "{body}");
            if h["outbox"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the outbox never drained: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for n in &mut nodes {
        n.stop().await;
    }
}

/// A node process killed with SIGKILL while its outbox holds acknowledged events, and
/// started again once PostgreSQL is back, replays them: nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_events_in_its_outbox_loses_none() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let start = || start_process(addr, &pg.url, dir.path());
    let healthy = async || wait_healthy(addr).await;
    let mut child = start();
    healthy().await;
    let url = format!("ws://{addr}");
    let keys = Keys::from_seed(82);
    pg.stop_immediate().expect("stop PostgreSQL");
    let mut c = super::client::Client::connect(&url).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        let e = note(&keys, &format!("in the outbox {i}"));
        let (ok, msg) = c.publish(&e).await;
        assert!(ok, "{msg}");
        acked.push(e.id().to_string());
    }
    drop(c);
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    pg.restart().expect("start PostgreSQL again");
    let mut child = start();
    healthy().await;
    let by_author = json!({"authors": [keys.public_key().to_hex()]});
    let mut c = super::client::Client::connect(&url).await;
    acked.sort();
    let mut got = Vec::new();
    for round in 0..100 {
        // Once the outbox is empty, the events are in PostgreSQL: ask it directly.
        let (_, _, body) = super::client::http_get(addr, "/health", "*/*").await;
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        if h["outbox"] == 0 && h["degraded"] == false {
            got = c
                .req(&format!("k{round}"), std::slice::from_ref(&by_author))
                .await;
            got.sort();
            if got == acked {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, acked, "every acknowledged event survived the kill");
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE kind = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 10, "and they are in PostgreSQL");
}

/// A free loopback address for a node process.
pub(super) fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("address")
}

/// Starts the relay binary on `addr` with PostgreSQL at `url` and its data in `dir`
/// (polling every 50 ms), ignoring any LAYER2_ variables of the test environment.
pub(super) fn start_process(
    addr: std::net::SocketAddr,
    url: &str,
    dir: &std::path::Path,
) -> std::process::Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_layer2-relay"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LAYER2_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn")
        .args(["--listen", &addr.to_string(), "--database-url", url])
        .arg("--data-dir")
        .arg(dir)
        .args(["--poll-frequency", "50ms"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start the relay")
}

/// Waits until the node at `addr` answers `/health` with 200.
pub(super) async fn wait_healthy(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok()
            && super::client::http_get(addr, "/health", "*/*").await.0 == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay never became healthy");
}
