//! Decoded events by serial: the events read most often are served without a B-tree
//! lookup and a record decode each time (together over a quarter of a node's CPU per
//! REQ, `README.md`). A hit is a reference count ([`Event`] is shared).
//!
//! Sound without invalidation. A serial names one event for the life of a store: it is
//! drawn from a clock that only moves forward (`write::Tables::insert`), and a record
//! is never rewritten under its serial. Readers look serials up only from an index,
//! id or address entry of their own snapshot, so a removed event's serial is never
//! asked for again, and its copy here ages out. An aborted batch's serials were never
//! seen by a reader, and are never drawn again.
//!
//! Shards of a hash map each with a CLOCK ring (second chance): a hit marks its entry,
//! and eviction walks the ring from its oldest end, sparing (and unmarking) marked
//! entries once. Each shard holds its share of the byte budget, counted from the
//! event's own sizes (`weight`).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use eventstore::Event;

const SHARDS: usize = 16;

/// Bytes an event is counted for: what it holds in memory, its map entry (with the
/// map's spare room) and its ring slot.
fn weight(e: &Event) -> usize {
    e.heap_bytes() + 64
}

/// Serials are the store's own, so a multiplicative hash is enough (and the map's
/// default hash costs more than the rest of a lookup).
#[derive(Default)]
struct SerialHasher(u64);

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // A shard's serials share their low four bits, and so would the product's low
        // bits, which pick the map's bucket: the high half is folded onto them.
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

struct Slot {
    event: Event,
    weight: usize,
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Slot, BuildHasherDefault<SerialHasher>>,
    ring: VecDeque<u64>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// What the cache holds and has done, summed over its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCacheTotals {
    pub hits: u64,
    pub misses: u64,
    pub events: u64,
    pub bytes: u64,
}

pub(crate) struct Hot {
    shards: Box<[Mutex<Shard>]>,
    /// Each shard's share of the budget.
    room: usize,
}

impl Hot {
    /// A cache of `bytes` in all; `None` for 0 (no cache).
    pub fn new(bytes: usize) -> Option<Hot> {
        (bytes > 0).then(|| Hot {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            room: (bytes / SHARDS).max(1),
        })
    }

    fn shard(&self, serial: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Consecutive serials fall in different shards.
        self.shards[(serial % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The event at `serial`, if held.
    pub fn get(&self, serial: u64) -> Option<Event> {
        let mut s = self.shard(serial);
        match s.map.get_mut(&serial) {
            Some(slot) => {
                slot.used = true;
                let e = slot.event.clone();
                s.hits += 1;
                Some(e)
            }
            None => {
                s.misses += 1;
                None
            }
        }
    }

    /// Keeps `event`, read at `serial`, evicting what it must. An event larger than a
    /// shard's share is not kept.
    pub fn put(&self, serial: u64, event: &Event) {
        let w = weight(event);
        if w > self.room {
            return;
        }
        let mut s = self.shard(serial);
        if s.map.contains_key(&serial) {
            return;
        }
        s.map.insert(
            serial,
            Slot {
                event: event.clone(),
                weight: w,
                used: false,
            },
        );
        s.ring.push_back(serial);
        s.bytes += w;
        while s.bytes > self.room {
            let Some(old) = s.ring.pop_front() else { break };
            match s.map.get_mut(&old) {
                Some(slot) if slot.used => {
                    slot.used = false;
                    s.ring.push_back(old);
                }
                Some(_) => {
                    if let Some(gone) = s.map.remove(&old) {
                        s.bytes -= gone.weight;
                    }
                }
                None => {}
            }
        }
    }

    pub fn totals(&self) -> EventCacheTotals {
        let mut t = EventCacheTotals::default();
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            t.hits += s.hits;
            t.misses += s.misses;
            t.events += s.map.len() as u64;
            t.bytes += s.bytes as u64;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys, Kind};

    fn note(i: u64) -> Event {
        EventBuilder::new(Kind(1), format!("note {i}")).sign_deterministic(&Keys::from_seed(i))
    }

    #[test]
    fn holds_what_it_was_given_and_counts_hits_and_misses() {
        let hot = Hot::new(1 << 20).unwrap();
        let e = note(1);
        assert!(hot.get(7).is_none());
        hot.put(7, &e);
        assert_eq!(hot.get(7), Some(e.clone()));
        assert!(hot.get(8).is_none());
        let t = hot.totals();
        assert_eq!((t.hits, t.misses, t.events), (1, 2, 1));
        assert_eq!(t.bytes, weight(&e) as u64);
        assert!(Hot::new(0).is_none());
    }

    #[test]
    fn stays_within_its_budget_and_spares_what_was_read() {
        let e = note(2);
        // Room for three events per shard; all serials in shard 0.
        let hot = Hot::new(SHARDS * 3 * weight(&e)).unwrap();
        let at = |i: u64| i * SHARDS as u64;
        for i in 0..3 {
            hot.put(at(i), &note(i));
        }
        // Read the oldest: it gets a second chance, and the next oldest goes instead.
        assert!(hot.get(at(0)).is_some());
        hot.put(at(3), &note(3));
        assert!(hot.get(at(0)).is_some());
        assert!(hot.get(at(1)).is_none());
        assert!(hot.get(at(2)).is_some());
        assert!(hot.get(at(3)).is_some());
        for i in 4..100 {
            hot.put(at(i), &note(i));
        }
        let t = hot.totals();
        assert!(t.bytes <= 3 * weight(&e) as u64 + 64, "{t:?}");
        assert!(t.events <= 3, "{t:?}");
        assert!(hot.get(at(99)).is_some());
    }

    #[test]
    fn an_event_larger_than_a_shard_is_not_kept() {
        let big =
            EventBuilder::new(Kind(1), "x".repeat(10_000)).sign_deterministic(&Keys::from_seed(1));
        let hot = Hot::new(SHARDS * 4_096).unwrap();
        hot.put(1, &big);
        assert!(hot.get(1).is_none());
        assert_eq!(hot.totals().bytes, 0);
    }
}
