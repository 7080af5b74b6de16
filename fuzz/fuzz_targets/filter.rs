//! A filter from a stranger: parsing, its JSON form, and matching. Whatever parses must
//! come back equal from its own JSON, and match the same events as before.
#![no_main]

use std::sync::OnceLock;

use eventstore::{Event, EventBuilder, Filter, Keys, Kind, Timestamp};
use libfuzzer_sys::fuzz_target;

fn events() -> &'static [Event] {
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let k = Keys::from_seed(1);
        vec![
            EventBuilder::text_note("hello #nostr")
                .tag(["t", "nostr"])
                .created_at(Timestamp(1_700_000_000))
                .sign_deterministic(&k),
            EventBuilder::new(Kind(30023), "article")
                .tag(["d", "slug"])
                .tag(["p", k.public_key().to_hex().as_str()])
                .created_at(Timestamp(1_700_000_100))
                .sign_deterministic(&k),
            EventBuilder::new(Kind(7), "+")
                .tag(["e", "00".repeat(32).as_str()])
                .sign_deterministic(&Keys::from_seed(2)),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = Filter::from_json(text) else {
        return;
    };
    let json = serde_json::to_string(&f).expect("a filter serialises");
    let back = Filter::from_json(&json).expect("a filter's own JSON parses");
    assert_eq!(back, f, "{json}");
    for e in events() {
        assert_eq!(f.matches(e), back.matches(e));
    }
});
