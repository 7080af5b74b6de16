//! Tiered benchmark: a warm node with N events in L2 (default 1,000,000) and a 100 MiB
//! L1 serves a feed-like workload (newest notes and reposts of followed authors, the
//! authors Zipf-distributed). Reports the share answered without touching L2 and the
//! p50/p99 latency of L1-answered and L2-answered queries.
//!
//! `cargo bench -p layer2-relay --bench feed` (a throw-away PostgreSQL is started;
//! `DATABASE_URL` uses yours). `LAYER2_BENCH_EVENTS` sets N; `LAYER2_BENCH_FLOORS=0`
//! turns completeness floors off, for comparison. Besides feeds it runs repeat visits
//! (Zipf-distributed) to profile pages, threads and reactions.
//!
//! Knobs for studying where misses come from: `LAYER2_BENCH_L1_MIB` (L1 budget, 100),
//! `LAYER2_BENCH_WARM_VISITS` (warm-up visits per workload, 8,000),
//! `LAYER2_BENCH_ONLY` (comma-separated workloads: feed, profile, pages, threads,
//! reactions).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use eventstore::conformance::workload::{self as wl, Rng};
use eventstore::{Event, EventStore, Filter, Kind, Timestamp};
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
        let budget: u64 = if test_mode {
            4 << 20
        } else {
            env_u64("LAYER2_BENCH_L1_MIB").unwrap_or(100) << 20
        };
        let mut l1c = RedbConfig::new(dir.path().join("l1.redb"))
            .max_bytes(budget)
            .durability(Durability::Eventual);
        l1c.cache_bytes = 256 << 20;
        // LAYER2_BENCH_FLOORS=0: no completeness floors (the window alone), to compare.
        if std::env::var("LAYER2_BENCH_FLOORS").is_ok_and(|v| v == "0") {
            l1c.max_floors = 0;
        }
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
            "feed",
            "feed (50 Zipf-followed authors, kinds 1+6)",
            test_mode,
            |rng| {
                let mut f = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(20);
                for _ in 0..50 {
                    f = f.author(wl::author(rng.zipf(wl::AUTHORS)));
                }
                vec![f]
            },
        )
        .await;
        run(
            &node,
            "profile",
            "profile (one uniformly chosen author)",
            test_mode,
            |rng| {
                let a = wl::author(rng.next_u64() % wl::AUTHORS);
                vec![Filter::new().author(a).kind(Kind(1)).limit(20)]
            },
        )
        .await;
        // Repeat visits, Zipf-distributed: popular profiles, threads and notes are read
        // again and again (DESIGN.md §5a).
        run(
            &node,
            "pages",
            "profile pages (Zipf author, page 1 then page 2 by until)",
            test_mode,
            |rng| {
                let a = wl::author(rng.zipf(wl::AUTHORS));
                let page = Filter::new().author(a).kind(Kind(1)).limit(20);
                vec![page.clone(), page]
            },
        )
        .await;
        run(
            &node,
            "threads",
            "threads (#e of a Zipf-chosen note)",
            test_mode,
            |rng| {
                let note = n - 1 - rng.zipf(n.min(50_000));
                vec![Filter::new().tag('e', wl::hex64(note, 2)).limit(50)]
            },
        )
        .await;
        run(
            &node,
            "reactions",
            "reactions (#e + kind 7 of a Zipf-chosen note)",
            test_mode,
            |rng| {
                let note = n - 1 - rng.zipf(n.min(50_000));
                vec![
                    Filter::new()
                        .tag('e', wl::hex64(note, 2))
                        .kind(Kind(7))
                        .limit(100),
                ]
            },
        )
        .await;
        let floors = l1.stats().floors.load(Relaxed);
        println!(
            "L1 after the run: {:.0} MiB of {} MiB, {floors} floors, W = {}",
            l1.bytes_used() as f64 / (1 << 20) as f64,
            budget >> 20,
            l1.window().0
        );
        node.shutdown();
    });
}

