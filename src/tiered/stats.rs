//! Counters of the tiered backend, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use eventstore::Filter;

/// The shape of a query, for counting where each kind of read is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// By id.
    Ids,
    /// By author (a profile page).
    Author,
    /// By author and kind (a feed, a profile's notes).
    AuthorKind,
    /// By tag, with or without kinds (threads, replies, reactions).
    Tag,
    /// By kind alone.
    Kind,
    /// Anything else (time ranges only).
    Other,
}

impl Shape {
    /// Every shape, in the order of [`Shape::label`]'s counters.
    pub const ALL: [Shape; 6] = [
        Shape::Ids,
        Shape::Author,
        Shape::AuthorKind,
        Shape::Tag,
        Shape::Kind,
        Shape::Other,
    ];

    /// The shape of `f`.
    pub fn of(f: &Filter) -> Shape {
        match (&f.ids, &f.authors, &f.kinds, f.tags.is_empty()) {
            (Some(_), ..) => Shape::Ids,
            (None, Some(_), Some(_), _) => Shape::AuthorKind,
            (None, Some(_), None, _) => Shape::Author,
            (None, None, _, false) => Shape::Tag,
            (None, None, Some(_), true) => Shape::Kind,
            (None, None, None, true) => Shape::Other,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Shape::Ids => "ids",
            Shape::Author => "author",
            Shape::AuthorKind => "author_kind",
            Shape::Tag => "tag",
            Shape::Kind => "kind",
            Shape::Other => "other",
        }
    }
}

/// Live counters. All monotonic except `poll_lag_ms` and `poller_healthy`.
#[derive(Debug, Default)]
pub struct TieredStats {
    /// Queries answered by L1 alone.
    pub l1_hits: AtomicU64,
    /// Queries that asked L2.
    pub l2_queries: AtomicU64,
    /// Id lookups answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// Events promoted from L2 into L1.
    pub promotions: AtomicU64,
    /// Promotions dropped because the promotion queue was full.
    pub promotions_dropped: AtomicU64,
    /// L1 writes that failed after L2 accepted the event (L1 is repaired by the poller).
    pub l1_write_errors: AtomicU64,
    /// Poller runs, successful or not.
    pub poll_runs: AtomicU64,
    /// Poller runs that failed.
    pub poll_errors: AtomicU64,
    /// Events the poller brought in and broadcast.
    pub poll_broadcast: AtomicU64,
    /// Events the poller read whole from L2 (those it had not seen: other nodes' and
    /// any of this node's it had not written into L1 yet).
    pub poll_read: AtomicU64,
    /// Tombstones the poller applied to L1.
    pub poll_tombstones: AtomicU64,
    /// Database time minus the poller's cursor at the last successful poll; during a
    /// poll that reads page after page, the age of the last row it read.
    pub poll_lag_ms: AtomicU64,
    /// Starts at which L1 was emptied: its cursor was older than the removal log keeps.
    pub l1_resets: AtomicU64,
    /// Latency histograms (relay and tiers alike).
    pub latency: crate::latency::Latencies,
    /// Reads answered by L1 alone because L2 was unreachable.
    pub degraded_reads: AtomicU64,
    /// Events written to the outbox while L2 was unreachable.
    pub outbox_appended: AtomicU64,
    /// Outbox events handed to L2 once it answered again.
    pub outbox_replayed: AtomicU64,
    /// Replayed events L2 refused (a newer version or a tombstone won).
    pub outbox_refused: AtomicU64,
    /// Queries answered by L1 alone, by [`Shape`] (in [`Shape::ALL`]'s order).
    pub l1_by_shape: [AtomicU64; 6],
    /// Queries that asked L2, by [`Shape`].
    pub l2_by_shape: [AtomicU64; 6],
}

impl TieredStats {
    /// Counts one query of `shape`, answered by L1 alone or not.
    pub fn routed(&self, shape: Shape, by_l1: bool) {
        let i = Shape::ALL.iter().position(|s| *s == shape).unwrap_or(5);
        if by_l1 {
            self.l1_hits.fetch_add(1, Ordering::Relaxed);
            self.l1_by_shape[i].fetch_add(1, Ordering::Relaxed);
        } else {
            self.l2_by_shape[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Queries by shape and by route (L1 alone, or L2 asked) since the L1 file began:
/// kept in the file (`RedbStore::set_annotation`) so that `stats` can tell an
/// operator the hit ratio while the node is stopped. Counts of the last minute before
/// a crash may be lost; `nuke --l1` starts them again with the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Answered by L1 alone, in [`Shape::ALL`]'s order.
    pub l1: [u64; 6],
    /// L2 asked.
    pub l2: [u64; 6],
}

impl Routes {
    /// The annotation's name in the L1 file.
    pub const ANNOTATION: &'static str = "routes";

    /// `{"author": [l1, l2], ...}`.
    pub fn encode(&self) -> Vec<u8> {
        let map: serde_json::Map<String, serde_json::Value> = Shape::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.label().to_string(),
                    serde_json::json!([self.l1[i], self.l2[i]]),
                )
            })
            .collect();
        serde_json::Value::Object(map).to_string().into_bytes()
    }

