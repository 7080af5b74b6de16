//! The poller (DESIGN.md §5): every `poll_frequency`, read L2's change feed from the
//! cursor minus the look-back, skip what this node has seen (and its own events still
//! landing in L1), save the rest into L1, apply tombstones, broadcast, and persist the
//! cursor in L1 (once the events landing at that moment have landed).
//!
//! Between full look-backs (one per look-back span), a poll resumes where the last one
//! stopped instead: after the last row it read in each log, or at the horizon `H` that
//! poll started from, whichever is earlier. That is enough: `H` is the database clock
//! held back to the oldest write transaction still open, so a row the last poll could
//! not see yet belongs to a transaction open then (its `inserted_at` is at or after that
//! transaction's start, so at or after `H`) or to one that began later (after `H` too).
//! The full look-back stays as the safety net it always was (a database clock stepped
//! back, a transaction held open past the feed's hold-back, a writer the horizon cannot
//! see), once per span rather than on every poll: with commit notifications waking up
//! to twenty polls a second, each re-reading a whole second of rows, the overlap cost
//! twenty times the feed itself. A full poll reads from the horizon of the previous
//! full poll minus the look-back (about two spans), so a row that commits up to a
//! look-back late is still found, as when every poll looked back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use eventstore::SaveOutcome;
use layer2::FeedPositions;
use tokio::sync::watch;

use super::Tiered;
use crate::feed::ChangeFeed;

