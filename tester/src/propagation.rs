//! `propagation`: a live subscriber on every node; events published on each node in
//! turn; per-pair delivery latency, and any event missing or delivered twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::watch;

use crate::check;
use crate::events::Generator;
use crate::report::Report;
use crate::stats::Samples;
use crate::stress::{bar, expect_survivors, live_verdict, start_subscribers};
use crate::workers::{self, Finish, SentAt, Source, Tally};

#[derive(Debug, Clone)]
pub struct Plan {
    pub relays: Vec<String>,
    /// Events published on each node.
    pub events: usize,
    pub seed: u64,
    pub grace: Duration,
    pub quiet: bool,
}

pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let tag = format!("layer2-propagation-{}-{}", plan.seed, std::process::id());
    let sent_at: SentAt = Arc::new(Mutex::new(Default::default()));
    let (finish, _) = watch::channel(Finish::default());
    let subs = plan.relays.iter().map(|u| (u.clone(), u.clone())).collect();
    let subscribers = start_subscribers(subs, &tag, None, &sent_at, &finish).await?;

    let mut report = Report {
        mode: "propagation".into(),
        relays: plan.relays.clone(),
        ..Report::default()
    };
    let progress = bar(
        Some((plan.events * plan.relays.len()) as u64),
        plan.quiet,
        "publishing",
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    // Which node each event was published on.
    let mut origin: BTreeMap<String, usize> = BTreeMap::new();
    for (i, url) in plan.relays.iter().enumerate() {
        let mut generator = Generator::new(20, plan.seed, i as u64 + 1, tag.clone());
        // Regular notes only: every one must reach every node.
        let events: Vec<_> = (0..plan.events)
            .map(|_| {
                let mut e = generator.next();
                while e.kind().0 != 1 {
                    e = generator.next();
                }
                e
            })
            .collect();
        // One at a time: the latency measured is the cluster's, not a queue's.
        let p = workers::publish(
            url.clone(),
            Source::Ready(events),
            1,
            sent_at.clone(),
            progress.clone(),
        )
        .await?;
        for e in &p.acked {
            origin.insert(e.id().to_string(), i);
        }
        tally.add(p);
    }
    progress.finish_and_clear();
    tally.report_into(&mut report, started.elapsed());
    let expect = expect_survivors(&finish, &tally, plan.grace);
    let sent = sent_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut pairs: BTreeMap<String, Samples> = BTreeMap::new();
    let mut all = Samples::default();
    for (j, s) in subscribers.into_iter().enumerate() {
        let r = s.await.context("subscriber task")??;
        for (id, at) in &r.arrived {
            if let (Some(i), Some(t0)) = (origin.get(id), sent.get(id)) {
                let d = at.duration_since(*t0);
                pairs
                    .entry(format!("{} -> {}", plan.relays[*i], plan.relays[j]))
                    .or_default()
                    .push(d);
                all.push(d);
            }
        }
        live_verdict(&mut report, &r, &expect, &sent_at);
    }
    report.delivery_latency = all.summary();
    for (pair, s) in pairs {
        report.details.insert(pair, json!(s.summary()));
    }
    report.missing_on_relay = check::missing_per_relay(&plan.relays, &expect, plan.grace).await?;
    report.conclude();
    Ok(report)
}
