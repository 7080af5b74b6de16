//! Completeness floors (DESIGN.md §5a) at the store level: learned from a promotion,
//! served to stronger keys, raised by eviction, dropped when an eviction raced the
//! answer, cleared by a window reset, and counted in the budget.

use eventstore::conformance::fixtures::T0;
use eventstore::{Event, EventBuilder, EventStore, Filter, Keys, Kind, Timestamp};
use layer1::{Learn, RedbConfig, RedbStore};

fn store(dir: &std::path::Path, budget: u64) -> RedbStore {
    let mut c = RedbConfig::new(dir.join("l1.redb")).max_bytes(budget);
    c.high_water = 0.9;
    c.low_water = 0.85;
    RedbStore::open(c).unwrap()
}

fn notes(keys: &Keys, n: u64, t0: u64, kind: u16) -> Vec<Event> {
    (0..n)
        .map(|i| {
            EventBuilder::new(Kind(kind), format!("note {i} {}", "n".repeat(300)))
                .created_at(Timestamp(t0 + i))
                .tag(["t", "floors"])
                .sign_deterministic(keys)
        })
        .collect()
}

/// A lowering as if its probe saw every eviction so far (these tests order evictions
/// themselves; `an_event_evicted_below_the_floor_since_the_probe_cancels_the_lowering`
/// takes a real probe's epoch).
fn learn(f: &Filter, floor: u64, joins: Timestamp) -> Learn {
    Learn {
        filter: f.clone(),
        floor: Timestamp(floor),
        joins,
        evictions: u64::MAX,
    }
}

/// The set-up of the eviction-race tests: a 96 KiB store with `W` at T0 + 1,000, and
/// alice with the filter of her events.
struct Race {
    _dir: tempfile::TempDir,
    s: RedbStore,
    w: Timestamp,
    alice: Keys,
    by_alice: Filter,
}

impl Race {
    async fn new() -> Race {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 96 << 10);
        let w = Timestamp(T0 + 1_000);
        s.set_window(w).await.unwrap();
        let alice = Keys::from_seed(1);
        let by_alice = Filter::new().author(alice.public_key());
        Race {
            _dir: dir,
            s,
            w,
            alice,
            by_alice,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_teaches_a_floor_that_serves_stronger_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 4 << 20);
    let w = Timestamp(T0 + 1_000);
    s.set_window(w).await.unwrap();
    let alice = Keys::from_seed(1);
    let old = notes(&alice, 5, T0, 1);
    let by_alice = Filter::new().author(alice.public_key());

    // Below W nothing is proven yet.
    let p = s.probe(&by_alice.clone().limit(10)).await.unwrap();
    assert_eq!(p.floor, w);

    let done = s
        .promote(old.clone(), Some(learn(&by_alice, 0, w)))
        .await
        .unwrap();
    assert_eq!(done.stored, 5);
    assert_eq!(done.floors_lowered, 1);
    let p = s.probe(&by_alice.clone().limit(10)).await.unwrap();
    assert_eq!(p.floor, Timestamp(0), "alice's events are all here");
    assert_eq!(p.events.len(), 5);
    // A stronger key (alice, kind 1) and a tag on top are served by alice's floor.
    let stronger = by_alice.clone().kind(Kind(1)).tag('t', "floors").limit(3);
    assert_eq!(s.probe(&stronger).await.unwrap().floor, Timestamp(0));
    // Another author is not.
    let bob = Filter::new()
        .author(Keys::from_seed(2).public_key())
        .limit(3);
    assert_eq!(s.probe(&bob).await.unwrap().floor, w);
    // Two authors: the floor is the higher of theirs.
    let both = by_alice
        .clone()
        .author(Keys::from_seed(2).public_key())
        .limit(3);
    assert_eq!(s.probe(&both).await.unwrap().floor, w);
    assert!(s.check().await.unwrap().is_consistent());

    // A floor only lowers: a later, shallower answer leaves it.
    let done = s
        .promote(Vec::new(), Some(learn(&by_alice, T0 + 3, w)))
        .await
        .unwrap();
    assert_eq!(done.floors_lowered, 0);