pub(super) async fn run(
    tiered: Weak<Tiered>,
    feed: Arc<dyn ChangeFeed>,
    mut cursor: i64,
    mut stop: watch::Receiver<bool>,
) {
    let hint = feed.notifications().map(|n| n.changed);
    let mut backoff = Duration::ZERO;
    let mut last_poll = tokio::time::Instant::now();
    // Events the last poll read: a busy feed is read once a period (see `notified_gap`).
    let mut last_read = 0u64;
    // The cursor is persisted at most once a second: each write is a durable L1 commit,
    // and polls woken by commit notifications can come twenty times a second. An older
    // persisted cursor only means re-reading a little more after a restart.
    let mut persisted: Option<tokio::time::Instant> = None;
    // Where the next poll may resume; when the last full look-back was, and the horizon
    // it started at.
    let mut resume: Option<FeedPositions> = None;
    let mut full_at: Option<tokio::time::Instant> = None;
    let mut full_from = cursor;
    // When the feed was last asked whether it still covers this node's cursor.
    let mut checked: Option<tokio::time::Instant> = None;
    loop {
        let (frequency, lookback, page) = match tiered.upgrade() {
            Some(t) => (
                t.config.poll_frequency,
                t.config.lookback(),
                t.config.feed_page,
            ),
            None => return,
        };
        let wait = frequency + backoff;
        // A commit notification (LISTEN/NOTIFY) polls early, but not sooner than
        // `notified_gap` after the last poll. While polls fail, only the back-off timer
        // counts.
        let woken = async {
            match (&hint, backoff.is_zero()) {
                (Some(n), true) => n.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = woken => {
                tokio::time::sleep_until(last_poll + notified_gap(frequency, last_read)).await;
            }
            _ = stop.changed() => return,
        }
        last_poll = tokio::time::Instant::now();
        let Some(t) = tiered.upgrade() else { return };
        if t.breaker.is_open() {
            // L2 is unreachable: the breaker's probe finds out when it is back, and the
            // first poll after that comes within one period, not after a back-off.
            backoff = Duration::ZERO;
            continue;
        }
        t.stats.poll_runs.fetch_add(1, Ordering::Relaxed);
        let persist = persisted.is_none_or(|p| p.elapsed() >= Duration::from_secs(1));
        let full = full_at.is_none_or(|at| at.elapsed() >= lookback);
        let from = match resume {
            Some(r) if !full => r,
            _ => FeedPositions::start(full_from.min(cursor), lookback),
        };
        // Behind the breaker: a poll that hangs on an unresponsive L2 is abandoned when
        // the breaker opens (and makes it check).
        let check = checked.is_none_or(|c| c.elapsed() >= COVER_CHECK);
        if check {
            checked = Some(tokio::time::Instant::now());
        }
        let started = std::time::Instant::now();
        let read_before = t.stats.poll_read.load(Ordering::Relaxed);
        let polled = t
            .breaker
            .call(poll_once(&t, feed.as_ref(), from, page, persist, check))
            .await;
        t.stats.latency.poll.observe(crate::latency::since(started));
        last_read = t
            .stats
            .poll_read
            .load(Ordering::Relaxed)
            .saturating_sub(read_before);
        match polled {
            Ok(Polled::Uncovered) => {
                // Nothing L1 holds can be trusted: queries go to L2 until L1 is warm
                // again and a poll has succeeded.
                t.last_poll_ok.store(0, Ordering::Relaxed);
                match t.breaker.call(super::warm::rewarm(&t)).await {
                    Ok(c) => {
                        cursor = c;
                        full_from = c;
                        resume = None;
                        full_at = None;
                        persisted = Some(tokio::time::Instant::now());
                    }
                    Err(e) => {
                        t.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                        checked = None;
                        backoff = (backoff * 2).max(frequency).min(Duration::from_secs(5));
                        tracing::warn!(error = %e, "re-warming L1 failed; retrying");
                    }
                }
            }
            Ok(Polled::Read(next, reached)) => {
                // Tried, at least: one whose landing events took too long is tried
                // again a second on, not on every poll.
                if persist {
                    persisted = Some(tokio::time::Instant::now());
                }
                if full {
                    full_at = Some(last_poll);
                    full_from = next;
                }
                let lag = (next - cursor).max(0) as u64 / 1_000;
                t.stats.poll_lag_ms.store(lag, Ordering::Relaxed);
                cursor = next;
                resume = Some(resume_point(reached, next));
                backoff = Duration::ZERO;
                let ms = t.started.elapsed().as_millis() as u64;
                t.last_poll_ok.store(ms.max(1), Ordering::Relaxed);
            }
            Err(e) => {
                // The next poll looks back in full.
                resume = None;
                t.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                // Doubling from one period, capped at 5 s (or the period, when longer).
                let cap = Duration::from_secs(5).max(frequency);
                backoff = (backoff * 2).max(frequency).min(cap);
                tracing::warn!(error = %e, retry_in = ?(frequency + backoff), "poll failed");
            }
        }
    }
}

/// A poll that read at least this many events found the feed busy.
const BUSY_POLL: u64 = 100;

/// The gap a busy feed's polls keep, when the period is longer.
const BUSY_GAP: Duration = Duration::from_millis(250);

/// How long after a poll a commit notification may start the next one.
///
/// A quiet feed is polled as soon as a fifth of a period has passed, so an event
/// written on another node reaches this node's subscribers within tens of
/// milliseconds. A busy one (the last poll read [`BUSY_POLL`] events or more) waits a
/// whole period, or [`BUSY_GAP`] when the period is longer (an operator who set a long
/// period so that an idle node polls less should not get slower delivery under load
/// than the default gives), but never less than a quiet one. L1 then takes what
/// arrived meanwhile in one write transaction, not five, and a large batch costs L1's
/// copy-on-write B-trees far less per event than small ones: a node following one at
/// 3,300 to 3,900 events/s spent 50 to 55 µs of CPU per event polled every 250 ms, 69
/// to 71 µs every 50 ms (README, "A busy feed, polled once a period").
///
/// The two thresholds differ, so the pace does not flap: with the default 250 ms a
/// feed turns busy at 2,000 events/s (100 in a fifth of the period) and quiet again
/// below 400.
fn notified_gap(frequency: Duration, last_read: u64) -> Duration {
    let quiet = frequency / 5;
    if last_read >= BUSY_POLL {
        frequency.min(BUSY_GAP).max(quiet)
    } else {
        quiet
    }
}

/// Where a poll that started at horizon `h` and read every log up to `reached` lets
/// the next one resume (see the module notes).
fn resume_point(reached: FeedPositions, h: i64) -> FeedPositions {
    let hold = (h, -1);
    FeedPositions {
        events: reached.events.min(hold),
        deleted: reached.deleted.min(hold),
        removed: reached.removed.min(hold),
    }
}

/// How often a poll asks the feed whether it still covers this node's position (a
/// wipe of the cluster's data, or pruning past a node that fell far behind).
const COVER_CHECK: Duration = Duration::from_secs(10);

/// What one poll did.
enum Polled {
    /// Read up to the horizon it started at (the next cursor), reaching these positions.
    Read(i64, FeedPositions),
    /// The feed no longer covers this node's position: L1 must start afresh.
    Uncovered,
}

/// One poll from `from`; with `check` (and whenever it starts more than a minute
/// behind) it first asks the feed whether it still covers `from`.
async fn poll_once(
    t: &Tiered,
    feed: &dyn ChangeFeed,
    mut from: FeedPositions,
    page: usize,
    persist: bool,
    check: bool,
) -> Result<Polled, eventstore::StoreError> {
    // The next cursor is the horizon before reading: whatever commits after this read
    // began has its rows at or after it.
    let (next, db_clock) = feed.now_and_clock().await?;
    let behind = next.saturating_sub(from.events.0) > 60_000_000;
    if (check || behind)
        && !feed
            .resumable(from.events.0, t.warmed_at.load(Ordering::Relaxed))
            .await?
    {
        return Ok(Polled::Uncovered);
    }
    // The database clock, carried forward by this node's: delivery lag is then
    // measured on one clock, whatever the skew between the machines.
    let clock = (db_clock, std::time::Instant::now());
    // One bounded page at a time: a node catching up after an outage, or behind a
    // busy cluster, holds at most two. Skipped: what L1 holds already, and this node's
    // own events still landing (`Tiered::land` writes them into L1 and delivers them;
    // reading them again here would write them twice).
    let known = |id: &eventstore::EventId| t.seen.contains(id) || t.unsettled.landing(id);
    let mut p = feed.page(from, page, &known).await?;
    loop {
        let read_events = p.next.events != from.events;
        from = p.next;
        if p.complete {
            apply(t, p.changes, clock).await?;
            break;
        }
        // A poll behind a busy cluster can run for seconds, page after page: the lag
        // gauge follows it (the age of the last event row read) instead of showing the
        // last poll's until this one ends.
        if read_events {
            let now_us = clock.0 + clock.1.elapsed().as_micros() as i64;
            let behind = (now_us - from.events.0).max(0) as u64 / 1_000;
            t.stats.poll_lag_ms.store(behind, Ordering::Relaxed);
        }
        // The next page is read while this one goes into L1: the reads wait on
        // PostgreSQL, the writes on L1's writer. Not past removals, though: applying
        // them takes ids out of `seen`, and an event sent again after its removal must
        // not be skipped as seen by a read that ran before that (`apply`).
        if !p.changes.removed.is_empty() {
            apply(t, p.changes, clock).await?;
            p = feed.page(from, page, &known).await?;
            continue;
        }
        let (applied, next) =
            tokio::join!(apply(t, p.changes, clock), feed.page(from, page, &known));
        applied?;
        p = next?;
    }
    // Persist only after L1 has everything up to here: a crash re-reads, never skips.
    // The events left to their landing (this poll's or an earlier one's) are among
    // those still landing now: once these have landed, L1 holds them (or they failed,
    // and `repair.rs` has them and its marker). Should that take long, the cursor
    // waits for a later poll (a second on). A landing given up before L1's write was
    // tried goes to the repairs here, before any cursor passes it.
    let persist = persist && t.unsettled.settle(super::unsettled::SETTLE_WAIT).await;
    t.repair_abandoned();
    if persist {
        let warmed = t.warmed_at.load(Ordering::Relaxed);
        t.l1.set_cursor(super::warm::encode_cursor(next, warmed))
            .await?;
    }
    Ok(Polled::Read(next, from))
}

async fn apply(
    t: &Tiered,
    changes: layer2::Changes,
    clock: (i64, std::time::Instant),
) -> Result<(), eventstore::StoreError> {
    let mut at = changes.events_at.iter().copied();
    let (fresh, fresh_at): (Vec<_>, Vec<_>) = changes
        .events
        .into_iter()
        .map(|e| (e, at.next().unwrap_or(clock.0)))
        .filter(|(e, _)| !t.seen.contains(&e.id()))
        .unzip();
    if !fresh.is_empty() {
        t.stats
            .poll_read
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        let outcomes = t.l1.save_many(&fresh).await?;
        let now_us = clock.0 + clock.1.elapsed().as_micros() as i64;
        for ((e, o), inserted) in fresh.into_iter().zip(outcomes).zip(fresh_at) {
            let id = e.id();
            t.seen.insert(id);
            t.missing.invalidate(&id);
            // Back in L2 after a removal (a purged or banned event sent again).
            t.dropped.remove(&id);
            // L1 refusing it means L1 already holds something newer (or a tombstone):
            // this event is not news.
            if matches!(o, SaveOutcome::Rejected(_)) {
                continue;
            }
            if t.broadcast_owned(e) {
                t.stats.poll_broadcast.fetch_add(1, Ordering::Relaxed);
                let lag = now_us.saturating_sub(inserted).max(0) as f64 / 1e6;
                t.stats.latency.delivery_lag.observe(lag);
            }
        }
    }
    if !changes.deleted.is_empty() {
        // Tombstones go into L1 whether or not it holds the event yet: a promotion of
        // that event still queued is then refused instead of bringing it back. A
        // tombstone applies only to its author's event.
        let n = t.l1.tombstone(&changes.deleted).await?;
        t.stats.poll_tombstones.fetch_add(n, Ordering::Relaxed);
    }
    if !changes.removed.is_empty() {
        // Events L2 dropped without a tombstone (replaced versions, address deletions,
        // bans, purges). A purged or banned event may have been sent again since, and
        // the look-back reads its old removal again: only what L2 no longer holds is
        // forgotten. An event stored again after this check comes as an insert, which
        // is not skipped: it leaves `seen` here.
        let ids: std::collections::BTreeSet<_> = changes.removed.iter().copied().collect();
        let back: std::collections::HashSet<_> =
            t.l2.query(&[eventstore::Filter {
                ids: Some(ids.clone()),
                ..eventstore::Filter::default()
            }])
            .await?
            .iter()
            .map(eventstore::Event::id)
            .collect();
        let gone: Vec<_> = ids.into_iter().filter(|id| !back.contains(id)).collect();
        // Recorded first, so a promotion still queued leaves them out (`promoter`).
        for id in &gone {
            t.dropped.insert(*id);
            t.seen.remove(id);
        }
        let n = t.l1.forget(&gone).await?;
        t.stats.poll_tombstones.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_resumes_at_the_last_row_or_the_horizon_whichever_is_earlier() {
        let reached = FeedPositions {
            events: (5_000, 42),
            deleted: (1_000, 7),
            removed: (9_000, 3),
        };
        let r = resume_point(reached, 4_000);
        // Rows after 5,000 were read, but transactions open at 4,000 may still commit
        // rows from 4,000 on: resume there.
        assert_eq!(r.events, (4_000, -1));
        // Nothing read past 1,000 in this log: resume after its last row.
        assert_eq!(r.deleted, (1_000, 7));
        assert_eq!(r.removed, (4_000, -1));
        // At the horizon itself, a row with seq 0 at 4,000 is still ahead.
        assert!((4_000, 0) > r.events);
    }

    #[test]
    fn a_busy_feed_is_polled_once_a_period_and_a_quiet_one_sooner() {
        let f = Duration::from_millis(250);
        assert_eq!(notified_gap(f, 0), Duration::from_millis(50));
        assert_eq!(notified_gap(f, BUSY_POLL - 1), Duration::from_millis(50));
        assert_eq!(notified_gap(f, BUSY_POLL), f);
        // A long period: a busy feed is still polled every 250 ms, and a period so long
        // that a fifth of it is longer keeps that fifth.
        let long = Duration::from_secs(1);
        assert_eq!(notified_gap(long, 0), Duration::from_millis(200));
        assert_eq!(notified_gap(long, BUSY_POLL), BUSY_GAP);
        let longer = Duration::from_secs(5);
        assert_eq!(notified_gap(longer, BUSY_POLL), Duration::from_secs(1));
        let short = Duration::from_millis(100);
        assert_eq!(notified_gap(short, BUSY_POLL), short);
        // No flapping between the two paces: the rate that makes a quick poll busy
        // keeps a full-period poll busy too, and a rate that leaves a full-period poll
        // quiet leaves a quick one quiet.
        let read = |rate: u64, gap: Duration| rate * gap.as_millis() as u64 / 1_000;
        for rate in [0, 399, 400, 1_999, 2_000, 10_000] {
            let quick = notified_gap(f, read(rate, f / 5));
            if quick == f {
                assert_eq!(notified_gap(f, read(rate, f)), f, "{rate}/s");
            }
            if notified_gap(f, read(rate, f)) < f {
                assert!(quick < f, "{rate}/s");
            }
        }
    }
}
