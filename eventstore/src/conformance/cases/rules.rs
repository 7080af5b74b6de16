//! NIP rules: replacement, deletion, expiration, ephemeral events, COUNT, tags.

use std::sync::Arc;

use crate::conformance::fixtures::*;
use crate::filter::Filter;
use crate::keys::EventBuilder;
use crate::order::sort_canonical;
use crate::store::{EventStore, Reason, SaveOutcome};
use crate::types::{EventId, Kind, Timestamp};

type Store = Arc<dyn EventStore>;

pub async fn replaceable_keeps_newest(s: Store) {
    let k = keys(1);
    let old = event(&k, 0, T0, &[], "{\"name\":\"old\"}");
    let new = event(&k, 0, T0 + 5, &[], "{\"name\":\"new\"}");
    assert_eq!(save(&s, &old).await, SaveOutcome::Stored);
    assert_eq!(
        save(&s, &new).await,
        SaveOutcome::Replaced { old: old.id() }
    );
    let f = Filter::new().author(k.public_key()).kind(Kind(0));
    assert_eq!(query_ids(&s, &[f]).await, vec![new.id()]);
    assert!(
        query_ids(&s, &[Filter::new().id(old.id())])
            .await
            .is_empty()
    );
}

pub async fn replaceable_older_arrives_later(s: Store) {
    let k = keys(1);
    let old = event(&k, 10002, T0, &[&["r", "wss://a"]], "");
    let new = event(&k, 10002, T0 + 5, &[&["r", "wss://b"]], "");
    assert_eq!(save(&s, &new).await, SaveOutcome::Stored);
    assert_eq!(
        save(&s, &old).await,
        SaveOutcome::Rejected(Reason::Superseded)
    );
    let f = Filter::new().kind(Kind(10002));
    assert_eq!(query_ids(&s, &[f]).await, vec![new.id()]);
}

pub async fn replaceable_equal_timestamps_keep_lowest_id(s: Store) {
    let k = keys(1);
    let x = event(&k, 3, T0, &[], "x");
    let y = event(&k, 3, T0, &[], "y");
    let (low, high) = if x.id() < y.id() { (x, y) } else { (y, x) };
    // The higher id first: the lower id replaces it.
    assert_eq!(save(&s, &high).await, SaveOutcome::Stored);
    assert_eq!(
        save(&s, &low).await,
        SaveOutcome::Replaced { old: high.id() }
    );
    // And the higher id again: refused.
    assert_eq!(
        save(&s, &high).await,
        SaveOutcome::Rejected(Reason::Superseded)
    );
    let f = Filter::new().kind(Kind(3));
    assert_eq!(query_ids(&s, &[f]).await, vec![low.id()]);
}

pub async fn replaceable_kinds_are_independent(s: Store) {
    let (a, b) = (keys(1), keys(2));
    let evs = [
        event(&a, 0, T0, &[], "a0"),
        event(&a, 3, T0, &[], "a3"),
        event(&b, 0, T0, &[], "b0"),
        event(&a, 10000, T0, &[], "a10000"),
    ];
    save_all(&s, &evs).await;
    assert_eq!(count(&s, &[Filter::new()]).await, 4);
}

pub async fn addressable_keeps_newest_per_d(s: Store) {
    let k = keys(1);
    let a1 = event(&k, 30023, T0, &[&["d", "post-a"]], "v1");
    let a2 = event(&k, 30023, T0 + 1, &[&["d", "post-a"]], "v2");
    let b1 = event(&k, 30023, T0, &[&["d", "post-b"]], "b");
    let a0 = event(&k, 30023, T0 - 1, &[&["d", "post-a"]], "v0");
    assert_eq!(save(&s, &a1).await, SaveOutcome::Stored);
    assert_eq!(save(&s, &b1).await, SaveOutcome::Stored);
    assert_eq!(save(&s, &a2).await, SaveOutcome::Replaced { old: a1.id() });
    assert_eq!(
        save(&s, &a0).await,
        SaveOutcome::Rejected(Reason::Superseded)
    );
    let f = Filter::new().kind(Kind(30023));
    assert_eq!(query_ids(&s, &[f]).await, vec![a2.id(), b1.id()]);
    let by_d = Filter::new().kind(Kind(30023)).tag('d', "post-a");
    assert_eq!(query_ids(&s, &[by_d]).await, vec![a2.id()]);
}

