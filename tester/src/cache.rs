//! `cache`: against one node with a small L1 budget. Writes several times the budget,
//! watches `/metrics` to check L1 stays within it, fetches the oldest events (long
//! evicted: they must come back, from L2), fetches them again (now L1 hits), and
//! reports the L1 hit ratio of a feed-like read phase.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::check;
use crate::events::{Generator, Rng, Zipf};
use crate::net::{Conn, metrics};
use crate::report::Report;
use crate::stats::Samples;
use crate::stress::bar;
use crate::workers::{self, SentAt};

#[derive(Debug, Clone)]
pub struct Plan {
    pub relay: String,
    pub l1_max_bytes: u64,
    pub multiple: f64,
    pub event_bytes: usize,
    pub publishers: usize,
    pub sample: usize,
    pub reads: usize,
    pub seed: u64,
    pub grace: Duration,
    pub quiet: bool,
}

fn get(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let url = plan.relay.clone();
    let mut report = Report {
        mode: "cache".into(),
        relays: vec![url.clone()],
        ..Report::default()
    };
    let before = metrics(&url)
        .await
        .context("the cache mode reads the node's /metrics")?;
    let node_budget = get(&before, "layer2_l1_budget_bytes") as u64;
    if node_budget != plan.l1_max_bytes {
        report.violations.push(format!(
            "the node's L1 budget is {node_budget} bytes, not the --l1-max-bytes {} given",
            plan.l1_max_bytes
        ));
    }
    let budget = plan.l1_max_bytes;
    // Each event costs its JSON (content plus ~400 bytes of envelope) and its index keys.
    let n = ((budget as f64 * plan.multiple) / (plan.event_bytes as f64 + 400.0)).ceil() as usize;
    let tag = format!("layer2-cache-{}-{}", plan.seed, std::process::id());
    let mut generator = Generator::new(50, plan.seed, 0, tag);
    generator.content_bytes = Some(plan.event_bytes);
    // Spread over the last n seconds, so the window can evict by age.
    generator.backdate = Some(eventstore::Timestamp::now().0.saturating_sub(n as u64));
    let signing = bar(Some(n as u64), plan.quiet, "signing");
    let mut per: Vec<Vec<_>> = (0..plan.publishers.max(1)).map(|_| Vec::new()).collect();
    let len = per.len();
    for i in 0..n {
        per[i % len].push(generator.next());
        signing.inc(1);
    }
    signing.finish_and_clear();

    // Watch L1's bytes while writing.
    let peak = Arc::new(Mutex::new(0f64));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, stop, url) = (peak.clone(), stop.clone(), url.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = metrics(&url).await {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(get(&m, "layer2_l1_bytes"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let progress = bar(Some(n as u64), plan.quiet, "writing");
    let sent_at: SentAt = Arc::new(Mutex::new(Default::default()));
    let started = Instant::now();
    let sources = per.into_iter().map(|evs| (url.clone(), evs)).collect();
    let tally = workers::publish_all(sources, 32, &sent_at, &progress).await?;
    tally.report_into(&mut report, started.elapsed());
    let (acked, unanswered) = (tally.acked, tally.unanswered);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let after_write = metrics(&url).await?;
    let peak = peak
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .max(get(&after_write, "layer2_l1_bytes"));
    let written_bytes: usize = acked.iter().map(|e| e.json_len()).sum();
    let evicted =
        get(&after_write, "layer2_evictions_total") - get(&before, "layer2_evictions_total");
    report
        .details
        .insert("written_bytes".into(), json!(written_bytes));
    report
        .details
        .insert("l1_budget_bytes".into(), json!(budget));
    report.details.insert("l1_peak_bytes".into(), json!(peak));
    report.details.insert("evictions".into(), json!(evicted));
    if peak > budget as f64 {
        report.violations.push(format!(
            "L1 held {peak} bytes, over its {budget}-byte budget"
        ));
    }
    if evicted <= 0.0 {
        report
            .violations
            .push("no event was evicted: the writes did not exceed the budget".into());
    }

    // The oldest events are long evicted: they must come back, from L2.
    // At most a tenth of what L1 can hold, so promoting them does not evict them again.
    let fits = (budget / (plan.event_bytes as u64 + 400) / 10).max(1) as usize;
    let oldest: Vec<String> = {
        let mut a: Vec<_> = acked.iter().collect();
        a.sort_by_key(|e| e.created_at());
        a.iter()
            .take(plan.sample.min(fits))
            .map(|e| e.id().to_string())
            .collect()
    };
    let mut conn = Conn::open(&url).await?;
    let (first, m1) = fetch_ids(&mut conn, &url, &oldest, "first").await?;
    let l2_first =
        get(&m1, "layer2_l2_queries_total") - get(&after_write, "layer2_l2_queries_total");
    report
        .details
        .insert("evicted_fetched".into(), json!(oldest.len()));
    report
        .details
        .insert("evicted_returned".into(), json!(first));
    report
        .details
        .insert("first_fetch_l2_queries".into(), json!(l2_first));
    if first < oldest.len() {
        report.violations.push(format!(
            "only {first} of {} evicted events came back",
            oldest.len()
        ));
    }
    if l2_first < 1.0 {
        report
            .violations
            .push("the first fetch of evicted events did not ask L2 (were they evicted?)".into());
    }
    // Promotion is asynchronous: the second fetch must become an L1 hit shortly.
    let mut second_ok = false;
    let mut last = m1;
    for round in 0..50 {
        let (got, m) = fetch_ids(&mut conn, &url, &oldest, &format!("again{round}")).await?;
        let l2 = get(&m, "layer2_l2_queries_total") - get(&last, "layer2_l2_queries_total");
        let hits = get(&m, "layer2_l1_hits_total") - get(&last, "layer2_l1_hits_total");
        last = m;
        if got == oldest.len() && l2 == 0.0 && hits >= 1.0 {
            second_ok = true;
            report
                .details
                .insert("second_fetch_rounds".into(), json!(round + 1));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !second_ok {
        report
            .violations
            .push("fetching the evicted events again never became an L1 hit".into());
    }

    // A profile read below the window: the first from L2, and once what it proved is
    // in L1 (a completeness floor), the same read again from L1 alone.
    if let Some(oldest) = acked.iter().min_by_key(|e| e.created_at()) {
        repeated_profile(&mut conn, &url, &oldest.pubkey().to_hex(), &mut report).await?;
    }

    // A feed-like read phase: recent events by a Zipf mix of authors, and ids.
    let m_before = metrics(&url).await?;
    let authors = generator.top_authors(50);
    let zipf = Zipf::new(authors.len());
    let mut rng = Rng::new(plan.seed);
    let mut req = Samples::default();
    for i in 0..plan.reads {
        let a = &authors[zipf.sample(&mut rng)];
        let t = Instant::now();
        conn.fetch(
            &format!("feed{i}"),
            json!({"authors": [a], "kinds": [1], "limit": 20}),
        )
        .await?;
        req.push(t.elapsed());
    }
    let m_after = metrics(&url).await?;
    let hits = get(&m_after, "layer2_l1_hits_total") - get(&m_before, "layer2_l1_hits_total");
    let l2 = get(&m_after, "layer2_l2_queries_total") - get(&m_before, "layer2_l2_queries_total");
    report.req_latency = req.summary();
    let ratio = if hits + l2 > 0.0 {
        hits / (hits + l2)
    } else {
        0.0
    };
    report.details.insert(
        "l1_hit_ratio".into(),
        json!((ratio * 1000.0).round() / 1000.0),
    );

    let m_end = metrics(&url).await?;
    report
        .details
        .insert("l1_hit_ratio_by_shape".into(), by_shape(&before, &m_end));

    let survivors = check::must_survive(&acked, &unanswered);
    report.missing_on_relay =
        check::missing_per_relay(std::slice::from_ref(&url), &survivors, plan.grace).await?;
    report.conclude();
    Ok(report)
}

/// Reads one author's events below the window twice: the first read must ask L2, the
/// second (once the promotion landed) must not. Records a violation otherwise.
async fn repeated_profile(
    conn: &mut Conn,
    url: &str,
    author: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let m0 = metrics(url).await?;
    let w = get(&m0, "layer2_l1_window") as u64;
    if w == 0 {
        report
            .violations
            .push("L1's window never rose: nothing lies below it to read".into());
        return Ok(());
    }
    let f = json!({"authors": [author], "until": w - 1, "limit": 20});
    let first = conn.fetch("profile0", f.clone()).await?;
    let m1 = metrics(url).await?;
    let l2_first = get(&m1, "layer2_l2_queries_total") - get(&m0, "layer2_l2_queries_total");
    report
        .details
        .insert("profile_first_read_l2_queries".into(), json!(l2_first));
    if l2_first < 1.0 || first.is_empty() {
        report.violations.push(format!(
            "a profile read below the window returned {} events and asked L2 {l2_first} times",
            first.len()
        ));
        return Ok(());
    }
    let mut last = m1;
    for round in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = conn
            .fetch(&format!("profile{}", round + 1), f.clone())
            .await?;
        let m = metrics(url).await?;
        let l2 = get(&m, "layer2_l2_queries_total") - get(&last, "layer2_l2_queries_total");
        last = m;
        let same = again
            .iter()
            .map(|e| &e["id"])
            .eq(first.iter().map(|e| &e["id"]));
        if !same {
            report.violations.push(format!(
                "a repeated profile read returned {} events, the first {}",
                again.len(),
                first.len()
            ));
            return Ok(());
        }
        if l2 == 0.0 {
            report
                .details
                .insert("profile_l1_after_rounds".into(), json!(round + 1));
            return Ok(());
        }
    }
    report
        .violations
        .push("a repeated profile read below the window never became an L1 hit".into());
    Ok(())
}

/// The share of queries answered by L1 alone, per query shape, between two readings
/// of `/metrics` (`layer2_query_routes_total{shape,route}`).
fn by_shape(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for shape in ["ids", "author", "author_kind", "tag", "kind", "other"] {
        let n = |route: &str| {
            let k = format!("layer2_query_routes_total{{shape=\"{shape}\",route=\"{route}\"}}");
            get(after, &k) - get(before, &k)
        };
        let (l1, l2) = (n("l1"), n("l2"));
        if l1 + l2 > 0.0 {
            out.insert(
                shape.into(),
                json!({"l1": l1, "l2": l2, "ratio": (l1 / (l1 + l2) * 1000.0).round() / 1000.0}),
            );
        }
    }
    serde_json::Value::Object(out)
}

/// Fetches `ids` by id (in batches); returns how many came back and the metrics after.
async fn fetch_ids(
    conn: &mut Conn,
    url: &str,
    ids: &[String],
    name: &str,
) -> anyhow::Result<(usize, std::collections::HashMap<String, f64>)> {
    let mut got = 0;
    for (i, chunk) in ids.chunks(250).enumerate() {
        got += conn
            .fetch(
                &format!("{name}{i}"),
                json!({"ids": chunk, "limit": chunk.len()}),
            )
            .await?
            .len();
    }
    Ok((got, metrics(url).await?))
}
