//! Stored records on real events: every event held comes back as exactly its JSON, and
//! the records take less room than that JSON (`layer1/src/record.rs`).

use std::collections::HashSet;

use eventstore::{Event, EventStore, Filter};

#[tokio::test]
#[ignore = "set LAYER2_REAL_EVENTS to a JSON-lines corpus"]
async fn real_events_come_back_byte_for_byte_from_smaller_records() {
    let path = std::env::var("LAYER2_REAL_EVENTS")
        .expect("set LAYER2_REAL_EVENTS to a JSON-lines corpus of signed events");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let events: Vec<Event> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| Event::from_json(l).ok())
        .collect();
    assert!(
        events.len() > 1_000,
        "only {} events in {path}",
        events.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::open(&dir, None);
    store.save_many(&events).await.unwrap();
    let ids: std::collections::BTreeSet<_> = events.iter().map(Event::id).collect();
    let back = store
        .query(&[Filter {
            ids: Some(ids),
            ..Filter::default()
        }])
        .await
        .unwrap();
    // Some are legitimately gone (replaced versions, NIP-09 deletions, expired).
    assert!(
        back.len() * 10 > events.len() * 8,
        "{} of {} events held",
        back.len(),
        events.len()
    );
    let sent: HashSet<&str> = events.iter().map(Event::as_json).collect();
    for e in &back {
        assert!(
            sent.contains(e.as_json()),
            "changed on the way: {}",
            e.as_json()
        );
    }
    let s = store.storage().await.unwrap();
    let records = s.tables.iter().find(|t| t.name == "events").unwrap().stored - 8 * s.events;
    let ratio = records as f64 / s.json_bytes as f64;
    eprintln!(
        "{} real events held: records are {ratio:.3} of their JSON",
        s.events
    );
    // Measured on ../shared/data: 0.635.
    assert!(ratio < 0.8, "records are {ratio:.2} of the JSON");
}
