//! Warm-up: a fresh L1 loads the newest events from L2 and sets its window watermark
//! `W`; a restarted L1 keeps its data and its poller resumes from the saved cursor.

use eventstore::{Event, Filter, StoreError, Timestamp};

use super::Tiered;

/// Returns the poller's starting cursor (database microseconds).
pub(super) async fn warm_up(t: &Tiered) -> Result<i64, StoreError> {
    if let Some(bytes) = t.l1.cursor().await? {
        if let Ok(b) = <[u8; 8]>::try_from(bytes.as_slice()) {
            // A restart: L1 is what it was; the poller catches up from here (the feed
            // carries every insert and tombstone since, however long ago).
            return Ok(i64::from_be_bytes(b));
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
