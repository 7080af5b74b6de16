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

/// The acknowledged events a relay must still serve.
pub fn must_survive(acked: &[Event]) -> Vec<String> {
    let mut winners: HashMap<Address, &Event> = HashMap::new();
    let mut out = Vec::new();
    for e in acked {
        match e.kind().class() {
            KindClass::Ephemeral => {}
            KindClass::Regular => out.push(e.id().to_string()),
            _ => {
                if let Some(a) = e.address() {
                    let w = winners.entry(a).or_insert(e);
                    // NIP-01: the newest wins; on a tie, the lowest id.
                    if (e.created_at(), std::cmp::Reverse(e.id()))
                        > (w.created_at(), std::cmp::Reverse(w.id()))
                    {
                        *w = e;
                    }
                }
            }
        }
    }
    out.extend(winners.values().map(|e| e.id().to_string()));
    out
}

/// Asks every relay for every id; returns, per relay, the ids it does not serve. Ids
/// missing at first are asked again until `grace` has passed (pollers catching up).
pub async fn missing_per_relay(
    relays: &[String],
    ids: &[String],
    grace: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for url in relays {
        let mut conn = Conn::open(url).await?;
        let deadline = Instant::now() + grace;
        let mut missing: Vec<String> = ids.to_vec();
        let mut round = 0;
        loop {
            let mut still = Vec::new();
            for chunk in missing.chunks(BATCH) {
                round += 1;
                let found: HashSet<String> = conn
                    .fetch(
                        &format!("check{round}"),
                        json!({"ids": chunk, "limit": chunk.len()}),
                    )
                    .await?
                    .iter()
                    .filter_map(|e| e["id"].as_str().map(String::from))
                    .collect();
                still.extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
            }
            missing = still;
            if missing.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        out.insert(url.clone(), missing);
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
        let mut got = must_survive(&[old, new.clone(), note.clone(), eph]);
        got.sort();
        let mut want = vec![new.id().to_string(), note.id().to_string()];
        want.sort();
        assert_eq!(got, want);
    }
}
