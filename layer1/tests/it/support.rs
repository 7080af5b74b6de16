//! Store factories for the tests.

use std::sync::Arc;

use eventstore::conformance::Subject;
use layer1::{RedbConfig, RedbStore};

pub fn open(dir: &tempfile::TempDir, max: Option<u64>) -> RedbStore {
    RedbStore::open(config(dir, max)).expect("open store")
}

fn config(dir: &tempfile::TempDir, max: Option<u64>) -> RedbConfig {
    let mut c = RedbConfig::new(dir.path().join("store.redb"));
    c.max_bytes = max;
    c.cache_bytes = 4 << 20;
    c
}

/// A bounded store whose reads all run on the reader threads (none inline), so the
/// conformance suite covers both places a read may run, with a tiny decoded-event cache.
pub async fn bounded(max: u64) -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(&dir, Some(max));
    c.inline_read_steps = 0;
    // A decoded-event cache of a few events, evicting all the time.
    c.event_cache_bytes = 64 << 10;
    let store = RedbStore::open(c).expect("open store");
    Subject::new(Arc::new(store)).with_guard(dir)
}

/// An unbounded store with so few inline steps that most reads run out of them part
/// way and run again on a reader thread: the abandoned attempt must leave no trace.
/// It keeps no decoded events, so every read decodes its records.
pub async fn few_inline_steps() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(&dir, None);
    c.inline_read_steps = 7;
    // No decoded-event cache: every record is read and decoded.
    c.event_cache_bytes = 0;
    let store = RedbStore::open(c).expect("open store");
    Subject::new(Arc::new(store)).with_guard(dir)
}

pub async fn unbounded() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, None);
    Subject::new(Arc::new(store)).with_guard(dir)
}

/// A budget small for a real cache, yet large enough for every conformance case's data
/// (the biggest, 1,500 tags, costs about 250 KB).
pub async fn small_budget() -> Subject {
    bounded(1 << 20).await
}
