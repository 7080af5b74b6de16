//! Query routing (DESIGN.md §5, §5a). L1 answers alone only when it provably holds the
//! whole answer: at or above the filter's *floor* (the window watermark `W`, or lower
//! where completeness floors per query key prove more; `layer1::floors`). Otherwise L2
//! answers the part below the floor, its events are promoted, and what its answer
//! proves lowers the floors, in the same L1 transaction. Answers are always what L2
//! alone would give.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use eventstore::{Event, EventId, EventStore, Filter, StoreError, Timestamp};

use super::Tiered;
use super::stats::Shape;

tokio::task_local! {
    /// Set when a query asked L2 ([`Tiered::query_routed`]).
    static ASKED_L2: std::cell::Cell<bool>;
}

impl Tiered {
    /// [`EventStore::query`], and whether any of it asked L2 (for the REQ latency by
    /// route).
    pub async fn query_routed(&self, filters: &[Filter]) -> (Result<Vec<Event>, StoreError>, bool) {
        ASKED_L2
            .scope(std::cell::Cell::new(false), async {
                let r = EventStore::query(self, filters).await;
                (r, ASKED_L2.with(std::cell::Cell::get))
            })
            .await
    }

    pub(super) async fn query_one(&self, f: &Filter) -> Result<Vec<Event>, StoreError> {
        if f.is_empty_result() {
            return Ok(Vec::new());
        }
        if let Some(ids) = &f.ids {
            return self.by_ids(f, ids).await;
        }
        let shape = Shape::of(f);
        if !self.window_trusted() {
            // Nothing of the answer is provably in L1 (the poller may be behind).
            self.stats.routed(shape, false);
            return self.ask_l2(f, None).await;
        }
        // The floor from the same snapshot as the answer: an eviction committing in
        // between would otherwise make the answer look complete when it is not.
        let probe = self.l1.probe(f).await?;
        let floor = probe.floor;
        let limit = f.limit.unwrap_or(usize::MAX);
        // Every L2 event matching f with created_at >= floor is in L1, and ranks before
        // any event below the floor (canonical order: created_at descending). So the
        // part of L1's answer at or above the floor is exactly L2's answer there.
        let above: Vec<Event> = probe
            .events
            .into_iter()
            .filter(|e| e.created_at() >= floor)
            .collect();
        if floor.0 == 0 || above.len() >= limit || f.since.is_some_and(|s| s >= floor) {
            self.stats.routed(shape, true);
            return Ok(above);
        }
        self.stats.routed(shape, false);
        let want = limit - above.len();
        let below = Timestamp(floor.0 - 1);
        let until = f.until.unwrap_or(Timestamp(u64::MAX));
        if until >= below {
            // The range below the floor joins it, so L2's answer there extends the
            // proof down to what it covers.
            // One event more than needed: when it lies in an older second than the
            // last one returned, that second is whole in L1 and the floor can reach
            // it, so the same query asked again is answered by L1 alone.
            let lower = Filter {
                until: Some(below),
                limit: f.limit.map(|_| want.saturating_add(1)),
                ..f.clone()
            };
            let mut r = self.ask_l2(&lower, Some((floor, probe.evictions))).await?;
            r.truncate(want);
            let mut out = above;
            out.extend(r);
            return Ok(out);
        }
        // `until` lies below the floor (a next page), so `above` is empty. Asking L2 up
        // to the floor instead, with room for the matches L1 holds in the gap, lets the
        // answer extend the proof; only its part at or below `until` is returned.
        if f.limit.is_some() && probe.gap <= limit {
            let room = want.saturating_add(probe.gap).saturating_add(1);
            let wide = Filter {
                until: Some(below),
                limit: Some(room),
                ..f.clone()
            };
            let r = self.ask_l2(&wide, Some((floor, probe.evictions))).await?;
            let cut = r.len() >= room;
            let mut mine: Vec<Event> = r.into_iter().filter(|e| e.created_at() <= until).collect();
            // `r` is an exact canonical prefix of L2's matches below the floor, so its
            // part at or below `until` is an exact prefix of the answer: the answer when
            // `r` was not cut, or when it already holds `want` events.
            if !cut || mine.len() >= want {
                mine.truncate(want);
                return Ok(mine);
            }
        }
        self.ask_l2(f, None).await
    }

    /// Asks L2 and promotes its answer. `joins`: the filter's range ends just below
    /// this floor of L1's, seen by a probe at this eviction epoch, so the answer also
    /// proves completeness down to what it covers; that is recorded with the promoted
    /// events.
    pub(super) async fn ask_l2(
        &self,
        f: &Filter,
        joins: Option<(Timestamp, u64)>,
    ) -> Result<Vec<Event>, StoreError> {
        self.stats.l2_queries.fetch_add(1, Ordering::Relaxed);
        let _ = ASKED_L2.try_with(|a| a.set(true));
        let started = std::time::Instant::now();
        let r = self.l2_call(self.l2.query(std::slice::from_ref(f))).await;
        self.stats
            .latency
            .l2_query
            .observe(crate::latency::since(started));
        let r = r?;
        let learn = joins.map(|(joins, evictions)| layer1::Learn {
            filter: Filter {
                since: None,
                until: None,
                limit: None,
                ..f.clone()
            },
            // All matches in range when L2 returned fewer than asked; else all above the
            // last returned second (the limit may have cut inside it).
            floor: match (f.limit, r.last()) {
                (Some(l), Some(last)) if r.len() >= l => {
                    Timestamp(last.created_at().0.saturating_add(1))
                }
                _ => f.since.unwrap_or(Timestamp(0)),
            },
            joins,
            evictions,
        });
        self.promote(&r, learn);
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
        self.stats.routed(Shape::Ids, misses.is_empty());
        if !misses.is_empty() {
            let want = Filter {
                ids: Some(misses.clone()),
                ..Filter::default()
            };
            let r2 = self.ask_l2(&want, None).await?;
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
