//! Retention and cluster maintenance (`[maintenance]` and `[[retention]]` in the file):
//! which stored events are purged with age, how often, and how long the removal log is
//! kept. One node of the cluster at a time applies them (`crate::maintenance`).

use std::collections::BTreeSet;
use std::time::Duration;

use eventstore::{Filter, Kind, Timestamp};
use serde::Deserialize;

use super::file::Span;

/// One retention rule over events of these kinds (or of any kind): those whose
/// `created_at` is older than `older_than` are purged, and each author keeps only the
/// newest `max_per_author` (events in the same second as the last one kept stay too: a
/// second is the finest order a filter can name). A rule has one limit or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The kinds it applies to; `None`: every kind.
    pub kinds: Option<BTreeSet<Kind>>,
    pub older_than: Option<Duration>,
    pub max_per_author: Option<u64>,
}

impl Rule {
    /// The events this rule's age limit purges at `now`: `created_at` at or before
    /// `now - older_than`.
    pub fn filter(&self, now: Timestamp) -> Option<Filter> {
        let age = self.older_than?;
        Some(Filter {
            kinds: self.kinds.clone(),
            until: Some(Timestamp(now.0.saturating_sub(age.as_secs()))),
            ..Filter::default()
        })
    }

    /// A short name for logs and metrics: `kinds=7,older_than=2592000s`,
    /// `kinds=all,max_per_author=10000`.
    pub fn label(&self) -> String {
        let kinds = match &self.kinds {
            Some(k) => k
                .iter()
                .map(|k| k.0.to_string())
                .collect::<Vec<_>>()
                .join("+"),
            None => "all".into(),
        };
        let mut label = format!("kinds={kinds}");
        if let Some(age) = self.older_than {
            label += &format!(",older_than={}s", age.as_secs());
        }
        if let Some(n) = self.max_per_author {
            label += &format!(",max_per_author={n}");
        }
        label
    }
}

/// The validated maintenance configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Applied in order at every run. Default none: events are kept for ever (expired
    /// ones excepted: NIP-40 expiry is always purged).
    pub rules: Vec<Rule>,
    /// How often the cluster runs maintenance; each node offers every interval, and
    /// the first to find the last run this old takes it. Default 1 h.
    pub interval: Duration,
    /// Rows of the removal log (replaced, banned and purged events, which other nodes'
    /// L1s follow) older than this are pruned. A node that was away for more than half
    /// of it starts with an empty L1. Default 7 days.
    pub log_horizon: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            rules: Vec::new(),
            interval: Duration::from_secs(3_600),
            log_horizon: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[maintenance]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    pub interval: Option<Span>,
    pub log_horizon: Option<Span>,
}

/// One `[[retention]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub kinds: Option<Vec<u16>>,
    pub older_than: Option<Span>,
    pub max_per_author: Option<u64>,
}

/// Applies what the file sets over `r`.
pub fn apply(r: &mut Retention, m: &MaintenanceFile, rules: &[RuleFile]) -> Result<(), String> {
    if let Some(v) = &m.interval {
        r.interval = v
            .resolve()
            .map_err(|e| format!("maintenance.interval: {e}"))?;
    }
    if let Some(v) = &m.log_horizon {
        r.log_horizon = v
            .resolve()
            .map_err(|e| format!("maintenance.log_horizon: {e}"))?;
    }
    if !rules.is_empty() {
        r.rules = rules
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Ok(Rule {
                    kinds: f
                        .kinds
                        .as_ref()
                        .map(|k| k.iter().copied().map(Kind).collect()),
                    older_than: f
                        .older_than
                        .as_ref()
                        .map(|s| s.resolve())
                        .transpose()
                        .map_err(|e| format!("retention[{i}].older_than: {e}"))?,
                    max_per_author: f.max_per_author,
                })
            })
            .collect::<Result<_, String>>()?;
    }
    Ok(())
}

impl Retention {
    /// Checks the values; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) {
            return Err("maintenance.interval must be at least 1s".into());
        }
        // Far above any poll's look-back and the feed's hold-back (30 s), and any
        // catch-up of a node that stays up: rows younger than this must never go.
        if self.log_horizon < Duration::from_secs(3_600) {
            return Err("maintenance.log_horizon must be at least 1h".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.older_than.is_none() && r.max_per_author.is_none() {
                return Err(format!(
                    "retention[{i}] needs older_than, max_per_author, or both"
                ));
            }
            if r.older_than.is_some_and(|a| a < Duration::from_secs(1)) {
                return Err(format!("retention[{i}].older_than must be at least 1s"));
            }
            if r.max_per_author == Some(0) {
                return Err(format!(
                    "retention[{i}].max_per_author must be at least 1 (to purge every \
                     event of these kinds, use delete --filter)"
                ));
            }
            if r.kinds.as_ref().is_some_and(BTreeSet::is_empty) {
                return Err(format!(
                    "retention[{i}].kinds is empty; leave it out to mean every kind"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_filters_and_labels() {
        let r = Rule {
            kinds: Some([Kind(7)].into_iter().collect()),
            older_than: Some(Duration::from_secs(30 * 86_400)),
            max_per_author: None,
        };
        let f = r.filter(Timestamp(10_000_000)).unwrap();
        assert_eq!(f.until, Some(Timestamp(10_000_000 - 2_592_000)));
        assert_eq!(f.kinds, r.kinds);
        assert_eq!(r.label(), "kinds=7,older_than=2592000s");
        let all = Rule {
            kinds: None,
            older_than: Some(Duration::from_secs(5)),
            max_per_author: None,
        };
        assert_eq!(all.filter(Timestamp(3)).unwrap().until, Some(Timestamp(0)));
        assert!(all.label().starts_with("kinds=all"));
        let capped = Rule {
            kinds: Some([Kind(1), Kind(30023)].into_iter().collect()),
            older_than: None,
            max_per_author: Some(10_000),
        };
        assert_eq!(capped.filter(Timestamp(3)), None, "no age limit");
        assert_eq!(capped.label(), "kinds=1+30023,max_per_author=10000");
    }
}
