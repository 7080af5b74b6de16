//! Warm-up: a fresh L1 loads the newest events from L2 and sets its window watermark
//! `W`; a restarted L1 keeps its data and its poller resumes from the saved cursor.

use eventstore::{Event, EventStore, Filter, StoreError, Timestamp};

use super::Tiered;

/// Returns the poller's starting cursor (database microseconds).
pub(super) async fn warm_up(t: &Tiered) -> Result<i64, StoreError> {
    if let Some(bytes) = t.l1.cursor().await? {
        if let Ok(b) = <[u8; 8]>::try_from(bytes.as_slice()) {
            let cursor = i64::from_be_bytes(b);
            // A restart: L1 is what it was; the poller catches up from here (the feed
            // carries every insert and tombstone since, and removals as far back as
            // maintenance keeps them).
            if log_reaches(t, cursor).await? {
                return Ok(cursor);
            }
            forget_everything(t).await?;
        }
    }
    // Fresh L1. Take the feed's clock before reading, so nothing committed during the
    // warm-up is missed: the first poll starts at this cursor minus its look-back.
    let cursor = match &t.feed {
        Some(feed) => feed.now().await?,
        None => 0,
    };
    let n = t.config.warm_events;
    let mut recent = t.l2.query(&[Filter::new().limit(n)]).await?;
    // Oldest first: when more arrives than L1 can hold, eviction then takes the old end
    // of the window, as it should. Newest first, each older batch would land below the
    // window (as promotions, the most recently used) and push the newest events out.
    recent.reverse();
    t.l1.save_many(&recent).await?;
    // The newest n events are now held. Ties at the oldest timestamp may have been
    // cut by the limit, so the claim starts one second above it; fewer than n means
    // L1 holds everything.
    let w = if n > 0 && recent.len() >= n {
        recent
            .iter()
            .map(Event::created_at)
            .min()
            .map_or(Timestamp(0), |t| Timestamp(t.0.saturating_add(1)))
    } else {
        Timestamp(0)
    };
    t.l1.set_window(w).await?;
    t.l1.set_cursor(cursor.to_be_bytes().to_vec()).await?;
    for e in &recent {
        t.seen.insert(e.id(), ());
    }
    tracing::info!(events = recent.len(), window = w.0, "L1 warmed from L2");
    Ok(cursor)
}

/// Whether the change feed still holds every row a poll from `cursor` needs. Events
/// and tombstones are never pruned, but removals (replaced versions, purges, bans)
/// older than the removal log's horizon are, and a wipe (`nuke --all`) takes
/// everything: were one of those gone, L1 would keep serving an event L2 no longer has.
async fn log_reaches(t: &Tiered, cursor: i64) -> Result<bool, StoreError> {
    let Some(feed) = &t.feed else {
        return Ok(true);
    };
    let from = cursor.saturating_sub(t.config.lookback().as_micros() as i64);
    feed.resumable(from).await
}

/// Empties L1 of events (a cursor too old to catch up from): it then warms as a fresh
/// L1, and the window and every floor are set anew. Tombstones stay (they only refuse).
async fn forget_everything(t: &Tiered) -> Result<(), StoreError> {
    let mut forgotten = 0u64;
    loop {
        let held = t.l1.query(&[Filter::new().limit(5_000)]).await?;
        if held.is_empty() {
            break;
        }
        let ids: Vec<_> = held.iter().map(Event::id).collect();
        let n = t.l1.forget(&ids).await?;
        if n == 0 {
            return Err(StoreError::Backend(
                "L1 served events it would not forget".into(),
            ));
        }
        forgotten += n;
    }
    tracing::warn!(
        forgotten,
        "L1's cursor is older than L2's change feed still covers (pruned or wiped since); L1 starts afresh"
    );
    t.stats
        .l1_resets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
