//! The differential property test of completeness floors (DESIGN.md §5a): random
//! interleavings of saves (old and new `created_at`), deletions by id and by address,
//! replacements, queries of every shape (repeated, so floors are learned and then
//! used), evictions under a tiny L1, promotions, and writes arriving through the poller
//! from a second node. Every answer must equal `MemoryStore`'s, byte for byte and in
//! order. `PROPTEST_CASES` runs more cases.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use eventstore::conformance::fixtures::T0;
use eventstore::{Event, EventBuilder, EventStore, Filter, Keys, Kind, MemoryStore, Timestamp};
use layer1::{RedbConfig, RedbStore};
use layer2::testsupport::test_database;
use layer2_relay::{Tiered, TieredConfig};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use layer2::{PgConfig, PgStore};

use crate::support::{fast_config, until_trusted};

const AUTHORS: u8 = 3;
const KINDS: [u16; 5] = [1, 7, 0, 30023, 6];
const TAGS: [&str; 2] = ["a", "b"];
/// The L1 budget: small enough that a case of a few dozen ops evicts (and so raises
/// floors) several times. At the shared 48 KiB, once index keys shrank (format 2), most
/// cases never evicted and the run could end with no floor raised at all.
const BUDGET: u64 = 12 * 1024;
/// Seconds the events span: old and new ones interleave.
const SPAN: u64 = 40;

#[derive(Debug, Clone, Copy)]
enum Shape {
    Author,
    TwoAuthors,
    AuthorKind,
    Thread,
    Reactions,
    Mentions,
    Kind,
    Hashtag,
    Ids,
    All,
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        /// Published on the second node (PostgreSQL only).
        other: bool,
        author: u8,
        kind: usize,
        dt: u64,
        e: Option<usize>,
        p: Option<u8>,
        t: Option<usize>,
        d: u8,
        big: bool,
    },
    Delete {
        other: bool,
        author: u8,
        dt: u64,
        e: Vec<usize>,
        a: Option<u8>,
    },
    Query {
        other: bool,
        shape: Shape,
        x: usize,
        y: usize,
        since: Option<u64>,
        until: Option<u64>,
        limit: Option<usize>,
    },
    /// Lets queued promotions land, so the next queries use what they taught.
    Settle,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Author),
        Just(Shape::TwoAuthors),
        Just(Shape::AuthorKind),
        Just(Shape::Thread),
        Just(Shape::Reactions),
        Just(Shape::Mentions),
        Just(Shape::Kind),
        Just(Shape::Hashtag),
        Just(Shape::Ids),
        Just(Shape::All),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let save = (
        any::<bool>(),
        0..AUTHORS,
        0..KINDS.len(),
        0..SPAN,
        proptest::option::of(any::<usize>()),
        proptest::option::of(0..AUTHORS),
        proptest::option::of(0..TAGS.len()),
        0u8..2,
        any::<bool>(),
    )
        .prop_map(|(other, author, kind, dt, e, p, t, d, big)| Op::Save {
            other,
            author,
            kind,
            dt,
            e,
            p,
            t,
            d,
            big,
        });
    let delete = (
        any::<bool>(),
        0..AUTHORS,
        0..SPAN,
        vec(any::<usize>(), 0..3),
        proptest::option::of(0u8..2),
    )
        .prop_map(|(other, author, dt, e, a)| Op::Delete {
            other,
            author,
            dt,
            e,
            a,
        });
    let query = (
        any::<bool>(),
        shape(),
        any::<usize>(),
        any::<usize>(),
        proptest::option::weighted(0.3, 0..SPAN),
        proptest::option::weighted(0.3, 0..SPAN),
        proptest::option::weighted(0.7, 1usize..6),
    )
        .prop_map(|(other, shape, x, y, since, until, limit)| Op::Query {
            other,
            shape,
            x,
            y,
            since,
            until,
            limit,
        });
    prop_oneof![
        8 => save,
        1 => delete,
        // Queries repeat from a small alphabet, so floors are learned and then used.
        8 => query,
        2 => Just(Op::Settle),
    ]
}

/// Turns ops into signed events and filters; indexes into earlier events wrap around.
struct World {
    keys: Vec<Keys>,
    events: Vec<Event>,
}

impl World {
    fn pick(&self, i: usize) -> Option<&Event> {
        (!self.events.is_empty()).then(|| &self.events[i % self.events.len()])
    }

