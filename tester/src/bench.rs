//! `bench`: closed-loop clients, as most real clients are. Each connection sends one
//! message and waits for its answer before the next: first EVENT → OK, then REQ → EOSE
//! followed by CLOSE, the next REQ straight after (the write pair that a delayed ACK
//! can hold). Connections do not set `TCP_NODELAY` unless asked (`--nodelay`), as most
//! WebSocket clients do not.
//!
//! Figures: events/s and REQs/s with their latency (mean and percentiles), and the
//! nodes' CPU time per acknowledged event and per REQ, read from their
//! `process_cpu_seconds_total` before and after each phase. The run ends with the
//! loss check.

use std::time::{Duration, Instant};

use crate::check;
use crate::events::Generator;
use crate::net;
use crate::report::Report;
use crate::stats::Samples;
use crate::stress::bar;
use crate::workers::{self, SentAt};
use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Plan {
    pub relays: Vec<String>,
    pub connections: usize,
    /// Events published in all (signed before the clock starts).
    pub events: usize,
    /// Length of the read phase (0: none).
    pub read_seconds: u64,
    pub authors: usize,
    pub nodelay: bool,
    pub seed: u64,
    pub grace: Duration,
    pub quiet: bool,
}

/// The nodes' CPU seconds and resident bytes, summed over `relays`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: f64,
    pub rss: f64,
    /// The nodes' start times, summed: it changes when one restarted (its CPU counter
    /// then began again from 0).
    started: f64,
}

impl Usage {
    /// CPU seconds spent since `before`, unless a node restarted in between.
    pub fn cpu_since(&self, before: &Usage) -> Option<f64> {
        (self.started == before.started).then_some(self.cpu - before.cpu)
    }
}

/// Reads [`Usage`] from every relay's `/metrics`.
pub async fn node_usage(relays: &[String]) -> anyhow::Result<Usage> {
    let mut u = Usage {
        cpu: 0.0,
        rss: 0.0,
        started: 0.0,
    };
    for url in relays {
        let m = net::metrics(url).await?;
        u.cpu += m.get("process_cpu_seconds_total").with_context(|| {
            format!("{url}: /metrics has no process_cpu_seconds_total (an older node?)")
        })?;
        let get = |name: &str| m.get(name).copied().unwrap_or(0.0);
        u.rss += get("process_resident_memory_bytes");
        u.started += get("process_start_time_seconds");
    }
    Ok(u)
}

/// Microseconds of node CPU per unit of work, rounded.
pub fn per(cpu_seconds: f64, n: usize) -> f64 {
    (cpu_seconds * 1e6 / n.max(1) as f64).round()
}

pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    net::set_nodelay(plan.nodelay);
    let connections = plan.connections.max(1);
    let tag = format!("layer2-bench-{}-{}", plan.seed, std::process::id());
    let mut generator = Generator::new(plan.authors, plan.seed, 0, tag);
    // A history one event per second up to now, as a relay's store is, rather than
    // every event in the second it was signed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    generator.backdate = Some(now.saturating_sub(plan.events as u64));
    let signing = bar(Some(plan.events as u64), plan.quiet, "signing");
    let mut per_conn: Vec<Vec<_>> = (0..connections).map(|_| Vec::new()).collect();
    for i in 0..plan.events {
        per_conn[i % connections].push(generator.next());
        signing.inc(1);
    }
    signing.finish_and_clear();

    let mut report = Report {
        mode: "bench (closed loop)".into(),
        relays: plan.relays.clone(),
        ..Report::default()
    };
    let sent_at: SentAt = Default::default();
    let progress = bar(Some(plan.events as u64), plan.quiet, "publishing");
    let cpu0 = node_usage(&plan.relays).await?.cpu;
    let started = Instant::now();
    let sources = per_conn
        .into_iter()
        .enumerate()
        .map(|(i, events)| (plan.relays[i % plan.relays.len()].clone(), events))
        .collect();
    let tally = workers::publish_all(sources, 1, &sent_at, &progress).await?;
    tally.report_into(&mut report, started.elapsed());
    let Usage { cpu: cpu1, rss, .. } = node_usage(&plan.relays).await?;
    let d = &mut report.details;
    d.insert("connections".into(), connections.into());
    d.insert("nodelay".into(), plan.nodelay.into());
    d.insert(
        "node_cpu_us_per_event".into(),
        per(cpu1 - cpu0, tally.acked.len()).into(),
    );
    d.insert("node_rss_mib".into(), ((rss / 1048576.0).round()).into());

    if plan.read_seconds > 0 {
        let authors = generator.top_authors(plan.authors.min(500));
        let span = Duration::from_secs(plan.read_seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|j| {
                let url = plan.relays[j % plan.relays.len()].clone();
                let seed = plan.seed.wrapping_add(j as u64);
                tokio::spawn(workers::feed_queries(url, authors.clone(), span, 0, seed))
            })
            .collect();
        let mut reads = Samples::default();
        for t in tasks {
            reads.extend(t.await.context("reader task")??);
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu2 = node_usage(&plan.relays).await?.cpu;
        let n = reads.summary().count;
        let d = &mut report.details;
        d.insert(
            "reqs_per_second".into(),
            ((n as f64 / secs.max(1e-9)).round()).into(),
        );
        d.insert("node_cpu_us_per_req".into(), per(cpu2 - cpu1, n).into());
        report.req_latency_reads_only = reads.summary();
    }

    let survivors = check::must_survive(&tally.acked, &tally.unanswered);
    report.missing_on_relay = check::missing_per_relay(&plan.relays, &survivors, plan.grace)
        .await
        .context("loss check")?;
    report.conclude();
    Ok(report)
}
