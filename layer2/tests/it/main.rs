//! layer2 against a real PostgreSQL (see `layer2::testsupport`): conformance, the
//! property test against `MemoryStore`, multi-writer races, concurrent migrations and
//! the change feed, cluster maintenance.

mod concurrency;
mod feed;
mod maintenance;

use std::sync::Arc;

use eventstore::conformance::Subject;
use layer2::testsupport::{TestDb, test_database};
use layer2::{PgConfig, PgStore};

pub async fn store_on(db: &TestDb) -> PgStore {
    PgStore::connect(PgConfig::new(db.url.clone()))
        .await
        .expect("connect to the test database")
}

pub async fn postgres() -> Subject {
    let db = test_database().await;
    let store = store_on(&db).await;
    Subject::new(Arc::new(store)).with_guard(db)
}

eventstore::conformance_tests!(crate::postgres);

#[test]
fn prop_agrees_with_memory_store() {
    eventstore::conformance::prop::check_against_oracle(
        postgres,
        eventstore::conformance::prop::Mode::Exact,
        32,
    );
}
