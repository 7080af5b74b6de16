//! `fanout`: many idle subscriptions while events arrive at a steady rate, as a relay
//! with thousands of followers' clients sees it. Subscriptions each follow `follows` of
//! `authors` authors (`{"authors": [...], "kinds": [1], "since": start}`), or, for a
//! share of them, one of 20 hashtags (`{"#t": [...], "since": start}`); they are spread
//! over `connections` connections and the relays. One publisher per relay sends signed
//! notes at `rate` per second in all, on schedule: it reads the `OK`s as they come but
//! never waits for one before the next note, as a relay's many independent clients do.
//!
//! Figures: deliveries made and per second, delivery latency (publish → arrival), and
//! the nodes' CPU time per delivery. Every subscription must receive exactly the events
//! that match it, each once: anything missing or repeated is a violation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventstore::{Event, EventBuilder, Keys, Kind, Timestamp};
use serde_json::json;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::bench::{Usage, node_usage, per};
use crate::events::Rng;
use crate::net::Conn;
use crate::report::Report;
use crate::stats::summary_of_micros;
use crate::stress::bar;

/// The tester must keep up with the node: its lookups per delivery use a fast hasher.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Distinct hashtags the tag subscriptions and the events spread over.
const HASHTAGS: usize = 20;

#[derive(Debug, Clone)]
pub struct Plan {
    pub relays: Vec<String>,
    pub connections: usize,
    pub subscriptions: usize,
    pub authors: usize,
    pub follows: usize,
    /// Percent of subscriptions that follow a hashtag instead of authors.
    pub hashtag_percent: usize,
    /// Events per second, in all.
    pub rate: u32,
    pub seconds: u64,
    pub seed: u64,
    pub grace: Duration,
    pub quiet: bool,
}

/// What one subscription follows.
#[derive(Debug, Clone)]
enum Follow {
    Authors(Vec<usize>),
    Hashtag(usize),
}

/// One published event: its author and hashtag, for the expected deliveries.
#[derive(Debug)]
struct Sent {
    author: usize,
    hashtag: usize,
}

/// Shared by the connections: event id → index, and when each was sent (micros since
/// the run's start; 0 = not yet).
#[derive(Debug)]
struct Clock {
    start: Instant,
    index: Map<String, u32>,
    sent: Vec<std::sync::atomic::AtomicU64>,
    /// Deliveries received so far, by every connection.
    delivered: std::sync::atomic::AtomicUsize,
}

/// What one connection received: per subscription (by its global index), the indices
/// of the events.
#[derive(Debug, Default)]
struct Got {
    per_sub: Map<usize, Vec<u32>>,
    latency_us: Vec<u32>,
}

pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let run = format!("{}-{}", plan.seed, std::process::id());
    let authors = plan.authors.max(1);
    let keys: Vec<Keys> = (0..authors)
        .map(|i| Keys::from_seed(plan.seed ^ 0xFA40_u64.wrapping_mul(i as u64 + 7)))
        .collect();
    let hashtag = |k: usize| format!("layer2-fanout-{run}-{k}");
    let mut rng = Rng::new(plan.seed);
    let start_ts = Timestamp::now();

    // The subscriptions, and for each author and hashtag who follows it.
    let follows: Vec<Follow> = (0..plan.subscriptions)
        .map(|_| {
            if rng.below(100) < plan.hashtag_percent {
                Follow::Hashtag(rng.below(HASHTAGS))
            } else {
                let mut a: Vec<usize> = (0..plan.follows.max(1))
                    .map(|_| rng.below(authors))
                    .collect();
                a.sort_unstable();
                a.dedup();
                Follow::Authors(a)
            }
        })
        .collect();

    // The events, signed before the clock starts.
    let total = (u64::from(plan.rate.max(1)) * plan.seconds.max(1)) as usize;
    let signing = bar(Some(total as u64), plan.quiet, "signing");
    let mut events: Vec<Event> = Vec::with_capacity(total);
    let mut sent_meta: Vec<Sent> = Vec::with_capacity(total);
    for i in 0..total {
        let (author, tag) = (rng.below(authors), rng.below(HASHTAGS));
        let e = EventBuilder::new(Kind(1), format!("fan-out note {i} of run {run}"))
            .tags(vec![vec!["t".into(), hashtag(tag)]])
            .created_at(start_ts)
            .sign(&keys[author]);
        events.push(e);
        sent_meta.push(Sent {
            author,
            hashtag: tag,
        });
        signing.inc(1);
    }
    signing.finish_and_clear();
    let clock = Arc::new(Clock {
        start: Instant::now(),
        index: events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id().to_string(), i as u32))
            .collect(),
        sent: (0..total)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        delivered: Default::default(),
    });

    // Open the connections (a hundred handshakes at a time) and their subscriptions.
    let connections = plan.connections.clamp(1, plan.subscriptions.max(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(100));
    let progress = bar(Some(connections as u64), plan.quiet, "subscribing");
    let mut tasks = Vec::with_capacity(connections);
    let mut readies = Vec::with_capacity(connections);
    for c in 0..connections {
        let filters: Vec<(usize, serde_json::Value)> = (c..plan.subscriptions)
            .step_by(connections)
            .map(|s| {
                let f = match &follows[s] {
                    Follow::Authors(a) => json!({
                        "authors": a.iter().map(|&i| keys[i].public_key().to_string()).collect::<Vec<_>>(),
                        "kinds": [1],
                        "since": start_ts.0,
                    }),
                    Follow::Hashtag(k) => json!({"#t": [hashtag(*k)], "since": start_ts.0}),
                };
                (s, f)
            })
            .collect();
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        tasks.push(tokio::spawn(hold(
            plan.relays[c % plan.relays.len()].clone(),
            filters,
            opening.clone(),
            ready_tx,
            clock.clone(),
            stop_rx.clone(),
            progress.clone(),
        )));
    }
    for (i, r) in readies.into_iter().enumerate() {
        if r.await.is_err() {
            let t = tasks.swap_remove(i);
            t.await.context("subscriber task")??;
            anyhow::bail!("a subscriber connection stopped before subscribing");
        }
    }
    progress.finish_and_clear();

    // Publish at the rate, one publisher per relay.
    let cpu0 = node_usage(&plan.relays).await?.cpu;
    let publishing = bar(Some(total as u64), plan.quiet, "publishing");
    let began = Instant::now();
    let per_relay = plan.relays.len();
    let mut pubs = Vec::new();
    let mut shares: Vec<Vec<(u32, Event)>> = (0..per_relay).map(|_| Vec::new()).collect();
    for (i, e) in events.into_iter().enumerate() {
        shares[i % per_relay].push((i as u32, e));
    }
    let gap = Duration::from_secs_f64(per_relay as f64 / f64::from(plan.rate.max(1)));
    for (r, share) in shares.into_iter().enumerate() {
        pubs.push(tokio::spawn(publish_paced(
            plan.relays[r].clone(),
            share,
            gap,
            clock.clone(),
            publishing.clone(),
        )));
    }
    let mut refused = 0usize;
    for p in pubs {
        refused += p.await.context("publisher task")??;
    }
    let published_for = began.elapsed();
    publishing.finish_and_clear();

    // Expected deliveries, then wait for them (up to the grace period).
    let mut by_author: Vec<Vec<usize>> = vec![Vec::new(); authors];
    let mut by_tag: Vec<Vec<usize>> = vec![Vec::new(); HASHTAGS];
    for (s, f) in follows.iter().enumerate() {
        match f {
            Follow::Authors(a) => a.iter().for_each(|&i| by_author[i].push(s)),
            Follow::Hashtag(k) => by_tag[*k].push(s),
        }
    }
    let mut expected: Vec<Vec<u32>> = vec![Vec::new(); plan.subscriptions];
    for (i, m) in sent_meta.iter().enumerate() {
        for &s in by_author[m.author].iter().chain(&by_tag[m.hashtag]) {
            expected[s].push(i as u32);
        }
    }
    let want: usize = expected.iter().map(Vec::len).sum();
    let deadline = Instant::now() + plan.grace;
    while clock.delivered.load(std::sync::atomic::Ordering::Relaxed) < want
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deliveries end at the last arrival (or the grace period).
    let delivered_for = began.elapsed();
    let Usage { cpu: cpu1, rss, .. } = node_usage(&plan.relays).await?;
    let _ = stop_tx.send(true);
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); plan.subscriptions];
    let mut latency = Vec::new();
    for t in tasks {
        let g = t.await.context("subscriber task")??;
        for (s, v) in g.per_sub {
            got[s] = v;
        }
        latency.extend(g.latency_us);
    }
    let delivered = latency.len();

    let mut report = Report {
        mode: "fanout".into(),
        relays: plan.relays.clone(),
        seconds: published_for.as_secs_f64(),
        events_sent: total,
        events_acked: total - refused,
        events_per_second: (total - refused) as f64 / published_for.as_secs_f64().max(1e-9),
        delivery_latency: summary_of_micros(latency),
        ..Report::default()
    };
    let (mut missing, mut repeated) = (0usize, 0usize);
    for (s, mut v) in got.into_iter().enumerate() {
        v.sort_unstable();
        let before = v.len();
        v.dedup();
        repeated += before - v.len();
        let exp = &expected[s];
        missing += exp.iter().filter(|i| v.binary_search(i).is_err()).count();
    }
    let d = &mut report.details;
    d.insert("subscriptions".into(), plan.subscriptions.into());
    d.insert("connections".into(), connections.into());
    d.insert("deliveries_expected".into(), want.into());
    d.insert("deliveries_made".into(), delivered.into());
    d.insert(
        "deliveries_per_second".into(),
        ((delivered as f64 / delivered_for.as_secs_f64().max(1e-9)).round()).into(),
    );
    d.insert(
        "node_cpu_us_per_delivery".into(),
        (((cpu1 - cpu0) * 1e6 / delivered.max(1) as f64 * 100.0).round() / 100.0).into(),
    );
    d.insert(
        "node_cpu_us_per_event".into(),
        per(cpu1 - cpu0, total - refused).into(),
    );
    d.insert("node_rss_mib".into(), ((rss / 1048576.0).round()).into());
    if refused > 0 {
        report
            .violations
            .push(format!("{refused} events refused by the relay"));
    }
    if missing > 0 {
        report.violations.push(format!(
            "{missing} of {want} deliveries never arrived (within {:?} of the last event)",
            plan.grace
        ));
    }
    if repeated > 0 {
        report
            .violations
            .push(format!("{repeated} deliveries arrived more than once"));
    }
    report.conclude();
    Ok(report)
}