pub async fn addressable_missing_d_is_empty_d(s: Store) {
    let k = keys(1);
    let none = event(&k, 30000, T0, &[], "no d");
    let empty = event(&k, 30000, T0 + 1, &[&["d", ""]], "empty d");
    assert_eq!(save(&s, &none).await, SaveOutcome::Stored);
    assert_eq!(
        save(&s, &empty).await,
        SaveOutcome::Replaced { old: none.id() }
    );
}

pub async fn addressable_equal_timestamps_keep_lowest_id(s: Store) {
    let k = keys(1);
    let x = event(&k, 30001, T0, &[&["d", "same"]], "x");
    let y = event(&k, 30001, T0, &[&["d", "same"]], "y");
    let (low, high) = if x.id() < y.id() { (x, y) } else { (y, x) };
    assert_eq!(save(&s, &low).await, SaveOutcome::Stored);
    assert_eq!(
        save(&s, &high).await,
        SaveOutcome::Rejected(Reason::Superseded)
    );
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![low.id()]);
}

fn deletion(k: &crate::Keys, at: u64, e: &[EventId], a: &[String]) -> crate::Event {
    let mut b = EventBuilder::new(Kind::DELETION, "").created_at(Timestamp(at));
    for id in e {
        b = b.tag(["e".to_owned(), id.to_hex()]);
    }
    for addr in a {
        b = b.tag(["a".to_owned(), addr.clone()]);
    }
    b.sign_deterministic(k)
}

pub async fn deletion_by_id(s: Store) {
    let k = keys(1);
    let keep = note(&k, T0, "keep");
    let gone = note(&k, T0 + 1, "gone");
    save_all(&s, &[keep.clone(), gone.clone()]).await;
    let del = deletion(&k, T0 + 2, &[gone.id()], &[]);
    assert_eq!(save(&s, &del).await, SaveOutcome::Stored);
    let got = query_ids(&s, &[Filter::new()]).await;
    assert_eq!(got, vec![del.id(), keep.id()]);
}

pub async fn deletion_by_foreign_author_is_ignored(s: Store) {
    let (owner, other) = (keys(1), keys(2));
    let e = note(&owner, T0, "mine");
    save(&s, &e).await;
    let del = deletion(&other, T0 + 1, &[e.id()], &[]);
    assert_eq!(save(&s, &del).await, SaveOutcome::Stored);
    assert_eq!(
        query_ids(&s, &[Filter::new().id(e.id())]).await,
        vec![e.id()]
    );
    // A foreign deletion leaves no tombstone that could bite later either.
    assert_eq!(save(&s, &e).await, SaveOutcome::Duplicate);
}

pub async fn deleted_event_is_refused_again(s: Store) {
    let k = keys(1);
    let e = note(&k, T0, "to delete");
    save(&s, &e).await;
    save(&s, &deletion(&k, T0 + 1, &[e.id()], &[])).await;
    assert_eq!(save(&s, &e).await, SaveOutcome::Rejected(Reason::Deleted));
    assert!(query_ids(&s, &[Filter::new().id(e.id())]).await.is_empty());
}

pub async fn deletion_before_target_arrives(s: Store) {
    let (k, other) = (keys(1), keys(2));
    let e = note(&k, T0, "late");
    let foreign = note(&other, T0, "foreign");
    save(&s, &deletion(&k, T0 + 1, &[e.id(), foreign.id()], &[])).await;
    assert_eq!(save(&s, &e).await, SaveOutcome::Rejected(Reason::Deleted));
    // The same request can't delete another author's event, even unseen.
    assert_eq!(save(&s, &foreign).await, SaveOutcome::Stored);
}

