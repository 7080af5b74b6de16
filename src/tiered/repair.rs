//! L1 repairs. An event L2 accepted but L1 failed to take leaves L1's window claiming
//! an event it lacks, so until every such event is in L1 the window is not trusted
//! (queries go to L2, whose answers are right), and a task retries them once a second.
//! This covers the single-node mode, which has no poller to bring the event back.
//!
//! The claim must not outlive the process either: while repairs are outstanding a
//! marker file lies beside L1, and a node starting with it raises `W` to now (the
//! window then claims nothing older; it fills again with new events). An event L1 keeps
//! refusing is given up the same way, by raising `W` past it; and past
//! [`MAX_PENDING`] the whole queue is.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use eventstore::{Event, EventStore, Timestamp};
use layer1::RedbStore;
use tokio::sync::watch;

use super::Tiered;

/// Events held for repair at most; past this the queue is given up (see above).
const MAX_PENDING: usize = 100_000;

/// Events waiting to be written into L1 again.
#[derive(Debug, Default)]
pub(super) struct Repairs {
    pending: Mutex<Vec<Event>>,
    count: AtomicUsize,
    /// More failed than the queue holds.
    overflow: AtomicBool,
}

/// The marker file beside L1's file.
fn marker(l1: &RedbStore) -> PathBuf {
    l1.config().path.with_extension("repair-needed")
}

fn set_marker(path: &Path, on: bool) {
    let r = if on {
        std::fs::write(
            path,
            b"L1 lacks events L2 accepted; W is raised at the next start\n",
        )
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot update the L1 repair marker");
    }
}

impl Repairs {
    pub fn push(&self, e: Event, l1: &RedbStore) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_empty() {
            set_marker(&marker(l1), true);
        }
        if p.len() >= MAX_PENDING {
            self.overflow.store(true, Ordering::SeqCst);
        } else {
            p.push(e);
        }
        self.count.store(p.len(), Ordering::SeqCst);
    }

    /// Whether L1 may be missing something L2 accepted.
    pub fn outstanding(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0 || self.overflow.load(Ordering::SeqCst)
    }

    fn take(&self) -> Vec<Event> {
        let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.clone()
    }

    /// Drops the first `n` (those just resolved), keeping any pushed meanwhile.
    fn done(&self, n: usize, l1: &RedbStore) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = n.min(p.len());
        p.drain(..n);
        self.count.store(p.len(), Ordering::SeqCst);
        if p.is_empty() && !self.overflow.load(Ordering::SeqCst) {
            set_marker(&marker(l1), false);
        }
    }
}

/// At start: a marker left by a node that stopped with repairs outstanding (or
/// crashed) means L1's window may claim events it lacks; raising `W` to now ends that.
pub(super) async fn recover(l1: &RedbStore) -> Result<(), eventstore::StoreError> {
    let path = marker(l1);
    if path.exists() {
        tracing::warn!("L1 missed events before the last stop; its window starts afresh");
        l1.set_window(Timestamp(Timestamp::now().0 + 1)).await?;
        set_marker(&path, false);
    }
    Ok(())
}

pub(super) async fn run(tiered: Weak<Tiered>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let Some(t) = tiered.upgrade() else { return };
        t.repair_abandoned();
        repair_once(&t).await;
    }
}

async fn repair_once(t: &Tiered) {
    let l1 = &t.l1;
    if t.repairs.overflow.load(Ordering::SeqCst) {
        // Too much to hold: give the whole queue up by moving the window past it.
        if l1
            .set_window(Timestamp(Timestamp::now().0 + 1))
            .await
            .is_ok()
        {
            let n = t.repairs.take().len();
            t.repairs.overflow.store(false, Ordering::SeqCst);
            t.repairs.done(n, l1);
            tracing::warn!("L1 repair queue overflowed; its window starts afresh");
        }
        return;
    }
    let batch = t.repairs.take();
    if batch.is_empty() {
        return;
    }
    if l1.save_many(&batch).await.is_ok() {
        t.repairs.done(batch.len(), l1);
        tracing::info!(events = batch.len(), "L1 repaired");
        return;
    }
    // One at a time, so one event L1 refuses does not hold back the rest; that one is
    // given up by moving the window past it, which keeps the window's claim true.
    let mut resolved = 0;
    for e in &batch {
        let ok = l1.save(e).await.is_ok()
            || l1
                .set_window(Timestamp(e.created_at().0.saturating_add(1)))
                .await
                .is_ok();
        if !ok {
            break;
        }
        resolved += 1;
    }
    t.repairs.done(resolved, l1);
    if resolved < batch.len() {
        tracing::warn!(
            waiting = batch.len() - resolved,
            "L1 repair failed; retrying"
        );
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
        t.repairs.push(e.clone(), &l1);
        assert!(!t.window_trusted(), "L1 lacks an event L2 has");
        let marker = dir.path().join("l1.repair-needed");
        assert!(
            marker.exists(),
            "the claim is withdrawn across restarts too"
        );
        for _ in 0..50 {
            if t.window_trusted() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(t.window_trusted(), "trusted again once repaired");
        assert_eq!(l1.contains(&[e.id()]).await.unwrap(), vec![true]);
        assert!(!marker.exists());
        t.shutdown();
    }

    /// A node that stopped with repairs outstanding raises W to now at its next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_marker_left_behind_raises_the_window_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = RedbStore::open(RedbConfig::new(dir.path().join("l1.redb")).max_bytes(4 << 20))
            .unwrap();
        assert_eq!(l1.window().0, 0);
        std::fs::write(dir.path().join("l1.repair-needed"), b"x").unwrap();
        super::recover(&l1).await.unwrap();
        assert!(l1.window().0 >= eventstore::Timestamp::now().0);
        assert!(!dir.path().join("l1.repair-needed").exists());
    }
}
