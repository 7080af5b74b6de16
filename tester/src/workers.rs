//! The two kinds of client the modes are built from: publishers (pipelined EVENTs,
//! timing each `OK`) and subscribers (a live subscription on the run's tag, optionally
//! running feed-like REQs back to back and timing each to `EOSE`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use eventstore::Event;
use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::watch;

use crate::events::Rng;
use crate::net::Conn;
use crate::stats::Samples;

/// When each event was sent, for delivery latency.
pub type SentAt = Arc<Mutex<HashMap<String, Instant>>>;

/// What one publisher saw.
#[derive(Debug, Default)]
pub struct Published {
    pub acked: Vec<Event>,
    pub rejected: HashMap<String, usize>,
    pub ok_latency: Samples,
    pub sent: usize,
    /// Sent but never answered: the connection was lost first. Their fate is unknown;
    /// the loss check needs them (one may have replaced an acknowledged version).
    pub unanswered: Vec<Event>,
    /// Connections opened again after one was lost.
    pub reconnects: usize,
}

/// What all publishers of a run saw together.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: Vec<Event>,
    ok_latency: Samples,
    sent: usize,
    rejected: HashMap<String, usize>,
    pub unanswered: Vec<Event>,
    reconnects: usize,
}

impl Tally {
    pub fn add(&mut self, p: Published) {
        self.sent += p.sent;
        self.unanswered.extend(p.unanswered);
        self.reconnects += p.reconnects;
        self.acked.extend(p.acked);
        self.ok_latency.extend(p.ok_latency);
        for (k, v) in p.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
    }

    /// The OK latencies, each with when it ended.
    pub fn ok_samples(&self) -> &Samples {
        &self.ok_latency
    }

    /// Writes the publishing figures of a run that took `elapsed` into `r`.
    pub fn report_into(&self, r: &mut crate::report::Report, elapsed: Duration) {
        r.events_sent += self.sent;
        if self.reconnects > 0 || !self.unanswered.is_empty() {
            r.details
                .insert("publisher_reconnects".into(), self.reconnects.into());
            r.details
                .insert("unanswered_events".into(), self.unanswered.len().into());
        }
        for (k, v) in &self.rejected {
            *r.rejected.entry(k.clone()).or_default() += v;
        }
        r.seconds = elapsed.as_secs_f64();
        r.events_acked = self.acked.len();
        r.events_per_second = self.acked.len() as f64 / r.seconds.max(1e-9);
        r.ok_latency = self.ok_latency.summary();
    }
}

/// Where a publisher's events come from.
pub enum Source {
    /// Signed in advance.
    Ready(Vec<Event>),
    /// Made on demand until the deadline.
    Until(Instant, Box<dyn FnMut() -> Event + Send>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source")
    }
}

