//! The conformance suite and the oracle property test against `MemoryStore` itself.

use std::sync::Arc;

use eventstore::MemoryStore;
use eventstore::conformance::Subject;
use eventstore::conformance::prop::{Mode, check_against_oracle};

async fn memory() -> Subject {
    Subject::new(Arc::new(MemoryStore::new()))
}

eventstore::conformance_tests!(memory);

#[test]
fn prop_memory_store_agrees_with_a_fresh_oracle() {
    check_against_oracle(memory, Mode::Exact, 64);
}

/// A store that gets the canonical order wrong, to show the harness can fail.
#[derive(Debug, Default)]
struct ReversedOrder(MemoryStore);

#[async_trait::async_trait]
impl eventstore::EventStore for ReversedOrder {
    async fn save(
        &self,
        e: &eventstore::Event,
    ) -> Result<eventstore::SaveOutcome, eventstore::StoreError> {
        self.0.save(e).await
    }
    async fn query(
        &self,
        f: &[eventstore::Filter],
    ) -> Result<Vec<eventstore::Event>, eventstore::StoreError> {
        let mut v = self.0.query(f).await?;
        v.reverse();
        Ok(v)
    }
    async fn count(&self, f: &[eventstore::Filter]) -> Result<u64, eventstore::StoreError> {
        self.0.count(f).await
    }
    async fn delete(&self, ids: &[eventstore::EventId]) -> Result<u64, eventstore::StoreError> {
        self.0.delete(ids).await
    }
    fn capabilities(&self) -> eventstore::Capabilities {
        self.0.capabilities()
    }
}

#[test]
fn prop_harness_catches_a_store_with_the_wrong_order() {
    let result = std::panic::catch_unwind(|| {
        check_against_oracle(
            || async { Subject::new(Arc::new(ReversedOrder::default())) },
            Mode::Subset,
            64,
        )
    });
    assert!(result.is_err(), "a reversed order must be caught");
}
