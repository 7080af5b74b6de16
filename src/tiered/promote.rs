//! The promoter: L2's answers on their way into L1.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use eventstore::{Event, EventId};
use layer1::RedbStore;
use tokio::sync::mpsc;

use super::recent::RecentIds;
use super::{Promotion, TieredStats};

/// Writes promotions into L1. Those queued together go to the writer at once, so it
/// can group them into one transaction; completions are signalled in queue order.
///
/// Versions L2 dropped since (`dropped`) are left out, and then the promotion lowers no
/// floor. The poller records a drop before
/// it asks L1 to forget the version, so a drop this check missed is either forgotten by
/// that later forget, or found recorded when the write is done and forgotten again here.
pub(super) async fn promoter(
    l1: Arc<RedbStore>,
    mut rx: mpsc::Receiver<Promotion>,
    stats: Arc<TieredStats>,
    dropped: Arc<RecentIds>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        let mut done = Vec::new();
        let mut written = Vec::new();
        let writes = batch.drain(..).filter_map(|mut p| {
            done.extend(p.done);
            let asked = p.events.len();
            p.events.retain(|e| !dropped.contains(&e.id()));
            if p.events.len() < asked {
                // A version left out may be back in L2 by now (a purged event sent
                // again): what the answer proved cannot be recorded without it.
                p.learn = None;
            }
            written.extend(p.events.iter().map(Event::id));
            (!p.events.is_empty() || p.learn.is_some()).then(|| l1.promote(p.events, p.learn))
        });
        let writes: Vec<_> = writes.collect();
        for r in futures_util::future::join_all(writes).await {
            match r {
                Ok(p) => {
                    stats.promotions.fetch_add(p.stored, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "promotion into L1 failed"),
            }
        }
        let late: Vec<EventId> = written
            .into_iter()
            .filter(|id| dropped.contains(id))
            .collect();
        if !late.is_empty() {
            if let Err(e) = l1.forget(&late).await {
                tracing::warn!(error = %e, "L1 could not drop versions L2 dropped");
            }
        }
        for d in done {
            let _ = d.send(());
        }
    }
}
