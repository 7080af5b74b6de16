//! Sets of recently handled event ids: which events this node saved into L1, broadcast,
//! or saw L2 drop. Each is asked several times for every event the node takes in or
//! its poller reads, so it must cost little per call.
//!
//! Two generations per shard: ids go into the current one and are found in either;
//! once the current one is `keep` old (or holds its share of the capacity), it becomes
//! the previous one and the old previous one is forgotten whole. A shard turns when it
//! is next written to, so an id is remembered for at least `keep` (unless the capacity
//! forces turns sooner), and a shard written to after more than twice `keep` forgets
//! both generations; one left alone keeps its ids until then. There is no per-entry
//! clock or eviction order to maintain. These sets only spare work or hold back a stale
//! copy for a while, so remembering an id longer than asked is harmless. The capacity
//! bounds memory: up to about 70 bytes an id (hash tables grow in powers of two, and a
//! cleared one keeps its room for the next generation).
//!
//! This replaced `moka` caches here: moka keeps an entry's frequency, age and queue
//! links, and its housekeeping ran on the hot path; the four look-ups and inserts per
//! event cost about 5% of a node's CPU under ingest.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventstore::EventId;

/// Shards, so the runtime's workers and the poller seldom wait on one lock.
const SHARDS: usize = 16;

type Set = HashSet<EventId, foldhash::fast::RandomState>;

struct Shard {
    current: Set,
    previous: Set,
    /// When `current` began.
    since: Instant,
}

/// A set of recent ids (see the module docs).
pub(crate) struct RecentIds {
    shards: Box<[Mutex<Shard>]>,
    keep: Duration,
    /// Ids one shard's current generation takes before it turns anyway.
    turn_at: usize,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for RecentIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentIds")
            .field("keep", &self.keep)
            .field("turn_at", &self.turn_at)
            .finish_non_exhaustive()
    }
}

impl RecentIds {
    /// A set remembering ids for at least `keep`, holding at most about `capacity`.
    pub fn new(capacity: usize, keep: Duration) -> RecentIds {
        let hasher = foldhash::fast::RandomState::default();
        let now = Instant::now();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    current: Set::with_hasher(hasher.clone()),
                    previous: Set::with_hasher(hasher.clone()),
                    since: now,
                })
            })
            .collect();
        RecentIds {
            shards,
            keep,
            // Two generations share the capacity.
            turn_at: (capacity / SHARDS / 2).max(1),
            hasher,
        }
    }

    fn shard(&self, id: &EventId) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        // Not the id's own bytes: ids are chosen by whoever signs, so a flood aimed at
        // one shard would take the process's random seed to aim.
        // Middle bits: the sets place a key by the hash's low bits and tag it with its
        // top ones, so a shard chosen by either would crowd its table.
        let at = (self.hasher.hash_one(id) >> 32) as usize % SHARDS;
        self.shards[at].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard of `id`, its generations turned first if they are due.
    fn turned(&self, id: &EventId) -> std::sync::MutexGuard<'_, Shard> {
        let mut s = self.shard(id);
        let age = s.since.elapsed();
        if s.current.len() >= self.turn_at || age >= self.keep {
            let s = &mut *s;
            std::mem::swap(&mut s.previous, &mut s.current);
            s.current.clear();
            if age >= 2 * self.keep {
                // Left alone that long, the newer generation is past its time too.
                s.previous.clear();
            }
            s.since = Instant::now();
        }
        s
    }

    /// Remembers `id`, for at least `keep` from now.
    pub fn insert(&self, id: EventId) {
        let mut s = self.turned(&id);
        if s.current.insert(id) {
            s.previous.remove(&id);
        }
    }

    /// Remembers `id` and says whether this call was the one that did: true for
    /// exactly one caller per id while it is remembered, however many race.
    pub fn claim(&self, id: EventId) -> bool {
        let mut s = self.turned(&id);
        !s.previous.contains(&id) && s.current.insert(id)
    }

    /// Is `id` remembered?
    pub fn contains(&self, id: &EventId) -> bool {
        let s = self.shard(id);
        s.current.contains(id) || s.previous.contains(id)
    }

    /// Forgets `id`.
    pub fn remove(&self, id: &EventId) {
        let mut s = self.shard(id);
        s.current.remove(id);
        s.previous.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> EventId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        EventId(b)
    }

    #[test]
    fn an_id_is_claimed_once_however_many_threads_race_for_it() {
        let set = RecentIds::new(100_000, Duration::from_secs(60));
        let ids: Vec<EventId> = (0..2_000u32).map(id).collect();
        let wins: Vec<usize> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ids.iter().filter(|id| set.claim(**id)).count()))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(wins.iter().sum::<usize>(), ids.len(), "{wins:?}");
        assert!(ids.iter().all(|i| set.contains(i)));
    }

    /// Turns every shard now, as `keep` passing would at its next write.
    fn turn_all(set: &RecentIds) {
        for shard in set.shards.iter() {
            let mut s = shard.lock().unwrap();
            let s = &mut *s;
            std::mem::swap(&mut s.previous, &mut s.current);
            s.current.clear();
        }
    }

    #[test]
    fn ids_are_kept_through_one_turn_and_forgotten_after_two() {
        let set = RecentIds::new(1_000_000, Duration::from_secs(3600));
        let (a, b) = (id(1), id(2));
        set.insert(a);
        assert!(!set.claim(a));
        assert!(set.claim(b));
        turn_all(&set);
        assert!(
            set.contains(&a) && set.contains(&b),
            "kept through one turn"
        );
        assert!(!set.claim(a) && !set.claim(b));
        // An insert renews an id; a claim or a look-up does not.
        set.insert(a);
        turn_all(&set);
        assert!(set.contains(&a), "renewed, so kept");
        assert!(!set.contains(&b), "forgotten after two turns");
        assert!(set.claim(b), "claimable again once forgotten");
        set.remove(&a);
        assert!(!set.contains(&a));
    }

    /// An id other than `of` in the same shard: writing it turns that shard.
    fn neighbour(set: &RecentIds, of: EventId) -> EventId {
        use std::hash::BuildHasher;
        let shard = |i: &EventId| (set.hasher.hash_one(i) >> 32) as usize % SHARDS;
        (1_000..)
            .map(id)
            .find(|i| *i != of && shard(i) == shard(&of))
            .unwrap()
    }

    #[test]
    fn time_turns_a_shard_at_its_next_write() {
        let keep = Duration::from_millis(20);
        let set = RecentIds::new(1_000_000, keep);
        let a = id(1);
        set.insert(a);
        std::thread::sleep(keep * 3);
        assert!(set.contains(&a), "a look-up does not turn a shard");
        // Written to after more than twice `keep`: both generations are past it.
        set.insert(neighbour(&set, a));
        assert!(!set.contains(&a));
        assert!(set.claim(a));
    }

    #[test]
    fn the_capacity_bounds_what_is_kept() {
        let set = RecentIds::new(SHARDS * 2 * 100, Duration::from_secs(3600));
        for i in 0..100_000 {
            set.insert(id(i));
        }
        let kept: usize = set
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(kept <= SHARDS * 2 * 100, "{kept}");
        // The newest are there.
        assert!(set.contains(&id(99_999)));
        assert!(!set.contains(&id(0)));
    }
}
