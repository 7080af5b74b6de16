//! The layer2 relay node: a tiered event store (L1 redb cache in front of a shared L2)
//! kept in step across nodes by a poller, served as a nostr relay.
//!
//! # Layout
//! - [`tiered`]: [`Tiered`], the backend that routes saves and queries between L1 and
//!   L2 (completeness floors), warms L1, promotes L2 results, runs the poller, and
//!   serves through an L2 outage (circuit breaker, L1-only reads, outbox replay).
//! - [`feed`]: the [`ChangeFeed`] a shared L2 offers the poller.
//! - [`config`]: the typed configuration (file, environment, flags).
//! - [`maintenance`]: retention rules, NIP-40 expiry and log pruning, one node of the
//!   cluster at a time.
//! - [`node`]: a node's stores built from its configuration, and its health.
//! - [`relay`]: the WebSocket/HTTP server (NIP-01, 09, 11, 13, 40, 42, 45, 70, 86, 98).
//! - [`metrics`]: counters and their Prometheus rendering; [`latency`]: histograms; [`process`]: the standard
//!   process metrics (CPU, memory, file descriptors) from `/proc`.
//! - [`cli`]: the `import`, `export`, `stats` and ruling (`ban`, `allow`, ...) commands.

pub mod cli;
pub mod config;
pub mod feed;
pub mod latency;
pub mod maintenance;
pub mod metrics;
pub mod node;
pub mod process;
pub mod relay;
pub mod tiered;

pub use config::Config;
pub use eventstore;
pub use feed::ChangeFeed;
pub use node::Node;
pub use tiered::{Tiered, TieredConfig, TieredStats};
