//! The loss check every mode ends with: each event a relay acknowledged with `OK true`
//! must be retrievable from every node (except what the NIP rules legitimately drop:
//! ephemeral events, and older versions of a replaceable or addressable event).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use eventstore::{Address, Event, KindClass};
use serde_json::json;

use crate::net::Conn;

/// Ids per REQ when checking.
const BATCH: usize = 250;

/// An acknowledged event a relay must still serve, or else one of the versions of its
/// address that may have replaced it: versions sent but never answered (the connection
/// was lost first) may well be stored, and a newer one wins over the acknowledged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    pub id: String,
    /// Unanswered versions of the same address that rank above `id` (NIP-01: newer, or
    /// as new with a lower id).
    pub or: Vec<String>,
}

impl Survivor {
    /// Whether `has` holds this event or one that may stand in for it.
    pub fn held(&self, has: impl Fn(&str) -> bool) -> bool {
        has(&self.id) || self.or.iter().any(|id| has(id))
    }
}

/// NIP-01's order of versions of one address: the newest wins; on a tie, the lowest id.
fn outranks(a: &Event, b: &Event) -> bool {
    (a.created_at(), std::cmp::Reverse(a.id())) > (b.created_at(), std::cmp::Reverse(b.id()))
}

/// The acknowledged events a relay must still serve. `unanswered` are events sent whose
/// fate is unknown (no `OK` came): none must be served, but a replaceable or
/// addressable one among them may have replaced an acknowledged version.
pub fn must_survive(acked: &[Event], unanswered: &[Event]) -> Vec<Survivor> {
    let mut winners: HashMap<Address, &Event> = HashMap::new();
    let mut out = Vec::new();
    for e in acked {
        match e.kind().class() {
            KindClass::Ephemeral => {}
            KindClass::Regular => out.push(Survivor {
                id: e.id().to_string(),
                or: Vec::new(),
            }),
            _ => {
                if let Some(a) = e.address() {
                    let w = winners.entry(a).or_insert(e);
                    if outranks(e, w) {
                        *w = e;
                    }
                }
            }
        }
    }
    let mut rivals: HashMap<Address, Vec<&Event>> = HashMap::new();
    for e in unanswered {
        if let Some(a) = e.address() {
            rivals.entry(a).or_default().push(e);
        }
    }
    out.extend(winners.into_iter().map(|(a, w)| {
        Survivor {
            id: w.id().to_string(),
            or: rivals
                .get(&a)
                .into_iter()
                .flatten()
                .filter(|r| outranks(r, w))
                .map(|r| r.id().to_string())
                .collect(),
        }
    }));
    out
}

/// Asks every relay for every survivor; returns, per relay, the ids of those it serves
/// neither itself nor a stand-in for. Those missing at first are asked again until
/// `grace` has passed (pollers catching up).
pub async fn missing_per_relay(
    relays: &[String],
    survivors: &[Survivor],
    grace: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for url in relays {
        let mut conn = Conn::open(url).await?;
        let deadline = Instant::now() + grace;
        let mut missing: Vec<&Survivor> = survivors.iter().collect();
        let mut round = 0;
        loop {
            let mut still = Vec::new();
            for chunk in missing.chunks(BATCH) {
                round += 1;
                let ids: Vec<&str> = chunk
                    .iter()
                    .flat_map(|s| std::iter::once(&s.id).chain(&s.or))
                    .map(String::as_str)
                    .collect();
                let found: HashSet<String> = conn
                    .fetch(
                        &format!("check{round}"),
                        json!({"ids": ids, "limit": ids.len()}),
                    )
                    .await?
                    .iter()
                    .filter_map(|e| e["id"].as_str().map(String::from))
                    .collect();
                still.extend(chunk.iter().filter(|s| !s.held(|id| found.contains(id))));
            }
            missing = still;
            if missing.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        out.insert(url.clone(), missing.iter().map(|s| s.id.clone()).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys, Kind, Timestamp};

    #[test]
    fn only_the_newest_version_of_an_address_must_survive() {
        let k = Keys::from_seed(1);
        let old = EventBuilder::new(Kind(0), "a")
            .created_at(Timestamp(10))
            .sign(&k);
        let new = EventBuilder::new(Kind(0), "b")
            .created_at(Timestamp(20))
            .sign(&k);
        let note = EventBuilder::text_note("n").sign(&k);
        let eph = EventBuilder::new(Kind(20_000), "e").sign(&k);
        let got = must_survive(&[old, new.clone(), note.clone(), eph], &[]);
        let mut got: Vec<String> = got.into_iter().map(|s| s.id).collect();
        got.sort();
        let mut want = vec![new.id().to_string(), note.id().to_string()];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unanswered_newer_version_may_stand_in_for_the_acknowledged_one() {
        let k = Keys::from_seed(2);
        let version = |t: u64, content: &str| {
            EventBuilder::new(Kind(30023), content)
                .tags(vec![vec!["d".into(), "article-1".into()]])
                .created_at(Timestamp(t))
                .sign(&k)
        };
        let acked = version(20, "acknowledged");
        let older = version(10, "unanswered, older");
        let newer = version(30, "unanswered, newer");
        let other = EventBuilder::new(Kind(0), "another address")
            .created_at(Timestamp(40))
            .sign(&k);
        let lost_note = EventBuilder::text_note("unanswered note").sign(&k);
        let got = must_survive(
            std::slice::from_ref(&acked),
            &[older, newer.clone(), other, lost_note],
        );
        assert_eq!(
            got,
            vec![Survivor {
                id: acked.id().to_string(),
                or: vec![newer.id().to_string()],
            }]
        );
        let s = &got[0];
        assert!(s.held(|id| id == newer.id().to_string()));
        assert!(s.held(|id| id == acked.id().to_string()));
        assert!(!s.held(|_| false));
    }
}
