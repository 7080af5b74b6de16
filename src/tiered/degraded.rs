//! Serving through an L2 outage (DESIGN.md §5b).
//!
//! - Reads: L1 answers alone (window, floors, promoted events), counted as degraded;
//!   such answers can miss events L1 never held (below its window and floors, or
//!   evicted). `degraded_reads = "refuse"` restores the strict behaviour.
//! - Writes: a verified event L1 does not already hold is appended to the durable
//!   outbox, and `OK true` is only given once that commit is on disk; it is then saved
//!   into L1 (which applies what it knows: tombstones, newer versions) and broadcast
//!   here. The replayer hands the outbox to L2 in batches once L2 answers again; L2
//!   arbitrates as for any write, L1 follows its verdict, and an entry leaves the outbox
//!   only after L2 committed it. Other nodes learn of it through their pollers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use eventstore::{Event, EventStore, Filter, KindClass, SaveOutcome, StoreError};
use layer1::Outbox;
use tokio::sync::watch;

use super::Tiered;

/// Entries handed to L2 per replay round.
const REPLAY_BATCH: usize = 256;

impl Tiered {
    /// Whether reads may be answered by L1 alone while L2 is unreachable.
    fn serves_degraded(&self) -> bool {
        self.config.serve_degraded && self.feed.is_some()
    }

    /// Runs `f` against L2 behind the breaker (shared L2 only: an embedded L2 is local).
    pub(super) async fn l2_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.feed.is_none() {
            return call.await;
        }
        self.breaker.call(call).await
    }

    /// A read's answer when L2 could not be asked: L1's own, where the operator allows.
    pub(super) async fn or_degraded(
        &self,
        f: &Filter,
        r: Result<Vec<Event>, StoreError>,
    ) -> Result<Vec<Event>, StoreError> {
        match r {
            Err(StoreError::Unavailable(_)) if self.serves_degraded() => {
                self.stats.degraded_reads.fetch_add(1, Ordering::Relaxed);
                self.l1.query(std::slice::from_ref(f)).await
            }
            r => r,
        }
    }

    /// A count when L2 could not be asked: L1's, where the operator allows.
    pub(super) async fn count_degraded(
        &self,
        filters: &[Filter],
        r: Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        match r {
            Err(StoreError::Unavailable(_)) if self.serves_degraded() => {
                self.stats.degraded_reads.fetch_add(1, Ordering::Relaxed);
                // After what L2 accepted just before has landed (`unsettled.rs`), for
                // as long as an L1 write ever should take.
                self.unsettled
                    .wait_for(filters, super::unsettled::LANDING_WAIT)
                    .await;
                self.l1.count(filters).await
            }
            r => r,
        }
    }

    /// Accepts a write while L2 is unreachable (see the module doc). Without an outbox
    /// the caller's error stands.
    pub(super) async fn save_degraded(
        &self,
        e: &Event,
        l2_error: StoreError,
    ) -> Result<SaveOutcome, StoreError> {
        let Some(outbox) = self.config.outbox.as_ref() else {
            return Err(l2_error);
        };
        if e.kind().class() == KindClass::Ephemeral {
            // Never stored: this node's subscribers get it; other nodes cannot.
            self.broadcast(e);
            return Ok(SaveOutcome::Ephemeral);
        }
        if self.l1.contains(&[e.id()]).await?.first() == Some(&true) {
            return Ok(SaveOutcome::Duplicate);
        }
        // Durable first: acknowledged means on disk, whatever happens to L1 next.
        outbox.append(e).await?;
        self.stats.outbox_appended.fetch_add(1, Ordering::Relaxed);
        match self.l1.save(e).await {
            Ok(o @ (SaveOutcome::Stored | SaveOutcome::Replaced { .. })) => {
                self.note_dropped(&o);
                self.seen.insert(e.id());
                self.broadcast(e);
                Ok(o)
            }
            // L1 knows better (a tombstone, a newer version): L2 will say the same when
            // the entry is replayed, and refuse it.
            Ok(o) => Ok(o),
            Err(err) => {
                // Safe in the outbox: L2 gets it on replay, and L1 through the poller.
                self.stats.l1_write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %e.id(), error = %err, "L1 write failed for an outbox event");
                Ok(SaveOutcome::Stored)
            }
        }
    }
}

/// Hands the outbox to L2 whenever it holds events and L2 answers.
pub(super) async fn replay(
    tiered: Weak<Tiered>,
    outbox: Arc<Outbox>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
        let Some(t) = tiered.upgrade() else { return };
        if outbox.is_empty() || t.breaker.is_open() {
            continue;
        }
        if let Err(e) = replay_once(&t, &outbox).await {
            tracing::warn!(error = %e, waiting = outbox.len(), "outbox replay paused");
        }
    }
}

async fn replay_once(t: &Tiered, outbox: &Outbox) -> Result<(), StoreError> {
    let batch = outbox.peek(REPLAY_BATCH).await?;
    // Handed to L2 all at once, so its writers group them into few transactions (one
    // at a time, each waited for a commit of its own behind the live writes). L2
    // arbitrates by created_at and id, not by arrival, so the order they commit in does
    // not change the outcome; entries leave the outbox in order, up to the first that
    // failed (those after it are sent again, and found duplicates).
    let saves = batch.iter().map(|(_, e)| t.l2_call(t.l2.save(e)));
    let results = futures_util::future::join_all(saves).await;
    let mut through = None;
    let mut result = Ok(());
    for ((seq, e), r) in batch.iter().zip(results) {
        match r {
            Ok(o) => {
                reconcile(t, e, &o).await;
                t.stats.outbox_replayed.fetch_add(1, Ordering::Relaxed);
                through = Some(*seq);
            }
            // A failure stops the round here, to be retried.
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    if let Some(seq) = through {
        outbox.remove_through(seq).await?;
        if outbox.is_empty() {
            tracing::info!("outbox drained into L2");
        }
    }
    result
}

/// L1 follows L2's verdict on a replayed event.
async fn reconcile(t: &Tiered, e: &Event, o: &SaveOutcome) {
    match o {
        SaveOutcome::Rejected(reason) => {
            // L2 holds a newer version or a tombstone: ours leaves L1 (the poller
            // brings what L2 keeps).
            t.stats.outbox_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(id = %e.id(), ?reason, "L2 refused an outbox event; L1 follows");
            t.dropped.insert(e.id());
            if let Err(err) = t.l1.forget(&[e.id()]).await {
                tracing::warn!(id = %e.id(), error = %err, "L1 could not drop a refused event");
            }
        }
        _ => t.note_dropped(o),
    }
}
