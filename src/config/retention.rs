//! Retention and cluster maintenance (`[maintenance]` and `[[retention]]` in the file):
//! which stored events are purged with age, how often, and how long the removal log is
//! kept. One node of the cluster at a time applies them (`crate::maintenance`).

use std::collections::BTreeSet;
use std::time::Duration;

use eventstore::{Filter, Kind, Timestamp};
use serde::Deserialize;

use super::file::Span;

/// One retention rule: events (of these kinds, or of any kind) whose `created_at` is
/// older than `older_than` are purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The kinds it applies to; `None`: every kind.
    pub kinds: Option<BTreeSet<Kind>>,
    pub older_than: Duration,
}

impl Rule {
    /// The events this rule purges at `now`: `created_at` at or before `now - older_than`.
    pub fn filter(&self, now: Timestamp) -> Filter {
        Filter {
            kinds: self.kinds.clone(),
            until: Some(Timestamp(now.0.saturating_sub(self.older_than.as_secs()))),
            ..Filter::default()
        }
    }

    /// A short name for logs and metrics: `kinds=7,older_than=2592000s`.
    pub fn label(&self) -> String {
        let kinds = match &self.kinds {
            Some(k) => k
                .iter()
                .map(|k| k.0.to_string())
                .collect::<Vec<_>>()
                .join("+"),
            None => "all".into(),
        };
        format!("kinds={kinds},older_than={}s", self.older_than.as_secs())
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
    pub older_than: Span,
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
                        .resolve()
                        .map_err(|e| format!("retention[{i}].older_than: {e}"))?,
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
            if r.older_than < Duration::from_secs(1) {
                return Err(format!("retention[{i}].older_than must be at least 1s"));
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
            older_than: Duration::from_secs(30 * 86_400),
        };
        let f = r.filter(Timestamp(10_000_000));
        assert_eq!(f.until, Some(Timestamp(10_000_000 - 2_592_000)));
        assert_eq!(f.kinds, r.kinds);
        assert_eq!(r.label(), "kinds=7,older_than=2592000s");
        let all = Rule {
            kinds: None,
            older_than: Duration::from_secs(5),
        };
        assert_eq!(all.filter(Timestamp(3)).until, Some(Timestamp(0)));
        assert!(all.label().starts_with("kinds=all"));
    }
}
