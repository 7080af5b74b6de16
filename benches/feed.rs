//! Tiered benchmark: a warm node with N events in L2 (default 1,000,000) and a 100 MiB
//! L1 serves a feed-like workload (newest notes and reposts of followed authors, the
//! authors Zipf-distributed). Reports the share answered without touching L2 and the
//! p50/p99 latency of L1-answered and L2-answered queries.
//!
//! `cargo bench -p layer2-relay --bench feed` (a throw-away PostgreSQL is started;
//! `DATABASE_URL` uses yours). `LAYER2_BENCH_EVENTS` sets N.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use eventstore::conformance::workload::{self as wl, Rng};
use eventstore::{Event, EventStore, Filter, Kind};
use layer1::{Durability, RedbConfig, RedbStore};
use layer2::{PgConfig, PgStore};
use layer2_relay::{Tiered, TieredConfig};

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
        let events: Arc<Vec<Event>> = Arc::new(wl::events(n));
        let load = Instant::now();
        wl::ingest_concurrently(pg.clone(), events.clone(), 8, 64).await;
        sqlx::query("VACUUM ANALYZE")
            .execute(pg.pool())
            .await
            .unwrap();
        println!(
            "loaded {n} events into L2 in {:.0}s",
            load.elapsed().as_secs_f64()
        );

        let dir = tempfile::tempdir().unwrap();
        let budget: u64 = if test_mode { 4 << 20 } else { 100 << 20 };
        let mut l1c = RedbConfig::new(dir.path().join("l1.redb"))
            .max_bytes(budget)
            .durability(Durability::Eventual);
        l1c.cache_bytes = 256 << 20;
        let l1 = Arc::new(RedbStore::open(l1c).unwrap());
        let config = TieredConfig {
            warm_events: if test_mode { 2_000 } else { 250_000 },
            ..TieredConfig::default()
        };
        let warm = Instant::now();
        let node = Tiered::start(l1.clone(), pg.clone(), Some(pg.clone()), config)
            .await
            .unwrap();
        while !node.window_trusted() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "warm-up {:.1}s: L1 {:.0} MiB of {} MiB, W = {}",
            warm.elapsed().as_secs_f64(),
            l1.bytes_used() as f64 / (1 << 20) as f64,
            budget >> 20,
            l1.window().0
        );

        run(
            &node,
            "feed (50 Zipf-followed authors, kinds 1+6)",
            test_mode,
            |rng| {
                let mut f = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(20);
                for _ in 0..50 {
                    f = f.author(wl::author(rng.zipf(wl::AUTHORS)));
                }
                f
            },
        )
        .await;
        run(
            &node,
            "profile (one uniformly chosen author)",
            test_mode,
            |rng| {
                let a = wl::author(rng.next_u64() % wl::AUTHORS);
                Filter::new().author(a).kind(Kind(1)).limit(20)
            },
        )
        .await;
        node.shutdown();
    });
}

async fn run(node: &Tiered, label: &str, test_mode: bool, make: impl Fn(&mut Rng) -> Filter) {
    {
        // Feed queries: 50 followed authors (Zipf: popular accounts are followed more),
        // notes and reposts, newest 20.
        let queries = if test_mode { 50 } else { 2_000 };
        let mut rng = Rng(7);
        let (mut l1_times, mut l2_times) = (Vec::new(), Vec::new());
        for _ in 0..queries {
            let f = make(&mut rng);
            let before = node.stats().l2_queries.load(Relaxed);
            let t = Instant::now();
            node.query(&[f]).await.unwrap();
            let dt = t.elapsed();
            if node.stats().l2_queries.load(Relaxed) == before {
                l1_times.push(dt);
            } else {
                l2_times.push(dt);
            }
        }
        let share = l1_times.len() as f64 / queries as f64 * 100.0;
        println!("{label}: answered without L2: {share:.1}% of {queries}");
        println!(
            "  L1-answered: p50 {:.3} ms  p99 {:.3} ms  ({} queries)",
            wl::percentile_ms(&mut l1_times, 0.5),
            wl::percentile_ms(&mut l1_times, 0.99),
            l1_times.len()
        );
        println!(
            "  L2-answered: p50 {:.3} ms  p99 {:.3} ms  ({} queries)",
            wl::percentile_ms(&mut l2_times, 0.5),
            wl::percentile_ms(&mut l2_times, 0.99),
            l2_times.len()
        );
    }
}