pub async fn deletion_by_address(s: Store) {
    let k = keys(1);
    let v1 = event(&k, 30023, T0, &[&["d", "art"]], "v1");
    let other_d = event(&k, 30023, T0, &[&["d", "keep"]], "keep");
    save_all(&s, &[v1.clone(), other_d.clone()]).await;
    let addr = format!("30023:{}:art", k.public_key());
    let del = deletion(&k, T0 + 10, &[], &[addr]);
    save(&s, &del).await;
    let f = Filter::new().kind(Kind(30023));
    assert_eq!(
        query_ids(&s, std::slice::from_ref(&f)).await,
        vec![other_d.id()]
    );
    // Versions up to the request's created_at are refused; newer ones are accepted.
    let v2 = event(&k, 30023, T0 + 10, &[&["d", "art"]], "v2");
    assert_eq!(save(&s, &v2).await, SaveOutcome::Rejected(Reason::Deleted));
    let v3 = event(&k, 30023, T0 + 11, &[&["d", "art"]], "v3");
    assert_eq!(save(&s, &v3).await, SaveOutcome::Stored);
    assert_eq!(query_ids(&s, &[f]).await, vec![v3.id(), other_d.id()]);
}

pub async fn deletion_of_a_deletion_has_no_effect(s: Store) {
    let k = keys(1);
    let e = note(&k, T0, "x");
    save(&s, &e).await;
    let del = deletion(&k, T0 + 1, &[e.id()], &[]);
    save(&s, &del).await;
    let undo = deletion(&k, T0 + 2, &[del.id()], &[]);
    save(&s, &undo).await;
    let got = query_ids(&s, &[Filter::new().kind(Kind::DELETION)]).await;
    assert_eq!(got, vec![undo.id(), del.id()]);
    assert_eq!(save(&s, &e).await, SaveOutcome::Rejected(Reason::Deleted));
}

pub async fn deletion_by_foreign_address_is_ignored(s: Store) {
    let (owner, other) = (keys(1), keys(2));
    let e = event(&owner, 30023, T0, &[&["d", "x"]], "");
    save(&s, &e).await;
    let addr = format!("30023:{}:x", owner.public_key());
    save(&s, &deletion(&other, T0 + 5, &[], &[addr])).await;
    assert_eq!(
        query_ids(&s, &[Filter::new().id(e.id())]).await,
        vec![e.id()]
    );
}

pub async fn expired_event_is_refused(s: Store) {
    let k = keys(1);
    let past = (Timestamp::now().0 - 10).to_string();
    let e = event(&k, 1, T0, &[&["expiration", &past]], "expired");
    assert_eq!(save(&s, &e).await, SaveOutcome::Rejected(Reason::Expired));
    assert!(query_ids(&s, &[Filter::new()]).await.is_empty());
    let future = (Timestamp::now().0 + 3600).to_string();
    let live = event(&k, 1, T0, &[&["expiration", &future]], "live");
    assert_eq!(save(&s, &live).await, SaveOutcome::Stored);
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![live.id()]);
}

pub async fn expiring_event_stops_being_served(s: Store) {
    let k = keys(1);
    // Expires at the next whole second after a margin: stored now, expired soon after.
    let exp = Timestamp::now().0 + 2;
    let e = event(&k, 1, T0, &[&["expiration", &exp.to_string()]], "soon");
    let keep = note(&k, T0 - 1, "stays");
    assert_eq!(save(&s, &e).await, SaveOutcome::Stored);
    save(&s, &keep).await;
    let wait = exp.saturating_sub(Timestamp::now().0) + 1;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![keep.id()]);
    assert!(query_ids(&s, &[Filter::new().id(e.id())]).await.is_empty());
    assert_eq!(count(&s, &[Filter::new()]).await, 1);
}

pub async fn ephemeral_is_never_stored(s: Store) {
    let k = keys(1);
    let e = event(&k, 20001, T0, &[], "typing…");
    assert_eq!(save(&s, &e).await, SaveOutcome::Ephemeral);
    assert!(query_ids(&s, &[Filter::new()]).await.is_empty());
    assert_eq!(count(&s, &[Filter::new()]).await, 0);
}