    // A window set by decree forgets every floor.
    s.set_window(Timestamp(T0 + 2_000)).await.unwrap();
    let p = s.probe(&by_alice.clone().limit(10)).await.unwrap();
    assert_eq!(p.floor, Timestamp(T0 + 2_000));
    assert_eq!(
        s.stats().floors.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(s.check().await.unwrap().is_consistent());
}

/// The race the module doc describes: an eviction between the L2 read and the
/// promotion raised the key's floor above the answer's range, so the answer proves
/// nothing and must not lower it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_since_the_probe_cancels_the_lowering() {
    let Race {
        _dir,
        s,
        w,
        alice,
        by_alice,
    } = Race::new().await;
    // Alice's floor reaches T0 + 500: her events from there on are held.
    let mid = notes(&alice, 5, T0 + 500, 1);
    s.promote(mid.clone(), Some(learn(&by_alice, T0 + 500, w)))
        .await
        .unwrap();
    // The probe a query would make before asking L2 for what lies below.
    let probe = s.probe(&by_alice.clone().limit(100)).await.unwrap();
    assert_eq!(probe.floor, Timestamp(T0 + 500));
    // Meanwhile new events push alice's promoted ones out.
    let filler = notes(&Keys::from_seed(9), 400, w.0, 1);
    for e in &filler {
        s.save(e).await.unwrap();
        if !s.contains(&[mid[4].id()]).await.unwrap()[0] {
            break;
        }
    }
    assert!(
        !s.contains(&[mid[4].id()]).await.unwrap()[0],
        "alice's newest promoted note was evicted"
    );
    // The eviction raised alice's floor past it.
    let after = s.probe(&by_alice.clone().limit(100)).await.unwrap();
    assert!(
        after.floor > mid[4].created_at(),
        "floor {:?} still claims the evicted event",
        after.floor
    );
    // L2's answer for the range below the old floor arrives now: it ends below the
    // raised floor, so recording it must lower nothing.
    let older = notes(&alice, 5, T0, 1);
    let done = s
        .promote(older, Some(learn(&by_alice, 0, probe.floor)))
        .await
        .unwrap();
    assert_eq!(done.floors_lowered, 0, "an eviction raced the answer");
    let last = s.probe(&by_alice.clone().limit(100)).await.unwrap();
    assert!(last.floor > mid[4].created_at());
    let report = s.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// The race the served-floor rule alone missed (the floors property test found it under
/// load): an event that reached L1 after L2's read, below the key's served floor (an
/// old `created_at`), and was evicted again before the promotion raised no floor, as
/// nothing claimed it yet, so the answer's lowering claimed an event L1 no longer held.
/// The probe's eviction epoch catches it; an eviction of another key's event does not
/// stop a lowering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_evicted_below_the_floor_since_the_probe_cancels_the_lowering() {
    let Race {
        _dir,
        s,
        w,
        alice,
        by_alice,
    } = Race::new().await;
    // The probe a query makes before asking L2 for what lies below W.
    let probe = s.probe(&by_alice.clone().limit(100)).await.unwrap();
    assert_eq!(probe.floor, w);
    // L2 answers with one old note; after its read, another note of alice's with an
    // old created_at is saved (below W: a promoted event) and pushed out again.
    let answer = notes(&alice, 1, T0, 1);
    let late = notes(&alice, 1, T0 + 10, 1).remove(0);
    s.save(&late).await.unwrap();
    // Promoted fillers too (below W): the window stays empty and W stays put, so only
    // the epoch can tell what happened.
    let filler = notes(&Keys::from_seed(9), 400, T0 + 100, 1);
    let mut fill = filler.iter();
    while s.contains(&[late.id()]).await.unwrap()[0] {
        let e = fill.next().expect("the filler evicts the late note");
        s.save(e).await.unwrap();
    }
    let lowering = |evictions| Learn {
        filter: by_alice.clone(),
        floor: Timestamp(0),
        joins: probe.floor,
        evictions,
    };
    let done = s
        .promote(answer, Some(lowering(probe.evictions)))
        .await
        .unwrap();
    assert_eq!(done.stored, 1);
    assert_eq!(done.floors_lowered, 0, "a matching event was evicted since");
    let after = s.probe(&by_alice.clone().limit(100)).await.unwrap();
    assert!(
        after.floor > late.created_at(),
        "floor {:?} claims the evicted note",
        after.floor
    );

