//! Eviction (DESIGN.md §3): above the high-water mark, remove events down to the
//! low-water mark, in the writer's transaction (readers keep their snapshots).
//!
//! Order: least recently used first, between two queues: *promoted* events
//! (`created_at < W`, pulled in by L2 misses) by last access, and the *window*, which
//! shrinks only from its old end, raising `W` past each evicted event so that "every L2
//! event with `created_at >= W` is here" stays true.

use std::collections::HashMap;

use eventstore::{StoreError, Timestamp};
use redb::ReadableTable;

use crate::error::backend;
use crate::keys::{created_prefix, split_suffix, with_suffix};
use crate::write::Tables;

/// The access tick of `serial`: unflushed, flushed, or its serial when never accessed
/// (serials and ticks come from one clock).
fn tick_of(t: &Tables<'_>, pending: &HashMap<u64, u64>, serial: u64) -> Result<u64, StoreError> {
    Ok(match pending.get(&serial) {
        Some(&tick) => tick,
        None => t
            .recency
            .get(serial)
            .map_err(backend)?
            .map_or(serial, |v| v.value()),
    })
}

/// Removes events until `t.bytes <= target`. `pending` holds access ticks not yet
/// flushed to the recency table (they are newer than what the table says).
///
/// Least recently used first, within the window's constraint: the window can only
/// shrink from its old end, so a promoted event goes before the window's oldest event
/// exactly when it was used less recently. (Evicting every promoted event first would
/// undo each promotion at once whenever L1 sits at its budget.)
pub(crate) fn evict_to(
    t: &mut Tables<'_>,
    target: u64,
    pending: &HashMap<u64, u64>,
) -> Result<(), StoreError> {
    if t.bytes <= target {
        return Ok(());
    }
    // Promoted events: everything below W, coldest first.
    let lo = with_suffix(&created_prefix(), Timestamp(0), 0);
    let hi = with_suffix(&created_prefix(), t.window, 0);
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
    let mut promoted = Vec::with_capacity(serials.len());
    for serial in serials {
        promoted.push((tick_of(t, pending, serial)?, serial));
    }
    promoted.sort_unstable();
    let mut promoted = promoted.into_iter().peekable();
    // The window, oldest first, in chunks (the range borrow ends before removal).
    while t.bytes > target {
        let lo = with_suffix(&created_prefix(), t.window, 0);
        let hi = with_suffix(&created_prefix(), Timestamp(u64::MAX), u64::MAX);
        let mut chunk = Vec::with_capacity(256);
        for entry in t
            .index
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(backend)?
        {
            let (k, _) = entry.map_err(backend)?;
            if let Some(ts) = split_suffix(k.value()) {
                chunk.push(ts);
            }
            if chunk.len() == 256 {
                break;
            }
        }
        if chunk.is_empty() {
            // Nothing left in the window: only promoted events remain.
            for (_, serial) in promoted.by_ref() {
                if t.bytes <= target {
                    break;
                }
                if t.remove_serial(serial)?.is_some() {
                    t.evicted += 1;
                }
            }
            break;
        }
        for (created_at, serial) in chunk {
            let tick = tick_of(t, pending, serial)?;
            while let Some(&(p_tick, p_serial)) = promoted.peek() {
                if p_tick >= tick || t.bytes <= target {
                    break;
                }
                promoted.next();
                if t.remove_serial(p_serial)?.is_some() {
                    t.evicted += 1;
                }
            }
            if t.bytes <= target {
                return Ok(());
            }
            if t.remove_serial(serial)?.is_some() {
                t.evicted += 1;
            }
            // Everything at or below this timestamp may now be missing.
            t.window = t.window.max(Timestamp(created_at.0.saturating_add(1)));
        }
    }
    Ok(())
}
