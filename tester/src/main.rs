//! `tester`: a real client of running layer2 nodes, speaking only WebSocket (NIP-01) and
//! HTTP (`/metrics`). Modes: `stress`, `bench`, `fanout`, `cache`,
//! `propagation`. Every mode ends with a
//! loss check; any violation gives a non-zero exit and lists the offending ids.
//!
//! # Layout
//! - `events`: signed events (many keys, Zipf authors, realistic kinds and sizes).
//! - `net`: the WebSocket connection and `/metrics`.
//! - `workers`: publishers and subscribers.
//! - `stress`, `bench`, `fanout`, `cache`, `propagation`: the modes. `check`: the loss check.
//! - `report`, `stats`: figures, the table and the JSON report.

mod bench;
mod cache;
mod check;
mod events;
mod fanout;
mod net;
mod outage;
mod propagation;
mod report;
mod stats;
mod stress;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// mimalloc, as the node: glibc's `malloc` and `free` were a tenth of the tester's
/// samples in closed-loop reads, on the two cores it shares with the node it measures
/// (its CPU per REQ fell from 19.4 to 18.8 µs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stress, cache and propagation tests of running layer2 relay nodes. Exits 0 when
/// every guarantee held, 1 on any violation (the ids are listed), 2 when the test could
/// not run.
#[derive(Debug, Parser)]
#[command(name = "tester", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Args)]
struct Common {
    /// Relay URL (ws://host:port); repeat for several nodes. Its /metrics is read from
    /// the same host and port.
    #[arg(long = "relay", required = true, value_name = "URL")]
    relays: Vec<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Seed for keys and events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long nodes may take to converge before a missing event counts as lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Open a lost connection again and go on (a run through node restarts and network
    /// faults): events awaiting an OK then are counted as unanswered, and events sent
    /// while a reader had no live subscription are excused from its live check. The
    /// check that every acknowledged event is served by every node stays whole.
    #[arg(long)]
    reconnect: bool,
    /// Authenticate every connection with NIP-42 AUTH (a fresh key each) before using
    /// it, as clients of a relay with `access.auth_required_for_writes` must.
    #[arg(long)]
    auth: bool,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Many publishers and readers across the relays: throughput, OK, REQ and
    /// cross-node delivery latency, then the loss check.
    Stress {
        #[command(flatten)]
        common: Common,
        /// Events to publish in all (signed before the clock starts) [default: 10000
        /// unless --duration is given].
        #[arg(long, conflicts_with = "duration")]
        events: Option<usize>,
        /// Publish for this long instead of a fixed count (such as 60s).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Publishing connections, spread over the relays.
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        /// Reading connections, spread over the relays: each holds a live subscription
        /// and runs feed queries (20 per second, within the relay's default REQ rate).
        #[arg(long, default_value_t = 4)]
        readers: usize,
        /// Distinct authors (chosen with a Zipf distribution).
        #[arg(long, default_value_t = 1000)]
        authors: usize,
        /// EVENTs each publisher keeps awaiting their OK.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Seconds of feed queries alone after publishing (0: none), timed separately.
        #[arg(long, default_value_t = 5)]
        read_seconds: u64,
        /// An L2 outage happens during the run (PostgreSQL stopped and started again):
        /// OK and REQ latency are reported before, during and after it, as the relays'
        /// `/metrics` saw it, and a run in which no relay saw one fails.
        #[arg(long)]
        expect_outage: bool,
    },
    /// Closed-loop clients, as most real clients are: each connection sends one EVENT
    /// and waits for its OK, then runs REQ → EOSE → CLOSE loops. Reports events/s,
    /// REQs/s, latency and the nodes' CPU per event and per REQ (start the nodes with a
    /// high --reqs-per-second: a rate limit ends the run).
    Bench {
        #[command(flatten)]
        common: Common,
        /// Connections, spread over the relays.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Events to publish in all (signed before the clock starts).
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Seconds of REQ → EOSE → CLOSE loops after publishing (0: none).
        #[arg(long, default_value_t = 10)]
        read_seconds: u64,
        /// Distinct authors (chosen with a Zipf distribution).
        #[arg(long, default_value_t = 1000)]
        authors: usize,
        /// Set TCP_NODELAY on the client side (most clients do not).
        #[arg(long)]
        nodelay: bool,
    },
    /// Many idle subscriptions (following authors or hashtags) while notes arrive at a
    /// steady rate: deliveries per second, delivery latency, node CPU per delivery, and
    /// every subscription checked to receive exactly its matches, once.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Subscriptions in all, spread over the connections.
        #[arg(long, default_value_t = 10_000)]
        subscriptions: usize,
        /// Connections holding them, spread over the relays.
        #[arg(long, default_value_t = 2_000)]
        connections: usize,
        /// Authors the events come from (uniformly).
        #[arg(long, default_value_t = 500)]
        authors: usize,
        /// Authors each author subscription follows.
        #[arg(long, default_value_t = 20)]
        follows: usize,
        /// Percent of subscriptions that follow one of 20 hashtags instead.
        #[arg(long, default_value_t = 10)]
        hashtag_percent: usize,
        /// Events per second, in all.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Against one node with a small L1: write several times the budget, check L1 stays
    /// within it, fetch long-evicted events (from L2), fetch them again (L1 hits), and
    /// report the hit ratio.
    Cache {
        #[command(flatten)]
        common: Common,
        /// The node's L1 budget in bytes (checked against its /metrics).
        #[arg(long, value_name = "BYTES")]
        l1_max_bytes: u64,
        /// How many times the budget to write.
        #[arg(long, default_value_t = 3.0)]
        multiple: f64,
        /// Content bytes per event.
        #[arg(long, default_value_t = 2000)]
        event_bytes: usize,
        /// Publishing connections.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Evicted events fetched back.
        #[arg(long, default_value_t = 200)]
        sample: usize,
        /// Feed-like reads for the hit ratio (run against a fresh node: older data on the
        /// node dilutes L1's window).
        #[arg(long, default_value_t = 100)]
        reads: usize,
    },
    /// A live subscriber on every node; events published on each node in turn;
    /// per-pair delivery latency and any event missing or delivered twice.
    Propagation {
        #[command(flatten)]
        common: Common,
        /// Events published on each node.
        #[arg(long, default_value_t = 50)]
        events: usize,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(
        t.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len()),
    );
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 60s)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "" | "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tester: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.mode)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tester: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(mode: Mode) -> anyhow::Result<bool> {
    let common = match &mode {
        Mode::Stress { common, .. }
        | Mode::Bench { common, .. }
        | Mode::Fanout { common, .. }
        | Mode::Cache { common, .. }
        | Mode::Propagation { common, .. } => common,
    };
    net::set_auth(common.auth);
    net::set_reconnecting(common.reconnect);
    let (report, json) = match mode {
        Mode::Stress {
            common,
            events,
            duration,
            publishers,
            readers,
            authors,
            window,
            read_seconds,
            expect_outage,
        } => {
            let plan = stress::Plan {
                events: if duration.is_some() {
                    None
                } else {
                    Some(events.unwrap_or(10_000))
                },
                duration,
                publishers: publishers.max(1),
                readers,
                authors: authors.max(1),
                window: window.max(1),
                read_seconds,
                expect_outage,
                seed: common.seed,
                grace: common.grace,
                quiet: common.quiet,
                relays: common.relays,
            };
            (stress::run(plan).await?, common.json)
        }
        Mode::Bench {
            common,
            connections,
            events,
            read_seconds,
            authors,
            nodelay,
        } => {
            let plan = bench::Plan {
                relays: common.relays,
                connections,
                events,
                read_seconds,
                authors: authors.max(1),
                nodelay,
                seed: common.seed,
                grace: common.grace,
                quiet: common.quiet,
            };
            (bench::run(plan).await?, common.json)
        }
        Mode::Fanout {
            common,
            subscriptions,
            connections,
            authors,
            follows,
            hashtag_percent,
            rate,
            seconds,
        } => {
            let plan = fanout::Plan {
                relays: common.relays,
                connections,
                subscriptions,
                authors,
                follows,
                hashtag_percent: hashtag_percent.min(100),
                rate,
                seconds,
                seed: common.seed,
                grace: common.grace,
                quiet: common.quiet,
            };
            (fanout::run(plan).await?, common.json)
        }
        Mode::Cache {
            common,
            l1_max_bytes,
            multiple,
            event_bytes,
            publishers,
            sample,
            reads,
        } => {
            let plan = cache::Plan {
                relay: common.relays[0].clone(),
                l1_max_bytes,
                multiple,
                event_bytes,
                publishers,
                sample,
                reads,
                seed: common.seed,
                grace: common.grace,
                quiet: common.quiet,
            };
            (cache::run(plan).await?, common.json)
        }
        Mode::Propagation { common, events } => {
            let plan = propagation::Plan {
                relays: common.relays,
                events,
                seed: common.seed,
                grace: common.grace,
                quiet: common.quiet,
            };
            (propagation::run(plan).await?, common.json)
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report.passed)
}
