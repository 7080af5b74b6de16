//! Query routing (DESIGN.md §5). L1 answers alone only when it provably holds the whole
//! answer; otherwise L2 answers the part below the window watermark `W` and its events
//! are promoted. Answers are always what L2 alone would give.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use eventstore::{Event, EventId, EventStore, Filter, StoreError, Timestamp};

use super::Tiered;

impl Tiered {
    pub(super) async fn query_one(&self, f: &Filter) -> Result<Vec<Event>, StoreError> {
        if f.is_empty_result() {
            return Ok(Vec::new());
        }
        if let Some(ids) = &f.ids {
            return self.by_ids(f, ids).await;
        }
        if !self.window_trusted() {
            // Nothing of the answer is provably in L1.
            return self.ask_l2(f).await;
        }
        // W from the same snapshot as the answer: an eviction committing in between
        // would otherwise make the window part look complete when it is not.
        let (r1, w) = self.l1.query_with_window(std::slice::from_ref(f)).await?;
        if f.until.is_some_and(|u| u < w) {
            return self.ask_l2(f).await;
        }
        let limit = f.limit.unwrap_or(usize::MAX);
        // Every L2 event with created_at >= W is in L1, and ranks before any event below
        // W (canonical order is created_at descending). So the part of r1 at or above W
        // is exactly L2's answer above W.
        let window_part: Vec<Event> = r1.into_iter().filter(|e| e.created_at() >= w).collect();
        let below_needed =
            w > Timestamp(0) && window_part.len() < limit && f.since.is_none_or(|s| s < w);
        if !below_needed {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(window_part);
        }
        let lower = Filter {
            until: Some(Timestamp(w.0 - 1).min(f.until.unwrap_or(Timestamp(u64::MAX)))),
            limit: f.limit.map(|l| l - window_part.len()),
            ..f.clone()
        };
        let r2 = self.ask_l2(&lower).await?;
        let mut out = window_part;
        out.extend(r2);
        Ok(out)
    }

    async fn ask_l2(&self, f: &Filter) -> Result<Vec<Event>, StoreError> {
        self.stats.l2_queries.fetch_add(1, Ordering::Relaxed);
        let r = self.l2.query(std::slice::from_ref(f)).await?;
        self.promote(&r);
        Ok(r)
    }

    /// Id lookups: L1 first, then L2 for the misses not known to be absent.
    async fn by_ids(&self, f: &Filter, ids: &BTreeSet<EventId>) -> Result<Vec<Event>, StoreError> {
        // Look up by id alone: an id L1 holds but the other conditions reject is still
        // not a miss.
        let by_id = Filter {
            ids: Some(ids.clone()),
            ..Filter::default()
        };
        let mut found = self.l1.query(std::slice::from_ref(&by_id)).await?;
        let held: BTreeSet<EventId> = found.iter().map(Event::id).collect();
        let mut misses: BTreeSet<EventId> = BTreeSet::new();
        for id in ids.difference(&held) {
            if self.missing.contains_key(id) {
                self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            } else {
                misses.insert(*id);
            }
        }
        if misses.is_empty() {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            let want = Filter {
                ids: Some(misses.clone()),
                ..Filter::default()
            };
            let r2 = self.ask_l2(&want).await?;
            for e in &r2 {
                misses.remove(&e.id());
            }
            for id in misses {
                self.missing.insert(id, ());
            }
            found.extend(r2);
        }
        found.retain(|e| f.matches(e));
        eventstore::sort_canonical(&mut found);
        if let Some(limit) = f.limit {
            found.truncate(limit);
        }
        Ok(found)
    }
}