    fn event(&mut self, op: &Op) -> Option<Event> {
        let ev = match op {
            Op::Save {
                author,
                kind,
                dt,
                e,
                p,
                t,
                d,
                big,
                ..
            } => {
                let kind = KINDS[*kind];
                let content = if *big { "x".repeat(1_500) } else { "hi".into() };
                let mut b = EventBuilder::new(Kind(kind), content).created_at(Timestamp(T0 + dt));
                if Kind(kind).class() == eventstore::KindClass::Addressable {
                    b = b.tag(["d".to_owned(), format!("d{d}")]);
                }
                if let Some(target) = e.and_then(|i| self.pick(i)) {
                    b = b.tag(["e".to_owned(), target.id().to_hex()]);
                }
                if let Some(p) = p {
                    b = b.tag(["p".to_owned(), self.keys[*p as usize].public_key().to_hex()]);
                }
                if let Some(t) = t {
                    b = b.tag(["t", TAGS[*t]]);
                }
                b.sign_deterministic(&self.keys[*author as usize])
            }
            Op::Delete {
                author, dt, e, a, ..
            } => {
                let mut b = EventBuilder::new(Kind::DELETION, "").created_at(Timestamp(T0 + dt));
                for &i in e {
                    if let Some(target) = self.pick(i) {
                        b = b.tag(["e".to_owned(), target.id().to_hex()]);
                    }
                }
                if let Some(d) = a {
                    let pk = self.keys[*author as usize].public_key();
                    b = b.tag(["a".to_owned(), format!("30023:{pk}:d{d}")]);
                }
                b.sign_deterministic(&self.keys[*author as usize])
            }
            _ => return None,
        };
        self.events.push(ev.clone());
        Some(ev)
    }

    fn filter(&self, shape: Shape, x: usize, y: usize) -> Filter {
        let author = |i: usize| self.keys[i % AUTHORS as usize].public_key();
        let note = |i: usize| self.pick(i).map_or("0".repeat(64), |e| e.id().to_hex());
        match shape {
            Shape::Author => Filter::new().author(author(x)),
            Shape::TwoAuthors => Filter::new().author(author(x)).author(author(y)),
            Shape::AuthorKind => Filter::new()
                .author(author(x))
                .kind(Kind(KINDS[y % KINDS.len()])),
            Shape::Thread => Filter::new().tag('e', note(x)),
            Shape::Reactions => Filter::new().tag('e', note(x)).kind(Kind(7)),
            Shape::Mentions => Filter::new().tag('p', author(x).to_hex()),
            Shape::Kind => Filter::new().kind(Kind(KINDS[x % KINDS.len()])),
            Shape::Hashtag => Filter::new().tag('t', TAGS[x % TAGS.len()]),
            Shape::Ids => {
                let mut f = Filter::new();
                for i in [x, y] {
                    if let Some(e) = self.pick(i) {
                        f = f.id(e.id());
                    }
                }
                if f.ids.is_none() {
                    f.ids = Some(Default::default());
                }
                f
            }
            Shape::All => Filter::new(),
        }
    }
}

/// The nodes under test: `a` always; `b` shares its L2 (PostgreSQL) and reaches `a`
/// only through the poller.
struct Cluster {
    a: Arc<Tiered>,
    b: Option<Arc<Tiered>>,
    /// Closed when the case ends: the PostgreSQL cluster is shared by every test here,
    /// and the nodes' listeners would hold their connections until then.
    pools: Vec<sqlx::PgPool>,
}

impl Cluster {
    fn node(&self, other: bool) -> &Arc<Tiered> {
        match (&self.b, other) {
            (Some(b), true) => b,
            _ => &self.a,
        }
    }

