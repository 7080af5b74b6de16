//! Saving, filters, limits and the canonical order.

use std::sync::Arc;

use crate::conformance::fixtures::*;
use crate::filter::Filter;
use crate::order::sort_canonical;
use crate::store::{EventStore, SaveOutcome};
use crate::types::{EventId, Kind, Timestamp};

type Store = Arc<dyn EventStore>;

pub async fn save_then_get_by_id(s: Store) {
    let k = keys(1);
    let e = note(&k, T0, "hello");
    assert_eq!(save(&s, &e).await, SaveOutcome::Stored);
    let got = query(&s, &[Filter::new().id(e.id())]).await;
    assert_eq!(got, vec![e]);
    let missing = query_ids(&s, &[Filter::new().id(EventId([7; 32]))]).await;
    assert!(missing.is_empty());
}

pub async fn duplicate_is_reported(s: Store) {
    let e = note(&keys(1), T0, "once");
    assert_eq!(save(&s, &e).await, SaveOutcome::Stored);
    assert_eq!(save(&s, &e).await, SaveOutcome::Duplicate);
    assert_eq!(query(&s, &[Filter::new()]).await.len(), 1);
}

pub async fn stored_json_round_trips(s: Store) {
    let content = "quote \" backslash \\ newline \n tab \t ctl \u{1} \u{7f} é 日本 🌍 </script>";
    let e = event(&keys(1), 1, T0, &[&["t", "ü\"\\\n"], &["x"]], content);
    save(&s, &e).await;
    let got = query(&s, &[Filter::new().id(e.id())]).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_json(), e.as_json());
    assert_eq!(got[0].content(), content);
    got[0].verify().expect("served event verifies");
}

pub async fn filter_by_ids(s: Store) {
    let k = keys(1);
    let evs: Vec<_> = (0..5).map(|i| note(&k, T0 + i, &format!("n{i}"))).collect();
    save_all(&s, &evs).await;
    let got = query_ids(&s, &[Filter::new().id(evs[1].id()).id(evs[3].id())]).await;
    assert_eq!(got, vec![evs[3].id(), evs[1].id()]);
}

pub async fn filter_by_authors(s: Store) {
    let (a, b, c) = (keys(1), keys(2), keys(3));
    let evs = [
        note(&a, T0, "a"),
        note(&b, T0 + 1, "b"),
        note(&c, T0 + 2, "c"),
    ];
    save_all(&s, &evs).await;
    let f = Filter::new().author(a.public_key()).author(c.public_key());
    assert_eq!(query_ids(&s, &[f]).await, vec![evs[2].id(), evs[0].id()]);
}

pub async fn filter_by_kinds(s: Store) {
    let k = keys(1);
    let evs = [
        event(&k, 1, T0, &[], "1"),
        event(&k, 7, T0 + 1, &[], "7"),
        event(&k, 1984, T0 + 2, &[], "1984"),
    ];
    save_all(&s, &evs).await;
    let f = Filter::new().kind(Kind(7)).kind(Kind(1984));
    assert_eq!(query_ids(&s, &[f]).await, vec![evs[2].id(), evs[1].id()]);
}

pub async fn filter_by_tag(s: Store) {
    let k = keys(1);
    let target = "e".repeat(64);
    let evs = [
        event(&k, 1, T0, &[&["e", &target]], "reply"),
        event(&k, 1, T0 + 1, &[&["p", &target]], "mention"),
        event(&k, 1, T0 + 2, &[&["e"]], "no value"),
    ];
    save_all(&s, &evs).await;
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('e', &target)]).await,
        vec![evs[0].id()]
    );
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('p', &target)]).await,
        vec![evs[1].id()]
    );
}

pub async fn filter_tag_values_are_ored(s: Store) {
    let k = keys(1);
    let evs = [
        event(&k, 1, T0, &[&["t", "nostr"]], ""),
        event(&k, 1, T0 + 1, &[&["t", "rust"]], ""),
        event(&k, 1, T0 + 2, &[&["t", "other"]], ""),
    ];
    save_all(&s, &evs).await;
    let f = Filter::new().tag('t', "nostr").tag('t', "rust");
    assert_eq!(
        query_ids(&s, std::slice::from_ref(&f)).await,
        vec![evs[1].id(), evs[0].id()]
    );
    // An event carrying both values is one answer, not two, here beside another of
    // its second and under a limit.
    let both = event(&k, 1, T0 + 1, &[&["t", "rust"], &["t", "nostr"]], "both");
    save(&s, &both).await;
    let mut want = vec![evs[1].clone(), both.clone(), evs[0].clone()];
    sort_canonical(&mut want);
    let want: Vec<EventId> = want.iter().map(|e| e.id()).collect();
    assert_eq!(query_ids(&s, std::slice::from_ref(&f)).await, want);
    assert_eq!(query_ids(&s, &[f.clone().limit(2)]).await, want[..2]);
    assert_eq!(count(&s, &[f]).await, 3);
}

