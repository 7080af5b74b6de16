//! What L2 hands the poller: an event row's stored JSON (decoded without a signature
//! check: the store wrote it) and a ruling row's (list, subject). Neither may panic,
//! and a decoded ruling must encode back to its row.
#![no_main]

use eventstore::{Event, Ruling};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&list, subject)) = data.split_first() {
        if let Some(r) = Ruling::decode(list, subject) {
            assert_eq!(r.encode(), (list, subject.to_vec()));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(e) = Event::from_stored_json(text) {
            let again = Event::from_stored_json(e.as_json()).expect("re-decodes");
            assert_eq!(again.id(), e.id());
        }
    }
});
