//! The circuit breaker in front of a shared L2 (DESIGN.md §5b). A call or poll that
//! finds L2 unreachable, or the LISTEN connection dropping, opens it; while it is open,
//! calls fail at once instead of each waiting for the pool's time-out (calls in flight
//! are abandoned), and a probe asks L2's clock every 250 ms (doubling to 1 s) until it
//! answers, which closes the breaker. A call that waits more than 1 s has the probe
//! check L2 at once, so a database that hangs (paused, or cut off by the network)
//! opens the breaker too, within about 3 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use eventstore::StoreError;
use tokio::sync::watch;

use crate::feed::ChangeFeed;

/// First probe delay after the breaker opens; doubled up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A call still waiting after this long has the probe check L2 at once: a database
/// that is paused, or cut off by the network, closes nothing and answers nothing, so
/// no error would ever open the breaker. A check that fails opens it, abandoning every
/// waiting call (a slow query that L2 is merely busy with is left alone: the check has
/// a connection of its own).
const SUSPECT_AFTER: Duration = Duration::from_secs(1);

/// Whether L2 is reachable, as the last calls found it.
#[derive(Debug)]
pub struct Breaker {
    /// `true` while open. A watch, so calls in flight can give up the moment it opens.
    open: watch::Sender<bool>,
    /// Times it opened.
    pub trips: AtomicU64,
    /// Times it closed again.
    pub recoveries: AtomicU64,
    /// Calls refused at once while it was open.
    pub refused: AtomicU64,
    /// Woken by a call that has waited [`SUSPECT_AFTER`]: the probe checks L2 now.
    suspect: tokio::sync::Notify,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            open: watch::channel(false).0,
            trips: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            suspect: tokio::sync::Notify::new(),
        }
    }
}

impl Breaker {
    /// True while L2 is considered unreachable.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Records a call's result: an `Unavailable` error opens the breaker. Only the
    /// probe closes it: a call that was in flight when L2 went away can still come back
    /// with an answer, and closing on it would send every call after it into a pool
    /// time-out (seen in `scripts/local-cluster` with `OUTAGE`).
    pub fn record<T>(&self, r: &Result<T, StoreError>) {
        if let Err(StoreError::Unavailable(e)) = r {
            self.trip(&e.to_string());
        }
    }

    /// Runs an L2 call unless the breaker is open; a call still waiting when it opens
    /// is abandoned (a write abandoned so may still commit: the outbox's replay then
    /// finds it a duplicate, which is harmless).
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut state = self.open.subscribe();
        if *state.borrow_and_update() {
            return Err(self.refusal());
        }
        let mut call = std::pin::pin!(call);
        let mut slow = std::pin::pin!(tokio::time::sleep(SUSPECT_AFTER));
        let mut suspected = false;
        let r = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = state.wait_for(|open| *open) => return Err(self.refusal()),
                _ = &mut slow, if !suspected => {
                    suspected = true;
                    self.suspect.notify_one();
                }
            }
        };
        self.record(&r);
        r
    }

    fn trip(&self, why: &str) {
        let opened = self
            .open
            .send_if_modified(|open| !std::mem::replace(open, true));
        if opened {
            self.trips.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = why, "L2 unreachable: circuit open, serving from L1");
        }
    }

    fn reset(&self) {
        let closed = self
            .open
            .send_if_modified(|open| std::mem::replace(open, false));
        if closed {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            tracing::info!("L2 reachable again: circuit closed");
        }
    }

    /// The error a call gets while the breaker is open, counted.
    fn refusal(&self) -> StoreError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable("L2 is unreachable (circuit open)".into())
    }
}

/// Opens the breaker when the LISTEN connection drops: a database that went away is
/// noticed at once, not after a pool time-out. The probe closes it again within
/// 250 ms if the database is in fact still there.
pub(super) async fn watch_listener(
    breaker: Weak<Breaker>,
    lost: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = lost.notified() => {}
            _ = stop.changed() => return,
        }
        match breaker.upgrade() {
            Some(b) => b.trip("the LISTEN connection dropped"),
            None => return,
        }
    }
}

/// Probes L2 while the breaker is open, until it answers; then waits for it to open
/// again. Ends when the node stops.
pub(super) async fn probe(
    breaker: Arc<Breaker>,
    feed: Arc<dyn ChangeFeed>,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = breaker.open.subscribe();
    loop {
        let suspected = tokio::select! {
            r = state.wait_for(|open| *open) => if r.is_err() { return } else { false },
            _ = breaker.suspect.notified() => true,
            _ = stop.changed() => return,
        };
        if suspected {
            // Closed, but a call has waited long: is L2 there at all? Asked on a
            // connection of its own, so a pool busy with slow calls does not look like
            // a database that is gone.
            if !breaker.is_open() {
                match tokio::time::timeout(PROBE_TIMEOUT, feed.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => breaker.record::<()>(&Err(e)),
                    Err(_) => breaker.trip("L2 answered no check while calls waited"),
                }
            }
            continue;
        }
        let mut delay = PROBE_FIRST;
        while breaker.is_open() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            match tokio::time::timeout(PROBE_TIMEOUT, feed.now()).await {
                Ok(Ok(_)) => breaker.reset(),
                Ok(Err(e)) => tracing::debug!(error = %e, "L2 probe failed"),
                Err(_) => tracing::debug!("L2 probe timed out"),
            }
            delay = (delay * 2).min(PROBE_MAX);
        }
    }
}
