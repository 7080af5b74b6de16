//! Property tests: random streams of saves, deletions and queries run against a store
//! and against [`MemoryStore`]; the answers must agree.
//!
//! Small alphabets (three authors, a handful of kinds, tag values and timestamps) make
//! replacements, ties, deletions and filter hits common.

use std::future::Future;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::Subject;
use super::fixtures::T0;
use crate::event::Event;
use crate::filter::Filter;
use crate::keys::{EventBuilder, Keys};
use crate::memory::MemoryStore;
use crate::store::EventStore;
use crate::types::{Kind, Timestamp};

const KINDS: [u16; 8] = [1, 7, 0, 3, 10002, 30023, 30001, 20001];
const TAG_T: [&str; 3] = ["a", "b", "c"];
const D_VALUES: [&str; 3] = ["", "x", "y"];
const CONTENT: [&str; 4] = ["", "hi", "é\"\\\n\t", "🌍 </>"];
const AUTHORS: u8 = 3;
const SPAN: u64 = 12;

/// How a store's answers must relate to the oracle's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identical save outcomes and query results.
    Exact,
    /// A bounded cache fed as a mirror: it is given only the events the oracle newly
    /// stored (as an L1 is given only what L2 accepted), and may have forgotten some.
    /// Each answer must be a subsequence, in canonical order, of the oracle's answer
    /// without limits.
    Subset,
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        author: u8,
        kind: usize,
        dt: u64,
        t: Vec<usize>,
        p: Vec<u8>,
        e: Vec<usize>,
        d: usize,
        content: usize,
    },
    Delete {
        author: u8,
        dt: u64,
        e: Vec<usize>,
        a: Vec<(usize, usize)>,
    },
    Query(Vec<FilterSpec>),
}

#[derive(Debug, Clone)]
struct FilterSpec {
    ids: Option<Vec<usize>>,
    authors: Option<Vec<u8>>,
    kinds: Option<Vec<usize>>,
    t: Option<Vec<usize>>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<usize>,
}

fn filter_spec() -> impl Strategy<Value = FilterSpec> {
    (
        proptest::option::weighted(0.2, vec(any::<usize>(), 0..3)),
        proptest::option::weighted(0.4, vec(0..AUTHORS, 0..3)),
        proptest::option::weighted(0.4, vec(0..KINDS.len(), 0..3)),
        proptest::option::weighted(0.3, vec(0..TAG_T.len(), 0..3)),
        proptest::option::weighted(0.3, 0..SPAN),
        proptest::option::weighted(0.3, 0..SPAN),
        proptest::option::weighted(0.5, 0usize..6),
    )
        .prop_map(|(ids, authors, kinds, t, since, until, limit)| FilterSpec {
            ids,
            authors,
            kinds,
            t,
            since,
            until,
            limit,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..AUTHORS,
            0..KINDS.len(),
            0..SPAN,
            vec(0..TAG_T.len(), 0..3),
            vec(0..AUTHORS, 0..2),
            vec(any::<usize>(), 0..2),
            0..D_VALUES.len(),
            0..CONTENT.len(),
        )
            .prop_map(|(author, kind, dt, t, p, e, d, content)| Op::Save {
                author,
                kind,
                dt,
                t,
                p,
                e,
                d,
                content,
            }),
        1 => (
            0..AUTHORS,
            0..SPAN,
            vec(any::<usize>(), 0..3),
            vec((3usize..7, 0..D_VALUES.len()), 0..2),
        )
            .prop_map(|(author, dt, e, a)| Op::Delete { author, dt, e, a }),
        3 => vec(filter_spec(), 1..3).prop_map(Op::Query),
    ]
}

/// Turns specs into signed events and filters. Indexes into earlier events wrap around.
struct World {
    keys: Vec<Keys>,
    events: Vec<Event>,
}

