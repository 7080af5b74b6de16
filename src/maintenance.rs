//! Cluster maintenance (`[maintenance]`, `[[retention]]` in the configuration): the
//! retention rules, NIP-40 expiry and the pruning of the removal log.
//!
//! With PostgreSQL, one node of the cluster at a time runs it: every node offers a few
//! times per interval, and the one that takes the advisory lock and finds the last run
//! an interval old goes (`layer2::purge`). A node that dies mid-run releases the lock
//! with its connection; the next offer by any node takes over. The embedded store has
//! one node, which runs it every interval.
//!
//! Everything is removed in bounded steps ([`STEP`] events, then a short pause), so a
//! run never holds long locks nor starves the writes. Purges go through the tiered
//! store: this node's L1 forgets at once, other nodes' L1s follow L2's removal log
//! within a poll.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{EventStore, Filter, Kind, Purge, StoreError, Timestamp};
use serde::Serialize;

use crate::config::Retention;
use crate::metrics::Metrics;
use crate::node::{L2, Node};

/// Events removed per step.
pub const STEP: usize = 1_000;
/// Rows of the removal log pruned per step.
const PRUNE_STEP: usize = 10_000;
/// Authors trimmed per rule and run by `max_per_author` (the rest wait for the next).
const TRIM_AUTHORS: usize = 1_000;
/// Between steps: room for the writes.
const PAUSE: Duration = Duration::from_millis(5);

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Events purged by each retention rule (by its label).
    pub retention: BTreeMap<String, u64>,
    /// Expired events purged (NIP-40).
    pub expired: u64,
    /// Rows pruned from the removal log.
    pub log_pruned: u64,
    pub millis: u64,
}

impl Report {
    /// Events purged in all.
    pub fn purged(&self) -> u64 {
        self.retention.values().sum::<u64>() + self.expired
    }
}

