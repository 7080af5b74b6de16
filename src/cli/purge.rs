//! `delete --filter`: purge every stored event a NIP-01 filter matches (spam, a
//! bot's flood), from L2 and, through the removal log, every node's L1. No tombstone is
//! written: to keep an author out, `ban` them. With PostgreSQL it runs against the
//! shared database while nodes serve; the embedded store's node must be stopped.

use anyhow::{Context, bail};
use eventstore::{Filter, Purge};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::config::Config;
use crate::maintenance::purge_all;

/// Checks that `filter` names something to delete, not everything.
pub fn deletable(filter: &Filter) -> anyhow::Result<()> {
    if filter.limit.is_some() {
        bail!("--filter takes no limit: delete removes every event the filter matches");
    }
    let names = filter.ids.is_some()
        || filter.authors.is_some()
        || filter.kinds.is_some()
        || !filter.tags.is_empty()
        || filter.since.is_some()
        || filter.until.is_some();
    if !names {
        bail!("--filter matches every event; name ids, authors, kinds, tags, since or until");
    }
    Ok(())
}

/// Counts what `filter` matches and, unless `dry_run`, purges it with a progress bar.
/// Returns the JSON summary.
pub async fn delete(config: Config, filter: Filter, dry_run: bool) -> anyhow::Result<Value> {
    deletable(&filter)?;
    let (store, node) = super::rulings::authority(config).await?;
    let result = async {
        let matched = store
            .count(std::slice::from_ref(&filter))
            .await
            .context("counting the matching events")?;
        if dry_run || matched == 0 {
            return Ok(json!({ "dry_run": dry_run, "matched": matched, "deleted": 0 }));
        }
        let bar = ProgressBar::new(matched).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} deleted")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let what = Purge::Matching(filter.clone());
        let deleted = purge_all(store.as_ref(), &what, |n| bar.set_position(n))
            .await
            .context("deleting")?;
        bar.finish_and_clear();
        Ok(json!({ "dry_run": false, "matched": matched, "deleted": deleted }))
    }
    .await;
    drop(store);
    if let Some(n) = node {
        n.close().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_must_name_something_and_have_no_limit() {
        assert!(deletable(&Filter::new()).is_err());
        assert!(deletable(&Filter::new().kind(eventstore::Kind(7)).limit(5)).is_err());
        assert!(deletable(&Filter::new().kind(eventstore::Kind(7))).is_ok());
        assert!(deletable(&Filter::new().until(eventstore::Timestamp(5))).is_ok());
    }
}
