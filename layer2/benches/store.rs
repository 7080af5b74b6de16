//! L2 benchmark against a real PostgreSQL: ingest with 8 concurrent writers, then
//! p50/p99 of `limit 20` queries by author, kind, tag and id.
//!
//! `LAYER2_TEST_PG_DURABLE=1 cargo bench -p layer2 --bench store` starts a throw-away
//! cluster with PostgreSQL's default (durable) settings; `DATABASE_URL` points it at a
//! server of your own instead. `LAYER2_BENCH_EVENTS` sets N (default 1,000,000).

use std::sync::Arc;
use std::time::Instant;

use eventstore::conformance::workload::{self as wl, Rng};
use eventstore::{Event, Filter, Kind};
use layer2::{PgConfig, PgStore};

fn main() {
    let (test_mode, n) = wl::bench_size("LAYER2_BENCH_EVENTS", 2_000, 1_000_000);
    let rt = eventstore::conformance::runtime();
    rt.block_on(async move {
        let db = layer2::testsupport::test_database().await;
        let store = Arc::new(
            PgStore::connect(PgConfig::new(db.url.clone()))
                .await
                .unwrap(),
        );
        let events: Arc<Vec<Event>> = Arc::new(wl::events(n));
        let start = Instant::now();
        wl::ingest_concurrently(store.clone(), events.clone(), 8, 64).await;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "ingest, 8 concurrent writers: {:.0} events/s ({n} events in {secs:.1}s)",
            n as f64 / secs
        );
        sqlx::query("VACUUM ANALYZE")
            .execute(store.pool())
            .await
            .unwrap();

        let q = if test_mode { 20 } else { 1_000 };
        let mut rng = Rng(42);
        let author = |rng: &mut Rng| wl::author(rng.zipf(wl::AUTHORS));
        let f: Vec<Vec<Filter>> = (0..q)
            .map(|_| vec![Filter::new().author(author(&mut rng)).limit(20)])
            .collect();
        wl::measure(store.as_ref(), "author", &f).await;
        let f: Vec<Vec<Filter>> = (0..q)
            .map(|i| vec![Filter::new().kind(Kind([1, 7, 6, 30023][i % 4])).limit(20)])
            .collect();
        wl::measure(store.as_ref(), "kind", &f).await;
        let f: Vec<Vec<Filter>> = (0..q)
            .map(|_| {
                vec![
                    Filter::new()
                        .tag('p', wl::hex64(rng.zipf(wl::AUTHORS), 1))
                        .limit(20),
                ]
            })
            .collect();
        wl::measure(store.as_ref(), "tag #p", &f).await;
        let f: Vec<Vec<Filter>> = (0..q)
            .map(|_| vec![Filter::new().id(wl::event_id(rng.next_u64() % n))])
            .collect();
        wl::measure(store.as_ref(), "id", &f).await;
    });
}
