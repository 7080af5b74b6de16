//! What the poller needs from a shared L2: its change feed, by the database's clock.

use async_trait::async_trait;
use eventstore::StoreError;
use layer2::{DbMicros, FeedPositions, Page, PgStore};

/// A store other nodes write to, whose new events and tombstones can be followed.
#[async_trait]
pub trait ChangeFeed: Send + Sync + std::fmt::Debug {
    /// The store's clock now, in microseconds.
    async fn now(&self) -> Result<DbMicros, StoreError>;
    /// One page of changes after `from`, at most `limit` rows per log.
    async fn page(&self, from: FeedPositions, limit: usize) -> Result<Page, StoreError>;
}

#[async_trait]
impl ChangeFeed for PgStore {
    async fn now(&self) -> Result<DbMicros, StoreError> {
        self.db_now().await
    }

    async fn page(&self, from: FeedPositions, limit: usize) -> Result<Page, StoreError> {
        PgStore::changes(self, from, limit).await
    }
}