/// Sends `events` one per `gap` whatever the answers (an open loop: the many clients
/// of a busy relay do not wait for each other's `OK`s), reading the `OK`s as they come;
/// returns how many were refused once every one is answered.
async fn publish_paced(
    url: String,
    events: Vec<(u32, Event)>,
    gap: Duration,
    clock: Arc<Clock>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<usize> {
    const ANSWER_WITHIN: Duration = Duration::from_secs(30);
    let mut conn = Conn::open(&url).await?;
    let mut next = tokio::time::Instant::now();
    let (mut refused, mut awaiting) = (0, 0usize);
    let mut events = events.into_iter().peekable();
    let mut heard = Instant::now();
    while events.peek().is_some() || awaiting > 0 {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(next), if events.peek().is_some() => {
                let Some((i, e)) = events.next() else { continue };
                next += gap;
                if awaiting == 0 {
                    heard = Instant::now();
                }
                let at = clock.start.elapsed().as_micros() as u64;
                clock.sent[i as usize].store(at.max(1), std::sync::atomic::Ordering::Relaxed);
                conn.send(format!("[\"EVENT\",{}]", e.as_json())).await?;
                awaiting += 1;
            }
            v = conn.recv(Duration::from_millis(100)) => {
                match v? {
                    Some(v) if v[0] == "OK" => {
                        if v[2] != true {
                            refused += 1;
                        }
                        awaiting = awaiting.saturating_sub(1);
                        heard = Instant::now();
                        bar.inc(1);
                    }
                    _ => {}
                }
                if awaiting > 0 && heard.elapsed() > ANSWER_WITHIN {
                    anyhow::bail!("{url}: {awaiting} EVENTs without an OK for {ANSWER_WITHIN:?}");
                }
            }
        }
    }
    Ok(refused)
}

