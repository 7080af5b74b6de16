//! `stress`: publishers and readers spread over the relays; throughput, OK, REQ and
//! cross-node delivery latency; then the loss check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{oneshot, watch};

use crate::check;
use crate::events::Generator;
use crate::report::Report;
use crate::stats::Samples;
use crate::workers::{self, Finish, Received, SentAt, Source, Tally};

#[derive(Debug, Clone)]
pub struct Plan {
    pub relays: Vec<String>,
    pub events: Option<usize>,
    pub duration: Option<Duration>,
    pub publishers: usize,
    pub readers: usize,
    pub authors: usize,
    pub window: usize,
    pub seed: u64,
    /// How long nodes get to converge before a missing event counts as lost.
    pub grace: Duration,
    /// A read-only phase after publishing: feed queries with no write load.
    pub read_seconds: u64,
    pub quiet: bool,
    /// An L2 outage is expected during the run: report per phase, and fail if none is
    /// seen (`outage.rs`).
    pub expect_outage: bool,
}

pub fn bar(len: Option<u64>, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {{per_sec}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Starts one subscriber per `(name, url)`, returning once all have their live
/// subscription open.
pub async fn start_subscribers(
    subs: Vec<(String, String)>,
    tag: &str,
    queries: Option<Vec<String>>,
    sent_at: &SentAt,
    finish: &watch::Sender<Finish>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Received>>>> {
    let mut handles = Vec::new();
    let mut readies = Vec::new();
    for (name, url) in subs {
        let (tx, rx) = oneshot::channel();
        readies.push(rx);
        handles.push(tokio::spawn(workers::subscribe(
            name,
            url,
            tag.to_string(),
            queries.clone(),
            sent_at.clone(),
            tx,
            finish.subscribe(),
        )));
    }
    for (i, r) in readies.into_iter().enumerate() {
        if r.await.is_err() {
            // The task ended before its subscription was open: surface its error.
            let h = handles.remove(i);
            h.await.context("subscriber task")??;
            anyhow::bail!("a subscriber stopped before subscribing");
        }
    }
    Ok(handles)
}

pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let tag = format!("layer2-tester-{}-{}", plan.seed, std::process::id());
    let mut generator = Generator::new(plan.authors, plan.seed, 0, tag.clone());
    let sent_at: SentAt = Arc::new(Mutex::new(Default::default()));
    let (finish, _) = watch::channel(Finish::default());
    let subs = (0..plan.readers)
        .map(|j| {
            let url = plan.relays[j % plan.relays.len()].clone();
            (format!("reader{j}@{url}"), url)
        })
        .collect();
    let readers = start_subscribers(
        subs,
        &tag,
        Some(generator.top_authors(plan.authors.min(50))),
        &sent_at,
        &finish,
    )
    .await?;

    // Events are signed before the clock starts, so signing does not count as relay time.
    let sources: Vec<Source> = match plan.events {
        Some(n) => {
            let signing = bar(Some(n as u64), plan.quiet, "signing");
            let mut per: Vec<Vec<_>> = (0..plan.publishers).map(|_| Vec::new()).collect();
            for i in 0..n {
                per[i % plan.publishers].push(generator.next());
                signing.inc(1);
            }
            signing.finish_and_clear();
            per.into_iter().map(Source::Ready).collect()
        }
        None => {
            let deadline = Instant::now() + plan.duration.unwrap_or(Duration::from_secs(10));
            (0..plan.publishers)
                .map(|i| {
                    // Different publishers, different streams of events.
                    let mut g = Generator::new(plan.authors, plan.seed, i as u64 + 1, tag.clone());
                    Source::Until(deadline, Box::new(move || g.next()))
                })
                .collect()
        }
    };
    let progress = bar(plan.events.map(|n| n as u64), plan.quiet, "publishing");
    // Node CPU over the publishing phase (readers run meanwhile; their share is small).
    let cpu0 = crate::bench::node_usage(&plan.relays).await.ok();
    let started = Instant::now();
    // Every run watches for an L2 outage; one seen is reported per phase.
    let (stop_watching, watching) = watch::channel(false);
    let watcher = tokio::spawn(crate::outage::watch_relays(plan.relays.clone(), watching));
    let pubs: Vec<_> = sources
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(workers::publish(
                plan.relays[i % plan.relays.len()].clone(),
                s,
                plan.window,
                sent_at.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut report = Report {
        mode: "stress".into(),
        relays: plan.relays.clone(),
        ..Report::default()
    };
    let mut tally = Tally::default();
    for p in pubs {
        tally.add(p.await.context("publisher task")??);
    }
    progress.finish_and_clear();
    tally.report_into(&mut report, started.elapsed());
    let cpu1 = crate::bench::node_usage(&plan.relays).await.ok();
    // Not measured across a restart (a fault run): the node's counter began again.
    if let Some(cpu) = cpu0.zip(cpu1).and_then(|(a, b)| b.cpu_since(&a)) {
        report.details.insert(
            "node_cpu_us_per_event".into(),
            crate::bench::per(cpu, tally.acked.len()).into(),
        );
    }
    let ok_samples = tally.ok_samples().clone();
    let tally_ok = &ok_samples;
    let expect = expect_survivors(&finish, &tally, plan.grace);
    let (mut req, mut delivery) = (Samples::default(), Samples::default());
    let mut refused = 0;
    for r in readers {
        let r = r.await.context("reader task")??;
        refused += r.refused_queries;
        req.extend(r.req_latency.clone());
        delivery.extend(r.delivery_latency.clone());
        live_verdict(&mut report, &r, &expect, &sent_at);
    }
    report.req_latency = req.summary();
    report.delivery_latency = delivery.summary();
    report.missing_on_relay = check::missing_per_relay(&plan.relays, &expect, plan.grace).await?;
    let _ = stop_watching.send(true);
    let seen = watcher.await.context("outage watcher")?;
    crate::outage::report_phases(
        &mut report,
        seen,
        started,
        tally_ok,
        &req,
        plan.expect_outage,
    );
    if plan.read_seconds > 0 && plan.readers > 0 {
        // Reads alone: what a client sees once the write burst is over.
        let authors = generator.top_authors(plan.authors.min(50));
        let tasks: Vec<_> = (0..plan.readers)
            .map(|j| {
                let url = plan.relays[j % plan.relays.len()].clone();
                let span = Duration::from_secs(plan.read_seconds);
                let seed = plan.seed + j as u64;
                tokio::spawn(workers::feed_queries(url, authors.clone(), span, 40, seed))
            })
            .collect();
        let mut idle = Samples::default();
        for t in tasks {
            idle.extend(t.await.context("reader task")??);
        }
        report.req_latency_reads_only = idle.summary();
    }
    report
        .details
        .insert("publishers".into(), plan.publishers.into());
    report.details.insert("readers".into(), plan.readers.into());
    report
        .details
        .insert("refused_queries".into(), refused.into());
    report.conclude();
    Ok(report)
}

/// Tells the subscribers which events must reach them (what survives of the tally's
/// acknowledged events) and how long they may wait; returns those.
pub fn expect_survivors(
    finish: &watch::Sender<Finish>,
    tally: &Tally,
    grace: Duration,
) -> Arc<Vec<check::Survivor>> {
    let expect = Arc::new(check::must_survive(&tally.acked, &tally.unanswered));
    let _ = finish.send(Finish {
        expect: Some(expect.clone()),
        deadline: Some(Instant::now() + grace),
    });
    expect
}

/// Records what a live subscriber missed or got twice. Events sent while it had no
/// live subscription (a lost connection, opened again) are excused, and counted.
pub fn live_verdict(
    report: &mut Report,
    r: &Received,
    expect: &[check::Survivor],
    sent_at: &SentAt,
) {
    let sent = sent_at.lock().unwrap_or_else(|p| p.into_inner());
    let in_gap = |id: &String| {
        sent.get(id)
            .is_some_and(|t| r.gaps.iter().any(|(a, b)| a <= t && t <= b))
    };
    let mut excused = 0usize;
    let mut missing: Vec<String> = expect
        .iter()
        .filter(|s| !s.held(|id| r.delivered.contains_key(id)))
        .map(|s| &s.id)
        .filter(|id| {
            let gap = in_gap(id);
            excused += usize::from(gap);
            !gap
        })
        .cloned()
        .collect();
    if !r.gaps.is_empty() {
        let d = &mut report.details;
        let prev = d.get("live_excused").and_then(|v| v.as_u64()).unwrap_or(0);
        d.insert("live_excused".into(), (prev + excused as u64).into());
        let prev = d
            .get("subscriber_reconnects")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        d.insert(
            "subscriber_reconnects".into(),
            (prev + r.gaps.len() as u64).into(),
        );
    }
    missing.sort();
    let mut dup: Vec<String> = r
        .delivered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    dup.sort();
    report.missing_live.insert(r.name.clone(), missing);
    report.duplicates_live.insert(r.name.clone(), dup);
}
