//! Latency samples and their summary.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    #[serde(default)]
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Collected latencies, each with the moment it ended (to split a run into phases).
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<(Instant, Duration)>);

impl Samples {
    /// Records a latency that ends now.
    pub fn push(&mut self, d: Duration) {
        self.0.push((Instant::now(), d));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The samples that ended in `from..to` (`to: None`: no end).
    pub fn within(&self, from: Instant, to: Option<Instant>) -> Samples {
        Samples(
            self.0
                .iter()
                .filter(|(at, _)| *at >= from && to.is_none_or(|t| *at < t))
                .copied()
                .collect(),
        )
    }

    pub fn summary(&self) -> Summary {
        summarize(self.0.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect())
    }
}

/// The summary of latencies given in microseconds (the fan-out mode keeps millions).
pub fn summary_of_micros(v: Vec<u32>) -> Summary {
    summarize(v.into_iter().map(|us| f64::from(us) / 1e3).collect())
}

/// Percentiles and mean of latencies in milliseconds.
fn summarize(mut v: Vec<f64>) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Summary {
        count: v.len(),
        mean_ms: round(v.iter().sum::<f64>() / v.len() as f64),
        p50_ms: round(at(0.50)),
        p90_ms: round(at(0.90)),
        p99_ms: round(at(0.99)),
        max_ms: round(v[v.len() - 1]),
    }
}

/// One table row: `name  count  mean  p50  p90  p99  max`.
pub fn row(name: &str, s: &Summary) -> String {
    format!(
        "{name:<28} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        s.count, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
    )
}

/// The header for [`row`].
pub fn header() -> String {
    format!(
        "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        let m = s.summary();
        assert_eq!(m.count, 100);
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.mean_ms, 50.5);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
        assert_eq!(Samples::default().summary().count, 0);
    }

    #[test]
    fn microsecond_summaries_match_duration_summaries() {
        let us: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let m = summary_of_micros(us);
        assert_eq!(
            (m.count, m.p50_ms, m.p99_ms, m.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(m.mean_ms, 50.5);
        assert_eq!(summary_of_micros(Vec::new()).count, 0);
    }

    #[test]
    fn samples_split_by_when_they_ended() {
        let mut s = Samples::default();
        s.push(Duration::from_millis(1));
        let mid = Instant::now();
        s.push(Duration::from_millis(2));
        s.push(Duration::from_millis(3));
        assert_eq!(s.within(mid, None).summary().count, 2);
        assert_eq!(
            s.within(mid - Duration::from_secs(60), Some(mid))
                .summary()
                .count,
            1
        );
    }
}