    /// After a write, the other node's poller must have run a whole poll that started
    /// after it, so the write is visible everywhere (the oracle sees it at once).
    async fn propagate(&self, from_other: bool) {
        let Some(b) = &self.b else { return };
        let peer = if from_other { &self.a } else { b };
        let start = peer.stats().poll_runs.load(Relaxed);
        for _ in 0..2_000 {
            if peer.stats().poll_runs.load(Relaxed) >= start + 2 && peer.window_trusted() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the peer's poller stopped");
    }
}

fn config() -> TieredConfig {
    TieredConfig {
        poll_frequency: Duration::from_millis(15),
        ..fast_config()
    }
}

async fn run(cluster: &Cluster, ops: &[Op]) -> Result<(), TestCaseError> {
    let oracle = MemoryStore::new();
    let mut world = World {
        keys: (0..u64::from(AUTHORS))
            .map(|i| Keys::from_seed(2_000 + i))
            .collect(),
        events: Vec::new(),
    };
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Save { other, .. } | Op::Delete { other, .. } => {
                let Some(ev) = world.event(op) else { continue };
                let want = oracle.save_at(&ev, Timestamp::now());
                let got = cluster
                    .node(*other)
                    .save(&ev)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step}: save: {e}")))?;
                prop_assert_eq!(got, want, "step {}: save outcome", step);
                cluster.propagate(*other).await;
            }
            Op::Query {
                other,
                shape,
                x,
                y,
                since,
                until,
                limit,
            } => {
                let mut f = world.filter(*shape, *x, *y);
                f.since = since.map(|d| Timestamp(T0 + d));
                f.until = until.map(|d| Timestamp(T0 + d));
                f.limit = *limit;
                let filters = [f];
                let got = cluster
                    .node(*other)
                    .query(&filters)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step}: query: {e}")))?;
                let want = oracle.query_at(&filters, Timestamp::now());
                let same = got.len() == want.len()
                    && got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.as_json() == w.as_json());
                let ids = |v: &[Event]| {
                    v.iter()
                        .map(|e| e.id().to_hex()[..8].to_owned())
                        .collect::<Vec<_>>()
                };
                prop_assert!(
                    same,
                    "step {}: query {:?}: got {:?}, want {:?}",
                    step,
                    filters,
                    ids(&got),
                    ids(&want)
                );
            }
            Op::Settle => {
                cluster.a.settle().await;
                if let Some(b) = &cluster.b {
                    b.settle().await;
                }
            }
        }
    }
    Ok(())
}

fn check<F, Fut>(make: F, default_cases: u32)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Cluster, Box<dyn std::any::Any>)>,
{
    let rt = eventstore::conformance::runtime();
    let config = Config {
        cases: eventstore::conformance::prop::cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let stats: [std::sync::atomic::AtomicU64; 3] = Default::default();
    let result = runner.run(&vec(op(), 1..60), |ops| {
        rt.block_on(async {
            let (cluster, guard) = make().await;
            let r = run(&cluster, &ops).await;
            for n in [Some(&cluster.a), cluster.b.as_ref()].into_iter().flatten() {
                let l1 = n.l1().stats();
                stats[0].fetch_add(l1.floors_learned.load(Relaxed), Relaxed);
                stats[1].fetch_add(l1.floors_raised.load(Relaxed), Relaxed);
                stats[2].fetch_add(l1.evictions.load(Relaxed), Relaxed);
                n.shutdown();
            }
            for p in &cluster.pools {
                p.close().await;
            }
            drop(cluster);
            drop(guard);
            r
        })
    });
    if let Err(e) = result {
        panic!("the tiered store disagrees with MemoryStore: {e:?}");
    }
    // The test is worth something only if floors were learned and evictions hit them.
    let [learned, raised, evicted] = stats.map(|a| a.into_inner());
    println!("floors learned {learned}, raised {raised}, evictions {evicted}");
    assert!(
        learned > 0 && raised > 0 && evicted > 0,
        "floors learned {learned}, raised {raised}, evictions {evicted}: the cases did not exercise them"
    );
}

#[test]
fn floors_agree_with_memory_store_embedded() {
    check(
        || async {
            let dir = tempfile::tempdir().expect("temp dir");
            let l2 = Arc::new(
                RedbStore::open(RedbConfig::new(dir.path().join("l2.redb"))).expect("open L2"),
            );
            let a = Tiered::start(
                crate::support::l1_at(dir.path(), BUDGET),
                l2,
                None,
                config(),
            )
            .await
            .expect("start node");
            (
                Cluster {
                    a,
                    b: None,
                    pools: Vec::new(),
                },
                Box::new(dir) as Box<dyn std::any::Any>,
            )
        },
        256,
    );
}

#[test]
fn floors_agree_with_memory_store_postgres_two_nodes() {
    check(
        || async {
            let db = test_database().await;
            let da = tempfile::tempdir().expect("temp dir");
            let dbb = tempfile::tempdir().expect("temp dir");
            let mut pools = Vec::new();
            let mut nodes = Vec::new();
            for dir in [&da, &dbb] {
                let pg = Arc::new(
                    PgStore::connect(PgConfig::new(db.url.clone()))
                        .await
                        .expect("connect L2"),
                );
                pools.push(pg.pool().clone());
                let l1 = crate::support::l1_at(dir.path(), BUDGET);
                let t = Tiered::start(l1, pg.clone(), Some(pg), config())
                    .await
                    .expect("start node");
                until_trusted(&t).await;
                nodes.push(t);
            }
            let b = nodes.pop();
            let a = nodes.pop().expect("two nodes");
            (
                Cluster { a, b, pools },
                Box::new((db, da, dbb)) as Box<dyn std::any::Any>,
            )
        },
        48,
    );
}
