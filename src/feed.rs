//! What the poller needs from a shared L2: its change feed, by the database's clock.

use async_trait::async_trait;
use eventstore::{EventId, StoreError};
use layer2::{DbMicros, FeedPositions, Notifications, Page, PgStore};

/// A store other nodes write to, whose new events and tombstones can be followed.
#[async_trait]
pub trait ChangeFeed: Send + Sync + std::fmt::Debug {
    /// Where a reader may safely resume after reading now: the store's clock in
    /// microseconds, held back to the oldest write still open, so a commit however late
    /// is found by the next read from here (minus the look-back).
    async fn now(&self) -> Result<DbMicros, StoreError>;
    /// One page of changes after `from`, at most `limit` rows per log, leaving out the
    /// events `known` accepts (the reader has them already).
    async fn page(
        &self,
        from: FeedPositions,
        limit: usize,
        known: &(dyn for<'k> Fn(&'k EventId) -> bool + Sync),
    ) -> Result<Page, StoreError>;

    /// [`ChangeFeed::now`], and the store's clock when it was read (the horizon may be
    /// held back behind it). Defaults to `now` twice.
    async fn now_and_clock(&self) -> Result<(DbMicros, DbMicros), StoreError> {
        let n = self.now().await?;
        Ok((n, n))
    }

    /// Whether the store answers at all, on a connection that no other call waits for
    /// (the breaker's check while calls wait). Defaults to [`ChangeFeed::now`].
    async fn ping(&self) -> Result<(), StoreError> {
        self.now().await.map(drop)
    }

    /// The optional fast path: a wake-up after commits, and the ephemeral events other
    /// nodes relay. Polling stays the guarantee.
    fn notifications(&self) -> Option<Notifications> {
        None
    }

    /// Whether a reader may resume from `from`, its copy having been built from the
    /// feed since `warmed`: every row it needs is still there (none pruned by
    /// maintenance) and no wipe came after `warmed`. Defaults to true.
    async fn resumable(&self, from: DbMicros, warmed: DbMicros) -> Result<bool, StoreError> {
        let _ = (from, warmed);
        Ok(true)
    }
}

#[async_trait]
impl ChangeFeed for PgStore {
    async fn now(&self) -> Result<DbMicros, StoreError> {
        self.feed_horizon().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        PgStore::ping(self).await.map(drop)
    }

    async fn now_and_clock(&self) -> Result<(DbMicros, DbMicros), StoreError> {
        self.feed_horizon_and_clock().await
    }

    async fn page(
        &self,
        from: FeedPositions,
        limit: usize,
        known: &(dyn for<'k> Fn(&'k EventId) -> bool + Sync),
    ) -> Result<Page, StoreError> {
        self.changes_except(from, limit, known).await
    }

    fn notifications(&self) -> Option<Notifications> {
        Some(PgStore::notifications(self))
    }

    async fn resumable(&self, from: DbMicros, warmed: DbMicros) -> Result<bool, StoreError> {
        PgStore::resumable(self, from, warmed).await
    }
}