/// Purges everything `what` names, step by step; `progress` hears the running total.
/// Returns how many events went.
pub async fn purge_all(
    store: &dyn EventStore,
    what: &Purge,
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        // Until a step finds nothing: one can come back short while more remain (rows
        // a concurrent replacement took first, or the gap between an embedded store's
        // snapshot and its removal).
        let n = store.purge(what, STEP).await?.len();
        total += n as u64;
        progress(total);
        if n == 0 {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs maintenance if it is this node's turn (always, with the embedded store): `None`
/// when another node has it or ran it less than an interval ago.
pub async fn run_if_due(node: &Node) -> Result<Option<Report>, StoreError> {
    let pg = match &node.l2 {
        L2::Postgres(pg) => Some(pg.as_ref()),
        L2::Embedded(_) => None,
    };
    let store = node.store();
    let retention = &node.config.retention;
    take_turn(store.as_ref(), pg, retention, retention.interval).await
}

/// Runs maintenance now, whenever the last run was (the `maintain` command): `None` only
/// while another node is running it. `store` is where purges go: the node's tiered
/// store, or PostgreSQL itself (the removal log then carries them to every L1).
pub async fn run_now(
    store: &dyn EventStore,
    pg: Option<&layer2::PgStore>,
    retention: &Retention,
) -> Result<Option<Report>, StoreError> {
    take_turn(store, pg, retention, Duration::ZERO).await
}

/// Takes the cluster's turn (PostgreSQL) when due after `every`, and runs.
async fn take_turn(
    store: &dyn EventStore,
    pg: Option<&layer2::PgStore>,
    retention: &Retention,
    every: Duration,
) -> Result<Option<Report>, StoreError> {
    let turn = match pg {
        Some(pg) => match pg.maintenance_turn(every).await? {
            Some(t) => Some(t),
            None => return Ok(None),
        },
        None => None,
    };
    let report = run(store, pg, retention).await;
    if let Some(t) = turn {
        // A failed run is due again at once: the next offer, by any node, retries it.
        t.finish(report.is_ok()).await;
    }
    report.map(Some)
}

/// One run, whoever's turn it is (the caller holds it).
async fn run(
    store: &dyn EventStore,
    pg: Option<&layer2::PgStore>,
    retention: &Retention,
) -> Result<Report, StoreError> {
    let started = Instant::now();
    let now = Timestamp::now();
    let mut report = Report::default();
    for rule in &retention.rules {
        let mut n = 0;
        if let Some(f) = rule.filter(now) {
            n += purge_all(store, &Purge::Matching(f), |_| {}).await?;
        }
        if let Some(keep) = rule.max_per_author {
            n += trim_authors(store, rule.kinds.as_ref(), keep).await?;
        }
        if n > 0 {
            tracing::info!(rule = %rule.label(), purged = n, "retention");
        }
        *report.retention.entry(rule.label()).or_default() += n;
    }
    report.expired = purge_all(store, &Purge::ExpiredBy(now), |_| {}).await?;
    if let Some(pg) = pg {
        loop {
            let n = pg.prune_removed(retention.log_horizon, PRUNE_STEP).await?;
            report.log_pruned += n;
            if n < PRUNE_STEP as u64 {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The rule `max_per_author`: every author over `keep` events of `kinds` (up to
/// [`TRIM_AUTHORS`] of them per run) keeps its newest `keep`. The cut is a time: what is
/// older than the second of the `keep`-th newest event goes, so events sharing that
/// second stay (a filter cannot split a second). Purged as any retention rule's
/// events, through the removal log every L1 follows.
async fn trim_authors(
    store: &dyn EventStore,
    kinds: Option<&std::collections::BTreeSet<Kind>>,
    keep: u64,
) -> Result<u64, StoreError> {
    let mut total = 0;
    let Ok(limit) = usize::try_from(keep) else {
        return Ok(0);
    };
    for author in store.authors_over(kinds, keep, TRIM_AUTHORS).await? {
        let of_author = Filter {
            authors: Some([author].into_iter().collect()),
            kinds: kinds.cloned(),
            ..Filter::default()
        };
        let newest = store
            .query(&[Filter {
                limit: Some(limit),
                ..of_author.clone()
            }])
            .await?;
        // Fewer served than counted (expired ones not yet purged): nothing to cut.
        if newest.len() < limit {
            continue;
        }
        let Some(cut) = newest.last().and_then(|e| e.created_at().0.checked_sub(1)) else {
            continue;
        };
        let older = Filter {
            until: Some(Timestamp(cut)),
            ..of_author
        };
        total += purge_all(store, &Purge::Matching(older), |_| {}).await?;
    }
    Ok(total)
}

/// How often a node offers to run maintenance: a quarter of the interval, between 1 s
/// and 5 min, so the cluster's runs stay close to one per interval.
fn offer_every(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The node's maintenance task, until the relay stops.
pub(crate) async fn task(state: std::sync::Weak<crate::relay::AppState>) {
    let (mut stop, interval) = match state.upgrade() {
        Some(s) => (s.stopping(), s.node.config.retention.interval),
        None => return,
    };
    let offer = offer_every(interval);
    // The embedded store runs on its own clock: an interval after start, then each
    // interval (a restart starts the count again).
    let mut last_embedded = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(offer) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(s) = state.upgrade() else { return };
        let (node, m): (Arc<Node>, Arc<Metrics>) = (s.node.clone(), s.metrics.clone());
        // Not held across the run: the node closes once the relay lets go of it.
        drop(s);
        let embedded = matches!(node.l2, L2::Embedded(_));
        if embedded && last_embedded.elapsed() < interval {
            continue;
        }
        // A stopping node abandons the run (each step is its own statement; the turn's
        // lock goes with its connection).
        let outcome = tokio::select! {
            r = run_if_due(&node) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        drop(node);
        match outcome {
            Ok(Some(r)) => {
                if embedded {
                    last_embedded = Instant::now();
                }
                m.maintenance_run(&r);
                tracing::info!(
                    purged = r.purged(),
                    expired = r.expired,
                    log_pruned = r.log_pruned,
                    ms = r.millis,
                    "maintenance run"
                );
            }
            Ok(None) => {}
            Err(e) => {
                m.maintenance_failed();
                tracing::warn!(error = %e, "maintenance run failed; the next offer retries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_come_a_few_times_per_interval() {
        assert_eq!(
            offer_every(Duration::from_secs(3_600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            offer_every(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(offer_every(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
