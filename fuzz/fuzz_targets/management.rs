//! A NIP-86 call from a stranger: the first line is the `Authorization` header (NIP-98),
//! the rest the JSON-RPC body. Checking either must never panic, and no header made of
//! fuzz may authorise anyone (it would need a valid signature over this body).
#![no_main]

use eventstore::Timestamp;
use layer2_relay::relay::auth::{Audience, verify_http};
use layer2_relay::relay::nip86::parse_call;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = parse_call(body);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let audience = Audience::new(&["wss://relay.example.com".to_string()], None);
    let now = Timestamp(1_700_000_000);
    if let Ok(pk) = verify_http(Some(header), "POST", body, &audience, now) {
        // Only a real signature gets here; fuzzing finds none by chance.
        panic!("a fuzzed header authorised {pk}");
    }
});