/// One subscriber connection: opens `filters` as subscriptions named by their index,
/// signals `ready` once every one has its `EOSE`, then records deliveries until `stop`.
async fn hold(
    url: String,
    filters: Vec<(usize, serde_json::Value)>,
    opening: Arc<Semaphore>,
    ready: oneshot::Sender<()>,
    clock: Arc<Clock>,
    mut stop: watch::Receiver<bool>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Got> {
    let mut conn = {
        let _permit = opening.acquire().await?;
        let mut conn = Conn::open(&url).await?;
        for (s, f) in &filters {
            conn.feed(json!(["REQ", s.to_string(), f]).to_string())
                .await?;
        }
        conn.flush().await?;
        let mut eose = 0;
        while eose < filters.len() {
            let v = conn
                .recv(Duration::from_secs(30))
                .await?
                .with_context(|| format!("{url}: no EOSE within 30 s"))?;
            match v[0].as_str() {
                Some("EOSE") => eose += 1,
                Some("CLOSED") => anyhow::bail!("{url}: subscription refused: {}", v[2]),
                _ => {}
            }
        }
        conn
    };
    bar.inc(1);
    let _ = ready.send(());
    let mut got = Got {
        per_sub: filters.iter().map(|(s, _)| (*s, Vec::new())).collect(),
        latency_us: Vec::new(),
    };
    loop {
        let text = tokio::select! {
            t = conn.next_text() => t?,
            _ = stop.changed() => break,
        };
        let Some((sub, id)) = event_ids(&text) else {
            continue;
        };
        let (Ok(sub), Some(&i)) = (sub.parse::<usize>(), clock.index.get(id)) else {
            continue;
        };
        let now = clock.start.elapsed().as_micros() as u64;
        let sent = clock.sent[i as usize].load(std::sync::atomic::Ordering::Relaxed);
        if let Some(v) = got.per_sub.get_mut(&sub) {
            clock
                .delivered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            v.push(i);
            got.latency_us
                .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        }
    }
    Ok(got)
}

/// The subscription id and event id of an `["EVENT","<sub>",{"id":"<hex>",...` message,
/// without parsing the rest (the tester must keep up with hundreds of thousands a
/// second). The relay writes stored events with `id` first.
fn event_ids(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("[\"EVENT\",\"")?;
    let (sub, rest) = rest.split_once('"')?;
    let at = rest.find("\"id\":\"")? + 6;
    Some((sub, rest.get(at..at + 64)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_the_front_of_an_event_message() {
        let id = "ab".repeat(32);
        let msg = format!("[\"EVENT\",\"17\",{{\"id\":\"{id}\",\"pubkey\":\"x\"}}]");
        assert_eq!(event_ids(&msg), Some(("17", id.as_str())));
        assert_eq!(event_ids("[\"EOSE\",\"17\"]"), None);
        assert_eq!(event_ids("[\"EVENT\",\"1\",{\"id\":\"short\"}]"), None);
    }
}
