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

/// The window's oldest event: `(created_at, serial)`.
fn window_oldest(t: &Tables<'_>) -> Result<Option<(Timestamp, u64)>, StoreError> {
    let lo = with_suffix(&created_prefix(), t.window, 0);
    let hi = with_suffix(&created_prefix(), Timestamp(u64::MAX), u64::MAX);
    let mut range = t
        .index
        .range(lo.as_slice()..=hi.as_slice())
        .map_err(backend)?;
    match range.next() {
        None => Ok(None),
        Some(entry) => Ok(split_suffix(entry.map_err(backend)?.0.value())),
    }
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
/// shrink from its old end, so a promoted event goes before the window's oldest event
/// exactly when it was used less recently. (Evicting every promoted event first would
/// undo each promotion at once whenever L1 sits at its budget.) Each step costs two
/// B-tree descents, however many promoted events there are.
pub(crate) fn evict_to(t: &mut Tables<'_>, target: u64) -> Result<(), StoreError> {
    while t.bytes > target {
        let cold = coldest(t)?;
        let oldest = window_oldest(t)?;
        let take_promoted = match (cold, oldest) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((tick, _)), Some((_, serial))) => tick < tick_of(t, serial)?,
        };
        if take_promoted {
            let Some((tick, serial)) = cold else { break };
            if !evict_one(t, serial)? {
                // A dangling entry: drop it so the walk moves on.
                t.lru.remove((tick, serial)).map_err(backend)?;
            }
            continue;
        }
        let Some((created_at, serial)) = oldest else {
            break;
        };
        if !evict_one(t, serial)? {
            let k = with_suffix(&created_prefix(), created_at, serial);
            t.index.remove(k.as_slice()).map_err(backend)?;
        }
        // Everything at or below this timestamp may now be missing.
        raise_window(t, Timestamp(created_at.0.saturating_add(1)))?;
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
