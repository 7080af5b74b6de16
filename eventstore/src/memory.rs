//! `MemoryStore`: the reference implementation and test oracle. Simple and obviously
//! correct before fast: every query scans everything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::event::Event;
use crate::filter::Filter;
use crate::kind::KindClass;
use crate::moderation::{Change, Ruled, Ruling, Rulings};
use crate::order::{OrderKey, sort_canonical};
use crate::rules::{Address, deletion_applies, supersedes};
use crate::store::{Capabilities, EventStore, Purge, Reason, SaveOutcome, StoreError};
use crate::types::{EventId, PublicKey, Timestamp};

#[derive(Debug, Default)]
struct State {
    /// All stored events in canonical order.
    events: BTreeMap<OrderKey, Event>,
    by_id: HashMap<EventId, OrderKey>,
    by_address: HashMap<Address, EventId>,
    /// (id, author) pairs deleted by that author, whether or not the event was seen.
    deleted_ids: HashSet<(EventId, PublicKey)>,
    /// Addresses deleted up to (and including) a `created_at`.
    deleted_addresses: HashMap<Address, Timestamp>,
    rulings: Rulings,
}

/// The in-memory reference store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (every mutation is a
        // single insert/remove), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves with an explicit clock, for expiration tests.
    pub fn save_at(&self, event: &Event, now: Timestamp) -> SaveOutcome {
        self.lock().save(event, now)
    }

    /// Queries with an explicit clock.
    pub fn query_at(&self, filters: &[Filter], now: Timestamp) -> Vec<Event> {
        self.lock().query(filters, now)
    }
}

impl State {
    fn remove(&mut self, id: &EventId) -> Option<Event> {
        let key = self.by_id.remove(id)?;
        let ev = self.events.remove(&key)?;
        if let Some(addr) = ev.address() {
            if self.by_address.get(&addr) == Some(id) {
                self.by_address.remove(&addr);
            }
        }
        Some(ev)
    }

    fn save(&mut self, event: &Event, now: Timestamp) -> SaveOutcome {
        if event.kind().class() == KindClass::Ephemeral {
            return SaveOutcome::Ephemeral;
        }
        if event.is_expired(now) {
            return SaveOutcome::Rejected(Reason::Expired);
        }
        if self.by_id.contains_key(&event.id()) {
            return SaveOutcome::Duplicate;
        }
        if self.rulings.bans_pubkey(&event.pubkey()) || self.rulings.bans_event(&event.id()) {
            return SaveOutcome::Rejected(Reason::Banned);
        }
        if self.deleted_ids.contains(&(event.id(), event.pubkey())) {
            return SaveOutcome::Rejected(Reason::Deleted);
        }
        let address = event.address();
        let mut replaced = None;
        if let Some(addr) = &address {
            if self
                .deleted_addresses
                .get(addr)
                .is_some_and(|&upto| event.created_at() <= upto)
            {
                return SaveOutcome::Rejected(Reason::Deleted);
            }
            if let Some(cur_id) = self.by_address.get(addr).copied() {
                let cur = self.by_id[&cur_id];
                if !supersedes((event.created_at(), event.id()), (cur.created_at, cur.id)) {
                    return SaveOutcome::Rejected(Reason::Superseded);
                }
                self.remove(&cur_id);
                replaced = Some(cur_id);
            }
            self.by_address.insert(addr.clone(), event.id());
        }
        let key = OrderKey::of(event);
        self.by_id.insert(event.id(), key);
        self.events.insert(key, event.clone());
        self.apply_deletion(event);
        match replaced {
            Some(old) => SaveOutcome::Replaced { old },
            None => SaveOutcome::Stored,
        }
    }

    /// NIP-09: a stored kind-5 request removes its author's targets and tombstones them.
    fn apply_deletion(&mut self, request: &Event) {
        let targets = request.deletion_targets();
        for id in targets.ids {
            if let Some(key) = self.by_id.get(&id) {
                let target = &self.events[key];
                if !deletion_applies(request.pubkey(), target) {
                    continue;
                }
                self.remove(&id);
            }
            self.deleted_ids.insert((id, request.pubkey()));
        }
        for addr in targets.addresses {
            if let Some(cur_id) = self.by_address.get(&addr).copied() {
                if self.by_id[&cur_id].created_at <= request.created_at() {
                    self.remove(&cur_id);
                }
            }
            let upto = self.deleted_addresses.entry(addr).or_default();
            *upto = (*upto).max(request.created_at());
        }
    }

