//! Latency distributions on `/metrics`: Prometheus histograms kept and encoded by
//! `prometheus-client` (the counters beside them are plain atomics, `metrics.rs`). The
//! encoder writes OpenMetrics text; without its closing `# EOF` line that is also the
//! Prometheus text format the rest of the page uses.

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// 0.1 ms to 3.3 s, doubling: request latencies on a node.
fn requests() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// 1 ms to 65 s, doubling: how long an event takes to reach another node.
fn delivery() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

type Labels = Vec<(&'static str, &'static str)>;
type ByRoute = Family<Labels, Histogram, fn() -> Histogram>;

/// The node's latency histograms, in seconds.
#[derive(Debug)]
pub struct Latencies {
    /// EVENT: from the signature check to the `OK` (store decision included).
    pub event_ok: Histogram,
    /// REQ: from the query's start to its stored answer (`EOSE` follows), by whether L1
    /// answered alone (`route="l1"`) or L2 was asked (`route="l2"`).
    req: ByRoute,
    /// One query to L2 (PostgreSQL or the embedded store).
    pub l2_query: Histogram,
    /// One save in L2, as the saver waits for it (batching included).
    pub l2_write: Histogram,
    /// One save in L1 of an event L2 just accepted (the mirror: after the `OK` for a
    /// plain event, before it for the rest; before live delivery), batching included.
    pub l1_write: Histogram,
    /// One poll of L2's change feed, every page of it.
    pub poll: Histogram,
    /// From an event's insert into L2 (by another node, or this one) to this node's
    /// poller handing it to live subscribers; by the database clock, so node clocks do
    /// not matter.
    pub delivery_lag: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            event_ok: requests(),
            req: Family::new_with_constructor(requests),
            l2_query: requests(),
            l2_write: requests(),
            l1_write: requests(),
            poll: requests(),
            delivery_lag: delivery(),
        }
    }
}

impl Latencies {
    /// Records one REQ's stored answer.
    pub fn req(&self, by_l1: bool, seconds: f64) {
        let route = if by_l1 { "l1" } else { "l2" };
        self.req
            .get_or_create(&vec![("route", route)])
            .observe(seconds);
    }

    /// Appends the histograms to a Prometheus text page.
    pub fn render(&self, out: &mut String) {
        // Both routes appear from the start, so dashboards never see a missing series.
        for route in ["l1", "l2"] {
            drop(self.req.get_or_create(&vec![("route", route)]));
        }
        let mut r = Registry::default();
        r.register(
            "layer2_event_ok_seconds",
            "EVENT to OK: signature check and store decision",
            self.event_ok.clone(),
        );
        r.register(
            "layer2_req_seconds",
            "REQ: from the query's start to its stored answer, by route (l1: L1 alone, l2: L2 asked)",
            self.req.clone(),
        );
        r.register(
            "layer2_l2_query_seconds",
            "One query to L2",
            self.l2_query.clone(),
        );
        r.register(
            "layer2_l2_write_seconds",
            "One save in L2, as its saver waits (batching included)",
            self.l2_write.clone(),
        );
        r.register(
            "layer2_l1_write_seconds",
            "One save in L1 of an event L2 accepted, as its saver waits (batching included)",
            self.l1_write.clone(),
        );
        r.register(
            "layer2_poll_seconds",
            "One poll of L2's change feed",
            self.poll.clone(),
        );
        r.register(
            "layer2_delivery_lag_seconds",
            "From an event's insert into L2 to this node's poller delivering it, by the database clock",
            self.delivery_lag.clone(),
        );
        // Writing to a String cannot fail.
        let _ = encode_registry(out, &r);
    }
}

/// Seconds since `started`.
pub fn since(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_as_prometheus_text() {
        let l = Latencies::default();
        l.event_ok.observe(0.002);
        l.req(true, 0.000_3);
        l.req(false, 0.05);
        let mut out = String::new();
        l.render(&mut out);
        assert!(
            out.contains("# TYPE layer2_event_ok_seconds histogram"),
            "{out}"
        );
        assert!(out.contains("layer2_event_ok_seconds_count 1"), "{out}");
        assert!(
            out.contains("layer2_req_seconds_bucket{le=\"+Inf\",route=\"l2\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("layer2_req_seconds_count{route=\"l1\"} 1"),
            "{out}"
        );
        assert!(!out.contains("# EOF"), "{out}");
    }
}
