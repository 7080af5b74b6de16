//! Rulings (NIP-86 bans and allow-lists): kept, versioned, and the bans enforced.

use std::sync::Arc;

use crate::conformance::fixtures::*;
use crate::filter::Filter;
use crate::moderation::{Change, Ruling, Setting};
use crate::store::{EventStore, Reason, SaveOutcome};
use crate::types::{EventId, Kind};

type Store = Arc<dyn EventStore>;

async fn rule(s: &Store, c: Change) -> crate::moderation::Ruled {
    match s.rule(&c).await {
        Ok(r) => r,
        Err(e) => panic!("rule {c:?} failed: {e}"),
    }
}

pub async fn rulings_are_kept_and_versioned(s: Store) {
    let first = s.rulings_since(u64::MAX).await.expect("rulings");
    let start = first.expect("rulings differ from an impossible version");
    assert!(start.entries.is_empty(), "{start:?}");
    let pk = keys(1).public_key();
    let r1 = rule(&s, Change::add(Ruling::AllowPubkey(pk), "friend")).await;
    assert!(r1.version > start.version);
    let r2 = rule(&s, Change::add(Ruling::DisallowKind(Kind(4)), "no DMs")).await;
    let r3 = rule(&s, Change::add(Ruling::Set(Setting::Name), "relay x")).await;
    assert!(r2.version > r1.version && r3.version > r2.version);
    let now = s.rulings_since(0).await.expect("rulings").expect("changed");
    assert_eq!(now.version, r3.version);
    assert_eq!(now.entries.len(), 3);
    assert_eq!(now.entries[&Ruling::AllowPubkey(pk)], "friend");
    assert_eq!(now.setting(Setting::Name), Some("relay x"));
    // Unchanged since its version: nothing to send.
    assert_eq!(s.rulings_since(now.version).await.expect("rulings"), None);
    // Opposites replace each other; removal forgets.
    rule(&s, Change::add(Ruling::AllowKind(Kind(4)), "")).await;
    rule(&s, Change::Remove(Ruling::AllowPubkey(pk))).await;
    let after = s.rulings_since(0).await.expect("rulings").expect("changed");
    assert!(!after.entries.contains_key(&Ruling::DisallowKind(Kind(4))));
    assert!(after.entries.contains_key(&Ruling::AllowKind(Kind(4))));
    assert!(!after.entries.contains_key(&Ruling::AllowPubkey(pk)));
    assert_eq!(after.entries.len(), 2);
}

pub async fn a_banned_author_is_removed_and_refused(s: Store) {
    let (bad, good) = (keys(1), keys(2));
    let spam: Vec<_> = (0..5)
        .map(|i| note(&bad, T0 + i, &format!("spam {i}")))
        .collect();
    let fine = note(&good, T0, "fine");
    save_all(&s, &spam).await;
    save_all(&s, std::slice::from_ref(&fine)).await;
    let r = rule(&s, Change::add(Ruling::BanPubkey(bad.public_key()), "spam")).await;
    let mut removed = r.removed.clone();
    removed.sort();
    let mut expected = ids(&spam);
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![fine.id()]);
    let again = note(&bad, T0 + 10, "more spam");
    assert_eq!(
        save(&s, &again).await,
        SaveOutcome::Rejected(Reason::Banned)
    );
    // What was removed was not tombstoned: lifting the ban lets it back in.
    rule(&s, Change::Remove(Ruling::BanPubkey(bad.public_key()))).await;
    assert_eq!(save(&s, &spam[0]).await, SaveOutcome::Stored);
    assert_eq!(save(&s, &again).await, SaveOutcome::Stored);
}

pub async fn a_banned_event_is_removed_and_refused(s: Store) {
    let k = keys(1);
    let (a, b) = (note(&k, T0, "a"), note(&k, T0 + 1, "b"));
    save_all(&s, &[a.clone(), b.clone()]).await;
    let r = rule(&s, Change::add(Ruling::BanEvent(a.id()), "illegal")).await;
    assert_eq!(r.removed, vec![a.id()]);
    assert_eq!(query_ids(&s, &[Filter::new()]).await, vec![b.id()]);
    assert_eq!(save(&s, &a).await, SaveOutcome::Rejected(Reason::Banned));
    // Banning an event not stored removes nothing and still refuses it later.
    let c = note(&k, T0 + 2, "c");
    let r = rule(&s, Change::add(Ruling::BanEvent(c.id()), "")).await;
    assert!(r.removed.is_empty());
    assert_eq!(save(&s, &c).await, SaveOutcome::Rejected(Reason::Banned));
    let unknown = rule(&s, Change::add(Ruling::BanEvent(EventId([7; 32])), "")).await;
    assert!(unknown.removed.is_empty());
}

async fn purge(s: &Store, what: crate::store::Purge, max: usize) -> Vec<EventId> {
    match s.purge(&what, max).await {
        Ok(mut ids) => {
            ids.sort();
            ids
        }
        Err(e) => panic!("purge {what:?} failed: {e}"),
    }
}

