//! Parsing, verification and signing of events, including the real-world corpus.

use eventstore::{Event, EventBuilder, EventError, Keys, Kind, Timestamp};

fn sample() -> Event {
    EventBuilder::text_note("hello \"world\"\n\\ é 🌍 \u{1}")
        .tag(["e", &"ab".repeat(32)])
        .tag(["t", "nostr"])
        .created_at(Timestamp(1_700_000_000))
        .sign(&Keys::from_seed(7))
}

fn with_field(json: &str, field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v[field] = value;
    v.to_string()
}

#[test]
fn signed_events_verify_and_round_trip() {
    let e = sample();
    e.verify().expect("own signature verifies");
    let back = Event::from_json(e.as_json()).expect("parses");
    assert_eq!(back, e);
    back.verify().expect("verifies after round trip");
}

#[test]
fn canonical_serialization_matches_nip01_text() {
    // The id must be the sha256 of exactly this text (NIP-01 escaping).
    let k = Keys::from_seed(1);
    let content = "q\" b\\ n\n t\t r\r b\u{8} f\u{c} c\u{1} d\u{7f} é 日 🌍 /";
    let e = EventBuilder::new(Kind(1), content)
        .tag(["t", "x\"y"])
        .created_at(Timestamp(1_234))
        .sign(&k);
    let expected_text = format!(
        "[0,\"{}\",1234,1,[[\"t\",\"x\\\"y\"]],\"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f c\\u0001 d\u{7f} é 日 🌍 /\"]",
        k.public_key()
    );
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(expected_text.as_bytes()).into();
    assert_eq!(e.id().0, digest);
    e.verify().unwrap();
}

#[test]
fn input_with_other_escapes_and_extra_fields_normalizes() {
    let e = sample();
    // Same event written with \u escapes for non-ASCII, spaces and an unknown field.
    let mut v: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
    v["extra"] = serde_json::json!(1);
    let ascii = serde_json::to_string_pretty(&v)
        .unwrap()
        .replace('é', "\\u00e9");
    let parsed = Event::from_json(&ascii).expect("parses");
    parsed.verify().expect("still verifies");
    assert_eq!(
        parsed.as_json(),
        e.as_json(),
        "stored JSON is the compact form"
    );
}

#[test]
fn flipped_bits_fail_verification() {
    let e = sample();
    let json = e.as_json();
    // id
    let id = e.id().to_hex();
    let bad_id = format!("{}{}", if &id[..1] == "0" { "1" } else { "0" }, &id[1..]);
    let err = Event::from_json(&with_field(json, "id", bad_id.into()))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    // content
    let err = Event::from_json(&with_field(json, "content", "hellp".into()))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    // tags
    let tags = serde_json::json!([["e", "ab".repeat(32)], ["t", "nostR"]]);
    let err = Event::from_json(&with_field(json, "tags", tags))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    // created_at and kind
    let err = Event::from_json(&with_field(json, "created_at", 1_700_000_001.into()))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    let err = Event::from_json(&with_field(json, "kind", 2.into()))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    // pubkey: another valid key, or an invalid point
    let other = Keys::from_seed(8).public_key().to_hex();
    let err = Event::from_json(&with_field(json, "pubkey", other.into()))
        .unwrap()
        .verify();
    assert!(matches!(err, Err(EventError::IdMismatch { .. })), "{err:?}");
    // sig: every byte position flipped fails
    let sig = e.sig().0;
    for i in [0usize, 31, 32, 63] {
        let mut s = sig;
        s[i] ^= 0x01;
        let hexsig = eventstore::hex::encode(&s);
        let err = Event::from_json(&with_field(json, "sig", hexsig.into()))
            .unwrap()
            .verify();
        assert_eq!(err, Err(EventError::BadSignature), "sig byte {i}");
    }
}

#[test]
fn a_re_signed_forgery_with_the_right_id_still_fails() {
    // Recompute the id after changing content, keep the old signature.
    let e = sample();
    let forged = EventBuilder::text_note("forged")
        .created_at(e.created_at())
        .sign(&Keys::from_seed(7));
    let json = with_field(forged.as_json(), "sig", e.sig().to_hex().into());
    let err = Event::from_json(&json).unwrap().verify();
    assert_eq!(err, Err(EventError::BadSignature));
}

