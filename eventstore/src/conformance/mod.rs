//! The conformance suite: the same tests for every [`EventStore`].
//!
//! A store's test file invokes [`conformance_tests!`](crate::conformance_tests) with an
//! async factory; each case becomes a `#[test]` named `conformance::<case>`:
//!
//! ```text
//! eventstore::conformance_tests!(|| async { Subject::new(Arc::new(MemoryStore::new())) });
//! ```
//!
//! `prop` holds the property-test harness: random event streams and filters, answers
//! compared with [`MemoryStore`](crate::MemoryStore)'s.

pub mod cases;
pub mod fixtures;
pub mod prop;
pub mod workload;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use crate::store::EventStore;

/// A store under test, plus whatever must live as long as it (a temp dir, a database).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// Dropped after the store.
    guard: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("store", &self.store)
            .finish()
    }
}

impl Subject {
    /// A store that needs nothing kept alive beside it.
    pub fn new(store: Arc<dyn EventStore>) -> Subject {
        Subject { store, guard: None }
    }

    /// Keeps `guard` alive as long as the subject.
    pub fn with_guard(mut self, guard: impl Any + Send) -> Subject {
        self.guard = Some(Box::new(guard));
        self
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        // Drop order matters: the store before what it lives in.
        let _ = self.guard.take();
    }
}

/// A runtime for one test: multi-threaded, so stores with background tasks work.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a tokio runtime for the test: {e}"),
    }
}

/// Runs one case against a fresh subject from `factory`.
pub fn run_case<F, Fut, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Subject>,
    C: FnOnce(Arc<dyn EventStore>) -> CFut,
    CFut: Future<Output = ()>,
{
    let rt = runtime();
    rt.block_on(async move {
        let subject = factory().await;
        case(subject.store.clone()).await;
        drop(subject);
    });
}

/// Generates one `#[test]` per conformance case in a module named `conformance`.
/// The argument is an expression of type `impl Fn() -> impl Future<Output = Subject>`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::for_each_conformance_case!($crate::__conformance_test, $factory);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($name:ident, $factory:expr) => {
        #[test]
        fn $name() {
            $crate::conformance::run_case($factory, $crate::conformance::cases::$name);
        }
    };
}