/// Runs a warm-up pass of queries (four times the measured count), then a measured
/// pass with fresh draws from the same distribution. A workload returns the REQs of one
/// visit; a page after the first is asked with `until` just below the previous page's
/// last event, as clients page.
async fn run(
    node: &Tiered,
    name: &str,
    label: &str,
    test_mode: bool,
    make: impl Fn(&mut Rng) -> Vec<Filter>,
) {
    if let Ok(only) = std::env::var("LAYER2_BENCH_ONLY")
        && !only.split(',').any(|w| w.trim() == name)
    {
        return;
    }
    let visits = if test_mode { 50 } else { 2_000 };
    let warm_visits = env_u64("LAYER2_BENCH_WARM_VISITS").map_or(visits * 4, |v| v as usize);
    let mut rng = Rng(7);
    let mut seen = HashSet::new();
    // The warm-up in quarters, each with its share answered without L2: whether the
    // share still climbs at the end tells if the measured pass is warm.
    let mut climb = Vec::new();
    for _ in 0..4 {
        let w = visit_all(node, &make, &mut rng, warm_visits / 4, &mut seen).await;
        climb.push(format!("{:.1}%", w.share()));
    }
    node.settle().await;
    let evicted = node.l1().stats().evictions.load(Relaxed);
    let v = visit_all(node, &make, &mut rng, visits, &mut seen).await;
    let evicted = node.l1().stats().evictions.load(Relaxed) - evicted;
    let share = v.share();
    let (mut l1_times, mut l2_times) = (v.l1_times, v.l2_times);
    let total = l1_times.len() + l2_times.len();
    println!(
        "{label}: answered without L2: {share:.1}% of {total} REQs ({:.0} L2 queries per 1,000 REQs)",
        l2_times.len() as f64 * 1_000.0 / total as f64
    );
    // A first visit to a key (an author, a note) no earlier visit asked for can only
    // be answered by L2 unless the window holds it: the share of repeat visits bounds
    // what any cache of what was asked can reach.
    println!(
        "  repeat visits: {:.1}% of REQs; of those, {:.1}% answered without L2",
        v.repeat as f64 / total as f64 * 100.0,
        v.repeat_l1 as f64 / v.repeat.max(1) as f64 * 100.0
    );
    println!(
        "  warm-up by quarters ({warm_visits} visits): {}; L2-asked REQs of repeat visits by position in the visit: {:?}; events evicted in the measured pass: {evicted}",
        climb.join(", "),
        v.repeat_l2_at
    );
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

/// What a pass of visits saw.
#[derive(Default)]
struct Visits {
    /// Latencies of L1-answered and L2-asked REQs.
    l1_times: Vec<Duration>,
    l2_times: Vec<Duration>,
    /// REQs of visits whose first REQ an earlier visit had asked, and how many of
    /// those L1 answered.
    repeat: usize,
    repeat_l1: usize,
    /// L2-asked REQs of repeat visits, by their position in the visit (page 1, 2, ...).
    repeat_l2_at: Vec<usize>,
}

impl Visits {
    /// The share of REQs answered without L2, in percent.
    fn share(&self) -> f64 {
        let total = self.l1_times.len() + self.l2_times.len();
        self.l1_times.len() as f64 * 100.0 / total.max(1) as f64
    }
}

/// A whole-number setting from the environment.
fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `visits` visits; `seen` holds the first REQ of every visit so far.
async fn visit_all(
    node: &Tiered,
    make: &impl Fn(&mut Rng) -> Vec<Filter>,
    rng: &mut Rng,
    visits: usize,
    seen: &mut HashSet<String>,
) -> Visits {
    let mut v = Visits::default();
    for _ in 0..visits {
        let mut last: Option<Timestamp> = None;
        let reqs = make(rng);
        let repeat = reqs.first().is_some_and(|f| !seen.insert(format!("{f:?}")));
        for (at, mut f) in reqs.into_iter().enumerate() {
            if let Some(t) = last {
                if t.0 == 0 {
                    break;
                }
                f.until = Some(Timestamp(t.0 - 1));
            }
            let before = node.stats().l2_queries.load(Relaxed);
            let t = Instant::now();
            let r = node.query(&[f]).await.unwrap();
            let dt = t.elapsed();
            let from_l1 = node.stats().l2_queries.load(Relaxed) == before;
            if from_l1 {
                v.l1_times.push(dt);
            } else {
                v.l2_times.push(dt);
            }
            if repeat {
                v.repeat += 1;
                v.repeat_l1 += usize::from(from_l1);
                if !from_l1 {
                    if v.repeat_l2_at.len() <= at {
                        v.repeat_l2_at.resize(at + 1, 0);
                    }
                    v.repeat_l2_at[at] += 1;
                }
            }
            match r.last() {
                Some(e) => last = Some(e.created_at()),
                None => break,
            }
        }
    }
    v
}
