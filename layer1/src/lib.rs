//! `layer1`: the redb event store (bounded L1 cache, or unbounded embedded L2).
//! Not written yet: see the project's issue tracker.
