//! Watching a run for an L2 outage (`stress --expect-outage`): every relay's `/metrics`
//! is read every 100 ms for `layer2_l2_circuit_open`. The outage runs from the first
//! reading where any relay has its circuit open to the first reading after that where
//! none has; the run's OK and REQ latencies are then reported per phase (before,
//! during, after), with how long the outage lasted as the relays saw it.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::net::metrics;
use crate::report::Report;
use crate::stats::Samples;

/// When the relays saw L2 go away and come back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outage {
    pub start: Option<Instant>,
    pub end: Option<Instant>,
}

/// Watches `relays` until `stop` turns true; returns what it saw.
pub async fn watch_relays(relays: Vec<String>, mut stop: watch::Receiver<bool>) -> Outage {
    let mut seen = Outage::default();
    loop {
        let mut any_open = false;
        for r in &relays {
            // A relay that does not answer /metrics counts as not reporting an open
            // circuit: the loss check is what judges it.
            if let Ok(m) = metrics(r).await {
                any_open |= m.get("layer2_l2_circuit_open").copied().unwrap_or(0.0) > 0.0;
            }
        }
        let now = Instant::now();
        match (seen.start, seen.end, any_open) {
            (None, _, true) => seen.start = Some(now),
            (Some(_), None, false) => seen.end = Some(now),
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return seen,
        }
    }
}

/// Adds the per-phase figures to `report`; with `expected`, no outage seen is a
/// violation.
pub fn report_phases(
    report: &mut Report,
    seen: Outage,
    run_start: Instant,
    ok: &Samples,
    req: &Samples,
    expected: bool,
) {
    let Some(start) = seen.start else {
        if expected {
            report
                .violations
                .push("--expect-outage: no relay ever reported its L2 circuit open".into());
        }
        return;
    };
    let phase = |from: Instant, to: Option<Instant>| {
        json!({
            "ok": ok.within(from, to).summary(),
            "req": req.within(from, to).summary(),
        })
    };
    let mut phases = serde_json::Map::new();
    phases.insert("before".into(), phase(run_start, Some(start)));
    phases.insert("during".into(), phase(start, seen.end));
    if let Some(end) = seen.end {
        phases.insert("after".into(), phase(end, None));
        report.details.insert(
            "outage_seconds".into(),
            json!(((end - start).as_secs_f64() * 10.0).round() / 10.0),
        );
    } else {
        report
            .violations
            .push("the outage never ended: some relay still reports its L2 circuit open".into());
    }
    report.details.insert("phases".into(), phases.into());
}
