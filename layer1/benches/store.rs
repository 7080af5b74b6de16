//! L1 store benchmark: durable group-committed ingest of N events of realistic shape
//! (default 1,000,000), then p50/p99 latency of `limit 20` queries, and of a few longer ones.
//!
//! `cargo bench -p layer1 --bench store` (set `LAYER1_BENCH_EVENTS` for another N, and
//! `LAYER1_BENCH_INLINE_STEPS` for another inline read budget; 0: none inline).
//! Stores do not verify signatures (the relay does, before the store), so events carry
//! a synthetic id and signature: signing a million events would dominate the run.

use std::sync::Arc;
use std::time::Instant;

use eventstore::conformance::workload::{self as wl, Rng};
use eventstore::{Event, Filter, Kind};
use layer1::{RedbConfig, RedbStore};

fn main() {
    let (_, n) = wl::bench_size("LAYER1_BENCH_EVENTS", 2_000, 1_000_000);
    let rt = eventstore::conformance::runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RedbConfig::new(dir.path().join("bench.redb"));
        config.cache_bytes = 1 << 30;
        if let Some(b) = std::env::var("LAYER1_BENCH_BATCH").ok().and_then(|v| v.parse().ok()) {
            config.max_batch = b;
        }
        // 0: every read on the reader threads, as before inline reads.
        if let Some(s) = std::env::var("LAYER1_BENCH_INLINE_STEPS").ok().and_then(|v| v.parse().ok()) {
            config.inline_read_steps = s;
        }
        let store = Arc::new(RedbStore::open(config).unwrap());

        let t_gen = Instant::now();
        let events: Vec<Event> = wl::events(n);
        let bytes: usize = events.iter().map(Event::json_len).sum();
        println!(
            "generated {n} events, {:.0} MB of JSON, in {:.1}s",
            bytes as f64 / 1e6,
            t_gen.elapsed().as_secs_f64()
        );

        let events = Arc::new(events);
        let start = Instant::now();
        // Four concurrent importers handing over 1,000 events at a time: the writer
        // groups what is queued into durable transactions of up to 2,000 events.
        let writers = 4usize;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (store, events) = (store.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                for chunk in events.chunks(1_000).skip(w).step_by(writers) {
                    store.save_many(chunk).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "ingest (durable, group commit, {writers} importers x 1,000 events): {:.0} events/s ({secs:.1}s), file {:.0} MB",
            n as f64 / secs,
            store.file_size() as f64 / 1e6
        );

        let mut rng = Rng(42);
        let q = 1_000;
        let author = |rng: &mut Rng| wl::author(rng.zipf(wl::AUTHORS));
        let by_author: Vec<Vec<Filter>> = (0..q).map(|_| vec![Filter::new().author(author(&mut rng)).limit(20)]).collect();
        wl::measure(store.as_ref(), "author", &by_author).await;
        let by_kind: Vec<Vec<Filter>> = (0..q)
            .map(|i| vec![Filter::new().kind(Kind([1, 7, 6, 30023][i % 4])).limit(20)])
            .collect();
        wl::measure(store.as_ref(), "kind", &by_kind).await;
        let by_ak: Vec<Vec<Filter>> = (0..q)
            .map(|_| vec![Filter::new().author(author(&mut rng)).kind(Kind(1)).limit(20)])
            .collect();
        wl::measure(store.as_ref(), "author+kind", &by_ak).await;
        let by_tag: Vec<Vec<Filter>> = (0..q)
            .map(|_| vec![Filter::new().tag('p', wl::hex64(rng.zipf(wl::AUTHORS), 1)).limit(20)])
            .collect();
        wl::measure(store.as_ref(), "tag #p", &by_tag).await;
        let by_ids: Vec<Vec<Filter>> = (0..q)
            .map(|_| {
                let mut f = Filter::new().limit(20);
                for _ in 0..50 {
                    f = f.id(wl::event_id(rng.next_u64() % n));
                }
                vec![f]
            })
            .collect();
        wl::measure(store.as_ref(), "50 ids", &by_ids).await;
        let feed: Vec<Vec<Filter>> = (0..q)
            .map(|_| {
                let mut f = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(20);
                for _ in 0..100 {
                    f = f.author(author(&mut rng));
                }
                vec![f]
            })
            .collect();
        wl::measure(store.as_ref(), "feed (100 authors)", &feed).await;
        // Long reads: 500 newest of a kind fits the default inline budget of steps (a
        // worker of the async runtime is held this long); 2,000 does not, so it spends
        // the budget, then runs again on a reader thread.
        for (name, limit) in [("kind, limit 500", 500), ("kind, limit 2000", 2_000)] {
            let long: Vec<Vec<Filter>> = (0..q / 10)
                .map(|i| vec![Filter::new().kind(Kind([1, 7][i % 2])).limit(limit)])
                .collect();
            wl::measure(store.as_ref(), name, &long).await;
        }
    });
}