pub async fn count_matches_query(s: Store) {
    let (a, b) = (keys(1), keys(2));
    let mut evs = Vec::new();
    for i in 0..6 {
        evs.push(event(&a, 1, T0 + i, &[&["t", "x"]], ""));
        evs.push(event(&b, 7, T0 + i, &[], ""));
    }
    save_all(&s, &evs).await;
    let fa = Filter::new().author(a.public_key()).limit(2);
    let fx = Filter::new().tag('t', "x");
    assert_eq!(
        count(&s, std::slice::from_ref(&fa)).await,
        6,
        "count ignores limit"
    );
    assert_eq!(count(&s, &[fa, fx]).await, 6, "overlap counted once");
    assert_eq!(count(&s, &[Filter::new()]).await, 12);
    assert_eq!(count(&s, &[Filter::new().kind(Kind(9))]).await, 0);
}

pub async fn large_tag_values(s: Store) {
    let k = keys(1);
    let big = "v".repeat(5_000);
    let huge = format!("{}{}", "w".repeat(20_000), "tail");
    let near = format!("{}x", "v".repeat(4_999));
    let evs = [
        event(&k, 1, T0, &[&["t", &big]], "big"),
        event(&k, 1, T0 + 1, &[&["t", &huge]], "huge"),
        event(&k, 1, T0 + 2, &[&["t", &near]], "same prefix, other value"),
    ];
    save_all(&s, &evs).await;
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('t', &big)]).await,
        vec![evs[0].id()]
    );
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('t', &huge)]).await,
        vec![evs[1].id()]
    );
    assert_eq!(
        query_ids(&s, &[Filter::new().tag('t', &near)]).await,
        vec![evs[2].id()]
    );
}

pub async fn many_tags(s: Store) {
    let k = keys(1);
    let tags: Vec<Vec<String>> = (0..1_500)
        .map(|i| vec!["p".to_owned(), format!("{i:064x}")])
        .collect();
    let e = EventBuilder::text_note("many")
        .tags(tags)
        .created_at(Timestamp(T0))
        .sign_deterministic(&k);
    assert_eq!(save(&s, &e).await, SaveOutcome::Stored);
    for i in [0, 749, 1_499] {
        let f = Filter::new().tag('p', format!("{i:064x}"));
        assert_eq!(query_ids(&s, &[f]).await, vec![e.id()]);
    }
    let f = Filter::new().tag('p', format!("{:064x}", 1_500));
    assert!(query_ids(&s, &[f]).await.is_empty());
}

pub async fn delete_api_removes_and_refuses(s: Store) {
    let k = keys(1);
    let e = note(&k, T0, "spam");
    let keep = note(&k, T0 + 1, "ham");
    save_all(&s, &[e.clone(), keep.clone()]).await;
    let removed = s
        .delete(&[e.id(), EventId([9; 32])])
        .await
        .expect("delete works");
    assert_eq!(removed, 1);
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![keep.id()]);
    assert_eq!(save(&s, &e).await, SaveOutcome::Rejected(Reason::Deleted));
}

pub async fn many_authors_and_kinds_merge_in_order(s: Store) {
    let authors: Vec<_> = (1..=6).map(keys).collect();
    let mut evs = Vec::new();
    for (i, k) in authors.iter().enumerate() {
        for j in 0..5u64 {
            let kind = if j % 2 == 0 { 1 } else { 6 };
            evs.push(event(
                k,
                kind,
                T0 + (i as u64 * 7 + j * 3) % 11,
                &[],
                &format!("{i}/{j}"),
            ));
        }
    }
    save_all(&s, &evs).await;
    let pick = [0usize, 2, 3, 5];
    let mut f = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(7);
    for &i in &pick {
        f = f.author(authors[i].public_key());
    }
    let mut want: Vec<_> = evs.iter().filter(|e| f.matches(e)).cloned().collect();
    sort_canonical(&mut want);
    want.truncate(7);
    assert_eq!(query_ids(&s, &[f]).await, ids(&want));
}
