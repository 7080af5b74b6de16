//! L1 density under churn: how much event JSON a byte budget buys. For each budget
//! (16 MiB, 100 MiB, 1 GiB; `LAYER1_DENSITY_BUDGETS` lists others, in MiB) writes
//! three times the budget of events of realistic shape into a bounded store, then
//! reports event JSON held ÷ budget (target ≥ 0.5), file ÷ budget (≤ 1.3), and where
//! the pages go, table by table.
//!
//! `cargo bench -p layer1 --bench density` (`LAYER1_DENSITY_DURABLE=1` syncs every
//! commit, as a node's L1 does by default; otherwise commits are not synced, as with
//! `l1_durability = "eventual"`).

use std::sync::Arc;
use std::time::Instant;

use eventstore::conformance::workload as wl;
use layer1::{Durability, RedbConfig, RedbStore};

fn main() {
    let (test_mode, _) = wl::bench_size("LAYER1_DENSITY_UNUSED", 0, 0);
    let budgets: Vec<u64> = if test_mode {
        vec![2]
    } else {
        std::env::var("LAYER1_DENSITY_BUDGETS")
            .ok()
            .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![16, 100, 1024])
    };
    let rt = eventstore::conformance::runtime();
    rt.block_on(async move {
        for mib in budgets {
            run(mib << 20).await;
        }
    });
}

async fn run(budget: u64) {
    let dir = tempfile::tempdir().unwrap();
    // `LAYER1_DENSITY_DURABLE=1`: every commit synced (a node's default L1).
    let durability = if std::env::var_os("LAYER1_DENSITY_DURABLE").is_some() {
        Durability::Immediate
    } else {
        Durability::Eventual
    };
    let config = RedbConfig::new(dir.path().join("l1.redb"))
        .max_bytes(budget)
        .durability(durability);
    let store = Arc::new(RedbStore::open(config).unwrap());
    let start = Instant::now();
    let mut rng = wl::Rng(0x5eed);
    let (mut written, mut i) = (0u64, 0u64);
    let mut peak_file = 0;
    while written < 3 * budget {
        let chunk: Vec<_> = (0..1_000).map(|k| wl::event(i + k, &mut rng)).collect();
        i += 1_000;
        written += chunk.iter().map(|e| e.json_len() as u64).sum::<u64>();
        store.save_many(&chunk).await.unwrap();
        peak_file = peak_file.max(store.file_size());
    }
    let s = store.storage().await.unwrap();
    let b = budget as f64;
    println!(
        "budget {:>5} MiB: wrote {:.0} MiB in {:.1}s; holds {} events, {:.1} MiB of JSON = {:.2} x budget; \
         budget bytes {:.1} MiB; allocated {:.1} MiB; file {:.1} MiB = {:.2} x budget (peak {:.2}); {} growth syncs",
        budget >> 20,
        written as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64(),
        s.events,
        s.json_bytes as f64 / (1 << 20) as f64,
        s.json_bytes as f64 / b,
        store.bytes_used() as f64 / (1 << 20) as f64,
        s.allocated as f64 / (1 << 20) as f64,
        s.file as f64 / (1 << 20) as f64,
        s.file as f64 / b,
        peak_file as f64 / b,
        store
            .stats()
            .growth_syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    for t in &s.tables {
        if t.entries > 0 {
            println!(
                "    {:<12} {:>9} entries {:>8.1} MiB stored {:>8.1} MiB in pages ({:.1} MiB unused)",
                t.name,
                t.entries,
                t.stored as f64 / (1 << 20) as f64,
                t.pages as f64 / (1 << 20) as f64,
                t.fragmented as f64 / (1 << 20) as f64
            );
        }
    }
}
