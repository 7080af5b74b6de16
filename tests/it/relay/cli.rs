//! The `layer2-relay` binary: the zero-setup default, import, export and stats.

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