/// Publishes everything from `source` on `url`, keeping up to `window` EVENTs awaiting
/// their `OK`. With [`crate::net::reconnecting`] on, a lost connection is opened again
/// (the events awaiting an `OK` then are counted as unanswered: their fate is unknown,
/// and the loss check judges only acknowledged events).
pub async fn publish(
    url: String,
    mut source: Source,
    window: usize,
    sent_at: SentAt,
    bar: ProgressBar,
) -> anyhow::Result<Published> {
    let mut conn = Conn::open(&url).await?;
    let mut out = Published::default();
    let mut waiting: HashMap<String, (Instant, Event)> = HashMap::new();
    let mut ready = match &mut source {
        Source::Ready(v) => std::mem::take(v).into_iter(),
        Source::Until(..) => Vec::new().into_iter(),
    };
    let mut exhausted = false;
    loop {
        match publish_step(
            &mut conn,
            &mut source,
            &mut ready,
            &mut exhausted,
            &mut waiting,
            window,
            &sent_at,
            &mut out,
            &bar,
        )
        .await
        {
            Ok(Step::Done) => return Ok(out),
            Ok(Step::More) => {}
            // A relay that holds the connection open and answers nothing is a failure,
            // reconnecting or not.
            Ok(Step::Silent) => bail!("{url}: no OK for {} events within 30 s", waiting.len()),
            Err(e) if crate::net::reconnecting() => {
                out.unanswered.extend(waiting.drain().map(|(_, (_, e))| e));
                out.reconnects += 1;
                tracing_note(&url, &e);
                conn = Conn::reopen(&url).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn tracing_note(url: &str, e: &anyhow::Error) {
    eprintln!("tester: {url}: {e:#}; connecting again");
}

/// What one round of a publisher came to.
enum Step {
    /// Everything sent and answered.
    Done,
    More,
    /// No answer within 30 s on an open connection.
    Silent,
}

/// One round of a publisher: send what the window allows, then take one answer.
#[allow(clippy::too_many_arguments)]
async fn publish_step(
    conn: &mut Conn,
    source: &mut Source,
    ready: &mut std::vec::IntoIter<Event>,
    exhausted: &mut bool,
    waiting: &mut HashMap<String, (Instant, Event)>,
    window: usize,
    sent_at: &SentAt,
    out: &mut Published,
    bar: &ProgressBar,
) -> anyhow::Result<Step> {
    let mut queued = false;
    while !*exhausted && waiting.len() < window {
        let next = match source {
            Source::Ready(_) => ready.next(),
            Source::Until(deadline, make) => (Instant::now() < *deadline).then(make),
        };
        let Some(e) = next else {
            *exhausted = true;
            break;
        };
        let id = e.id().to_string();
        let now = Instant::now();
        sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), now);
        let msg = format!("[\"EVENT\",{}]", e.as_json());
        // Waiting before it is sent: a send that fails leaves it unanswered, counted.
        waiting.insert(id, (now, e));
        out.sent += 1;
        conn.feed(msg).await?;
        queued = true;
    }
    if queued {
        conn.flush().await?;
    }
    if waiting.is_empty() && *exhausted {
        return Ok(Step::Done);
    }
    let Some(v) = conn.recv(Duration::from_secs(30)).await? else {
        return Ok(Step::Silent);
    };
    if v[0] != "OK" {
        return Ok(Step::More);
    }
    let Some((sent, event)) = v[1].as_str().and_then(|id| waiting.remove(id)) else {
        return Ok(Step::More);
    };
    out.ok_latency.push(sent.elapsed());
    bar.inc(1);
    if v[2] == true {
        out.acked.push(event);
    } else {
        let msg = v[3].as_str().unwrap_or("");
        let prefix = msg.split(':').next().unwrap_or("").to_string();
        *out.rejected.entry(prefix).or_default() += 1;
    }
    Ok(Step::More)
}

/// Runs one publisher per `(url, events)` at once, each keeping `window` EVENTs
/// awaiting their `OK`, and adds up what they saw.
pub async fn publish_all(
    sources: Vec<(String, Vec<Event>)>,
    window: usize,
    sent_at: &SentAt,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let pubs: Vec<_> = sources
        .into_iter()
        .map(|(url, events)| {
            tokio::spawn(publish(
                url,
                Source::Ready(events),
                window,
                sent_at.clone(),
                bar.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for p in pubs {
        tally.add(
            p.await
                .map_err(|e| anyhow::anyhow!("publisher task: {e}"))??,
        );
    }
    bar.finish_and_clear();
    Ok(tally)
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Received {
    pub name: String,
    /// Live deliveries per event id.
    pub delivered: HashMap<String, u32>,
    pub delivery_latency: Samples,
    pub req_latency: Samples,
    /// When each event arrived, for per-pair latencies.
    pub arrived: HashMap<String, Instant>,
    /// Feed queries the relay refused.
    pub refused_queries: usize,
    /// Spans without a live subscription (the connection was lost and opened again):
    /// events sent within one need not have come live.
    pub gaps: Vec<(Instant, Instant)>,
    /// Ids delivered on the current connection's subscription.
    pub session: HashSet<String>,
}

/// When subscribers may stop: once they hold all of `expect`, or at `deadline`.
#[derive(Debug, Clone, Default)]
pub struct Finish {
    pub expect: Option<Arc<Vec<crate::check::Survivor>>>,
    pub deadline: Option<Instant>,
}

/// Subscribes on `url` to the run's tag, signals `ready` after `EOSE`, then records
/// live events until told to finish. With `queries`, also runs feed-like REQs for
/// `authors` one after another.
pub async fn subscribe(
    name: String,
    url: String,
    tag: String,
    queries: Option<Vec<String>>,
    sent_at: SentAt,
    ready: tokio::sync::oneshot::Sender<()>,
    mut finish: watch::Receiver<Finish>,
) -> anyhow::Result<Received> {
    let mut conn = open_live(&url, &tag).await?;
    let _ = ready.send(());
    let mut out = Received {
        name,
        ..Received::default()
    };
    let mut rng = Rng::new(out.name.len() as u64 * 7919);
    let mut query: Option<(String, Instant)> = None;
    let mut n = 0u64;
    // Queries are paced to stay inside the relay's default REQ rate limit (50/s).
    let gap = Duration::from_millis(50);
    let mut next_query = Instant::now();
    // How many of the expected events (in order) have been checked to be here: the
    // check resumes there. Scanning them all from the start on every message took
    // milliseconds a message over 100,000 expected events, just when the nodes deliver
    // their last backlog, and the reader fell so far behind that the relay closed its
    // subscription as slow.
    let mut expected_here = 0usize;
    // A lost connection, with reconnecting on: open it again and subscribe again. The
    // events published from a little before the loss until the new subscription's
    // EOSE may not come live; the verdict excuses them (`Received::gaps`).
    macro_rules! or_reconnect {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) if crate::net::reconnecting() => {
                    // Events sent a while before the loss may still have been on their
                    // way between nodes: they are excused too.
                    let lost = Instant::now() - Duration::from_secs(10);
                    tracing_note(&url, &e);
                    let mut tries = 0;
                    conn = loop {
                        let c = Conn::reopen(&url).await?;
                        match subscribe_live(c, &tag).await {
                            Ok(c) => break c,
                            Err(e) if tries < 20 => {
                                tries += 1;
                                tracing_note(&url, &e);
                            }
                            Err(e) => return Err(e.context("subscribing again failed 20 times")),
                        }
                    };
                    out.gaps.push((lost, Instant::now()));
                    out.session.clear();
                    query.take();
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
    }
    loop {
        if let (Some(authors), None) = (&queries, &query) {
            let f = finish.borrow().clone();
            if f.expect.is_none() && Instant::now() >= next_query {
                next_query = Instant::now() + gap;
                n += 1;
                let sub = format!("q{n}");
                let pick: Vec<&String> = (0..10)
                    .map(|_| &authors[rng.below(authors.len())])
                    .collect();
                or_reconnect!(
                    conn.send(
                        json!(["REQ", sub, {"authors": pick, "kinds": [1, 6], "limit": 20}])
                            .to_string(),
                    )
                    .await
                );
                query = Some((sub, Instant::now()));
            }
        }
        let f = finish.borrow().clone();
        if let Some(expect) = &f.expect {
            while expected_here < expect.len()
                && expect[expected_here].held(|id| out.delivered.contains_key(id))
            {
                expected_here += 1;
            }
            if query.is_none() && expected_here == expect.len() {
                // Everything expected is here; wait a moment for duplicates, then stop.
                loop {
                    let v = or_reconnect!(conn.recv(Duration::from_millis(300)).await);
                    let Some(v) = v else { break };
                    record(&mut out, &v, &sent_at);
                }
                return Ok(out);
            }
        }
        if f.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(out);
        }
        let wait = if query.is_none() && queries.is_some() {
            next_query
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            v = conn.recv(wait) => {
                let Some(v) = or_reconnect!(v) else { continue };
                if v[0] == "EOSE" {
                    if let Some((sub, started)) = &query {
                        if v[1] == sub.as_str() {
                            out.req_latency.push(started.elapsed());
                            let close = json!(["CLOSE", sub]).to_string();
                            query = None;
                            or_reconnect!(conn.send(close).await);
                        }
                    }
                } else if v[0] == "CLOSED" && v[1] == "live" {
                    bail!("{url}: the live subscription was closed: {v}");
                } else if v[0] == "CLOSED" {
                    // A refused query (rate limit): counted, and the next one waits.
                    out.refused_queries += 1;
                    query = None;
                    next_query = Instant::now() + gap * 4;
                } else {
                    record(&mut out, &v, &sent_at);
                }
            }
            _ = finish.changed() => {}
        }
    }
}

/// A connection to `url` with the live subscription on `tag` open (after its EOSE).
async fn open_live(url: &str, tag: &str) -> anyhow::Result<Conn> {
    subscribe_live(Conn::open(url).await?, tag).await
}

async fn subscribe_live(mut conn: Conn, tag: &str) -> anyhow::Result<Conn> {
    let url = conn.url.clone();
    conn.send(json!(["REQ", "live", {"#t": [tag], "limit": 0}]).to_string())
        .await?;
    loop {
        let v = conn.recv(Duration::from_secs(30)).await?;
        match v {
            Some(v) if v[0] == "EOSE" && v[1] == "live" => return Ok(conn),
            Some(v) if v[0] == "CLOSED" => bail!("{url}: live subscription refused: {v}"),
            Some(_) => {}
            None => bail!("{url}: no EOSE for the live subscription"),
        }
    }
}

fn record(out: &mut Received, v: &serde_json::Value, sent_at: &SentAt) {
    if v[0] != "EVENT" || v[1] != "live" {
        return;
    }
    let Some(id) = v[2]["id"].as_str() else {
        return;
    };
    let now = Instant::now();
    // A repeat within one subscription is the relay's fault; one on a subscription
    // opened again after a lost connection is not (a restarted node's poller delivers
    // what it catches up on, some of which the old subscription had): only the first
    // delivery in each session counts.
    let fresh_here = out.session.insert(id.to_string());
    let count = out.delivered.entry(id.to_string()).or_default();
    if fresh_here && *count > 0 {
        return;
    }
    *count += 1;
    if *count == 1 {
        out.arrived.insert(id.to_string(), now);
        if let Some(sent) = sent_at.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            out.delivery_latency.push(now.duration_since(*sent));
        }
    }
}

/// Feed-like REQs (ten Zipf-chosen authors, notes and reposts, `limit 20`) one after
/// another for `span`, paced at `per_second`; returns each one's time to `EOSE`.
///
/// `per_second == 0` is the closed loop: each REQ follows the previous one's `CLOSE` at
/// once, and one in four is a profile page (one author, `limit 20`) instead. A refusal
/// then ends the run with the reason (a rate limit would make the figures meaningless).
pub async fn feed_queries(
    url: String,
    authors: Vec<String>,
    span: Duration,
    per_second: u32,
    seed: u64,
) -> anyhow::Result<Samples> {
    let mut conn = Conn::open(&url).await?;
    let zipf = crate::events::Zipf::new(authors.len());
    let mut rng = Rng::new(seed);
    let gap = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
    let end = Instant::now() + span;
    let mut out = Samples::default();
    let mut n = 0u64;
    while Instant::now() < end {
        let next = gap.map(|g| Instant::now() + g);
        n += 1;
        let filter = if gap.is_none() && n % 4 == 0 {
            json!({"authors": [&authors[zipf.sample(&mut rng)]], "limit": 20})
        } else {
            let pick: Vec<&String> = (0..10).map(|_| &authors[zipf.sample(&mut rng)]).collect();
            json!({"authors": pick, "kinds": [1, 6], "limit": 20})
        };
        let started = Instant::now();
        match next {
            Some(next) => {
                conn.fetch(&format!("r{n}"), filter).await?;
                out.push(started.elapsed());
                tokio::time::sleep_until(next.into()).await;
            }
            None => {
                if let Err(reason) = conn.count_once("q", &filter).await? {
                    bail!(
                        "{url} refused a query: {reason} (for a closed-loop run, start the \
                         node with a high --reqs-per-second)"
                    );
                }
                out.push(started.elapsed());
            }
        }
    }
    Ok(out)
}