pub async fn filter_tag_letters_are_anded(s: Store) {
    let k = keys(1);
    let evs = [
        event(&k, 1, T0, &[&["t", "a"], &["r", "x"]], ""),
        event(&k, 1, T0 + 1, &[&["t", "a"]], ""),
        event(&k, 1, T0 + 2, &[&["r", "x"]], ""),
    ];
    save_all(&s, &evs).await;
    let f = Filter::new().tag('t', "a").tag('r', "x");
    assert_eq!(query_ids(&s, &[f]).await, vec![evs[0].id()]);
}

pub async fn filter_tag_is_case_sensitive(s: Store) {
    let k = keys(1);
    let evs = [
        event(&k, 1, T0, &[&["T", "up"]], ""),
        event(&k, 1, T0 + 1, &[&["t", "up"]], ""),
        event(&k, 1, T0 + 2, &[&["t", "UP"]], ""),
    ];
    save_all(&s, &evs).await;
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('T', "up")]).await,
        vec![evs[0].id()]
    );
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('t', "up")]).await,
        vec![evs[1].id()]
    );
}

fn timeline(n: u64) -> Vec<crate::Event> {
    let k = keys(1);
    (0..n)
        .map(|i| note(&k, T0 + i * 10, &format!("t{i}")))
        .collect()
}

pub async fn filter_since_is_inclusive(s: Store) {
    let evs = timeline(5);
    save_all(&s, &evs).await;
    let got = query_ids(&s, &[Filter::new().since(Timestamp(T0 + 30))]).await;
    assert_eq!(got, vec![evs[4].id(), evs[3].id()]);
}

pub async fn filter_until_is_inclusive(s: Store) {
    let evs = timeline(5);
    save_all(&s, &evs).await;
    let got = query_ids(&s, &[Filter::new().until(Timestamp(T0 + 10))]).await;
    assert_eq!(got, vec![evs[1].id(), evs[0].id()]);
}

pub async fn filter_since_until_window(s: Store) {
    let evs = timeline(6);
    save_all(&s, &evs).await;
    let f = Filter::new()
        .since(Timestamp(T0 + 10))
        .until(Timestamp(T0 + 30));
    let got = query_ids(&s, &[f]).await;
    assert_eq!(got, vec![evs[3].id(), evs[2].id(), evs[1].id()]);
    let exact = Filter::new()
        .since(Timestamp(T0 + 20))
        .until(Timestamp(T0 + 20));
    assert_eq!(query_ids(&s, &[exact]).await, vec![evs[2].id()]);
    let inverted = Filter::new()
        .since(Timestamp(T0 + 30))
        .until(Timestamp(T0 + 10));
    assert!(query_ids(&s, &[inverted]).await.is_empty());
}

pub async fn filter_all_fields_combined(s: Store) {
    let (a, b) = (keys(1), keys(2));
    let evs = [
        event(&a, 1, T0, &[&["t", "x"]], "match old"),
        event(&a, 1, T0 + 10, &[&["t", "x"]], "match"),
        event(&a, 1, T0 + 11, &[&["t", "x"]], "match newest"),
        event(&a, 7, T0 + 10, &[&["t", "x"]], "wrong kind"),
        event(&b, 1, T0 + 10, &[&["t", "x"]], "wrong author"),
        event(&a, 1, T0 + 10, &[&["t", "y"]], "wrong tag"),
        event(&a, 1, T0 + 50, &[&["t", "x"]], "too new"),
    ];
    save_all(&s, &evs).await;
    let f = Filter::new()
        .author(a.public_key())
        .kind(Kind(1))
        .tag('t', "x")
        .since(Timestamp(T0 + 5))
        .until(Timestamp(T0 + 20))
        .limit(10);
    assert_eq!(
        query_ids(&s, std::slice::from_ref(&f)).await,
        vec![evs[2].id(), evs[1].id()]
    );
    let with_ids = f.id(evs[1].id()).id(evs[3].id());
    assert_eq!(query_ids(&s, &[with_ids]).await, vec![evs[1].id()]);
}

