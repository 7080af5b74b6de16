//! The layer2 relay node. The tiered backend, poller, relay server and CLI land here
//! (not yet written); for now this crate only re-exports the event model.

pub use eventstore;
