//! The byte budget: the file stays near it under churn, eviction follows DESIGN.md §3,
//! and the window watermark only rises when window events go.

use std::sync::Arc;

use eventstore::conformance::fixtures::T0;
use eventstore::{Event, EventBuilder, EventId, EventStore, Filter, Keys, Kind, Timestamp};
use layer1::{RedbConfig, RedbStore};

/// Events of realistic shape: content 50..2,000 bytes, 1..6 tags, several kinds.
fn realistic(n: usize, t0: u64) -> Vec<Event> {
    shaped(n, t0, true)
}

/// As `realistic`, optionally without addressable events (whose replacements would
/// look like evictions to a test watching what disappears).
fn shaped(n: usize, t0: u64, addressable: bool) -> Vec<Event> {
    let keys: Vec<Keys> = (0..20).map(Keys::from_seed).collect();
    (0..n)
        .map(|i| {
            let kinds = if addressable {
                [1u16, 1, 1, 7, 6, 30023, 4]
            } else {
                [1u16, 1, 1, 7, 6, 1, 4]
            };
            let kind = kinds[i % 7];
            let len = 50 + (i * 7919) % 1_950;
            let mut b =
                EventBuilder::new(Kind(kind), "x".repeat(len)).created_at(Timestamp(t0 + i as u64));
            for j in 0..(1 + i % 6) {
                b = b.tag(["p".to_owned(), format!("{:064x}", (i * 31 + j) % 500)]);
            }
            if kind == 30023 {
                b = b.tag(["d".to_owned(), format!("post-{}", i % 40)]);
            }
            b.sign_deterministic(&keys[i % keys.len()])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stays_near_budget_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 2 << 20;
    let mut config = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(budget);
    config.cache_bytes = 4 << 20;
    let store = Arc::new(RedbStore::open(config).unwrap());
    let events = realistic(24_000, T0);
    let written: usize = events.iter().map(Event::json_len).sum();
    assert!(written as u64 >= 10 * budget, "wrote only {written} bytes");
    // Concurrent savers, so the writer groups them.
    let mut tasks = Vec::new();
    for chunk in events.chunks(events.len() / 8) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for e in &chunk {
                store.save(e).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let file = store.file_size();
    assert!(
        file as f64 <= 1.3 * budget as f64,
        "file {file} bytes exceeds 1.3 x budget {budget}"
    );
    assert!(
        store
            .stats()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(store.bytes_used() <= budget);
    let report = store.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    // The newest events are held: eviction took the old end of the window.
    let newest = store.query(&[Filter::new().limit(10)]).await.unwrap();
    let want: Vec<_> = events.iter().rev().take(10).map(Event::id).collect();
    let got: Vec<_> = newest.iter().map(Event::id).collect();
    assert_eq!(got, want);
    // Everything at or above W is still there.
    let w = store.window();
    assert!(w > Timestamp(T0));
    let n_above = events.iter().filter(|e| e.created_at() >= w).count() as u64;
    let held = store.count(&[Filter::new().since(w)]).await.unwrap();
    // Addressable events replaced by newer ones are legitimately gone.
    let replaced = events
        .iter()
        .filter(|e| e.created_at() >= w && e.kind() == Kind(30023))
        .count() as u64;
    assert!(
        held + replaced >= n_above && held <= n_above,
        "held {held} of {n_above} above W"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_takes_cold_promoted_events_first_then_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(256 << 10);
    // A narrow band between the marks, so each round evicts only a few events.
    config.high_water = 0.9;
    config.low_water = 0.88;
    let store = RedbStore::open(config).unwrap();
    let w0 = Timestamp(T0 + 10_000);
    store.set_window(w0).await.unwrap();

    let promoted = shaped(20, T0, false);
    for e in &promoted {
        store.save(e).await.unwrap();
    }
    // Touch half of them: those are the warm ones.
    let (warm, cold) = promoted.split_at(10);
    for e in warm {
        let got = store.query(&[Filter::new().id(e.id())]).await.unwrap();
        assert_eq!(got.len(), 1);
    }

    let window = shaped(2_000, w0.0, false);
    let gone = |ids: &std::collections::HashSet<eventstore::EventId>, set: &[Event]| {
        set.iter().filter(|e| ids.contains(&e.id())).count()
    };
    let mut evicted = std::collections::HashSet::new();
    let mut rounds_seen = 0;
    for (i, e) in window.iter().enumerate() {
        store.save(e).await.unwrap();
        let runs = store
            .stats()
            .eviction_runs
            .load(std::sync::atomic::Ordering::Relaxed);
        if runs == rounds_seen {
            continue;
        }
        rounds_seen = runs;
        // One snapshot for all: eviction goes on in the background meanwhile.
        let all: Vec<&Event> = promoted.iter().chain(&window[..=i]).collect();
        let ids: Vec<_> = all.iter().map(|e| e.id()).collect();
        let held = store.contains(&ids).await.unwrap();
        for (e, held) in all.iter().zip(held) {
            if !held {
                evicted.insert(e.id());
            }
        }
        // After each round: a warm event goes only once every cold one has gone, and a
        // window event only once every promoted one has.
        if gone(&evicted, warm) > 0 {
            assert_eq!(
                gone(&evicted, cold),
                cold.len(),
                "a warm event went before a cold one"
            );
        }
        let window_gone = gone(&evicted, &window[..=i]);
        if window_gone > 0 {
            assert_eq!(
                gone(&evicted, &promoted),
                promoted.len(),
                "window before promoted"
            );
        } else {
            assert_eq!(
                store.window(),
                w0,
                "W moved while no window event was evicted"
            );
        }
        // W never passes an event that is still required to be held.
        let w = store.window();
        for held in &window[..=i] {
            if held.created_at() >= w {
                assert!(
                    !evicted.contains(&held.id()),
                    "event at/above W={w} was evicted"
                );
            }
        }
        if window_gone > 0 {
            break;
        }
    }
    assert!(gone(&evicted, &window) > 0, "the window shrank eventually");
    assert!(
        store.window() > w0,
        "W rose once window events were evicted"
    );
    let report = store.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// A 256 KiB store with `W` at T0 + 10,000: `first` window events saved, then five
/// promoted events (used more recently than those), then, with `touch`, the oldest
/// window event read (the warmest of all); then more window events until `W` passes the
/// 21st. Returns the store (and its directory) and the ids that must still be held: the
/// promoted events, and the read one.
async fn shrink_past_warmer_events(
    first: usize,
    touch: bool,
) -> (tempfile::TempDir, RedbStore, Vec<EventId>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(256 << 10);
    config.high_water = 0.9;
    config.low_water = 0.85;
    let store = RedbStore::open(config).unwrap();
    let w0 = Timestamp(T0 + 10_000);
    store.set_window(w0).await.unwrap();
    let window = shaped(3_000, w0.0, false);
    let (first, rest) = window.split_at(first);
    for e in first {
        store.save(e).await.unwrap();
    }
    let promoted = shaped(5, T0, false);
    for e in &promoted {
        store.save(e).await.unwrap();
    }
    let mut warm: Vec<_> = promoted.iter().map(|e| e.id()).collect();
    if touch {
        let got = store
            .query(&[Filter::new().id(first[0].id())])
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        warm.push(first[0].id());
    }
    for e in rest {
        store.save(e).await.unwrap();
        if store.window() > first[20].created_at() {
            break;
        }
    }
    assert!(
        store.window() > first[20].created_at(),
        "the window's cold end was evicted"
    );
    (dir, store, warm)
}

/// Regression: promoted events were evicted before any window event, so at a full
/// budget each promotion was undone by the next eviction round (the tester's cache mode
/// found it). A promotion used more recently than the window's old end must outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_promotion_outlives_the_cold_end_of_the_window() {
    let (_dir, store, warm) = shrink_past_warmer_events(150, false).await;
    let held = store.contains(&warm).await.unwrap();
    assert!(
        held.iter().all(|h| *h),
        "fresh promotions were evicted before colder window events: {held:?}"
    );
    assert!(store.check().await.unwrap().is_consistent());
}

/// Regression: the window shrank only while its *oldest* event was colder than every
/// promoted event, so one read of that event pinned the whole window and eviction took
/// promoted events however recently they were used (the feed bench's profile pages
/// missed L1 on two in five repeat visits so). Colder window events just past it go
/// first now, and the read event stays, as a promoted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_event_at_the_window_end_does_not_pin_the_window() {
    let (_dir, store, warm) = shrink_past_warmer_events(60, true).await;
    let held = store.contains(&warm).await.unwrap();
    assert!(
        held.iter().all(|h| *h),
        "warmer events were evicted before the colder window events behind the read one: {held:?}"
    );
    assert!(store.check().await.unwrap().is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_stays_put_while_only_promoted_events_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(256 << 10);
    let store = RedbStore::open(config).unwrap();
    let w0 = Timestamp(T0 + 1_000_000);
    store.set_window(w0).await.unwrap();
    // Only promoted events (all below W): eviction must not move W.
    for e in realistic(2_000, T0) {
        store.save(&e).await.unwrap();
    }
    assert!(
        store
            .stats()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(store.window(), w0);
}

/// A fresh bounded store sizes its file near the budget at once (redb would otherwise
/// settle at the last doubling under 1.3 x the budget: 68 MiB for 100 MiB), within the
/// bound, and only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_bounded_file_is_sized_near_its_budget_once() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 100 << 20;
    let path = dir.path().join("l1.redb");
    let store = RedbStore::open(RedbConfig::new(&path).max_bytes(budget)).unwrap();
    let file = store.file_size();
    assert!(
        file as f64 >= 1.0 * budget as f64 && file as f64 <= 1.3 * budget as f64,
        "file {file} for a budget of {budget}"
    );
    assert_eq!(store.bytes_used(), 0, "the room is free, not budget bytes");
    assert!(store.check().await.unwrap().is_consistent());
    store.close().await.unwrap();
    let again = RedbStore::open(RedbConfig::new(&path).max_bytes(budget)).unwrap();
    assert_eq!(again.file_size(), file, "sized once");
}

/// An eventual store (commits not synced) reuses no page its unsynced commits freed
/// until a synced one, so a fast writer used to double its file within a second; the
/// growth guard aborts a batch that would grow the file, syncs, and writes it again.
/// Written as fast as it takes them, a small L1 stays in its file bound, and the guard
/// is seen to act (without it this file reached 4 x its budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventual_store_under_a_fast_writer_keeps_its_file_bound() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 4 << 20;
    let config = RedbConfig::new(dir.path().join("l1.redb"))
        .max_bytes(budget)
        .durability(layer1::Durability::Eventual);
    let store = RedbStore::open(config).unwrap();
    let start_file = store.file_size();
    let events = realistic(16_000, T0);
    let written: usize = events.iter().map(Event::json_len).sum();
    assert!(written as u64 >= 3 * budget, "wrote only {written} bytes");
    for chunk in events.chunks(500) {
        store.save_many(chunk).await.unwrap();
    }
    let file = store.file_size();
    let stats = store.stats();
    let growth_syncs = stats
        .growth_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        file as f64 <= 1.3 * budget as f64,
        "file {file} bytes (at first {start_file}) exceeds 1.3 x budget {budget} \
         after {growth_syncs} growth syncs"
    );
    assert!(
        growth_syncs > 0,
        "the writer never hit the room limit: this test no longer exercises the guard"
    );
    assert!(stats.evictions.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let report = store.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    // The newest events survived and read back intact.
    let last = events.last().unwrap();
    let got = store.query(&[Filter::new().id(last.id())]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_json(), last.as_json());
}
