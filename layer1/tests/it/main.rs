//! layer1 integration tests: conformance (unbounded, with a small budget, and with
//! reads that run out of inline steps), the property test against `MemoryStore`, the
//! budget, eviction order and crash safety.

mod budget;
mod crash;
mod floors;
mod hot;
mod records;
mod reindex;
mod support;
mod tombstone;

mod unbounded {
    use crate::support::unbounded;
    eventstore::conformance_tests!(unbounded);

    #[test]
    fn prop_agrees_with_memory_store() {
        eventstore::conformance::prop::check_against_oracle(
            unbounded,
            eventstore::conformance::prop::Mode::Exact,
            48,
        );
    }
}

mod bounded {
    use crate::support::small_budget;
    eventstore::conformance_tests!(small_budget);

    #[test]
    fn prop_is_an_ordered_subset_of_memory_store() {
        eventstore::conformance::prop::check_against_oracle(
            || crate::support::bounded(8 * 1024),
            eventstore::conformance::prop::Mode::Subset,
            48,
        );
    }
}

mod few_inline_steps {
    use crate::support::few_inline_steps;
    eventstore::conformance_tests!(few_inline_steps);

    #[test]
    fn prop_agrees_with_memory_store() {
        eventstore::conformance::prop::check_against_oracle(
            few_inline_steps,
            eventstore::conformance::prop::Mode::Exact,
            48,
        );
    }
}
