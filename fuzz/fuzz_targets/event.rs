//! An event from a stranger: strict parsing, the canonical serialisation its id
//! hashes, and the signature check. Whatever parses must round-trip through the stored
//! form unchanged, and checking it twice must agree.
#![no_main]

use eventstore::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = Event::from_json(text) else {
        return;
    };
    let again = Event::from_stored_json(e.as_json()).expect("stored JSON parses again");
    assert_eq!(again.id(), e.id());
    assert_eq!(again.pubkey(), e.pubkey());
    assert_eq!(again.created_at(), e.created_at());
    assert_eq!(again.kind(), e.kind());
    assert_eq!(again.tags(), e.tags());
    assert_eq!(again.content(), e.content());
    assert_eq!(
        again.as_json(),
        e.as_json(),
        "the stored form is a fixed point"
    );
    assert_eq!(e.compute_id(), again.compute_id());
    assert_eq!(e.verify().is_ok(), again.verify().is_ok());
    let _ = (e.address(), e.expiration(), e.deletion_targets(), e.d_tag());
    let _ = e.indexable_tags().count();
});
