//! Building nodes for tests.

use std::sync::Arc;
use std::time::Duration;

use eventstore::conformance::Subject;
use layer1::{Durability, RedbConfig, RedbStore};
use layer2::testsupport::{TestDb, test_database};
use layer2::{PgConfig, PgStore};
use layer2_relay::{Tiered, TieredConfig};

/// An L1 budget so small that eviction runs all the time.
pub const TINY: u64 = 48 * 1024;

pub fn fast_config() -> TieredConfig {
    TieredConfig {
        poll_frequency: Duration::from_millis(40),
        poll_overlap: 4,
        warm_events: 1_000,
        // Small pages, so polls and catch-ups span many pages in every test.
        feed_page: 7,
        ..TieredConfig::default()
    }
}

pub fn l1_at(dir: &std::path::Path, budget: u64) -> Arc<RedbStore> {
    let mut c = RedbConfig::new(dir.join("l1.redb"))
        .max_bytes(budget)
        .durability(Durability::Eventual);
    c.cache_bytes = 4 << 20;
    Arc::new(RedbStore::open(c).expect("open L1"))
}

/// One node on the database at `url`.
pub async fn node(url: &str, dir: &std::path::Path, budget: u64) -> Arc<Tiered> {
    node_with(url, dir, budget, fast_config()).await
}

/// One node on the database at `url`, tuned by `config`.
pub async fn node_with(
    url: &str,
    dir: &std::path::Path,
    budget: u64,
    config: TieredConfig,
) -> Arc<Tiered> {
    let pg = Arc::new(
        PgStore::connect(PgConfig::new(url))
            .await
            .expect("connect L2"),
    );
    Tiered::start(l1_at(dir, budget), pg.clone(), Some(pg), config)
        .await
        .expect("start node")
}

/// Waits until the node's poller has run once, so its window is trusted.
pub async fn until_trusted(t: &Tiered) {
    for _ in 0..200 {
        if t.window_trusted() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("poller never succeeded");
}

struct Guards(
    #[allow(dead_code)] TestDb,
    #[allow(dead_code)] tempfile::TempDir,
);

pub async fn tiered_pg_tiny() -> Subject {
    let db = test_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let t = node(&db.url, dir.path(), TINY).await;
    until_trusted(&t).await;
    Subject::new(t).with_guard(Guards(db, dir))
}

pub async fn tiered_embedded_tiny() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let l2 =
        Arc::new(RedbStore::open(RedbConfig::new(dir.path().join("l2.redb"))).expect("open L2"));
    let t = Tiered::start(l1_at(dir.path(), TINY), l2, None, fast_config())
        .await
        .expect("start node");
    Subject::new(t).with_guard(dir)
}
