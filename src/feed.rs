//! What the poller needs from a shared L2: its change feed, by the database's clock.

use std::time::Duration;

use async_trait::async_trait;
use eventstore::StoreError;
use layer2::{Changes, DbMicros, PgStore};

/// A store other nodes write to, whose new events and tombstones can be followed.
#[async_trait]
pub trait ChangeFeed: Send + Sync + std::fmt::Debug {
    /// The store's clock now, in microseconds.
    async fn now(&self) -> Result<DbMicros, StoreError>;
    /// Everything inserted from `cursor - lookback` on.
    async fn changes(
        &self,
        cursor: DbMicros,
        lookback: Duration,
        page: usize,
    ) -> Result<Changes, StoreError>;
}

#[async_trait]
impl ChangeFeed for PgStore {
    async fn now(&self) -> Result<DbMicros, StoreError> {
        self.db_now().await
    }

    async fn changes(
        &self,
        cursor: DbMicros,
        lookback: Duration,
        page: usize,
    ) -> Result<Changes, StoreError> {
        PgStore::changes(self, cursor, lookback, page).await
    }
}