pub async fn purge_removes_what_it_names_in_steps(s: Store) {
    use crate::store::Purge;
    let (a, b) = (keys(1), keys(2));
    let notes: Vec<_> = (0..5).map(|i| note(&a, T0 + i, &format!("n{i}"))).collect();
    let reactions: Vec<_> = (0..3)
        .map(|i| event(&a, 7, T0 + i, &[&["e", &notes[0].id().to_hex()]], "+"))
        .collect();
    let other = note(&b, T0, "other");
    save_all(&s, &notes).await;
    save_all(&s, &reactions).await;
    save_all(&s, std::slice::from_ref(&other)).await;
    // Retention: reactions older than T0 + 2 (inclusive `until`, as in a filter).
    let old = Filter::new()
        .kind(crate::types::Kind(7))
        .until(crate::types::Timestamp(T0 + 1));
    let mut expected = ids(&reactions[..2]);
    expected.sort();
    assert_eq!(
        purge(&s, Purge::Matching(old.clone()), 1_000).await,
        expected
    );
    assert!(purge(&s, Purge::Matching(old), 1_000).await.is_empty());
    // Bounded steps: at most `max` each, until none is left; the filter's limit is ignored.
    let mine = Filter::new()
        .author(a.public_key())
        .kind(crate::types::Kind(1))
        .limit(1);
    let mut gone = Vec::new();
    for want in [2, 2, 1, 0] {
        let step = purge(&s, Purge::Matching(mine.clone()), 2).await;
        assert_eq!(step.len(), want, "{step:?}");
        gone.extend(step);
    }
    gone.sort();
    let mut all = ids(&notes);
    all.sort();
    assert_eq!(gone, all);
    let mut left = vec![reactions[2].id(), other.id()];
    left.sort();
    let mut held = query_ids(&s, &[Filter::new()]).await;
    held.sort();
    assert_eq!(held, left);
    // No tombstone: a purged event may come back.
    assert_eq!(save(&s, &notes[0]).await, SaveOutcome::Stored);
    // Nothing named, nothing removed.
    let none = Filter {
        ids: Some(Default::default()),
        ..Filter::default()
    };
    assert!(purge(&s, Purge::Matching(none), 10).await.is_empty());
    // Expiry: an event is purged once the given time reaches its expiration.
    let exp = crate::types::Timestamp::now().0 + 3_600;
    let soon = event(&b, 1, T0, &[&["expiration", &exp.to_string()]], "soon");
    assert_eq!(save(&s, &soon).await, SaveOutcome::Stored);
    let before = crate::types::Timestamp(exp - 1);
    assert!(purge(&s, Purge::ExpiredBy(before), 10).await.is_empty());
    let at = crate::types::Timestamp(exp);
    assert_eq!(purge(&s, Purge::ExpiredBy(at), 10).await, vec![soon.id()]);
    assert!(
        query_ids(&s, &[Filter::new().id(soon.id())])
            .await
            .is_empty()
    );
}

async fn over(s: &Store, kinds: &[u16], keep: u64, max: usize) -> Vec<crate::types::PublicKey> {
    let kinds: Option<std::collections::BTreeSet<Kind>> =
        (!kinds.is_empty()).then(|| kinds.iter().copied().map(Kind).collect());
    match s.authors_over(kinds.as_ref(), keep, max).await {
        Ok(mut pks) => {
            pks.sort();
            pks
        }
        Err(e) => panic!("authors_over {kinds:?} {keep} failed: {e}"),
    }
}

/// The candidates of the retention rule `max_per_author`: authors with more than
/// `keep` events, of the given kinds or of any.
pub async fn authors_over_counts_each_authors_events(s: Store) {
    let (a, b, c) = (keys(1), keys(2), keys(3));
    let mut events: Vec<_> = (0..5).map(|i| note(&a, T0 + i, &format!("a{i}"))).collect();
    events.extend((0..2).map(|i| event(&a, 7, T0 + i, &[], &format!("+{i}"))));
    events.extend((0..2).map(|i| note(&b, T0 + i, &format!("b{i}"))));
    events.extend((0..4).map(|i| event(&c, 7, T0 + i, &[], &format!("-{i}"))));
    save_all(&s, &events).await;
    let (pa, pb, pc) = (a.public_key(), b.public_key(), c.public_key());
    let sorted = |mut v: Vec<crate::types::PublicKey>| {
        v.sort();
        v
    };
    assert_eq!(over(&s, &[], 4, 100).await, vec![pa], "a has 7, c 4, b 2");
    assert_eq!(over(&s, &[], 1, 100).await, sorted(vec![pa, pb, pc]));
    assert_eq!(over(&s, &[], 1, 2).await.len(), 2, "at most max");
    assert_eq!(
        over(&s, &[1], 2, 100).await,
        vec![pa],
        "b has exactly 2 notes"
    );
    assert_eq!(over(&s, &[7], 3, 100).await, vec![pc]);
    assert_eq!(over(&s, &[7], 1, 100).await, sorted(vec![pa, pc]));
    assert_eq!(over(&s, &[1, 7], 6, 100).await, vec![pa]);
    assert!(over(&s, &[1, 7], 7, 100).await.is_empty());
    assert!(
        over(&s, &[30023], 0, 100).await.is_empty(),
        "nobody has one"
    );
}
