//! The report every mode produces: a human table on stdout, JSON for machines, and the
//! verdict (any violation fails the run).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{Summary, header, row};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: String,
    pub relays: Vec<String>,
    pub seconds: f64,
    pub events_sent: usize,
    pub events_acked: usize,
    /// Refusals by their `OK` message prefix (`rate-limited:`, `error:`, ...).
    pub rejected: BTreeMap<String, usize>,
    pub events_per_second: f64,
    pub ok_latency: Summary,
    /// REQ latency while events are being published.
    pub req_latency: Summary,
    /// REQ latency in a read-only phase after publishing (`stress --read-seconds`).
    pub req_latency_reads_only: Summary,
    pub delivery_latency: Summary,
    /// Acknowledged events a node does not serve, per relay URL.
    pub missing_on_relay: BTreeMap<String, Vec<String>>,
    /// Acknowledged events a live subscriber never received, per subscriber.
    pub missing_live: BTreeMap<String, Vec<String>>,
    /// Events a live subscriber received more than once, per subscriber.
    pub duplicates_live: BTreeMap<String, Vec<String>>,
    /// Mode-specific figures.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Every broken guarantee, in words.
    pub violations: Vec<String>,
    pub passed: bool,
}

impl Report {
    /// Turns the collected misses into violations and sets the verdict.
    pub fn conclude(&mut self) {
        for (relay, ids) in &self.missing_on_relay {
            if !ids.is_empty() {
                self.violations.push(format!(
                    "{relay}: {} acknowledged events not served: {}",
                    ids.len(),
                    list(ids)
                ));
            }
        }
        for (sub, ids) in &self.missing_live {
            if !ids.is_empty() {
                self.violations.push(format!(
                    "{sub}: {} acknowledged events never delivered live: {}",
                    ids.len(),
                    list(ids)
                ));
            }
        }
        for (sub, ids) in &self.duplicates_live {
            if !ids.is_empty() {
                self.violations.push(format!(
                    "{sub}: {} events delivered more than once: {}",
                    ids.len(),
                    list(ids)
                ));
            }
        }
        self.passed = self.violations.is_empty();
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut line = |s: String| {
            t.push_str(&s);
            t.push('\n');
        };
        line(format!(
            "layer2 tester: {} against {}",
            self.mode,
            self.relays.join(", ")
        ));
        line(format!("  run time            {:.1} s", self.seconds));
        line(format!("  events sent         {}", self.events_sent));
        line(format!("  acknowledged (OK)   {}", self.events_acked));
        for (reason, n) in &self.rejected {
            line(format!("  refused {reason:<11} {n}"));
        }
        line(format!(
            "  throughput          {:.0} events/s",
            self.events_per_second
        ));
        for (k, v) in &self.details {
            if k != "phases" {
                line(format!("  {k:<19} {v}"));
            }
        }
        line(String::new());
        line(header());
        for (name, s) in [
            ("OK (publish -> OK)", &self.ok_latency),
            ("REQ (send -> EOSE)", &self.req_latency),
            ("REQ, reads only", &self.req_latency_reads_only),
            ("delivery (publish -> live)", &self.delivery_latency),
        ] {
            if s.count > 0 {
                line(row(name, s));
            }
        }
        // An L2 outage seen during the run (`stress`): the same figures per phase.
        if let Some(phases) = self.details.get("phases") {
            for phase in ["before", "during", "after"] {
                for (what, key) in [("OK", "ok"), ("REQ", "req")] {
                    let s: Option<Summary> = phases
                        .get(phase)
                        .and_then(|p| p.get(key))
                        .and_then(|v| serde_json::from_value(v.clone()).ok());
                    if let Some(s) = s.filter(|s| s.count > 0) {
                        line(row(&format!("{what}, {phase} the outage"), &s));
                    }
                }
            }
        }
        line(String::new());
        if self.passed {
            line("PASS: every acknowledged event is served by every node and was delivered to every live subscriber once".into());
        } else {
            line(format!("FAIL: {} violation(s)", self.violations.len()));
            for v in &self.violations {
                line(format!("  - {v}"));
            }
        }
        t
    }
}

fn list(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(20).map(String::as_str).collect();
    let more = ids.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