#[test]
fn strict_parsing_names_the_problem() {
    let e = sample();
    let json = e.as_json();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "malformed"),
        ("[]".into(), "malformed"),
        (json.replace("\"sig\"", "\"sog\""), "missing field `sig`"),
        (with_field(json, "id", "abc".into()), "bad id: expected 64"),
        (
            with_field(json, "id", "G".repeat(64).into()),
            "bad id: not a lower-case hex",
        ),
        (
            with_field(json, "id", e.id().to_hex().to_uppercase().into()),
            "bad id",
        ),
        (with_field(json, "pubkey", "00".into()), "bad pubkey"),
        (
            with_field(json, "sig", "00".repeat(63).into()),
            "bad sig: expected 128",
        ),
        (with_field(json, "kind", 70_000.into()), "malformed"),
        (with_field(json, "kind", "1".into()), "malformed"),
        (with_field(json, "created_at", (-1).into()), "malformed"),
        (with_field(json, "created_at", 1.5.into()), "malformed"),
        (
            with_field(json, "tags", serde_json::json!([["e", 1]])),
            "malformed",
        ),
        (
            with_field(json, "tags", serde_json::json!("e")),
            "malformed",
        ),
        (
            with_field(json, "content", serde_json::Value::Null),
            "malformed",
        ),
    ];
    for (input, want) in cases {
        let err = Event::from_json(&input).expect_err(&input);
        assert!(
            err.to_string().contains(want),
            "{input}: got `{err}`, want `{want}`"
        );
    }
}

#[test]
fn invalid_point_pubkey_is_reported() {
    // x = 5 is not on secp256k1 (x^3 + 7 = 132 has no square root mod p).
    let mut pk = [0u8; 32];
    pk[31] = 5;
    let e = sample();
    let json = with_field(e.as_json(), "pubkey", eventstore::hex::encode(&pk).into());
    let ev = Event::from_json(&json).unwrap();
    // The id no longer matches either; check the point alone via a matching id.
    assert!(matches!(ev.verify(), Err(EventError::IdMismatch { .. })));
    let fixed = with_field(&json, "id", ev.compute_id().to_hex().into());
    let ev = Event::from_json(&fixed).unwrap();
    assert_eq!(ev.verify(), Err(EventError::BadPublicKey));
}

fn corpus() -> Vec<String> {
    let path = std::env::var("LAYER2_REAL_EVENTS")
        .expect("set LAYER2_REAL_EVENTS to a JSON-lines corpus of signed events");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "set LAYER2_REAL_EVENTS to a JSON-lines corpus"]
fn real_events_all_verify_and_keep_their_ids() {
    let lines = corpus();
    assert!(
        lines.len() > 1_000,
        "corpus has only {} events",
        lines.len()
    );
    for (n, line) in lines.iter().enumerate() {
        let e = Event::from_json(line).unwrap_or_else(|err| panic!("line {}: {err}", n + 1));
        e.verify()
            .unwrap_or_else(|err| panic!("line {}: {err}", n + 1));
        assert_eq!(e.compute_id(), e.id(), "line {}", n + 1);
        // The normalized JSON is the same event.
        let again = Event::from_json(e.as_json()).unwrap();
        assert_eq!(again, e, "line {}", n + 1);
        let orig: serde_json::Value = serde_json::from_str(line).unwrap();
        let ours: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
        for f in [
            "id",
            "pubkey",
            "created_at",
            "kind",
            "tags",
            "content",
            "sig",
        ] {
            assert_eq!(orig[f], ours[f], "line {} field {f}", n + 1);
        }
    }
}

#[test]
#[ignore = "set LAYER2_REAL_EVENTS to a JSON-lines corpus"]
fn real_events_any_flipped_bit_fails() {
    let lines = corpus();
    // A flipped bit in every field of a sample of real events: content, tags, created_at,
    // kind, id, pubkey, sig. Each must be refused by parsing or by verification.
    for line in lines.iter().step_by(97) {
        let e = Event::from_json(line).unwrap();
        let json = e.as_json().as_bytes().to_vec();
        let mut refused = 0;
        let positions: Vec<usize> = (0..json.len()).step_by(7).collect();
        for &i in &positions {
            let mut bytes = json.clone();
            bytes[i] ^= 0x01;
            let Ok(text) = String::from_utf8(bytes) else {
                refused += 1;
                continue;
            };
            match Event::from_json(&text) {
                Err(_) => refused += 1,
                Ok(ev) if ev.verify().is_err() => refused += 1,
                // A flip inside JSON syntax that yields an equal event (e.g. in an
                // escape that decodes the same) is no change at all.
                Ok(ev) => assert_eq!(ev, e, "flip at {i} accepted a different event"),
            }
        }
        assert!(
            refused * 10 >= positions.len() * 9,
            "{refused}/{}",
            positions.len()
        );
    }
}
