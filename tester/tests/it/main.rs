//! The tester binary against a real cluster: one ephemeral PostgreSQL and three relay
//! nodes on loopback. Each mode runs with small counts; the test asserts on the exit
//! status and the JSON report.

use std::process::Command;
use std::time::Duration;

use layer2::testsupport::{TestDb, test_database};
use layer2_relay::Node;
use layer2_relay::config::Config;
use layer2_relay::relay::{self, Running};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tester");
/// Each node's L1 budget: small, so the cache mode evicts.
const BUDGET: u64 = 2 << 20;

struct Cluster {
    nodes: Vec<Running>,
    _dirs: Vec<tempfile::TempDir>,
    _db: TestDb,
}

async fn cluster() -> Cluster {
    let db = test_database().await;
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.url.clone()),
            l1_max_bytes: BUDGET,
            l1_durable: Some(false),
            poll_frequency: Duration::from_millis(50),
            pg_max_connections: 6,
            ..Config::default()
        };
        let node = Node::open(config).await.expect("node");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(relay::spawn(node, listener).unwrap());
        dirs.push(dir);
    }
    Cluster {
        nodes,
        _dirs: dirs,
        _db: db,
    }
}

/// Runs the tester; returns its exit code and JSON report.
async fn tester(args: &[String]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--quiet").arg("--json").arg(&json);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let report =
        std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("no report written:\n{stdout}"));
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&report).unwrap(),
        stdout,
    )
}

fn relays(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .flat_map(|n| ["--relay".to_string(), n.url()])
        .collect()
}

fn assert_no_loss(r: &Value, out: &str) {
    assert_eq!(r["passed"], true, "{out}");
    assert!(r["violations"].as_array().unwrap().is_empty(), "{out}");
    for (relay, missing) in r["missing_on_relay"].as_object().unwrap() {
        assert!(
            missing.as_array().unwrap().is_empty(),
            "{relay} lost events: {out}"
        );
    }
    for (sub, missing) in r["missing_live"].as_object().unwrap() {
        assert!(
            missing.as_array().unwrap().is_empty(),
            "{sub} missed live events: {out}"
        );
    }
    for (sub, dup) in r["duplicates_live"].as_object().unwrap() {
        assert!(
            dup.as_array().unwrap().is_empty(),
            "{sub} got duplicates: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stress_and_propagation_against_three_nodes() {
    let c = cluster().await;

    // cache: node A, several times its budget.
    let mut args = vec!["cache".to_string(), "--relay".into(), c.nodes[0].url()];
    args.extend([
        "--l1-max-bytes".into(),
        BUDGET.to_string(),
        "--reads".into(),
        "50".into(),
    ]);
    let (code, r, out) = tester(&args).await;
    assert_eq!(code, 0, "{out}");
    assert_no_loss(&r, &out);
    let d = &r["details"];
    assert!(
        d["l1_peak_bytes"].as_f64().unwrap() <= BUDGET as f64,
        "{out}"
    );
    assert!(d["evictions"].as_f64().unwrap() > 0.0, "{out}");
    assert!(
        d["written_bytes"].as_f64().unwrap() > 2.0 * BUDGET as f64,
        "{out}"
    );
    assert_eq!(d["evicted_returned"], d["evicted_fetched"], "{out}");
    assert!(
        d["first_fetch_l2_queries"].as_f64().unwrap() >= 1.0,
        "{out}"
    );
    assert!(
        d["second_fetch_rounds"].as_u64().is_some(),
        "the second fetch became an L1 hit: {out}"
    );
    assert!(d["l1_hit_ratio"].is_number(), "{out}");
    // A profile read below the window: asked L2 once, then answered by L1 alone (L2
    // queries flat between two reads), through the floor the first answer taught.
    assert!(
        d["profile_first_read_l2_queries"].as_f64().unwrap() >= 1.0,
        "{out}"
    );
    assert!(
        d["profile_l1_after_rounds"].as_u64().is_some(),
        "the repeated profile read became an L1 hit: {out}"
    );
    assert!(
        d["l1_hit_ratio_by_shape"]["ids"]["l1"].as_f64().unwrap() >= 1.0,
        "{out}"
    );
    assert!(
        d["l1_hit_ratio_by_shape"]["author"]["l1"].as_f64().unwrap() >= 1.0,
        "{out}"
    );

    // stress: publishers and readers over all three nodes.
    let mut args = vec!["stress".to_string()];
    args.extend(relays(&c));
    args.extend(
        [
            "--events",
            "900",
            "--publishers",
            "6",
            "--readers",
            "3",
            "--authors",
            "50",
        ]
        .map(String::from),
    );
    let (code, r, out) = tester(&args).await;
    assert_eq!(code, 0, "{out}");
    assert_no_loss(&r, &out);
    assert_eq!(r["events_sent"], 900, "{out}");
    assert!(r["events_acked"].as_u64().unwrap() >= 850, "{out}");
    assert_eq!(
        r["missing_live"].as_object().unwrap().len(),
        3,
        "every reader was checked"
    );
    assert!(
        r["delivery_latency"]["count"].as_u64().unwrap() > 0,
        "{out}"
    );
    assert!(r["ok_latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{out}");

    // propagation: every node receives what each node publishes.
    let mut args = vec!["propagation".to_string()];
    args.extend(relays(&c));
    args.extend(["--events", "10"].map(String::from));
    let (code, r, out) = tester(&args).await;
    assert_eq!(code, 0, "{out}");
    assert_no_loss(&r, &out);
    assert_eq!(r["events_acked"], 30, "{out}");
    assert_eq!(
        r["delivery_latency"]["count"], 90,
        "30 events × 3 nodes: {out}"
    );
    let pairs = r["details"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.contains("->"))
        .count();
    assert_eq!(pairs, 9, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_fails_the_run_with_its_id() {
    // A node that forgets: delete an acknowledged event behind the tester's back by
    // pointing the loss check at a relay that never saw the events.
    let c = cluster().await;
    let lonely_dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: lonely_dir.path().to_path_buf(),
        l1_max_bytes: BUDGET,
        l1_durable: Some(false),
        ..Config::default()
    };
    let node = Node::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lonely = relay::spawn(node, listener).unwrap();
    // Publish on the cluster, but list a separate single node too: it never has them.
    let mut args = vec!["propagation".to_string()];
    args.extend(relays(&c));
    args.extend([
        "--relay".into(),
        lonely.url(),
        "--events".into(),
        "3".into(),
        "--grace".into(),
        "1s".into(),
    ]);
    let (code, r, out) = tester(&args).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(r["passed"], false);
    let missing = r["missing_on_relay"][lonely.url()].as_array().unwrap();
    assert_eq!(
        missing.len(),
        9,
        "the 9 events published on the cluster: {out}"
    );
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains(missing[0].as_str().unwrap()),
        "offending ids are listed: {out}"
    );
}
