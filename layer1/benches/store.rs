//! L1 store benchmark: durable group-committed ingest of N events of realistic shape
//! (default 1,000,000), then p50/p99 latency of `limit 20` queries.
//!
//! `cargo bench -p layer1 --bench store` (set `LAYER1_BENCH_EVENTS` for another N).
//! Stores do not verify signatures (the relay does, before the store), so events carry
//! a synthetic id and signature: signing a million events would dominate the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{Event, EventId, EventStore, Filter, Kind, PublicKey};
use layer1::{RedbConfig, RedbStore};

const AUTHORS: u64 = 5_000;

fn hex64(n: u64, salt: u64) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        n,
        salt,
        n ^ 0x5555,
        salt.rotate_left(7)
    )
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly Zipf-distributed in 0..n: a few authors write most events.
    fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as u64 % n
    }
}

fn make(i: u64, rng: &mut Rng) -> Event {
    let author = rng.zipf(AUTHORS);
    let kind = [1u16, 1, 1, 1, 7, 7, 6, 0, 3, 10002, 30023, 9735][(rng.next() % 12) as usize];
    let mut tags = Vec::new();
    for _ in 0..(rng.next() % 5) {
        tags.push(format!(r#"["p","{}"]"#, hex64(rng.zipf(AUTHORS), 1)));
    }
    if kind == 7 || kind == 6 || rng.next() % 3 == 0 {
        tags.push(format!(r#"["e","{}"]"#, hex64(rng.next() % (i + 1), 2)));
    }
    if rng.next() % 4 == 0 {
        tags.push(format!(r#"["t","topic{}"]"#, rng.zipf(200)));
    }
    if kind == 30023 {
        tags.push(format!(r#"["d","post-{}"]"#, rng.next() % 20));
    }
    let len = match rng.next() % 10 {
        0..=5 => 50 + rng.next() % 300,
        6..=8 => 300 + rng.next() % 1_400,
        _ => 1_700 + rng.next() % 3_000,
    } as usize;
    let json = format!(
        r#"{{"id":"{}","pubkey":"{}","created_at":{},"kind":{},"tags":[{}],"content":"{}","sig":"{}{}"}}"#,
        hex64(i, 0),
        hex64(author, 9),
        1_600_000_000 + i * 2 + rng.next() % 3,
        kind,
        tags.join(","),
        "n".repeat(len),
        hex64(i, 3),
        hex64(i, 4)
    );
    Event::from_json(&json).expect("synthetic event parses")
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn measure(store: &RedbStore, label: &str, filters: Vec<Vec<Filter>>) {
    // One warm-up pass, then the measured pass.
    for f in &filters {
        store.query(f).await.unwrap();
    }
    let mut times = Vec::with_capacity(filters.len());
    let mut returned = 0;
    for f in &filters {
        let t = Instant::now();
        returned += store.query(f).await.unwrap().len();
        times.push(t.elapsed());
    }
    let n = times.len();
    let p50 = percentile(&mut times, 0.5);
    let p99 = percentile(&mut times, 0.99);
    println!(
        "{label:<24} p50 {:>8.3} ms  p99 {:>8.3} ms  ({n} queries, {:.1} events/query)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        returned as f64 / n as f64
    );
}

fn main() {
    let n: u64 = std::env::var("LAYER1_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run a
        // quick smoke test.
        return run(2_000);
    }
    run(n);
}

fn run(n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RedbConfig::new(dir.path().join("bench.redb"));
        config.cache_bytes = 1 << 30;
        if let Some(b) = std::env::var("LAYER1_BENCH_BATCH").ok().and_then(|v| v.parse().ok()) {
            config.max_batch = b;
        }
        let store = Arc::new(RedbStore::open(config).unwrap());

        let t_gen = Instant::now();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let events: Vec<Event> = (0..n).map(|i| make(i, &mut rng)).collect();
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
        let author = |rng: &mut Rng| PublicKey::from_hex(&hex64(rng.zipf(AUTHORS), 9)).unwrap();
        let by_author = (0..q).map(|_| vec![Filter::new().author(author(&mut rng)).limit(20)]).collect();
        measure(&store, "author", by_author).await;
        let by_kind = (0..q)
            .map(|i| vec![Filter::new().kind(Kind([1, 7, 6, 30023][i % 4])).limit(20)])
            .collect();
        measure(&store, "kind", by_kind).await;
        let by_ak = (0..q)
            .map(|_| vec![Filter::new().author(author(&mut rng)).kind(Kind(1)).limit(20)])
            .collect();
        measure(&store, "author+kind", by_ak).await;
        let by_tag = (0..q)
            .map(|_| vec![Filter::new().tag('p', hex64(rng.zipf(AUTHORS), 1)).limit(20)])
            .collect();
        measure(&store, "tag #p", by_tag).await;
        let by_ids = (0..q)
            .map(|_| {
                let mut f = Filter::new().limit(20);
                for _ in 0..50 {
                    f = f.id(EventId::from_hex(&hex64(rng.next() % n, 0)).unwrap());
                }
                vec![f]
            })
            .collect();
        measure(&store, "50 ids", by_ids).await;
        let feed = (0..q)
            .map(|_| {
                let mut f = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(20);
                for _ in 0..100 {
                    f = f.author(author(&mut rng));
                }
                vec![f]
            })
            .collect();
        measure(&store, "feed (100 authors)", feed).await;
    });
}
