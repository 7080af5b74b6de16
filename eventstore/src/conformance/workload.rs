//! A synthetic workload of realistic shape for benchmarks: content 50 B to 4.7 kB,
//! 0 to 6 tags, Zipf-distributed authors, a mix of kinds. Ids and signatures are
//! synthetic (stores never verify; the relay does, before them), so a million events
//! are generated in seconds.

use crate::event::Event;

/// Distinct authors in the workload.
pub const AUTHORS: u64 = 5_000;

/// Deterministic pseudo-random numbers (xorshift64).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Roughly Zipf-distributed in `0..n`: a few values come up most of the time.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as u64 % n
    }
}

/// A deterministic 64-character hex string for `(n, salt)`: ids, keys, tag values.
pub fn hex64(n: u64, salt: u64) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        n,
        salt,
        n ^ 0x5555,
        salt.rotate_left(7)
    )
}

/// The public key of workload author `n`.
pub fn author(n: u64) -> crate::PublicKey {
    crate::PublicKey::from_hex(&hex64(n, 9)).unwrap_or(crate::PublicKey([0; 32]))
}

/// The id of workload event `i`.
pub fn event_id(i: u64) -> crate::EventId {
    crate::EventId::from_hex(&hex64(i, 0)).unwrap_or(crate::EventId([0; 32]))
}

/// Workload event number `i` (created_at grows with `i`).
pub fn event(i: u64, rng: &mut Rng) -> Event {
    let author = rng.zipf(AUTHORS);
    let kinds = [1u16, 1, 1, 1, 7, 7, 6, 0, 3, 10002, 30023, 9735];
    let kind = kinds[(rng.next_u64() % 12) as usize];
    let mut tags = Vec::new();
    for _ in 0..(rng.next_u64() % 5) {
        tags.push(format!(r#"["p","{}"]"#, hex64(rng.zipf(AUTHORS), 1)));
    }
    if kind == 7 || kind == 6 || rng.next_u64() % 3 == 0 {
        tags.push(format!(r#"["e","{}"]"#, hex64(rng.next_u64() % (i + 1), 2)));
    }
    if rng.next_u64() % 4 == 0 {
        tags.push(format!(r#"["t","topic{}"]"#, rng.zipf(200)));
    }
    if kind == 30023 {
        tags.push(format!(r#"["d","post-{}"]"#, rng.next_u64() % 20));
    }
    let len = match rng.next_u64() % 10 {
        0..=5 => 50 + rng.next_u64() % 300,
        6..=8 => 300 + rng.next_u64() % 1_400,
        _ => 1_700 + rng.next_u64() % 3_000,
    } as usize;
    let json = format!(
        r#"{{"id":"{}","pubkey":"{}","created_at":{},"kind":{},"tags":[{}],"content":"{}","sig":"{}{}"}}"#,
        hex64(i, 0),
        hex64(author, 9),
        1_600_000_000 + i * 2 + rng.next_u64() % 3,
        kind,
        tags.join(","),
        "n".repeat(len),
        hex64(i, 3),
        hex64(i, 4)
    );
    match Event::from_json(&json) {
        Ok(e) => e,
        Err(e) => panic!("synthetic event {i} does not parse: {e}"),
    }
}

/// Workload events `0..n`, generated from one seed.
pub fn events(n: u64) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n).map(|i| event(i, &mut rng)).collect()
}

/// The `p`-th percentile (0.0 to 1.0) of `v`, in milliseconds; NaN when empty.
pub fn percentile_ms(v: &mut [std::time::Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3
}

/// Runs each query set twice (a warm-up pass, then a measured one) and prints the
/// p50/p99 latency and the mean answer size under `label`.
pub async fn measure(store: &dyn crate::EventStore, label: &str, queries: &[Vec<crate::Filter>]) {
    for f in queries {
        if let Err(e) = store.query(f).await {
            panic!("{label}: warm-up query failed: {e}");
        }
    }
    let mut times = Vec::with_capacity(queries.len());
    let mut returned = 0;
    for f in queries {
        let t = std::time::Instant::now();
        match store.query(f).await {
            Ok(r) => returned += r.len(),
            Err(e) => panic!("{label}: query failed: {e}"),
        }
        times.push(t.elapsed());
    }
    let n = times.len().max(1);
    println!(
        "{label:<24} p50 {:>8.3} ms  p99 {:>8.3} ms  ({n} queries, {:.1} events/query)",
        percentile_ms(&mut times, 0.5),
        percentile_ms(&mut times, 0.99),
        returned as f64 / n as f64
    );
}

/// Saves `events` from `writers` concurrent tasks, each keeping `in_flight` saves
/// outstanding (as busy relay connections would). Panics on any failed save.
pub async fn ingest_concurrently(
    store: std::sync::Arc<dyn crate::EventStore>,
    events: std::sync::Arc<Vec<Event>>,
    writers: usize,
    in_flight: usize,
) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, events) = (store.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (w..events.len()).step_by(writers).collect();
            for chunk in mine.chunks(in_flight.max(1)) {
                let mut set = tokio::task::JoinSet::new();
                for &i in chunk {
                    let (store, events) = (store.clone(), events.clone());
                    set.spawn(async move { store.save(&events[i]).await });
                }
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => panic!("save failed: {e}"),
                        Err(e) => panic!("save task failed: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            panic!("writer task failed: {e}");
        }
    }
}

/// How a bench binary should run: `(smoke, n)`. `cargo bench` passes `--bench`;
/// `cargo test --benches` does not, and then the bench is a quick smoke test of
/// `smoke_n` events. Otherwise `n` comes from the environment variable `env`, else
/// `default_n`.
pub fn bench_size(env: &str, smoke_n: u64, default_n: u64) -> (bool, u64) {
    if !std::env::args().any(|a| a == "--bench") {
        return (true, smoke_n);
    }
    let n = std::env::var(env)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    (false, n)
}
