//! Warm-up: a fresh L1 loads the newest events from L2 and sets its window watermark
//! `W`; a restarted L1 keeps its data and its poller resumes from the saved cursor,
//! unless L2's change feed no longer covers that cursor (then L1 starts afresh).
//!
//! The saved cursor is `cursor | warmed` (8 bytes each, big-endian): where the poller
//! resumes, and when L1 was last warmed afresh, both by the database clock. An older
//! 8-byte cursor reads as warmed at 0.

use std::sync::atomic::Ordering;

use eventstore::{Event, EventStore, Filter, StoreError, Timestamp};

use super::Tiered;

/// The bytes L1 keeps for the poller's `cursor`.
pub(super) fn encode_cursor(cursor: i64, warmed: i64) -> Vec<u8> {
    let mut b = cursor.to_be_bytes().to_vec();
    b.extend_from_slice(&warmed.to_be_bytes());
    b
}

fn decode_cursor(bytes: &[u8]) -> Option<(i64, i64)> {
    let word = |r: std::ops::Range<usize>| {
        bytes
            .get(r)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(i64::from_be_bytes)
    };
    match bytes.len() {
        8 => Some((word(0..8)?, 0)),
        16 => Some((word(0..8)?, word(8..16)?)),
        _ => None,
    }
}

/// Returns the poller's starting cursor (database microseconds).
pub(super) async fn warm_up(t: &Tiered) -> Result<i64, StoreError> {
    if let Some((cursor, warmed)) = t.l1.cursor().await?.as_deref().and_then(decode_cursor) {
        t.warmed_at.store(warmed, Ordering::Relaxed);
        // A restart: L1 is what it was; the poller catches up from here (the feed
        // carries every insert and tombstone since, and removals as far back as
        // maintenance keeps them).
        if resumable(t, cursor).await? {
            return Ok(cursor);
        }
        forget_everything(t).await?;
    }
    fresh(t).await
}

/// Empties L1 and warms it afresh while the node runs: its poller fell behind what the
/// change feed still covers (a long partition, or a wipe of the cluster's data).
pub(super) async fn rewarm(t: &Tiered) -> Result<i64, StoreError> {
    forget_everything(t).await?;
    fresh(t).await
}

/// A fresh L1: the newest events from L2, then `W` and the cursor.
async fn fresh(t: &Tiered) -> Result<i64, StoreError> {
    // Take the feed's clock before reading, so nothing committed during the
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
    // L1 holds everything. Warming nothing (n = 0) claims nothing.
    let w = if n == 0 {
        Timestamp(i64::MAX as u64)
    } else if recent.len() >= n {
        recent
            .iter()
            .map(Event::created_at)
            .min()
            .map_or(Timestamp(0), |t| Timestamp(t.0.saturating_add(1)))
    } else {
        Timestamp(0)
    };
    t.l1.set_window(w).await?;
    t.warmed_at.store(cursor, Ordering::Relaxed);
    t.l1.set_cursor(encode_cursor(cursor, cursor)).await?;
    for e in &recent {
        t.seen.insert(e.id());
    }
    tracing::info!(events = recent.len(), window = w.0, "L1 warmed from L2");
    Ok(cursor)
}

/// Whether the change feed still holds every row a poll from `cursor` needs. Events
/// and tombstones are never pruned, but removals (replaced versions, purges, bans)
/// older than the removal log's horizon are, and a wipe (`nuke --all`) after L1 was
/// warmed takes everything: were one of those gone, L1 would keep serving an event L2
/// no longer has.
pub(super) async fn resumable(t: &Tiered, cursor: i64) -> Result<bool, StoreError> {
    let Some(feed) = &t.feed else {
        return Ok(true);
    };
    let from = cursor.saturating_sub(t.config.lookback().as_micros() as i64);
    feed.resumable(from, t.warmed_at.load(Ordering::Relaxed))
        .await
}

/// Empties L1 of events (a cursor the feed no longer covers): it then warms as a fresh
/// L1, and the window and every floor are set anew. Tombstones stay (they only refuse).
async fn forget_everything(t: &Tiered) -> Result<(), StoreError> {
    let mut forgotten = 0u64;
    loop {
        let held = t.l1.query(&[Filter::new().limit(5_000)]).await?;
        if held.is_empty() {
            break;
        }
        let ids: Vec<_> = held.iter().map(Event::id).collect();
        for id in &ids {
            t.seen.remove(id);
        }
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
    t.stats.l1_resets.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_old_and_new_decode() {
        assert_eq!(decode_cursor(&encode_cursor(5, 3)), Some((5, 3)));
        assert_eq!(decode_cursor(&7i64.to_be_bytes()), Some((7, 0)));
        assert_eq!(decode_cursor(&[1, 2, 3]), None);
    }
}
