//! L1 repairs. An event L2 accepted but L1 failed to take leaves L1's window claiming
//! an event it lacks, so until every such event is in L1 the window is not trusted
//! (queries go to L2, whose answers are right), and a task retries them once a second.
//! This covers the single-node mode, which has no poller to bring the event back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use eventstore::Event;
use tokio::sync::watch;

use super::Tiered;

/// Events waiting to be written into L1 again.
#[derive(Debug, Default)]
pub(super) struct Repairs {
    pending: Mutex<Vec<Event>>,
    count: AtomicUsize,
}

impl Repairs {
    pub fn push(&self, e: Event) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.push(e);
        self.count.store(p.len(), Ordering::SeqCst);
    }

    /// Whether L1 is missing something L2 accepted.
    pub fn outstanding(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    fn take(&self) -> Vec<Event> {
        let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.clone()
    }

    /// Drops the first `n` (those just written), keeping any pushed meanwhile.
    fn done(&self, n: usize) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = n.min(p.len());
        p.drain(..n);
        self.count.store(p.len(), Ordering::SeqCst);
    }
}

pub(super) async fn run(tiered: Weak<Tiered>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let Some(t) = tiered.upgrade() else { return };
        let batch = t.repairs.take();
        if batch.is_empty() {
            continue;
        }
        match t.l1.save_many(&batch).await {
            Ok(_) => {
                t.repairs.done(batch.len());
                tracing::info!(events = batch.len(), "L1 repaired");
            }
            Err(e) => {
                tracing::warn!(error = %e, waiting = batch.len(), "L1 repair failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use eventstore::{EventBuilder, EventStore, Keys};
    use layer1::{RedbConfig, RedbStore};

    use crate::tiered::{Tiered, TieredConfig};

    /// An event L1 missed: the window is distrusted until the repair task has written
    /// it, then trusted again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missed_event_distrusts_the_window_until_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = Arc::new(
            RedbStore::open(RedbConfig::new(dir.path().join("l1.redb")).max_bytes(4 << 20))
                .unwrap(),
        );
        let l2 = Arc::new(RedbStore::open(RedbConfig::new(dir.path().join("l2.redb"))).unwrap());
        let t = Tiered::start(l1.clone(), l2.clone(), None, TieredConfig::default())
            .await
            .unwrap();
        assert!(t.window_trusted());
        // As if L1 had failed: the event is in L2 only, and queued for repair.
        let e = EventBuilder::text_note("missed by L1").sign(&Keys::from_seed(3));
        assert!(l2.save(&e).await.unwrap().is_new());
        t.repairs.push(e.clone());
        assert!(!t.window_trusted(), "L1 lacks an event L2 has");
        for _ in 0..50 {
            if t.window_trusted() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(t.window_trusted(), "trusted again once repaired");
        assert_eq!(l1.contains(&[e.id()]).await.unwrap(), vec![true]);
        t.shutdown();
    }
}
