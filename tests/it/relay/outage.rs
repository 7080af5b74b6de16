//! Three relay nodes through a PostgreSQL outage, over WebSocket and HTTP only: while
//! PostgreSQL is stopped (`pg_ctl stop -m immediate`), every REQ gets its events and
//! `EOSE` (never `CLOSED`), quickly; every EVENT gets `OK true` (into the outbox);
//! `/health` says 200 and `"degraded": true`. Once PostgreSQL is back, every event
//! acknowledged before, during or after the outage is served by every node.

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
    for n in &nodes {
        let (status, _, body) = n.get("/health", "application/json").await;
        assert_eq!(status, 200, "{body}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["degraded"], false, "{body}");
        assert_eq!(h["outbox"], 0, "{body}");
    }
    for n in &mut nodes {
        n.stop().await;
    }
}
