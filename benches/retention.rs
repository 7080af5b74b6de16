//! Retention over N events in PostgreSQL (default 1,000,000): a rule that names about
//! half of them (every event older than the middle of the data's time range). Reports
//! the run's duration, the tables' and indexes' sizes before and after `VACUUM` (and
//! `VACUUM FULL`), and the
//! p50/p99 of profile reads (one author, `limit 20`) from 4 WebSocket clients of the
//! node (REQ, EOSE, CLOSE in a closed loop), during the run against the same reads
//! without it.
//!
//! `cargo bench -p layer2-relay --bench retention` (a throw-away PostgreSQL is started;
//! `DATABASE_URL` uses yours). `LAYER2_BENCH_EVENTS` sets N.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventstore::conformance::workload::{self as wl, Rng};
use eventstore::{EventStore, Filter, Timestamp};
use layer2::{PgConfig, PgStore};
use layer2_relay::config::{Config, Retention, retention::Rule};
use layer2_relay::{Node, maintenance, relay};

/// Table, index and log sizes in MiB.
async fn sizes(pg: &PgStore) -> String {
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), pg_table_size('events'), \
         pg_indexes_size('events'), pg_total_relation_size('tags'), \
         pg_total_relation_size('removed')",
    )
    .fetch_one(pg.pool())
    .await
    .unwrap();
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    format!(
        "{} events; events table {:.0} MiB, its indexes {:.0} MiB, tags (with indexes) {:.0} MiB, removed log {:.1} MiB",
        row.0,
        mib(row.1),
        mib(row.2),
        mib(row.3),
        mib(row.4)
    )
}

/// Profile reads from 4 WebSocket clients until `stop` (or for `at_most`), each a
/// closed loop as a client reading profiles runs it: `REQ`, the events, `EOSE`, then
/// `CLOSE`, then the next `REQ`. Their REQ→EOSE latencies.
async fn reads(url: String, stop: Arc<AtomicBool>, at_most: Duration) -> Vec<Duration> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..4u64 {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("connect to the bench's relay");
            let mut rng = Rng(0x5eed + r);
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < at_most {
                let author = wl::author(rng.zipf(wl::AUTHORS));
                let req = serde_json::json!(["REQ", "p", { "authors": [author.to_string()], "limit": 20 }]);
                let t = Instant::now();
                ws.send(Message::Text(req.to_string().into())).await.unwrap();
                loop {
                    let m = ws.next().await.expect("the relay hung up").unwrap();
                    let Message::Text(text) = m else { continue };
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match v[0].as_str() {
                        Some("EOSE") => break,
                        Some("EVENT") | Some("AUTH") => {}
                        _ => panic!("the relay answered a profile read with {v}"),
                    }
                }
                times.push(t.elapsed());
                let close = serde_json::json!(["CLOSE", "p"]);
                ws.send(Message::Text(close.to_string().into())).await.unwrap();
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn main() {
    let (test_mode, n) = wl::bench_size("LAYER2_BENCH_EVENTS", 3_000, 1_000_000);
    let rt = eventstore::conformance::runtime();
    rt.block_on(async move {
        let db = layer2::testsupport::test_database().await;
        let pg = Arc::new(
            PgStore::connect(PgConfig::new(db.url.clone()))
                .await
                .unwrap(),
        );
        let events = Arc::new(wl::events(n));
        let load = Instant::now();
        wl::ingest_concurrently(pg.clone(), events.clone(), 8, 64).await;
        sqlx::query("VACUUM ANALYZE")
            .execute(pg.pool())
            .await
            .unwrap();
        println!("loaded {n} events in {:.0}s", load.elapsed().as_secs_f64());
        println!("before: {}", sizes(&pg).await);

        // The workload's created_at runs from 1,600,000,000 up by 2 s per event: the
        // middle of that range splits the events in two.
        let middle = 1_600_000_000 + n;
        let rule = Rule {
            kinds: None,
            older_than: Some(Duration::from_secs(Timestamp::now().0 - middle)),
            max_per_author: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.url.clone()),
            l1_max_bytes: if test_mode { 4 << 20 } else { 100 << 20 },
            warm_events: if test_mode { 1_000 } else { 100_000 },
            retention: Retention {
                rules: vec![rule],
                interval: Duration::from_secs(3_600),
                ..Retention::default()
            },
            ..Config::default()
        };
        let mut config = config;
        // The readers ask as fast as they are answered.
        config.limits.reqs_per_second = 1_000_000;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut relay =
            relay::spawn(Node::open(config).await.unwrap(), listener).expect("serve the node");
        let node = relay.state.node.clone();
        let quiet_for = if test_mode {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(20)
        };
        let mut quiet = reads(relay.url(), Arc::new(AtomicBool::new(false)), quiet_for).await;

        let stop = Arc::new(AtomicBool::new(false));
        let readers = tokio::spawn(reads(relay.url(), stop.clone(), Duration::MAX));
        let run = Instant::now();
        let report = maintenance::run_if_due(&node)
            .await
            .unwrap()
            .expect("the turn");
        let took = run.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut busy = readers.await.unwrap();
        println!(
            "retention run: {} events purged in {:.1}s ({:.0} events/s)",
            report.purged(),
            took.as_secs_f64(),
            report.purged() as f64 / took.as_secs_f64().max(1e-9)
        );
        println!(
            "profile reads alone:      {} reads, p50 {:.2} ms, p99 {:.2} ms",
            quiet.len(),
            wl::percentile_ms(&mut quiet, 0.5),
            wl::percentile_ms(&mut quiet, 0.99)
        );
        println!(
            "profile reads during run: {} reads, p50 {:.2} ms, p99 {:.2} ms",
            busy.len(),
            wl::percentile_ms(&mut busy, 0.5),
            wl::percentile_ms(&mut busy, 0.99)
        );
        println!("after, before VACUUM: {}", sizes(&pg).await);
        sqlx::query("VACUUM ANALYZE")
            .execute(pg.pool())
            .await
            .unwrap();
        println!("after VACUUM (freed space reusable): {}", sizes(&pg).await);
        // A plain VACUUM frees the purged rows' space for new rows but shrinks a file
        // only at its end; VACUUM FULL (an exclusive lock: offline) gives it back.
        sqlx::query("VACUUM FULL").execute(pg.pool()).await.unwrap();
        println!("after VACUUM FULL: {}", sizes(&pg).await);
        assert!(report.purged() > 0, "the rule purged nothing");
        let left = pg.count(&[Filter::new()]).await.unwrap();
        assert!(left > 0 && left < n, "{left} of {n} left");
        assert!(
            !quiet.is_empty() && !busy.is_empty(),
            "no read was answered"
        );
        relay.stop().await.unwrap();
        node.tiered.shutdown();
    });
}
