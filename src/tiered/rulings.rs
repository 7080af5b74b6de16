//! The operator's rulings through the tiered store: L2 keeps and enforces them (it is
//! the authority every node shares); L1 only follows what a ban removed.

use eventstore::{Change, EventStore, Ruled, Rulings, StoreError};

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
        if !ruled.removed.is_empty() {
            // Recorded first, so a promotion still queued leaves them out (`promote.rs`).
            for id in &ruled.removed {
                self.dropped.insert(*id, ());
            }
            if let Err(e) = self.l1.forget(&ruled.removed).await {
                self.stats
                    .l1_write_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "L1 could not drop what a ban removed from L2");
            }
        }
        Ok(ruled)
    }
}
