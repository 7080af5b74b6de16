//! The `import`, `export` and `stats` commands. Import and export speak JSON lines, one
//! event per line (the format strfry uses), so data moves between relays as files.
//! `rulings.rs`: the operator's bans and allow-lists (`ban`, `allow`, ...); `purge.rs`:
//! `delete --filter`; `admin.rs`: `check`, `compact`, `nuke`.

pub mod admin;
pub mod purge;
pub mod rulings;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use eventstore::{Event, EventId, EventStore, Filter, SaveOutcome, Timestamp};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::node::Node;

/// What an import did, by outcome.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub lines: u64,
    pub stored: u64,
    pub replaced: u64,
    pub duplicate: u64,
    pub ephemeral: u64,
    pub deleted: u64,
    pub superseded: u64,
    pub expired: u64,
    /// Refused by a ban (the operator's rulings).
    pub blocked: u64,
    pub invalid: u64,
}

impl ImportSummary {
    fn add(&mut self, outcome: &SaveOutcome) {
        match Metrics::outcome_label(outcome) {
            "stored" => self.stored += 1,
            "replaced" => self.replaced += 1,
            "duplicate" => self.duplicate += 1,
            "ephemeral" => self.ephemeral += 1,
            "deleted" => self.deleted += 1,
            "superseded" => self.superseded += 1,
            "expired" => self.expired += 1,
            "blocked" => self.blocked += 1,
            _ => self.invalid += 1,
        }
    }
}

/// Lines verified together on one blocking thread.
const CHUNK: usize = 512;

/// Imports JSON-lines events from `input` (a file, or stdin when `None`) into the
/// node: every event is parsed and verified; bad lines are counted and the first few
/// reported, never stored.
pub async fn import(node: &Node, input: Option<&Path>) -> anyhow::Result<ImportSummary> {
    let (reader, total): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = match input {
        Some(p) => {
            let f = tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot open {}", p.display()))?;
            let len = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), len)
        }
        None => (Box::new(tokio::io::stdin()), None),
    };
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    let store = node.store();
    let mut lines = BufReader::new(reader).lines();
    let mut summary = ImportSummary::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut reported = 0;
    loop {
        let line = lines.next_line().await.context("reading input")?;
        let done = line.is_none();
        if let Some(l) = line {
            bar.inc(l.len() as u64 + 1);
            if !l.trim().is_empty() {
                summary.lines += 1;
                chunk.push(l);
            }
        }
        if chunk.len() >= CHUNK || (done && !chunk.is_empty()) {
            let lines = std::mem::take(&mut chunk);
            let checked = tokio::task::spawn_blocking(move || {
                lines
                    .iter()
                    .map(|l| Event::from_json(l).and_then(|e| e.verify().map(|()| e)))
                    .collect::<Vec<_>>()
            })
            .await?;
            let mut events = Vec::with_capacity(checked.len());
            for r in checked {
                match r {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        summary.invalid += 1;
                        if reported < 10 {
                            reported += 1;
                            bar.println(format!("skipped line: {e}"));
                        }
                    }
                }
            }
            for outcome in save_all(&store, events).await? {
                summary.add(&outcome);
            }
            bar.set_message(format!("{} stored", summary.stored + summary.replaced));
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Saves events concurrently (the stores batch concurrent writes into transactions).
async fn save_all(
    store: &Arc<dyn EventStore>,
    events: Vec<Event>,
) -> anyhow::Result<Vec<SaveOutcome>> {
    let mut set = JoinSet::new();
    for e in events {
        let s = store.clone();
        set.spawn(async move { s.save(&e).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r?.context("saving an event failed; the import stopped")?);
    }
    Ok(out)
}

/// Events per export query.
const PAGE: usize = 5_000;

/// Writes every event matching `filter` (newest first) to `out`, one JSON per line,
/// reading L2, the authority, page by page. Returns how many were written.
pub async fn export(node: &Node, filter: Filter, out: &mut dyn Write) -> anyhow::Result<u64> {
    let l2 = node.l2_store();
    let mut written = 0u64;
    let cap = filter.limit.unwrap_or(usize::MAX) as u64;
    let mut until = filter.until;
    // Ids already written at the oldest timestamp of the last page.
    let mut boundary: HashSet<EventId> = HashSet::new();
    loop {
        let page = l2
            .query(&[Filter {
                until,
                limit: Some(PAGE),
                ..filter.clone()
            }])
            .await?;
        let full = page.len() >= PAGE;
        let (newest, oldest) = match (page.first(), page.last()) {
            (Some(a), Some(b)) => (a.created_at(), b.created_at()),
            _ => break,
        };
        let page = if full && newest == oldest {
            // A whole page at one second: take that second entirely.
            let exact = Filter {
                since: Some(oldest),
                until: Some(oldest),
                limit: None,
                ..filter.clone()
            };
            l2.query(&[exact]).await?
        } else {
            page
        };
        for e in &page {
            if written >= cap {
                return Ok(written);
            }
            if boundary.contains(&e.id()) {
                continue;
            }
            writeln!(out, "{}", e.as_json())?;
            written += 1;
        }
        if !full {
            break;
        }
        if newest == oldest {
            if oldest.0 == 0 {
                break;
            }
            until = Some(Timestamp(oldest.0 - 1));
            boundary.clear();
        } else {
            until = Some(oldest);
            boundary = page
                .iter()
                .filter(|e| e.created_at() == oldest)
                .map(Event::id)
                .collect();
        }
    }
    out.flush()?;
    Ok(written)
}

/// Parses `--filter` for export.
pub fn parse_filter(json: Option<&str>) -> anyhow::Result<Filter> {
    match json {
        None => Ok(Filter::new()),
        Some(s) => match Filter::from_json(s) {
            Ok(f) => Ok(f),
            Err(e) => bail!("--filter is not a NIP-01 filter: {e}"),
        },
    }
}

/// What `stats` prints.
pub async fn stats(node: &Node) -> anyhow::Result<serde_json::Value> {
    let l1 = node.tiered.l1();
    let events = node.l2_store().count(&[Filter::new()]).await?;
    let figures = match &node.l2 {
        crate::node::L2::Postgres(pg) => Some(pg.figures().await?),
        crate::node::L2::Embedded(_) => None,
    };
    Ok(serde_json::json!({
        "l2": {
            "kind": match node.l2 { crate::node::L2::Embedded(_) => "embedded", crate::node::L2::Postgres(_) => "postgres" },
            "events": events,
            "postgresql": figures,
        },
        "l1": {
            "bytes_used": l1.bytes_used(),
            "budget_bytes": node.l1_budget(),
            "same_file_as_l2": node.tiered.single(),
            "file_bytes": l1.file_size(),
            "window": l1.window().0,
            "evictions": l1.stats().evictions.load(std::sync::atomic::Ordering::Relaxed),
            "floors": l1.stats().floors.load(std::sync::atomic::Ordering::Relaxed),
            // Every query the node answered since this L1 file began, by where.
            "queries": node.tiered.routes().report(),
        },
    }))
}
