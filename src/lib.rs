//! The layer2 relay node: a tiered event store (L1 redb cache in front of a shared L2)
//! kept in step across nodes by a poller. The relay server and CLI build on this.
//!
//! # Layout
//! - [`tiered`]: [`Tiered`], the backend that routes saves and queries between L1 and
//!   L2, warms L1, promotes L2 results and runs the poller.
//! - [`feed`]: the [`ChangeFeed`] a shared L2 offers the poller.

pub mod feed;
pub mod tiered;

pub use eventstore;
pub use feed::ChangeFeed;
pub use tiered::{Tiered, TieredConfig, TieredStats};
