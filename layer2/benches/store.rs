//! L2 benchmark against a real PostgreSQL: ingest with 8 concurrent writers, then
//! p50/p99 of `limit 20` queries by author, kind, tag and id.
//!
//! `LAYER2_TEST_PG_DURABLE=1 cargo bench -p layer2 --bench store` starts a throw-away
//! cluster with PostgreSQL's default (durable) settings; `DATABASE_URL` points it at a
//! server of your own instead. `LAYER2_BENCH_EVENTS` sets N (default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{Event, EventId, EventStore, Filter, Kind, PublicKey};
use layer2::{PgConfig, PgStore};

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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as u64 % n
    }
}

/// Realistic shape, synthetic id and signature (stores do not verify).
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

async fn measure(store: &PgStore, label: &str, filters: Vec<Vec<Filter>>) {
    for f in filters.iter().take(100) {
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
        "{label:<12} p50 {:>7.3} ms  p99 {:>7.3} ms  ({n} queries, {:.1} events/query)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        returned as f64 / n as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run a quick smoke test.
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let n: u64 = if test_mode {
        2_000
    } else {
        std::env::var("LAYER2_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = layer2::testsupport::test_database().await;
        let store = Arc::new(
            PgStore::connect(PgConfig::new(db.url.clone()))
                .await
                .unwrap(),
        );
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let events: Arc<Vec<Event>> = Arc::new((0..n).map(|i| make(i, &mut rng)).collect());
        let start = Instant::now();
        let writers = 8usize;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (store, events) = (store.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                // Each writer keeps 64 saves in flight, as a busy relay connection would.
                let mine: Vec<usize> = (w..events.len()).step_by(writers).collect();
                for chunk in mine.chunks(64) {
                    let mut set = tokio::task::JoinSet::new();
                    for &i in chunk {
                        let (store, events) = (store.clone(), events.clone());
                        set.spawn(async move { store.save(&events[i]).await });
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
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
        let author = |rng: &mut Rng| PublicKey::from_hex(&hex64(rng.zipf(AUTHORS), 9)).unwrap();
        let f = (0..q)
            .map(|_| vec![Filter::new().author(author(&mut rng)).limit(20)])
            .collect();
        measure(&store, "author", f).await;
        let f = (0..q)
            .map(|i| vec![Filter::new().kind(Kind([1, 7, 6, 30023][i % 4])).limit(20)])
            .collect();
        measure(&store, "kind", f).await;
        let f = (0..q)
            .map(|_| {
                vec![
                    Filter::new()
                        .tag('p', hex64(rng.zipf(AUTHORS), 1))
                        .limit(20),
                ]
            })
            .collect();
        measure(&store, "tag #p", f).await;
        let f = (0..q)
            .map(|_| vec![Filter::new().id(EventId::from_hex(&hex64(rng.next() % n, 0)).unwrap())])
            .collect();
        measure(&store, "id", f).await;
    });
}
