//! Live subscriptions of every connection on this node, indexed so an event is matched
//! only against the subscriptions that could want it (DESIGN.md §6).
//!
//! Each filter is filed under one key: its ids, else its authors, else the values of
//! one tag letter, else its kinds, else "all". An event looks up its own id, author,
//! kind and tag values plus "all", and runs the full filter match on those candidates
//! alone. A subscription whose connection cannot take more is removed and its
//! connection told (the connection sends `CLOSED`): never a silent drop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use eventstore::{Event, EventId, Filter, Kind, Known, PublicKey, Timestamp};
use tokio::sync::broadcast;

use super::inbox::{Outlet, Refused};

use crate::metrics::Metrics;

pub type ConnId = u64;

/// A live event for one subscription of a connection.
#[derive(Debug)]
pub struct Live {
    pub sub_id: Arc<str>,
    pub generation: u64,
    pub event: Arc<Event>,
}

/// A subscription removed by the registry; its connection must send `CLOSED`.
#[derive(Debug)]
pub struct Dropped {
    pub sub_id: Arc<str>,
    pub generation: u64,
    pub reason: &'static str,
}

type Key = (ConnId, Arc<str>);

/// A subscription's place in the index: the lists hold these numbers, not its key, so
/// matching an event hashes no subscription id and finds each subscription in one step.
type Slot = u32;
/// A filter filed in a list: its subscription's slot and its place among the
/// subscription's filters. The list it is in tells which of its conditions the event
/// met already, and that condition is not checked again.
type Entry = (Slot, u32);

/// foldhash, seeded per process: several times faster than the standard SipHash on the
/// index's keys, and its seed keeps clients from choosing tag values that collide.
type Hasher = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;
type Entries = HashSet<Entry, Hasher>;

#[derive(Debug)]
struct Sub {
    key: Key,
    generation: u64,
    filters: Vec<Filter>,
    outlet: Outlet,
}

#[derive(Debug, Default)]
struct Index {
    by_key: Map<Key, Slot>,
    subs: Vec<Option<Sub>>,
    free: Vec<Slot>,
    ids: Map<EventId, Entries>,
    authors: Map<PublicKey, Entries>,
    kinds: Map<Kind, Entries>,
    tags: Map<u8, Map<String, Entries>>,
    all: Entries,
}

impl Index {
    fn file(&mut self, entry: Entry, f: &Filter, add: bool) {
        fn edit<K: std::hash::Hash + Eq>(m: &mut Map<K, Entries>, k: K, e: Entry, add: bool) {
            if add {
                m.entry(k).or_default().insert(e);
            } else if let Some(set) = m.get_mut(&k) {
                set.remove(&e);
                if set.is_empty() {
                    m.remove(&k);
                }
            }
        }
        if let Some(ids) = &f.ids {
            for id in ids {
                edit(&mut self.ids, *id, entry, add);
            }
        } else if let Some(authors) = &f.authors {
            for a in authors {
                edit(&mut self.authors, *a, entry, add);
            }
        } else if let Some((letter, values)) = f.tags.iter().min_by_key(|(_, v)| v.len()) {
            let by_value = self.tags.entry(*letter).or_default();
            for v in values {
                edit(by_value, v.clone(), entry, add);
            }
            if by_value.is_empty() {
                self.tags.remove(letter);
            }
        } else if let Some(kinds) = &f.kinds {
            for k in kinds {
                edit(&mut self.kinds, *k, entry, add);
            }
        } else if add {
            self.all.insert(entry);
        } else {
            self.all.remove(&entry);
        }
    }

    fn file_all(&mut self, slot: Slot, filters: &[Filter], add: bool) {
        for (i, f) in filters.iter().enumerate() {
            self.file((slot, i as u32), f, add);
        }
    }

