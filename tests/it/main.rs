//! Node-level tests: the tiered backend over real stores (redb L1, PostgreSQL or
//! embedded redb L2), alone and as a cluster of nodes sharing one PostgreSQL; and the
//! relay end to end over WebSockets (`relay/`).

mod cluster;
mod deploy;
mod floors;
mod outage;
mod relay;
mod support;
mod window;

mod tiered_pg {
    eventstore::conformance_tests!(crate::support::tiered_pg_tiny);

    #[test]
    fn prop_matches_memory_store() {
        eventstore::conformance::prop::check_against_oracle(
            crate::support::tiered_pg_tiny,
            eventstore::conformance::prop::Mode::Exact,
            24,
        );
    }
}

mod tiered_embedded {
    eventstore::conformance_tests!(crate::support::tiered_embedded_tiny);

    #[test]
    fn prop_matches_memory_store() {
        eventstore::conformance::prop::check_against_oracle(
            crate::support::tiered_embedded_tiny,
            eventstore::conformance::prop::Mode::Exact,
            24,
        );
    }
}
