//! The `layer2-relay` binary: the zero-setup default, import, export, stats, rulings and
//! delete.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use eventstore::{EventBuilder, Keys, Timestamp};

const BIN: &str = env!("CARGO_BIN_EXE_layer2-relay");

/// The binary with no LAYER2_* or DATABASE_URL from the test's environment.
fn relay_cmd(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("LAYER2_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn import_then_export_round_trips_and_stats_counts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::from_seed(7);
    let events: Vec<_> = (0..1_200u64)
        .map(|i| {
            EventBuilder::text_note(format!("import {i}"))
                .created_at(Timestamp(1_700_000_000 + i / 3))
                .sign(&keys)
        })
        .collect();
    let input = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    for e in &events {
        writeln!(f, "{}", e.as_json()).unwrap();
    }
    writeln!(f, "{{\"not\":\"an event\"}}").unwrap();
    writeln!(f).unwrap();
    drop(f);

    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "import"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("\"stored\": 1200"), "{summary}");
    assert!(summary.contains("\"invalid\": 1"), "{summary}");

    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut got: Vec<String> = text.lines().map(String::from).collect();
    let mut want: Vec<String> = events.iter().map(|e| e.as_json().to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "export gives back exactly what was imported");

    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export", "--filter", "{\"limit\":10}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 10);
    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export", "--filter", "{\"bogus\":1}"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--filter"));

    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["l2"]["events"], 1200);
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = relay_cmd(dir.path())
        .args(["--l1-max-bytes", "plenty", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--l1-max-bytes"));
    let out = relay_cmd(dir.path()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--database-url",
        "--l1-max-bytes",
        "--poll-frequency",
        "--poll-overlap",
        "import",
        "export",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

/// `cargo run --release` with no arguments: an embedded relay on 127.0.0.1:7777 with
/// its data under ./data, stopped cleanly by SIGTERM.
#[test]
fn no_arguments_serves_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    if std::net::TcpListener::bind("127.0.0.1:7777").is_err() {
        panic!("port 7777 is taken on this machine; this test checks the default address, free it");
    }
    let mut child = relay_cmd(dir.path()).stdin(Stdio::null()).spawn().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect("127.0.0.1:7777").is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let health = up.then(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(super::client::http_get(
            "127.0.0.1:7777".parse().unwrap(),
            "/health",
            "*/*",
        ))
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(up, "the relay never listened on 127.0.0.1:7777");
    let (code, _, body) = health.unwrap();
    assert_eq!(code, 200, "{body}");
    // One file serves both tiers by default (`embedded_l1 = false`).
    assert!(dir.path().join("data/l2.redb").exists());
    assert!(!dir.path().join("data/l1.redb").exists());
    assert!(status.success(), "SIGTERM ends it cleanly: {status:?}");
}

/// Imports `input` into `dir/d` and returns the summary (stderr).
fn import(dir: &std::path::Path, input: &std::path::Path) -> String {
    let out = relay_cmd(dir)
        .args(["--data-dir", "d", "import"])
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with `args` in `dir` and returns its stdout as JSON.
fn run_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = relay_cmd(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn ban_allow_and_rulings_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spammer = Keys::from_seed(11);
    let events: Vec<_> = (0..3)
        .map(|i| EventBuilder::text_note(format!("spam {i}")).sign(&spammer))
        .collect();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = events.iter().map(|e| e.as_json().to_string()).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    import(dir.path(), &input);

    let pk = spammer.public_key().to_string();
    let v = run_json(
        dir.path(),
        &["--data-dir", "d", "ban", "pubkey", &pk, "--reason", "spam"],
    );
    assert_eq!(v["removed"], 3, "{v}");
    run_json(dir.path(), &["--data-dir", "d", "disallow", "kind", "7"]);
    let v = run_json(dir.path(), &["--data-dir", "d", "rulings"]);
    let rulings = v["rulings"].as_array().unwrap();
    assert!(
        rulings
            .contains(&serde_json::json!({"ruling": "ban pubkey", "subject": pk, "note": "spam"})),
        "{v}"
    );
    assert!(
        rulings
            .contains(&serde_json::json!({"ruling": "disallow kind", "subject": "7", "note": ""})),
        "{v}"
    );
    // What was banned is gone and stays out.
    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let summary = import(dir.path(), &input);
    assert!(summary.contains("\"stored\": 0"), "{summary}");
    // Nonsense is refused with a reason.
    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "ban", "kind", "7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a ruling"));
    run_json(dir.path(), &["--data-dir", "d", "unban", "pubkey", &pk]);
    let summary = import(dir.path(), &input);
    assert!(summary.contains("\"stored\": 3"), "{summary}");
}

#[test]
fn delete_by_filter_counts_first_and_removes_only_what_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (bot, person) = (Keys::from_seed(21), Keys::from_seed(22));
    let mut lines = Vec::new();
    for i in 0..1_500u64 {
        let e = EventBuilder::text_note(format!("flood {i}"))
            .created_at(Timestamp(1_700_000_000 + i))
            .sign(&bot);
        lines.push(e.as_json().to_string());
    }
    for i in 0..5u64 {
        let e = EventBuilder::text_note(format!("keep {i}"))
            .created_at(Timestamp(1_700_000_000 + i))
            .sign(&person);
        lines.push(e.as_json().to_string());
    }
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    import(dir.path(), &input);
    let filter = format!(r#"{{"authors":["{}"],"kinds":[1]}}"#, bot.public_key());
    let args = ["--data-dir", "d", "delete", "--filter", filter.as_str()];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let v = run_json(dir.path(), &dry);
    assert_eq!(
        (v["matched"].as_u64(), v["deleted"].as_u64()),
        (Some(1_500), Some(0)),
        "{v}"
    );
    let v = run_json(dir.path(), &args);
    assert_eq!(
        (v["matched"].as_u64(), v["deleted"].as_u64()),
        (Some(1_500), Some(1_500)),
        "{v}"
    );
    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&out.stdout);
    assert_eq!(left.lines().count(), 5, "{left}");
    assert!(left.lines().all(|l| l.contains("keep")), "{left}");
    // A filter that names nothing, or has a limit, is refused with the reason.
    for bad in [r#"{}"#, r#"{"kinds":[1],"limit":3}"#] {
        let out = relay_cmd(dir.path())
            .args(["--data-dir", "d", "delete", "--filter", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--filter"), "{bad}: {err}");
    }
}

/// Runs the binary with `args` in `dir`: (success, stdout as JSON or null, stderr).
fn run_any(dir: &std::path::Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = relay_cmd(dir).args(args).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_a_planted_inconsistency_and_nuke_wipes_the_cluster() {
    let db = layer2::testsupport::test_database().await;
    let (node_dir, cli_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = super::retention::config(node_dir.path(), &db.url, Default::default());
    let node = super::client::TestRelay::start(config.clone()).await;
    let keys = Keys::generate().unwrap();
    let mut client = node.client().await;
    for i in 0..3 {
        let e = super::client::event(&keys, 1, &format!("n{i}"), &[&["t", "x"]]);
        assert!(client.publish(&e).await.0);
    }
    let url = db.url.clone();
    let base = ["--data-dir", "d", "--database-url", url.as_str()];
    let cli = cli_dir.path().to_path_buf();
    let run = move |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        run_any(&cli, &args)
    };
    let (ok, v, err) = run(&["check"]);
    assert!(ok, "a consistent cluster fails the check: {v} {err}");
    assert_eq!(v["problems"], 0, "{v}");
    // Plant two inconsistencies behind the store's back.
    let layer2_relay::node::L2::Postgres(pg) = &node.state.node.l2 else {
        unreachable!()
    };
    sqlx::query("INSERT INTO deleted_ids (id, pubkey) SELECT id, pubkey FROM events LIMIT 1")
        .execute(pg.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tags SET created_at = created_at + 1 \
         WHERE event_id = (SELECT event_id FROM tags LIMIT 1)",
    )
    .execute(pg.pool())
    .await
    .unwrap();
    let (ok, v, _) = run(&["check"]);
    assert!(!ok, "the check passed a broken cluster: {v}");
    let names: Vec<&str> = v["postgresql"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"stored_and_tombstoned"), "{v}");
    assert!(names.contains(&"tag_time_mismatch"), "{v}");
    // A wipe while a node is connected is refused, unless forced.
    let (ok, _, err) = run(&["nuke", "--all", "--yes-really"]);
    assert!(!ok && err.contains("other sessions"), "{err}");
    let (ok, _, err) = run(&["nuke", "--all"]);
    assert!(!ok, "nuke --all without --yes-really ran: {err}");
    drop(client);
    node.close().await;
    // The node's sessions end a moment after its pool closes.
    let mut tries = 0;
    let (ok, v, err) = loop {
        let r = run(&["nuke", "--all", "--yes-really"]);
        tries += 1;
        if r.0 || tries == 50 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ok, "{err}");
    assert_eq!(v["postgresql_events_removed"], 3, "{v}");
    // The node comes back with nothing: its L1 does not trust a cursor from before.
    let node = super::client::TestRelay::start(config).await;
    let tiered = &node.state.node.tiered;
    assert_eq!(
        tiered
            .stats()
            .l1_resets
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let mut client = node.client().await;
    let left = client.req("all", &[serde_json::json!({})]).await;
    assert!(left.is_empty(), "{left:?}");
    drop(client);
    node.close().await;
    let (ok, v, err) = run(&["check"]);
    assert!(ok, "{v} {err}");
}

#[test]
fn compact_and_nuke_of_an_embedded_node() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::from_seed(41);
    let lines: Vec<String> = (0..5_000u64)
        .map(|i| {
            EventBuilder::text_note(format!("churn {i} {}", "x".repeat(800)))
                .created_at(Timestamp(1_700_000_000 + i))
                .sign(&keys)
                .as_json()
                .to_string()
        })
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    import(dir.path(), &input);
    let filter = format!(r#"{{"authors":["{}"]}}"#, keys.public_key());
    run_json(
        dir.path(),
        &["--data-dir", "d", "delete", "--filter", &filter],
    );
    let v = run_json(dir.path(), &["--data-dir", "d", "compact"]);
    let (before, after) = (
        v["l2.redb"]["bytes_before"].as_u64().unwrap(),
        v["l2.redb"]["bytes_after"].as_u64().unwrap(),
    );
    assert!(after < before, "compaction gave nothing back: {v}");
    let v = run_json(dir.path(), &["--data-dir", "d", "check"]);
    assert_eq!(v["problems"], 0, "{v}");
    // One file is both tiers: there is no separate L1 to wipe.
    let (ok, _, err) = run_any(dir.path(), &["--data-dir", "d", "nuke", "--l1"]);
    assert!(!ok && err.contains("both tiers"), "{err}");
    let v = run_json(
        dir.path(),
        &["--data-dir", "d", "nuke", "--all", "--yes-really"],
    );
    assert_eq!(v["l2_removed"], true, "{v}");
    assert!(!dir.path().join("d/l2.redb").exists());
}

#[test]
fn maintain_applies_the_retention_rules_now() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::from_seed(51);
    let lines: Vec<String> = (0..40u64)
        .map(|i| {
            let kind = if i < 30 { 7 } else { 1 };
            EventBuilder::new(eventstore::Kind(kind), format!("old {i}"))
                .created_at(Timestamp(1_700_000_000 + i))
                .sign(&keys)
                .as_json()
                .to_string()
        })
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    import(dir.path(), &input);
    let config = dir.path().join("layer2.toml");
    std::fs::write(
        &config,
        "[[retention]]\nkinds = [7]\nolder_than = \"30d\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let v = run_json(
        dir.path(),
        &["--config", config, "--data-dir", "d", "maintain"],
    );
    assert_eq!(v["retention"]["kinds=7,older_than=2592000s"], 30, "{v}");
    let out = relay_cmd(dir.path())
        .args(["--data-dir", "d", "export"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&out.stdout);
    assert_eq!(left.lines().count(), 10, "{left}");
    assert!(left.lines().all(|l| l.contains("\"kind\":1")), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_ten_thousand_events_while_a_client_publishes_loses_nothing_else() {
    use layer2_relay::config::Config;

    let db = layer2::testsupport::test_database().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for d in &dirs {
        let config = Config {
            l1_max_bytes: 32 << 20,
            ..super::retention::config(d.path(), &db.url, Default::default())
        };
        nodes.push(super::client::TestRelay::start(config).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // The flood, stored through node A (in batches, as many connections would).
    let spammer = Keys::from_seed(61);
    let store = a.state.node.store();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10_000u64 {
        let e = EventBuilder::text_note(format!("flood {i}"))
            .created_at(Timestamp(1_700_000_000 + i))
            .sign(&spammer);
        let s = store.clone();
        set.spawn(async move { s.save(&e).await.unwrap() });
        if set.len() >= 256 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    // A client publishes on both nodes while the flood is deleted.
    let person = Keys::from_seed(62);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    let dir = tempfile::tempdir().unwrap();
    let (path, url) = (dir.path().to_path_buf(), db.url.clone());
    let filter = format!(r#"{{"authors":["{}"]}}"#, spammer.public_key());
    let deleting = tokio::task::spawn_blocking(move || {
        let args = [
            "--database-url",
            url.as_str(),
            "delete",
            "--filter",
            filter.as_str(),
        ];
        run_any(&path, &args)
    });
    let mut published = Vec::new();
    for i in 0..600 {
        let e = EventBuilder::text_note(format!("keep {i}")).sign(&person);
        let client = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        let (ok, msg) = client.publish(&e).await;
        assert!(ok, "{msg}");
        published.push(e.id().to_string());
    }
    let (ok, v, err) = deleting.await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(v["deleted"], 10_000, "{v}");
    published.sort();
    // Every published event is served by both nodes; none of the flood by either.
    let pk = person.public_key().to_string();
    let flood = spammer.public_key().to_string();
    for (client, name) in [(&mut on_a, "A"), (&mut on_b, "B")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut i = 0;
        loop {
            let mut got = client
                .req(
                    &format!("k{i}"),
                    &[serde_json::json!({"authors": [pk], "limit": 1000})],
                )
                .await;
            let spam = client
                .req(
                    &format!("s{i}"),
                    &[serde_json::json!({"authors": [flood], "limit": 10})],
                )
                .await;
            got.sort();
            if got == published && spam.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {} of {} kept, {} of the flood still served",
                got.len(),
                published.len(),
                spam.len()
            );
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop((on_a, on_b));
    for n in nodes {
        n.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reports_the_l1_hit_ratio_counted_across_restarts() {
    let db = layer2::testsupport::test_database().await;
    let (node_dir, cli_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = super::retention::config(node_dir.path(), &db.url, Default::default());
    let keys = Keys::generate().unwrap();
    let profile = serde_json::json!({ "authors": [keys.public_key().to_string()], "limit": 10 });
    let url = db.url.clone();
    let data = node_dir.path().to_str().unwrap().to_string();
    let stats = || {
        let (ok, v, err) = run_any(
            cli_dir.path(),
            &["--data-dir", &data, "--database-url", &url, "stats"],
        );
        assert!(ok, "{err}");
        let q = v["l1"]["queries"].clone();
        let by = &q["by_shape"]["author"];
        let (l1, l2) = (by["l1_answered"].as_u64(), by["l2_asked"].as_u64());
        let (Some(l1), Some(l2)) = (l1, l2) else {
            panic!("no author counts in {v}")
        };
        (l1 + l2, q)
    };
    let node = super::client::TestRelay::start(config.clone()).await;
    let mut client = node.client().await;
    for i in 0..3 {
        let e = super::client::event(&keys, 1, &format!("n{i}"), &[]);
        assert!(client.publish(&e).await.0);
    }
    for _ in 0..5 {
        assert_eq!(
            client.req("p", std::slice::from_ref(&profile)).await.len(),
            3
        );
    }
    drop(client);
    node.close().await;
    let (first, q) = stats();
    assert!(first >= 5, "five profile reads, {first} counted: {q}");
    let ratio = q["hit_ratio"]
        .as_f64()
        .expect("a ratio once queries were counted");
    assert!((0.0..=1.0).contains(&ratio), "{q}");

    // Counted on from what the file kept, not from zero.
    let node = super::client::TestRelay::start(config).await;
    let mut client = node.client().await;
    for _ in 0..2 {
        assert_eq!(
            client.req("p", std::slice::from_ref(&profile)).await.len(),
            3
        );
    }
    drop(client);
    node.close().await;
    let (second, q) = stats();
    assert!(second >= first + 2, "{first} then {second}: {q}");
}