pub async fn filter_empty_matches_all(s: Store) {
    let evs = timeline(4);
    save_all(&s, &evs).await;
    let got = query_ids(&s, &[Filter::new()]).await;
    let want: Vec<_> = evs.iter().rev().map(|e| e.id()).collect();
    assert_eq!(got, want);
}

pub async fn filter_empty_list_matches_nothing(s: Store) {
    save_all(&s, &timeline(3)).await;
    for json in [
        r#"{"ids":[]}"#,
        r#"{"authors":[]}"#,
        r#"{"kinds":[]}"#,
        r##"{"#t":[]}"##,
    ] {
        let f = Filter::from_json(json).expect("valid filter");
        assert!(query_ids(&s, &[f]).await.is_empty(), "{json}");
    }
}

pub async fn limit_returns_newest(s: Store) {
    let evs = timeline(10);
    save_all(&s, &evs).await;
    let got = query_ids(&s, &[Filter::new().limit(3)]).await;
    assert_eq!(got, vec![evs[9].id(), evs[8].id(), evs[7].id()]);
    let f = Filter::new().until(Timestamp(T0 + 45)).limit(2);
    assert_eq!(query_ids(&s, &[f]).await, vec![evs[4].id(), evs[3].id()]);
}

pub async fn limit_zero_returns_nothing(s: Store) {
    save_all(&s, &timeline(3)).await;
    assert!(query_ids(&s, &[Filter::new().limit(0)]).await.is_empty());
}

pub async fn limit_applies_per_filter(s: Store) {
    let (a, b) = (keys(1), keys(2));
    let ea: Vec<_> = (0..4).map(|i| note(&a, T0 + i, "a")).collect();
    let eb: Vec<_> = (0..4).map(|i| note(&b, T0 + 100 + i, "b")).collect();
    save_all(&s, &ea).await;
    save_all(&s, &eb).await;
    let fa = Filter::new().author(a.public_key()).limit(2);
    let fb = Filter::new().author(b.public_key()).limit(1);
    let got = query_ids(&s, &[fa, fb]).await;
    assert_eq!(got, vec![eb[3].id(), ea[3].id(), ea[2].id()]);
}

pub async fn filters_union_without_repeats(s: Store) {
    let k = keys(1);
    let evs = [
        event(&k, 1, T0, &[&["t", "a"]], ""),
        event(&k, 7, T0 + 1, &[&["t", "a"]], ""),
        event(&k, 7, T0 + 2, &[], ""),
    ];
    save_all(&s, &evs).await;
    let got = query_ids(
        &s,
        &[Filter::new().tag('t', "a"), Filter::new().kind(Kind(7))],
    )
    .await;
    assert_eq!(got, vec![evs[2].id(), evs[1].id(), evs[0].id()]);
}

/// Many ranges (authors × kinds) sharing one busy second: the limit cuts the ties by id
/// across all ranges, as if they were one list.
pub async fn ties_across_ranges_under_a_limit(s: Store) {
    let authors = [keys(11), keys(12), keys(13)];
    let mut evs = Vec::new();
    for i in 0..60u64 {
        let k = &authors[(i % 3) as usize];
        let kind = if i % 2 == 0 { 1 } else { 7 };
        let t = if i < 45 { T0 + 5 } else { T0 + 4 };
        evs.push(event(k, kind, t, &[], &format!("busy{i}")));
    }
    save_all(&s, &evs).await;
    let f = Filter::new()
        .author(authors[0].public_key())
        .author(authors[1].public_key())
        .kind(Kind(1))
        .kind(Kind(7));
    let mut want: Vec<_> = evs.iter().filter(|e| f.matches(e)).cloned().collect();
    sort_canonical(&mut want);
    for limit in [1, 5, 29, 31, 100] {
        let got = query_ids(&s, &[f.clone().limit(limit)]).await;
        let n = limit.min(want.len());
        assert_eq!(got, ids(&want[..n]), "limit {limit}");
    }
}

pub async fn canonical_order_ties_by_id(s: Store) {
    let k = keys(1);
    let mut evs: Vec<_> = (0..6)
        .map(|i| note(&k, T0 + i / 3, &format!("tie{i}")))
        .collect();
    save_all(&s, &evs).await;
    sort_canonical(&mut evs);
    let got = query_ids(&s, &[Filter::new()]).await;
    assert_eq!(got, ids(&evs));
    // The same ties must be cut the same way under a limit.
    let got = query_ids(&s, &[Filter::new().limit(2)]).await;
    assert_eq!(got, ids(&evs[..2]));
    assert!(evs[0].created_at() == evs[1].created_at() && evs[0].id() < evs[1].id());
}