impl World {
    fn new() -> World {
        World {
            keys: (0..u64::from(AUTHORS))
                .map(|i| Keys::from_seed(1_000 + i))
                .collect(),
            events: Vec::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<&Event> {
        (!self.events.is_empty()).then(|| &self.events[i % self.events.len()])
    }

    fn make(&mut self, op: &Op) -> Option<Event> {
        let ev = match op {
            Op::Save {
                author,
                kind,
                dt,
                t,
                p,
                e,
                d,
                content,
            } => {
                let kind = KINDS[*kind];
                let mut b =
                    EventBuilder::new(Kind(kind), CONTENT[*content]).created_at(Timestamp(T0 + dt));
                if Kind(kind).class() == crate::KindClass::Addressable {
                    b = b.tag(["d", D_VALUES[*d]]);
                }
                for &ti in t {
                    b = b.tag(["t", TAG_T[ti]]);
                }
                for &pi in p {
                    b = b.tag(["p".to_owned(), self.keys[pi as usize].public_key().to_hex()]);
                }
                for &ei in e {
                    if let Some(target) = self.pick(ei) {
                        b = b.tag(["e".to_owned(), target.id().to_hex()]);
                    }
                }
                b.sign_deterministic(&self.keys[*author as usize])
            }
            Op::Delete { author, dt, e, a } => {
                let mut b = EventBuilder::new(Kind::DELETION, "").created_at(Timestamp(T0 + dt));
                for &ei in e {
                    if let Some(target) = self.pick(ei) {
                        b = b.tag(["e".to_owned(), target.id().to_hex()]);
                    }
                }
                for &(kind, d) in a {
                    let pk = self.keys[*author as usize].public_key();
                    b = b.tag([
                        "a".to_owned(),
                        format!("{}:{pk}:{}", KINDS[kind], D_VALUES[d]),
                    ]);
                }
                b.sign_deterministic(&self.keys[*author as usize])
            }
            Op::Query(_) => return None,
        };
        self.events.push(ev.clone());
        Some(ev)
    }

    fn filter(&self, s: &FilterSpec) -> Filter {
        let mut f = Filter::new();
        if let Some(ids) = &s.ids {
            f.ids = Some(
                ids.iter()
                    .filter_map(|&i| self.pick(i))
                    .map(Event::id)
                    .collect(),
            );
        }
        if let Some(a) = &s.authors {
            f.authors = Some(
                a.iter()
                    .map(|&i| self.keys[i as usize].public_key())
                    .collect(),
            );
        }
        if let Some(k) = &s.kinds {
            f.kinds = Some(k.iter().map(|&i| Kind(KINDS[i])).collect());
        }
        if let Some(t) = &s.t {
            f.tags
                .insert(b't', t.iter().map(|&i| TAG_T[i].to_owned()).collect());
        }
        f.since = s.since.map(|d| Timestamp(T0 + d));
        f.until = s.until.map(|d| Timestamp(T0 + d));
        f.limit = s.limit;
        f
    }
}

fn is_subsequence(sub: &[Event], of: &[Event]) -> bool {
    let mut it = of.iter();
    sub.iter().all(|e| it.any(|o| o.id() == e.id()))
}

async fn run_ops(store: Arc<dyn EventStore>, ops: &[Op], mode: Mode) -> Result<(), TestCaseError> {
    let oracle = MemoryStore::new();
    let mut world = World::new();
    for (step, op) in ops.iter().enumerate() {
        if let Some(ev) = world.make(op) {
            let want = oracle.save_at(&ev, Timestamp::now());
            if mode == Mode::Subset && !want.is_new() {
                continue;
            }
            let got = store
                .save(&ev)
                .await
                .map_err(|e| TestCaseError::fail(format!("step {step}: save failed: {e}")))?;
            if mode == Mode::Exact {
                prop_assert_eq!(got, want, "step {}: save outcome of {:?}", step, ev);
            }
            continue;
        }
        let Op::Query(specs) = op else { continue };
        let filters: Vec<Filter> = specs.iter().map(|s| world.filter(s)).collect();
        let got = store
            .query(&filters)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {step}: query failed: {e}")))?;
        let want = oracle.query_at(&filters, Timestamp::now());
        match mode {
            Mode::Exact => {
                let got_ids: Vec<_> = got.iter().map(Event::id).collect();
                let want_ids: Vec<_> = want.iter().map(Event::id).collect();
                prop_assert_eq!(got_ids, want_ids, "step {}: query {:?}", step, filters);
                let n = store
                    .count(&filters)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step}: count: {e}")))?;
                let unlimited: Vec<Filter> = filters
                    .iter()
                    .map(|f| Filter {
                        limit: None,
                        ..f.clone()
                    })
                    .collect();
                let want_n = oracle.query_at(&unlimited, Timestamp::now()).len() as u64;
                prop_assert_eq!(n, want_n, "step {}: count {:?}", step, filters);
            }
            Mode::Subset => {
                let unlimited: Vec<Filter> = filters
                    .iter()
                    .map(|f| Filter {
                        limit: None,
                        ..f.clone()
                    })
                    .collect();
                let all = oracle.query_at(&unlimited, Timestamp::now());
                prop_assert!(
                    is_subsequence(&got, &all),
                    "step {}: {:?} is not an ordered subset of the oracle's {:?}",
                    step,
                    got.iter().map(Event::id).collect::<Vec<_>>(),
                    all.iter().map(Event::id).collect::<Vec<_>>()
                );
            }
        }
    }
    Ok(())
}

/// Cases per run: `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs random operation streams against fresh subjects from `factory` and against
/// `MemoryStore`, panicking with the minimal failing stream if they disagree.
pub fn check_against_oracle<F, Fut>(factory: F, mode: Mode, default_cases: u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Subject>,
{
    let rt = super::runtime();
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec(op(), 1..40), |ops| {
        rt.block_on(async {
            let subject = factory().await;
            let r = run_ops(subject.store.clone(), &ops, mode).await;
            drop(subject);
            r
        })
    });
    if let Err(e) = result {
        panic!("store disagrees with MemoryStore: {e}");
    }
}
