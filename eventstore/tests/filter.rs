//! Filter JSON (NIP-01) and matching.

use eventstore::{EventBuilder, Filter, Keys, Kind, Timestamp};

#[test]
fn json_round_trip_with_tag_keys() {
    let pk = Keys::from_seed(1).public_key();
    let json = format!(
        r##"{{"authors":["{pk}"],"kinds":[1,7],"#e":["x"],"#T":["Y"],"since":10,"until":20,"limit":5}}"##
    );
    let f = Filter::from_json(&json).unwrap();
    assert_eq!(f.kinds.as_ref().unwrap().len(), 2);
    assert!(f.tags.contains_key(&b'T') && f.tags.contains_key(&b'e'));
    assert_eq!(f.limit, Some(5));
    let back = Filter::from_json(&f.to_json()).unwrap();
    assert_eq!(back, f);
}

#[test]
fn bad_filters_are_refused_with_a_reason() {
    for (json, want) in [
        (r#"{"search":"x"}"#, "unsupported filter field `search`"),
        (r##"{"#ab":["x"]}"##, "unsupported filter field `#ab`"),
        (r##"{"#1":["x"]}"##, "unsupported filter field `#1`"),
        (r#"{"ids":["abc"]}"#, "expected 64"),
        (r#"{"authors":["ZZ"]}"#, "expected 64"),
        (r#"{"kinds":[70000]}"#, "invalid value"),
        (r#"{"limit":-1}"#, "invalid value"),
        (r#"{"since":"1"}"#, "invalid type"),
        (
            r#"{"kinds":[1],"kinds":[2]}"#,
            "duplicate filter field `kinds`",
        ),
        (r#"[]"#, "invalid type"),
    ] {
        let err = Filter::from_json(json).expect_err(json).to_string();
        assert!(err.contains(want), "{json}: `{err}` lacks `{want}`");
    }
}

#[test]
fn matches_each_condition() {
    let k = Keys::from_seed(3);
    let e = EventBuilder::new(Kind(7), "+")
        .tag(["e", "target"])
        .tag(["p", "someone", "wss://relay"])
        .tag(["emoji"])
        .created_at(Timestamp(100))
        .sign(&k);
    assert!(Filter::new().matches(&e));
    assert!(Filter::new().id(e.id()).matches(&e));
    assert!(!Filter::new().id(eventstore::EventId([0; 32])).matches(&e));
    assert!(Filter::new().author(k.public_key()).matches(&e));
    assert!(Filter::new().kind(Kind(7)).kind(Kind(1)).matches(&e));
    assert!(!Filter::new().kind(Kind(1)).matches(&e));
    assert!(
        Filter::new()
            .tag('e', "target")
            .tag('p', "someone")
            .matches(&e)
    );
    assert!(
        !Filter::new()
            .tag('e', "target")
            .tag('p', "nobody")
            .matches(&e)
    );
    assert!(
        Filter::new()
            .since(Timestamp(100))
            .until(Timestamp(100))
            .matches(&e)
    );
    assert!(!Filter::new().since(Timestamp(101)).matches(&e));
    assert!(!Filter::new().until(Timestamp(99)).matches(&e));
    // Multi-letter tag names are never matched by `#x`.
    assert!(!Filter::new().tag('e', "moji").matches(&e));
}
