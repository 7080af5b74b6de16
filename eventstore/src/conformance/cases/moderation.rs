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
