//! Store factories for the tests.

use std::sync::Arc;

use eventstore::conformance::Subject;
use layer1::{RedbConfig, RedbStore};

pub fn open(dir: &tempfile::TempDir, max: Option<u64>) -> RedbStore {
    let mut c = RedbConfig::new(dir.path().join("store.redb"));
    c.max_bytes = max;
    c.cache_bytes = 4 << 20;
    RedbStore::open(c).expect("open store")
}

pub async fn bounded(max: u64) -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, Some(max));
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
