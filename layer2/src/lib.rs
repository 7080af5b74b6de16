//! `layer2`: the shared PostgreSQL event store with a change feed.
//! Not written yet: see the project's issue tracker.
