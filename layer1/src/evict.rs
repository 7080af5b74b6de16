//! Eviction (DESIGN.md §3): above the high-water mark, remove events down to the
//! low-water mark, in the writer's transaction (readers keep their snapshots).
//!
//! Order: least recently used first, between two queues: *promoted* events
//! (`created_at < W`, pulled in by L2 misses), walked from the cold end of the `LRU`
//! table, and the *window*, which shrinks only from its old end, raising `W` past each
//! evicted event so that "every L2 event with `created_at >= W` is here" stays true.
//! Every evicted event also raises the completeness floors of the keys it satisfies
//! (`floors.rs`).

use eventstore::{StoreError, Timestamp};
use redb::ReadableTable;

use crate::error::backend;
use crate::keys::{created_prefix, split_suffix, with_suffix};
use crate::write::Tables;

/// The access tick of `serial`: its last recorded access, or its serial when never
/// accessed (serials and ticks come from one clock). Pending accesses are flushed into
/// the recency table before eviction runs.
fn tick_of(t: &Tables<'_>, serial: u64) -> Result<u64, StoreError> {
    Ok(t.recency
        .get(serial)
        .map_err(backend)?
        .map_or(serial, |v| v.value()))
}

/// Window events eviction looks at past a warm oldest one (see [`evict_to`]).
const WINDOW_LOOK: usize = 32;

/// The window event to evict next, `(created_at, serial)`: among the window's
/// [`WINDOW_LOOK`] oldest events, the first used less recently than `cold` (the coldest
/// promoted event's tick), or the oldest when there is no promoted event. Otherwise
/// `Err(least)`, the least tick among those looked at: no window event goes before a
/// promoted event at least that warm.
fn window_victim(
    t: &Tables<'_>,
    cold: Option<u64>,
) -> Result<Result<(Timestamp, u64), u64>, StoreError> {
    let lo = with_suffix(&created_prefix(), t.window, 0);
    let hi = with_suffix(&created_prefix(), Timestamp(u64::MAX), u64::MAX);
    let range = t
        .index
        .range(lo.as_slice()..=hi.as_slice())
        .map_err(backend)?;
    let mut least = u64::MAX;
    for entry in range.take(WINDOW_LOOK) {
        let Some((created_at, serial)) = split_suffix(entry.map_err(backend)?.0.value()) else {
            continue;
        };
        let Some(cold) = cold else {
            return Ok(Ok((created_at, serial)));
        };
        let tick = tick_of(t, serial)?;
        if tick < cold {
            return Ok(Ok((created_at, serial)));
        }
        least = least.min(tick);
    }
    Ok(Err(least))
}

/// The coldest promoted event: `(tick, serial)`.
fn coldest(t: &Tables<'_>) -> Result<Option<(u64, u64)>, StoreError> {
    Ok(t.lru.first().map_err(backend)?.map(|(k, _)| k.value()))
}

/// Removes the event at `serial` as an eviction: counted, and its keys' floors raised.
fn evict_one(t: &mut Tables<'_>, serial: u64) -> Result<bool, StoreError> {
    match t.remove_serial(serial)? {
        Some(e) => {
            t.raise_floors(&e)?;
            t.evicted += 1;
            t.evictions += 1;
            t.evicted_log
                .push(crate::floors::Evicted::new(t.evictions, &e));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Removes events until `t.bytes <= target`.
///
/// Least recently used first, within the window's constraint: the window can only
/// shrink from its old end (evicting a window event raises `W` past it, so that "every
/// L2 event with `created_at >= W` is here" stays true). A window event among the
/// [`WINDOW_LOOK`] oldest goes before the coldest promoted event when it was used less
/// recently; the warmer window events it passes are then below `W`, promoted events in
/// the LRU order by their own ticks. Looking past the oldest matters: a single read of
/// the window's oldest event would otherwise pin the whole window, and eviction would
/// take only promoted events, however recently they were used (the feed bench's profile
/// pages lost two in five repeat visits so). Looking only a bounded way keeps each step
/// to a few B-tree descents, however many events there are.
pub(crate) fn evict_to(t: &mut Tables<'_>, target: u64) -> Result<(), StoreError> {
    // This transaction's own saves must be seen: a window event left unflushed below a
    // raised `W` would join no LRU order and never be evicted.
    t.flush_index()?;
    // The least tick among the window events the last look found none to evict in,
    // while the window is unchanged since: promoted events colder than it go without
    // another look (each look costs up to 32 lookups; a pass evicting many promoted
    // events in a row would pay it for each).
    let mut window_least: Option<u64> = None;
    while t.bytes > target {
        let cold = coldest(t)?;
        let look = match (cold, window_least) {
            (Some((tick, _)), Some(least)) if tick <= least => None,
            _ => Some(window_victim(t, cold.map(|c| c.0))?),
        };
        match look {
            Some(Ok((created_at, serial))) => {
                if !evict_one(t, serial)? {
                    let k = with_suffix(&created_prefix(), created_at, serial);
                    t.index.remove(k.as_slice()).map_err(backend)?;
                }
                // Everything at or below this timestamp may now be missing.
                raise_window(t, Timestamp(created_at.0.saturating_add(1)))?;
                window_least = None;
                continue;
            }
            Some(Err(least)) => window_least = Some(least),
            None => {}
        }
        let Some((tick, serial)) = cold else { break };
        if !evict_one(t, serial)? {
            // A dangling entry: drop it so the walk moves on.
            t.lru.remove((tick, serial)).map_err(backend)?;
        }
    }
    Ok(())
}

/// Raises `W` to `w` (never lowers it). Events left between the old and the new `W`
/// (the rest of an evicted event's second, or a window raised by decree) are promoted
/// events from now on, and join the LRU order.
pub(crate) fn raise_window(t: &mut Tables<'_>, w: Timestamp) -> Result<(), StoreError> {
    if w <= t.window {
        return Ok(());
    }
    let old = t.window;
    t.window = w;
    if !t.bounded {
        return Ok(());
    }
    let lo = with_suffix(&created_prefix(), old, 0);
    let hi = with_suffix(&created_prefix(), w, 0);
    let mut serials = Vec::new();
    for entry in t
        .index
        .range(lo.as_slice()..hi.as_slice())
        .map_err(backend)?
    {
        let (k, _) = entry.map_err(backend)?;
        if let Some((_, serial)) = split_suffix(k.value()) {
            serials.push(serial);
        }
    }
    for serial in serials {
        let tick = tick_of(t, serial)?;
        t.lru.insert((tick, serial), ()).map_err(backend)?;
    }
    Ok(())
}