    // Bob's answer, with only other authors' events evicted since its probe, lowers.
    let bob = Keys::from_seed(2);
    let by_bob = Filter::new().author(bob.public_key());
    let probe = s.probe(&by_bob.clone().limit(100)).await.unwrap();
    let before = s
        .stats()
        .evictions
        .load(std::sync::atomic::Ordering::Relaxed);
    while s
        .stats()
        .evictions
        .load(std::sync::atomic::Ordering::Relaxed)
        == before
    {
        let e = fill.next().expect("the filler evicts something");
        s.save(e).await.unwrap();
    }
    let done = s
        .promote(
            notes(&bob, 2, T0, 1),
            Some(Learn {
                filter: by_bob.clone(),
                ..lowering(probe.evictions)
            }),
        )
        .await
        .unwrap();
    assert_eq!(s.window(), w, "W stayed put");
    assert_eq!(
        done.floors_lowered, 1,
        "only other keys' events were evicted"
    );
    assert_eq!(
        s.probe(&by_bob.clone().limit(100)).await.unwrap().floor,
        Timestamp(0)
    );
    let report = s.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Promoted events are evicted coldest first through the LRU order, a read moves an
/// event to the warm end, and floors stay in the byte count through it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_order_survives_churn_and_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 160 << 10);
    let w = Timestamp(T0 + 100_000);
    s.set_window(w).await.unwrap();
    let authors: Vec<Keys> = (0..20).map(|i| Keys::from_seed(100 + i)).collect();
    for (i, k) in authors.iter().enumerate() {
        let f = Filter::new().author(k.public_key());
        let ev = notes(k, 6, T0 + 10 * i as u64, 1);
        s.promote(ev, Some(learn(&f, 0, w))).await.unwrap();
        // Keep the first author warm.
        let first = Filter::new().author(authors[0].public_key()).limit(10);
        assert!(!s.query(&[first]).await.unwrap().is_empty());
    }
    let filler = notes(&Keys::from_seed(9), 300, w.0, 1);
    let warm = Filter::new().author(authors[0].public_key()).limit(10);
    for (i, e) in filler.iter().enumerate() {
        s.save(e).await.unwrap();
        if i % 10 == 0 {
            // Read now and then: warmer than the window's old end.
            assert!(
                !s.query(std::slice::from_ref(&warm))
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }
    let evictions = s
        .stats()
        .evictions
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(evictions > 0);
    let p = s.probe(&warm).await.unwrap();
    assert_eq!(
        p.events.len(),
        6,
        "the warm author's events outlived the cold ones"
    );
    assert_eq!(p.floor, Timestamp(0));
    let cold = Filter::new().author(authors[1].public_key()).limit(10);
    let p = s.probe(&cold).await.unwrap();
    assert!(p.events.len() < 6, "a cold author's events went first");
    assert!(p.floor > Timestamp(0), "and its floor rose with them");
    let report = s.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Floors are bounded: past `max_floors` the least recently learned are forgotten (a
/// forgotten key falls back to `W`, which is always safe), and the byte count follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floors_past_the_bound_are_forgotten_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(4 << 20);
    c.max_floors = 3;
    let s = RedbStore::open(c).unwrap();
    let w = Timestamp(T0 + 1_000);
    s.set_window(w).await.unwrap();
    let authors: Vec<Keys> = (0..5).map(|i| Keys::from_seed(300 + i)).collect();
    for k in &authors {
        let f = Filter::new().author(k.public_key());
        let done = s
            .promote(notes(k, 2, T0, 1), Some(learn(&f, 0, w)))
            .await
            .unwrap();
        assert_eq!(done.floors_lowered, 1);
    }
    let stats = s.stats();
    assert_eq!(stats.floors.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(
        stats
            .floors_forgotten
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    for (i, k) in authors.iter().enumerate() {
        let p = s
            .probe(&Filter::new().author(k.public_key()).limit(10))
            .await
            .unwrap();
        let want = if i < 2 { w } else { Timestamp(0) };
        assert_eq!(p.floor, want, "author {i}");
    }
    let report = s.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Probes answered by a store whose reads run out of inline steps part way (in the
/// index walk, the floor lookups or the gap count) and run again on a reader thread
/// agree with probes run on reader threads alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_that_run_out_of_inline_steps_answer_as_the_reader_threads_do() {
    async fn probes(steps: u32) -> Vec<(Vec<eventstore::EventId>, Timestamp, usize)> {
        let dir = tempfile::tempdir().unwrap();
        let mut c = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(4 << 20);
        c.inline_read_steps = steps;
        let s = RedbStore::open(c).unwrap();
        let w = Timestamp(T0 + 1_000);
        s.set_window(w).await.unwrap();
        let alice = Keys::from_seed(1);
        let by_alice = Filter::new().author(alice.public_key());
        s.promote(notes(&alice, 40, T0, 1), Some(learn(&by_alice, 0, w)))
            .await
            .unwrap();
        let bob = Keys::from_seed(2).public_key();
        let filters = [
            by_alice.clone().limit(10),
            by_alice.clone().kind(Kind(1)).tag('t', "floors").limit(3),
            by_alice
                .clone()
                .author(bob)
                .kind(Kind(1))
                .kind(Kind(7))
                .limit(5),
            by_alice.clone().until(Timestamp(T0 + 5)).limit(3),
            Filter::new()
                .tag('t', "floors")
                .until(Timestamp(T0 + 2))
                .limit(30),
        ];
        let mut out = Vec::new();
        for f in &filters {
            let p = s.probe(f).await.unwrap();
            out.push((p.events.iter().map(Event::id).collect(), p.floor, p.gap));
        }
        out
    }
    let on_readers = probes(0).await;
    assert_eq!(probes(5).await, on_readers);
    assert_eq!(probes(40).await, on_readers);
    assert_eq!(probes(512).await, on_readers);
    assert_eq!(on_readers[0].0.len(), 10);
    assert_eq!(on_readers[0].1, Timestamp(0), "alice's floor serves");
}