    /// Records a change; a ban removes what it names (no tombstone).
    fn rule(&mut self, change: &Change) -> Ruled {
        self.rulings.apply(change);
        let mut removed = Vec::new();
        if let Change::Add(e) = change {
            let ids: Vec<EventId> = match e.ruling {
                Ruling::BanPubkey(pk) => self
                    .events
                    .values()
                    .filter(|ev| ev.pubkey() == pk)
                    .map(Event::id)
                    .collect(),
                Ruling::BanEvent(id) => vec![id],
                _ => Vec::new(),
            };
            removed.extend(ids.into_iter().filter(|id| self.remove(id).is_some()));
        }
        Ruled {
            version: self.rulings.version,
            removed,
        }
    }

    /// Removes up to `max` of what `what` names.
    fn purge(&mut self, what: &Purge, max: usize, now: Timestamp) -> Vec<EventId> {
        let ids: Vec<EventId> = match what {
            Purge::Matching(f) => {
                let unlimited = Filter {
                    limit: None,
                    ..f.clone()
                };
                self.matching(&unlimited, now)
                    .take(max)
                    .map(Event::id)
                    .collect()
            }
            Purge::ExpiredBy(t) => self
                .events
                .values()
                .filter(|e| e.is_expired(*t))
                .take(max)
                .map(Event::id)
                .collect(),
        };
        ids.into_iter()
            .filter(|id| self.remove(id).is_some())
            .collect()
    }

    fn matching<'a>(
        &'a self,
        filter: &'a Filter,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        let skip = filter.is_empty_result();
        self.events
            .values()
            .filter(move |e| !skip && filter.matches(e) && !e.is_expired(now))
    }

    fn query(&self, filters: &[Filter], now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        for f in filters {
            let limit = f.limit.unwrap_or(usize::MAX);
            out.extend(self.matching(f, now).take(limit).cloned());
        }
        sort_canonical(&mut out);
        out
    }

    fn count(&self, filters: &[Filter], now: Timestamp) -> u64 {
        let mut seen = HashSet::new();
        for f in filters {
            let unlimited = Filter {
                limit: None,
                ..f.clone()
            };
            seen.extend(self.matching(&unlimited, now).map(Event::id));
        }
        seen.len() as u64
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn save(&self, event: &Event) -> Result<SaveOutcome, StoreError> {
        Ok(self.save_at(event, Timestamp::now()))
    }

    async fn query(&self, filters: &[Filter]) -> Result<Vec<Event>, StoreError> {
        Ok(self.query_at(filters, Timestamp::now()))
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64, StoreError> {
        Ok(self.lock().count(filters, Timestamp::now()))
    }

    async fn delete(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let mut n = 0;
        for id in ids {
            if let Some(ev) = st.remove(id) {
                st.deleted_ids.insert((ev.id(), ev.pubkey()));
                n += 1;
            }
        }
        Ok(n)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn rulings_since(&self, version: u64) -> Result<Option<Rulings>, StoreError> {
        let st = self.lock();
        Ok((st.rulings.version != version).then(|| st.rulings.clone()))
    }

    async fn rule(&self, change: &Change) -> Result<Ruled, StoreError> {
        Ok(self.lock().rule(change))
    }

    async fn purge(&self, what: &Purge, max: usize) -> Result<Vec<EventId>, StoreError> {
        Ok(self.lock().purge(what, max, Timestamp::now()))
    }

    async fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<crate::types::Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<PublicKey>, StoreError> {
        let st = self.lock();
        let mut counts: HashMap<PublicKey, u64> = HashMap::new();
        for e in st.events.values() {
            if kinds.is_none_or(|k| k.contains(&e.kind())) {
                *counts.entry(e.pubkey()).or_default() += 1;
            }
        }
        Ok(counts
            .into_iter()
            .filter(|&(_, n)| n > keep)
            .map(|(pk, _)| pk)
            .take(max)
            .collect())
    }
}
