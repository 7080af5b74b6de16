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

use eventstore::{Event, EventId, Filter, Kind, PublicKey, Timestamp};
use tokio::sync::{broadcast, mpsc};

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

/// The connection end a subscription delivers to.
#[derive(Debug, Clone)]
pub struct Outlet {
    pub live: mpsc::Sender<Live>,
    pub dropped: mpsc::UnboundedSender<Dropped>,
}

#[derive(Debug)]
struct Sub {
    generation: u64,
    filters: Vec<Filter>,
    outlet: Outlet,
}

type Key = (ConnId, Arc<str>);

#[derive(Debug, Default)]
struct Index {
    subs: HashMap<Key, Sub>,
    ids: HashMap<EventId, HashSet<Key>>,
    authors: HashMap<PublicKey, HashSet<Key>>,
    kinds: HashMap<Kind, HashSet<Key>>,
    tags: HashMap<u8, HashMap<String, HashSet<Key>>>,
    all: HashSet<Key>,
}

impl Index {
    fn file(&mut self, key: &Key, f: &Filter, add: bool) {
        fn edit<K: std::hash::Hash + Eq>(
            m: &mut HashMap<K, HashSet<Key>>,
            k: K,
            key: &Key,
            add: bool,
        ) {
            if add {
                m.entry(k).or_default().insert(key.clone());
            } else if let Some(set) = m.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    m.remove(&k);
                }
            }
        }
        if let Some(ids) = &f.ids {
            for id in ids {
                edit(&mut self.ids, *id, key, add);
            }
        } else if let Some(authors) = &f.authors {
            for a in authors {
                edit(&mut self.authors, *a, key, add);
            }
        } else if let Some((letter, values)) = f.tags.iter().min_by_key(|(_, v)| v.len()) {
            let by_value = self.tags.entry(*letter).or_default();
            for v in values {
                edit(by_value, v.clone(), key, add);
            }
            if by_value.is_empty() {
                self.tags.remove(letter);
            }
        } else if let Some(kinds) = &f.kinds {
            for k in kinds {
                edit(&mut self.kinds, *k, key, add);
            }
        } else if add {
            self.all.insert(key.clone());
        } else {
            self.all.remove(key);
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Sub> {
        let sub = self.subs.remove(key)?;
        for f in &sub.filters {
            self.file(key, f, false);
        }
        Some(sub)
    }

    fn candidates<'a>(&'a self, e: &Event, out: &mut HashSet<&'a Key>) {
        let mut add = |set: Option<&'a HashSet<Key>>| {
            if let Some(s) = set {
                out.extend(s.iter());
            }
        };
        add(self.ids.get(&e.id()));
        add(self.authors.get(&e.pubkey()));
        add(self.kinds.get(&e.kind()));
        for (letter, value) in e.indexable_tags() {
            add(self.tags.get(&letter).and_then(|m| m.get(value)));
        }
        out.extend(self.all.iter());
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
        for f in &filters {
            idx.file(&key, f, true);
        }
        idx.subs.insert(
            key,
            Sub {
                generation,
                filters,
                outlet,
            },
        );
    }

    /// Removes a subscription (only the given generation, when one is given).
    pub fn remove(&self, conn: ConnId, sub_id: &Arc<str>, generation: Option<u64>) -> bool {
        let key = (conn, sub_id.clone());
        let mut idx = self.write();
        let current = idx.subs.get(&key).map(|s| s.generation);
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
            let mut cands = HashSet::new();
            idx.candidates(e, &mut cands);
            for key in cands {
                let Some(sub) = idx.subs.get(key) else {
                    continue;
                };
                if !sub.filters.iter().any(|f| f.matches(e)) {
                    continue;
                }
                let live = Live {
                    sub_id: key.1.clone(),
                    generation: sub.generation,
                    event: e.clone(),
                };
                match sub.outlet.live.try_send(live) {
                    Ok(()) => {
                        self.metrics.live_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        full.push((key.clone(), sub.generation, sub.outlet.clone()));
                    }
                    // The connection is ending: its clean-up removes its subscriptions,
                    // and it was not slow (nor is there anyone to tell).
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
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
            let _ = outlet.dropped.send(Dropped {
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
                .map(|(k, s)| (k.clone(), s.generation, s.outlet.clone()))
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