    /// Reads [`Self::encode`]'s form; shapes it does not know are skipped, and a value
    /// that is not that form is an error (the caller starts from zero).
    pub fn decode(bytes: &[u8]) -> Result<Routes, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let map = v.as_object().ok_or("not an object")?;
        let mut r = Routes::default();
        for (i, s) in Shape::ALL.iter().enumerate() {
            let Some(pair) = map.get(s.label()) else {
                continue;
            };
            let n = |j: usize| pair.get(j).and_then(serde_json::Value::as_u64);
            match (n(0), n(1)) {
                (Some(a), Some(b)) => (r.l1[i], r.l2[i]) = (a, b),
                _ => return Err(format!("{}: not two counts", s.label())),
            }
        }
        Ok(r)
    }

    /// These counts plus what `stats` counted since.
    pub fn plus(&self, stats: &TieredStats) -> Routes {
        let mut r = self.clone();
        for i in 0..6 {
            r.l1[i] += stats.l1_by_shape[i].load(Ordering::Relaxed);
            r.l2[i] += stats.l2_by_shape[i].load(Ordering::Relaxed);
        }
        r
    }

    /// For `stats`: the share of queries L1 answered alone, overall and by shape (null
    /// where there were none), with the counts.
    pub fn report(&self) -> serde_json::Value {
        let ratio = |a: u64, b: u64| {
            (a + b > 0).then(|| (a as f64 / (a + b) as f64 * 10_000.0).round() / 10_000.0)
        };
        let (l1, l2): (u64, u64) = (self.l1.iter().sum(), self.l2.iter().sum());
        let by_shape: serde_json::Map<String, serde_json::Value> = Shape::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let v = serde_json::json!({
                    "l1_answered": self.l1[i],
                    "l2_asked": self.l2[i],
                    "hit_ratio": ratio(self.l1[i], self.l2[i]),
                });
                (s.label().to_string(), v)
            })
            .collect();
        serde_json::json!({
            "l1_answered": l1,
            "l2_asked": l2,
            "hit_ratio": ratio(l1, l2),
            "by_shape": by_shape,
        })
    }
}

/// How often the route counts are written to the L1 file (and once more at close).
const KEEP_ROUTES_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Routes {
    /// The counts kept in `l1`; zero when there are none or they cannot be read (they
    /// are figures for the operator, never worth failing a start for).
    pub(super) async fn load(l1: &layer1::RedbStore) -> Routes {
        match l1.annotation(Routes::ANNOTATION).await {
            Ok(Some(bytes)) => Routes::decode(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "L1's query route counts are unreadable; starting from zero");
                Routes::default()
            }),
            Ok(None) => Routes::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read L1's query route counts; starting from zero");
                Routes::default()
            }
        }
    }
}

impl super::Tiered {
    /// Queries by shape and route since the L1 file began (this start's and before).
    pub fn routes(&self) -> Routes {
        self.routes_base.plus(&self.stats)
    }

    /// Writes [`Self::routes`] into the L1 file (every minute, and when the node closes).
    pub async fn keep_routes_now(&self) -> Result<(), eventstore::StoreError> {
        self.l1
            .set_annotation(Routes::ANNOTATION, self.routes().encode())
            .await
    }
}

/// Keeps the route counts in the L1 file every [`KEEP_ROUTES_EVERY`] until `stop`.
pub(super) async fn keep_routes(
    t: std::sync::Weak<super::Tiered>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEEP_ROUTES_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(t) = t.upgrade() else { return };
        if let Err(e) = t.keep_routes_now().await {
            tracing::debug!(error = %e, "query route counts not kept; retrying next period");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_round_trip_and_add_what_was_counted_since() {
        let stats = TieredStats::default();
        stats.routed(Shape::Author, true);
        stats.routed(Shape::Author, false);
        stats.routed(Shape::Tag, true);
        let base = Routes {
            l1: [1, 2, 3, 4, 5, 6],
            l2: [6, 5, 4, 3, 2, 1],
        };
        let now = base.plus(&stats);
        assert_eq!(now.l1, [1, 3, 3, 5, 5, 6]);
        assert_eq!(now.l2, [6, 6, 4, 3, 2, 1]);
        assert_eq!(Routes::decode(&now.encode()), Ok(now.clone()));
        let report = now.report();
        assert_eq!(report["l1_answered"], 23);
        assert_eq!(report["l2_asked"], 22);
        assert_eq!(report["by_shape"]["author"]["hit_ratio"], 0.3333);
        assert!(Routes::default().report()["hit_ratio"].is_null());
        assert!(Routes::decode(b"{\"author\": 3}").is_err());
        assert!(Routes::decode(b"[").is_err());
        assert_eq!(
            Routes::decode(b"{\"later\": [1, 2]}"),
            Ok(Routes::default())
        );
    }
}