    fn insert(&mut self, key: Key, generation: u64, filters: Vec<Filter>, outlet: Outlet) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.subs.push(None);
                (self.subs.len() - 1) as Slot
            }
        };
        self.file_all(slot, &filters, true);
        self.by_key.insert(key.clone(), slot);
        self.subs[slot as usize] = Some(Sub {
            key,
            generation,
            filters,
            outlet,
        });
    }

    fn get(&self, key: &Key) -> Option<&Sub> {
        let slot = *self.by_key.get(key)?;
        self.subs[slot as usize].as_ref()
    }

    fn remove(&mut self, key: &Key) -> Option<Sub> {
        let slot = self.by_key.remove(key)?;
        let sub = self.subs[slot as usize].take()?;
        self.file_all(slot, &sub.filters, false);
        self.free.push(slot);
        Some(sub)
    }

    /// The slots of the subscriptions with a filter that `e` matches, each once.
    fn matching(&self, e: &Event, out: &mut Vec<Slot>) {
        let mut repeats = false;
        let mut check = |set: Option<&Entries>, known: Known| {
            for &(slot, i) in set.into_iter().flatten() {
                let Some(sub) = &self.subs[slot as usize] else {
                    continue;
                };
                if sub.filters[i as usize].matches_known(e, known) {
                    repeats |= sub.filters.len() > 1;
                    out.push(slot);
                }
            }
        };
        check(self.ids.get(&e.id()), Known::Id);
        check(self.authors.get(&e.pubkey()), Known::Author);
        check(self.kinds.get(&e.kind()), Known::Kind);
        let mut tag_lists = 0;
        for (letter, value) in e.indexable_tags() {
            let set = self.tags.get(&letter).and_then(|m| m.get(value));
            tag_lists += usize::from(set.is_some());
            check(set, Known::Tag(letter));
        }
        check(Some(&self.all), Known::Nothing);
        // Each filter is filed in one list per value of one condition, and an event has
        // one id, author and kind: a subscription is met twice only through several
        // filters, or through two of the event's tag values (two values of one `#t`
        // filter, or a value the event carries twice).
        if repeats || tag_lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// The registry of live subscriptions on this node.
#[derive(Debug)]
pub struct Registry {
    index: RwLock<Index>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            index: RwLock::new(Index::default()),
            metrics,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) subscription `sub_id` of connection `conn`.
    pub fn insert(
        &self,
        conn: ConnId,
        sub_id: Arc<str>,
        generation: u64,
        filters: Vec<Filter>,
        outlet: Outlet,
    ) {
        let key = (conn, sub_id);
        let mut idx = self.write();
        if idx.remove(&key).is_none() {
            self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        idx.insert(key, generation, filters, outlet);
    }

    /// Removes a subscription (only the given generation, when one is given).
    pub fn remove(&self, conn: ConnId, sub_id: &Arc<str>, generation: Option<u64>) -> bool {
        let key = (conn, sub_id.clone());
        let mut idx = self.write();
        let current = idx.get(&key).map(|s| s.generation);
        if current.is_none() || generation.is_some_and(|g| Some(g) != current) {
            return false;
        }
        idx.remove(&key);
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Delivers one event to every matching subscription, once each.
    pub fn dispatch(&self, e: &Arc<Event>) {
        if e.is_expired(Timestamp::now()) {
            return; // NIP-40: an expired event is never served.
        }
        let mut full: Vec<(Key, u64, Outlet)> = Vec::new();
        {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            let mut matched = Vec::new();
            idx.matching(e, &mut matched);
            for slot in matched {
                let Some(sub) = &idx.subs[slot as usize] else {
                    continue;
                };
                let live = Live {
                    sub_id: sub.key.1.clone(),
                    generation: sub.generation,
                    event: e.clone(),
                };
                match sub.outlet.live(live) {
                    Ok(()) => {
                        self.metrics.live_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Refused::Full) => {
                        full.push((sub.key.clone(), sub.generation, sub.outlet.clone()));
                    }
                    // The connection is ending: its clean-up removes its subscriptions,
                    // and it was not slow (nor is there anyone to tell).
                    Err(Refused::Closed) => {}
                }
            }
        }
        for ((conn, sub_id), generation, outlet) in full {
            self.drop_sub(conn, sub_id, generation, &outlet, SLOW);
        }
    }

    fn drop_sub(
        &self,
        conn: ConnId,
        sub_id: Arc<str>,
        generation: u64,
        outlet: &Outlet,
        reason: &'static str,
    ) {
        if self.remove(conn, &sub_id, Some(generation)) {
            self.metrics.slow_closed.fetch_add(1, Ordering::Relaxed);
            let _ = outlet.dropped(Dropped {
                sub_id,
                generation,
                reason,
            });
        }
    }

    /// Closes every subscription (the dispatcher fell behind and events were missed).
    pub fn drop_all(&self, reason: &'static str) {
        let all: Vec<(Key, u64, Outlet)> = {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            idx.subs
                .iter()
                .flatten()
                .map(|s| (s.key.clone(), s.generation, s.outlet.clone()))
                .collect()
        };
        for ((conn, sub_id), generation, outlet) in all {
            self.drop_sub(conn, sub_id, generation, &outlet, reason);
        }
    }
}

/// `CLOSED` message for a subscription whose client did not keep up.
pub const SLOW: &str =
    "error: closed because the client did not read live events fast enough; re-subscribe";
/// `CLOSED` message when the node itself fell behind its event stream.
pub const LAGGED: &str =
    "error: this relay fell behind on live events and some were missed; re-subscribe";

/// Feeds the node's live events (its own saves and what the poller brings) to the
/// registry until the stream ends.
pub async fn dispatch_loop(registry: Arc<Registry>, mut rx: broadcast::Receiver<Arc<Event>>) {
    loop {
        match rx.recv().await {
            Ok(e) => registry.dispatch(&e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "live dispatcher lagged; closing every subscription"
                );
                registry.drop_all(LAGGED);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys};

    use super::super::inbox::{Inbox, Msg, inbox};
    use std::collections::VecDeque;

    fn outlet() -> (Outlet, Inbox, ()) {
        let (o, rx) = inbox(16);
        (o, rx, ())
    }

    fn note(keys: &Keys, tag: &str) -> Arc<Event> {
        tagged(keys, Kind(1), &[tag])
    }

    /// An event of `kind` with a `t` tag for each of `values`.
    fn tagged(keys: &Keys, kind: Kind, values: &[&str]) -> Arc<Event> {
        let tags = values.iter().map(|v| vec!["t".into(), v.to_string()]);
        Arc::new(EventBuilder::new(kind, "hello").tags(tags).sign(keys))
    }

    fn got(rx: &mut Inbox) -> Vec<(String, u64)> {
        let mut q = VecDeque::new();
        rx.take(&mut q);
        let mut v: Vec<_> = q
            .into_iter()
            .map(|m| match m {
                Msg::Live(l) => (l.sub_id.to_string(), l.generation),
                other => panic!("not a live event: {other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_matching_subscription_gets_an_event_once() {
        let reg = Registry::new(Arc::default());
        let (alice, bob) = (Keys::from_seed(1), Keys::from_seed(2));
        let (o, mut rx, _d) = outlet();
        // Filed under the author and under the hashtag: both lists hold it.
        let two = vec![
            Filter::new().author(alice.public_key()),
            Filter::new().tag('t', "nostr"),
        ];
        reg.insert(1, "two".into(), 0, two, o.clone());
        reg.insert(
            1,
            "kind".into(),
            0,
            vec![Filter::new().kind(Kind(1))],
            o.clone(),
        );
        reg.insert(1, "all".into(), 0, vec![Filter::new()], o.clone());
        let bob_only = vec![Filter::new().author(bob.public_key())];
        reg.insert(1, "bob".into(), 0, bob_only, o.clone());
        let old = Filter::new().author(alice.public_key()).until(Timestamp(1));
        reg.insert(1, "old".into(), 0, vec![old], o.clone());

        reg.dispatch(&note(&alice, "nostr"));
        let want = |names: &[&str]| -> Vec<(String, u64)> {
            let mut v: Vec<_> = names.iter().map(|n| (n.to_string(), 0)).collect();
            v.sort();
            v
        };
        assert_eq!(got(&mut rx), want(&["all", "kind", "two"]));
        reg.dispatch(&note(&bob, "other"));
        assert_eq!(got(&mut rx), want(&["all", "bob", "kind"]));

        // One filter met through two of the event's tag values, or a value twice; two
        // filters in one list: still one delivery each.
        let two_tags = Filter::new().tag('t', "a").tag('t', "b");
        reg.insert(2, "tags".into(), 0, vec![two_tags], o.clone());
        let twice = vec![
            Filter::new().author(bob.public_key()),
            Filter::new().author(bob.public_key()).kind(Kind(1)),
        ];
        reg.insert(2, "twice".into(), 0, twice, o.clone());
        reg.dispatch(&tagged(&bob, Kind(1), &["a", "b"]));
        assert_eq!(got(&mut rx), want(&["all", "bob", "kind", "tags", "twice"]));
        reg.dispatch(&tagged(&alice, Kind(2), &["a", "a"]));
        assert_eq!(got(&mut rx), want(&["all", "tags", "two"]));
    }

    #[test]
    fn removed_and_replaced_subscriptions_are_forgotten() {
        let metrics: Arc<Metrics> = Arc::default();
        let reg = Registry::new(metrics.clone());
        let alice = Keys::from_seed(1);
        let (o, mut rx, _d) = outlet();
        let by_alice = || vec![Filter::new().author(alice.public_key())];
        for i in 0..3 {
            reg.insert(7, format!("s{i}").into(), 0, by_alice(), o.clone());
        }
        // A stale generation does not remove; the current one does, and its place is
        // taken by the next subscription without it hearing the first one's events.
        assert!(!reg.remove(7, &"s0".into(), Some(1)));
        assert!(reg.remove(7, &"s0".into(), Some(0)));
        assert!(!reg.remove(7, &"s0".into(), None));
        reg.insert(
            7,
            "s3".into(),
            0,
            vec![Filter::new().kind(Kind(9))],
            o.clone(),
        );
        // Replacing s1 under a new generation moves it to another filter.
        reg.insert(
            7,
            "s1".into(),
            5,
            vec![Filter::new().kind(Kind(1))],
            o.clone(),
        );
        assert_eq!(metrics.subscriptions.load(Ordering::Relaxed), 3);

        reg.dispatch(&note(&alice, "x"));
        let mut v = got(&mut rx);
        v.sort();
        assert_eq!(v, vec![("s1".to_string(), 5), ("s2".to_string(), 0)]);
        for s in ["s1", "s2", "s3"] {
            assert!(reg.remove(7, &s.into(), None));
        }
        reg.dispatch(&note(&alice, "x"));
        assert!(got(&mut rx).is_empty());
        let idx = reg.index.read().unwrap();
        assert!(idx.authors.is_empty() && idx.kinds.is_empty() && idx.by_key.is_empty());
    }

    #[test]
    fn a_full_outlet_closes_its_subscription_and_says_why() {
        let reg = Registry::new(Arc::default());
        let alice = Keys::from_seed(1);
        let (o, rx) = inbox(1);
        reg.insert(3, "s".into(), 4, vec![Filter::new()], o);
        reg.dispatch(&note(&alice, "a"));
        reg.dispatch(&note(&alice, "b"));
        let mut q = VecDeque::new();
        assert!(rx.take(&mut q));
        let Some(Msg::Live(l)) = q.pop_front() else {
            panic!("the first event first")
        };
        assert_eq!(l.generation, 4);
        let Some(Msg::Dropped(d)) = q.pop_front() else {
            panic!("then a CLOSED reason")
        };
        assert_eq!((&*d.sub_id, d.generation, d.reason), ("s", 4, SLOW));
        assert!(q.is_empty());
        reg.dispatch(&note(&alice, "c"));
        assert!(
            !rx.take(&mut q),
            "the closed subscription hears nothing more"
        );
    }
}
