//! The operator's rulings and purges through the tiered store: L2 keeps and enforces
//! them (it is the authority every node shares); L1 only follows what they removed.

use eventstore::{Change, EventId, EventStore, Purge, Ruled, Rulings, StoreError};

use super::Tiered;

impl Tiered {
    /// L2's rulings, unless still at `version`.
    pub(super) async fn rulings_from_l2(
        &self,
        version: u64,
    ) -> Result<Option<Rulings>, StoreError> {
        if self.single {
            return self.l1.rulings_since(version).await;
        }
        self.l2_call(self.l2.rulings_since(version)).await
    }

    /// Records `change` in L2; what a ban removed there leaves this node's L1 at once.
    /// Other nodes' L1s follow L2's `removed` log through their pollers (PostgreSQL);
    /// an embedded L2 has no other node.
    pub(super) async fn rule_in_l2(&self, change: &Change) -> Result<Ruled, StoreError> {
        if self.single {
            return self.l1.rule(change).await;
        }
        let ruled = self.l2_call(self.l2.rule(change)).await?;
        self.forget_removed(&ruled.removed).await;
        Ok(ruled)
    }

    /// One step of a purge in L2; what it removed leaves this node's L1 at once (other
    /// nodes' L1s follow L2's `removed` log).
    pub(super) async fn purge_in_l2(
        &self,
        what: &Purge,
        max: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        let ids = if self.single {
            self.l1.purge(what, max).await?
        } else {
            let ids = self.l2_call(self.l2.purge(what, max)).await?;
            self.forget_removed(&ids).await;
            ids
        };
        Ok(ids)
    }

    /// Drops from L1 what L2 removed without a tombstone. A failure is counted and left
    /// to the poller, which reads the same removals from the log.
    async fn forget_removed(&self, ids: &[EventId]) {
        if ids.is_empty() {
            return;
        }
        // Recorded first, so a promotion still queued leaves them out (`promote.rs`).
        for id in ids {
            self.dropped.insert(*id);
            // Sent again later, it must not be skipped by the poller as known.
            self.seen.remove(id);
        }
        if let Err(e) = self.l1.forget(ids).await {
            self.stats
                .l1_write_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "L1 could not drop what L2 removed");
        }
    }
}
