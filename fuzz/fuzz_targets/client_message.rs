//! Messages from a stranger, through the whole text path of a real connection of an
//! embedded node: parsing, limits, the access policy, verification, the store, and the
//! replies. Each input is up to eight messages, one per line. Every reply must be a
//! NIP-01 relay message, and the node must keep answering (checked every 64 inputs).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use layer2_relay::config::Config;
use layer2_relay::relay::{AppState, drive};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // tmpfs when there is one: the embedded store syncs every commit.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.limits.events_per_second = 1_000_000;
        config.limits.reqs_per_second = 1_000_000;
        let state = rt.block_on(async {
            let node = layer2_relay::Node::open(config).await.expect("node");
            AppState::new(Arc::new(node))
        });
        World {
            rt,
            state,
            _dir: dir,
        }
    })
}

const VERBS: [&str; 7] = ["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "COUNT", "AUTH"];

fuzz_target!(|data: &[u8]| {
    let w = world();
    let text = String::from_utf8_lossy(data);
    let msgs: Vec<&str> = text.split('\n').take(8).collect();
    let replies = w.rt.block_on(drive::converse(
        &w.state,
        &msgs,
        Duration::from_millis(2),
        Duration::from_millis(200),
    ));
    assert!(!replies.is_empty(), "the challenge at least");
    for r in &replies {
        let v: serde_json::Value = serde_json::from_str(r).expect("replies are JSON");
        let verb = v[0].as_str().expect("a message type first");
        assert!(VERBS.contains(&verb), "unknown reply {r}");
    }
    // Now and then: the node still answers a plain request.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64 != 0 {
        return;
    }
    let probe = w.rt.block_on(drive::converse(
        &w.state,
        &[r#"["REQ","probe",{"limit":1}]"#],
        Duration::from_millis(500),
        Duration::from_secs(5),
    ));
    assert!(
        probe.iter().any(|r| r.starts_with(r#"["EOSE","probe"]"#)),
        "no EOSE after {msgs:?}: {probe:?}"
    );
});
