//! `check`, `compact`, `nuke` and `maintain`: an operator's care of the stores. Each prints a JSON
//! summary. The redb files (`l1.redb`, the embedded `l2.redb`) belong to one process:
//! these commands open them only while the node is stopped, and say so when one is in
//! use. PostgreSQL is shared: its check runs while nodes serve.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::Config;

/// The node's redb files that exist, by name.
fn redb_files(config: &Config) -> Vec<(&'static str, PathBuf)> {
    ["l1.redb", "l2.redb"]
        .into_iter()
        .map(|n| (n, config.data_dir.join(n)))
        .filter(|(_, p)| p.exists())
        .collect()
}

/// An administrative connection to the shared database, if one is configured; its
/// sessions are named `layer2-admin`, so `nuke` can tell them from running nodes.
async fn admin_pg(config: &Config) -> anyhow::Result<Option<layer2::PgStore>> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    let mut pg = layer2::PgConfig::new(url);
    pg.max_connections = 2;
    pg.application_name = "layer2-admin".into();
    let store = layer2::PgStore::connect(pg)
        .await
        .context("cannot connect to the PostgreSQL L2 (check --database-url)")?;
    Ok(Some(store))
}

/// What opening a redb file for a command failed with, said plainly.
fn in_use(path: &Path, e: &eventstore::StoreError) -> String {
    let text = e.to_string();
    if text.contains("already open") || text.contains("lock") {
        format!(
            "{} is in use by a running node: stop it first",
            path.display()
        )
    } else {
        format!("{}: {text}", path.display())
    }
}

/// Checks every store of the node. Returns the summary and the number of problems.
pub async fn check(config: &Config) -> anyhow::Result<(Value, usize)> {
    let mut out = serde_json::Map::new();
    let mut problems = 0usize;
    for (name, path) in redb_files(config) {
        let p = path.clone();
        let bar = progress_bar(name);
        let b = bar.clone();
        let report = tokio::task::spawn_blocking(move || {
            layer1::check_file_with(&p, &mut |walked, total| {
                b.set_length(total);
                b.set_position(walked);
            })
        })
        .await?;
        bar.finish_and_clear();
        let v = match report {
            Ok(r) => {
                problems += r.problems.len();
                json!({ "events": r.events, "index_entries": r.index_entries, "problems": r.problems })
            }
            Err(e) => {
                problems += 1;
                json!({ "problems": [in_use(&path, &e)] })
            }
        };
        out.insert(name.to_string(), v);
    }
    if let Some(pg) = admin_pg(config).await? {
        // Its queries each read a whole table: no count to show, only that it works.
        let spinner = indicatif::ProgressBar::new_spinner().with_message("checking PostgreSQL");
        spinner.enable_steady_tick(std::time::Duration::from_millis(200));
        let findings = pg.check().await.context("checking PostgreSQL");
        spinner.finish_and_clear();
        let findings = findings?;
        problems += findings.len();
        out.insert("postgresql".into(), json!({ "findings": findings }));
        pg.close().await;
    }
    if out.is_empty() {
        bail!(
            "nothing to check: no store in {} and no --database-url",
            config.data_dir.display()
        );
    }
    out.insert("problems".into(), json!(problems));
    Ok((Value::Object(out), problems))
}

/// A bar on stderr for a walk over `name`'s records (drawn only on a terminal, so the
/// JSON summary on stdout stays clean either way).
fn progress_bar(name: &str) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} records {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(0)
        .with_style(style)
        .with_message(format!("checking {name}"))
}

/// Compacts the node's redb files (the node must be stopped).
pub async fn compact(config: &Config) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, path) in redb_files(config) {
        let p = path.clone();
        let (before, after) = tokio::task::spawn_blocking(move || layer1::compact_file(&p))
            .await?
            .map_err(|e| anyhow::anyhow!(in_use(&path, &e)))?;
        out.insert(
            name.to_string(),
            json!({ "bytes_before": before, "bytes_after": after }),
        );
    }
    if out.is_empty() {
        bail!(
            "nothing to compact: no redb file in {}",
            config.data_dir.display()
        );
    }
    Ok(Value::Object(out))
}

/// Removes a file the node owns; a missing one is not an error. A redb file in use by
/// a running node is refused.
fn remove(path: &Path) -> anyhow::Result<bool> {
    if path.extension().is_some_and(|e| e == "redb") {
        return layer1::remove_file(path).map_err(|e| anyhow::anyhow!(in_use(path, &e)));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// What `nuke` wipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nuke {
    /// This node's L1: it warms again from L2 at the next start.
    L1,
    /// Every event of the cluster (PostgreSQL, or the embedded store), and this
    /// node's L1; `force`: even while other sessions are connected.
    All { force: bool },
}

/// Wipes what `what` names (the node must be stopped).
pub async fn nuke(config: &Config, what: Nuke) -> anyhow::Result<Value> {
    let dir = &config.data_dir;
    let l1 = dir.join("l1.redb");
    match what {
        Nuke::L1 => {
            if config.database_url.is_none() && !config.embedded_l1 && !l1.exists() {
                bail!(
                    "no separate L1 here: l2.redb serves as both tiers and holds the data \
                     itself (`nuke --all --yes-really` wipes it)"
                );
            }
            let removed = remove(&l1)?;
            remove(&dir.join("l1.repair-needed"))?;
            Ok(json!({ "l1_removed": removed }))
        }
        Nuke::All { force } => {
            let mut out = serde_json::Map::new();
            if let Some(pg) = admin_pg(config).await? {
                let others = pg.other_sessions().await?;
                if others > 0 && !force {
                    pg.close().await;
                    bail!(
                        "{others} other sessions are connected to the database (running \
                         nodes?): stop them, or pass --force (running nodes may then serve \
                         wiped events for up to 10 s, until their pollers see the wipe)"
                    );
                }
                let events = pg.wipe().await.context("wiping PostgreSQL")?;
                pg.close().await;
                out.insert("postgresql_events_removed".into(), json!(events));
            } else {
                out.insert("l2_removed".into(), json!(remove(&dir.join("l2.redb"))?));
            }
            out.insert("l1_removed".into(), json!(remove(&l1)?));
            // Writes waiting for the wiped database would bring old events back.
            out.insert(
                "outbox_removed".into(),
                json!(remove(&dir.join("outbox.redb"))?),
            );
            remove(&dir.join("l1.repair-needed"))?;
            Ok(Value::Object(out))
        }
    }
}

/// Runs one maintenance pass now (retention rules, expiry, log pruning), whenever the
/// last was. With PostgreSQL it works on the shared database while nodes serve (every
/// L1 follows the removal log); the embedded store's node must be stopped.
pub async fn maintain(config: crate::config::Config) -> anyhow::Result<Value> {
    let retention = config.retention.clone();
    let report = match admin_pg(&config).await? {
        Some(pg) => {
            let r = crate::maintenance::run_now(&pg, Some(&pg), &retention).await;
            pg.close().await;
            r
        }
        None => {
            let node = crate::node::Node::open(config).await.context(
                "cannot open the embedded store; stop the node first (its files belong to one process)",
            )?;
            let r = crate::maintenance::run_now(node.store().as_ref(), None, &retention).await;
            node.close().await;
            r
        }
    }
    .context("maintenance")?;
    match report {
        Some(r) => Ok(serde_json::to_value(&r)?),
        None => bail!("another node is running maintenance right now; try again later"),
    }
}
