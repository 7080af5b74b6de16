//! Completeness floors (DESIGN.md §5a): what this store can prove it holds beyond its
//! window.
//!
//! A *key* is a conjunction of at most one author, one kind and one tag value. The floor
//! of a key, `floor(k) = t`, claims: **every event of the source (L2) that satisfies `k`
//! and has `created_at >= t` is in this store.** The window watermark `W` is the floor of
//! every key, so a key's *served* floor is the lowest of `W` and the recorded floors of
//! `k` and of every weaker key (a subset of its conditions): an event satisfying `k`
//! satisfies each of those, so each of their claims covers it.
//!
//! The claim is kept true by these rules, each enforced where its function says:
//! - **lowered** only by an L2 answer ([`Tables::learn`]), in the write transaction that
//!   stores that answer's events, and only where the answer's range reaches up to the
//!   key's served floor *as it is in that transaction*. An eviction since the probe of
//!   an event at or above the served floor raised it (next rule) past the range, and
//!   the lowering is then dropped. That alone misses one race: an event that entered
//!   this store after L2's read, *below* the served floor (a save or a poll of an old
//!   `created_at`, so absent from the answer), and was evicted again before this
//!   transaction raised no floor, as nothing claimed it yet; the lowering would then
//!   claim it. So the writer keeps recently evicted events with their eviction epoch,
//!   and a lowering is dropped when an event matching its filter was evicted after the
//!   probe's snapshot, or when evictions since then are no longer all kept
//!   (`Writer::evicted_since`).
//! - **raised** by evicting any event the key satisfies ([`Tables::raise_floors`]): to
//!   just above the evicted event's `created_at`, the window rule per key.
//! - **cleared** whenever `W` is raised by decree (`SetWindow`: a repair that gave up,
//!   or a restart that cannot prove what L1 holds).
//! - Deletions, replacements and NIP-40 expiry remove events from L2 as well, so they
//!   keep every claim true. Events reaching L2 later, of any age, reach this store
//!   through the poller or the local save, as for the window; while the poller is not
//!   trusted the owner uses no floor at all.
//! - Forgetting a floor is always safe: at most [`crate::RedbConfig::max_floors`] are
//!   kept, the least recently learned forgotten first.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use eventstore::{Event, Filter, Kind, PublicKey, StoreError, Timestamp};
use redb::{ReadableTable, ReadableTableMetadata};

use crate::error::backend;
use crate::write::Tables;

/// Tag values longer than this are never keyed (such keys would be large); their
/// filters are served by weaker keys and the window.
const VALUE_MAX: usize = 256;

/// A filter with more keys than this is neither served by nor learned into floors.
pub(crate) const MAX_KEYS: usize = 1024;

/// What an L2 answer proved about a filter, recorded with its events
/// ([`crate::RedbStore::promote`]).
#[derive(Debug, Clone)]
pub struct Learn {
    /// The filter L2 answered; only its conditions count (ids must be absent, at most one
    /// tag letter), not `since`, `until` or `limit`.
    pub filter: Filter,
    /// The floor the answer proves for each of the filter's keys: the filter's `since`
    /// (0 when absent) when L2 returned fewer events than the limit, else one second
    /// above the last event returned (a limit may cut inside a second).
    pub floor: Timestamp,
    /// The answer covers `created_at < joins` down to `floor`; the probe that preceded it
    /// saw the filter's floor at `joins`. A key is lowered only if its served floor is
    /// still at or below `joins` when the answer is recorded.
    pub joins: Timestamp,
    /// The eviction epoch of the probe's snapshot ([`crate::Probe::evictions`]). An
    /// event matching the filter that was evicted after it voids the answer's proof
    /// (see the module's rules); `u64::MAX` claims no evictions were missed.
    pub evictions: u64,
}

/// One key: at most one author, one kind and one tag value, all required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key<'a> {
    author: Option<&'a PublicKey>,
    kind: Option<Kind>,
    tag: Option<(u8, &'a str)>,
}

impl<'a> Key<'a> {
    fn is_empty(&self) -> bool {
        self.author.is_none() && self.kind.is_none() && self.tag.is_none()
    }

    /// `flags | author? | kind? | letter value?`; the flags make it unambiguous (the tag
    /// value runs to the end). `None` for a value too long to key.
    fn encode(&self) -> Option<Vec<u8>> {
        let mut k = Vec::with_capacity(1 + 32 + 2 + 1 + self.tag.map_or(0, |t| t.1.len()));
        k.push(
            u8::from(self.author.is_some())
                | u8::from(self.kind.is_some()) << 1
                | u8::from(self.tag.is_some()) << 2,
        );
        if let Some(a) = self.author {
            k.extend_from_slice(&a.0);
        }
        if let Some(kind) = self.kind {
            k.extend_from_slice(&kind.0.to_be_bytes());
        }
        if let Some((letter, value)) = self.tag {
            if value.len() > VALUE_MAX {
                return None;
            }
            k.push(letter);
            k.extend_from_slice(value.as_bytes());
        }
        Some(k)
    }

    /// This key and every weaker non-empty key (each subset of its conditions).
    fn with_weaker(self) -> impl Iterator<Item = Key<'a>> {
        (1u8..8).filter_map(move |mask| {
            let pick = |bit: u8, has: bool| if mask & bit != 0 { has } else { true };
            if !(pick(1, self.author.is_some())
                && pick(2, self.kind.is_some())
                && pick(4, self.tag.is_some()))
            {
                return None;
            }
            Some(Key {
                author: self.author.filter(|_| mask & 1 != 0),
                kind: self.kind.filter(|_| mask & 2 != 0),
                tag: self.tag.filter(|_| mask & 4 != 0),
            })
        })
    }
}

/// The keys of `f` split on tag letter `letter` (or on no tag): authors × kinds ×
/// values. `None` past [`MAX_KEYS`].
fn decompose(f: &Filter, letter: Option<u8>) -> Option<Vec<Key<'_>>> {
    let authors: Vec<Option<&PublicKey>> = match &f.authors {
        Some(s) => s.iter().map(Some).collect(),
        None => vec![None],
    };
    let kinds: Vec<Option<Kind>> = match &f.kinds {
        Some(s) => s.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let tags: Vec<Option<(u8, &str)>> = match letter.and_then(|l| f.tags.get(&l).map(|v| (l, v))) {
        Some((l, values)) => values.iter().map(|v| Some((l, v.as_str()))).collect(),
        None => vec![None],
    };
    if authors.len() * kinds.len() * tags.len() > MAX_KEYS {
        return None;
    }
    let mut keys = Vec::with_capacity(authors.len() * kinds.len() * tags.len());
    for &author in &authors {
        for &kind in &kinds {
            for &tag in &tags {
                keys.push(Key { author, kind, tag });
            }
        }
    }
    Some(keys)
}

/// The keys an answer to `f` can teach: `f` must be exactly a union of keys (no ids, at
/// most one tag letter) and have some condition (the empty key's floor is `W`).
fn learnable(f: &Filter) -> Option<Vec<Key<'_>>> {
    if f.ids.is_some() || f.tags.len() > 1 {
        return None;
    }
    let keys = decompose(f, f.tags.keys().next().copied())?;
    if keys.iter().any(Key::is_empty) {
        return None;
    }
    Some(keys)
}

/// Every non-empty key `e` satisfies, encoded.
fn event_keys(e: &Event) -> Vec<Vec<u8>> {
    let pk = e.pubkey();
    let mut tags: Vec<(u8, &str)> = e.indexable_tags().collect();
    tags.sort_unstable();
    tags.dedup();
    let mut out = Vec::with_capacity(4 * (1 + tags.len()));
    for author in [None, Some(&pk)] {
        for kind in [None, Some(e.kind())] {
            let keys = std::iter::once(None).chain(tags.iter().copied().map(Some));
            for tag in keys {
                let k = Key { author, kind, tag };
                if !k.is_empty() {
                    out.extend(k.encode());
                }
            }
        }
    }
    out
}

/// What a lowering can test of an evicted event (`Writer::evicted_since`): its author,
/// kind and a hash per tag value, so the writer's log of recent evictions stays small
/// whatever the events' sizes.
pub(crate) struct Evicted {
    /// The eviction epoch (`META_EVICTIONS` after it).
    pub epoch: u64,
    author: PublicKey,
    kind: Kind,
    /// Sorted, without repeats.
    tags: Vec<u64>,
}

fn tag_hash(letter: u8, value: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    letter.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

impl Evicted {
    pub(crate) fn new(epoch: u64, e: &Event) -> Evicted {
        let mut tags: Vec<u64> = e.indexable_tags().map(|(l, v)| tag_hash(l, v)).collect();
        tags.sort_unstable();
        tags.dedup();
        Evicted {
            epoch,
            author: e.pubkey(),
            kind: e.kind(),
            tags,
        }
    }

    /// Whether the event may satisfy `f`'s author, kind and tag conditions (the only
    /// ones a lowering's filter has). A hash collision says yes, which only drops a
    /// lowering.
    pub(crate) fn may_match(&self, f: &Filter) -> bool {
        f.authors.as_ref().is_none_or(|a| a.contains(&self.author))
            && f.kinds.as_ref().is_none_or(|k| k.contains(&self.kind))
            && f.tags.iter().all(|(&letter, values)| {
                values
                    .iter()
                    .any(|v| self.tags.binary_search(&tag_hash(letter, v)).is_ok())
            })
    }

    /// Bytes it holds, for the log's bound.
    pub(crate) fn size(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * self.tags.len()
    }
}

/// The prefilter hash of an encoded key (see [`Tables::raise_floors`]).
pub(crate) fn hint(key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Budget bytes one floor costs: its key twice (floors and order) and two u64 pairs.
fn cost(key: &[u8]) -> u64 {
    2 * key.len() as u64 + 24
}

/// The served floor of `k`: `W`, lowered by any recorded floor of `k` or a weaker key.
fn served(
    table: &impl ReadableTable<&'static [u8], (u64, u64)>,
    k: Key<'_>,
    w: Timestamp,
    cache: &mut HashMap<Vec<u8>, Option<u64>>,
    spend: &mut impl FnMut(usize) -> Result<(), StoreError>,
) -> Result<Timestamp, StoreError> {
    let mut s = w.0;
    for weaker in k.with_weaker() {
        let Some(enc) = weaker.encode() else { continue };
        let recorded = match cache.get(&enc) {
            Some(v) => *v,
            None => {
                spend(1)?;
                let v = table
                    .get(enc.as_slice())
                    .map_err(backend)?
                    .map(|g| g.value().0);
                cache.insert(enc, v);
                v
            }
        };
        if let Some(f) = recorded {
            s = s.min(f);
        }
    }
    Ok(Timestamp(s))
}

/// The floor of filter `f`: the highest served floor of its keys, under the best way
/// of splitting it into keys (each tag letter gives one; any is a valid proof, since a
/// key's conditions are a subset of the filter's). `w` when no floor helps. `spend` is
/// told of each split's keys and each table lookup, and may stop the read
/// (`Reader::step`).
pub(crate) fn filter_floor(
    table: &impl ReadableTable<&'static [u8], (u64, u64)>,
    f: &Filter,
    w: Timestamp,
    mut spend: impl FnMut(usize) -> Result<(), StoreError>,
) -> Result<Timestamp, StoreError> {
    if f.ids.is_some() || table.first().map_err(backend)?.is_none() {
        return Ok(w);
    }
    let letters: Vec<Option<u8>> = if f.tags.is_empty() {
        vec![None]
    } else {
        f.tags.keys().copied().map(Some).collect()
    };
    let mut best = w;
    let mut cache = HashMap::new();
    for letter in letters {
        let Some(keys) = decompose(f, letter) else {
            continue;
        };
        spend(keys.len())?;
        let mut floor = Timestamp(0);
        for k in keys {
            floor = floor.max(served(table, k, w, &mut cache, &mut spend)?);
            if floor >= best {
                break;
            }
        }
        best = best.min(floor);
    }
    Ok(best)
}

/// Counts of floor changes in one transaction, published after it commits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FloorChanges {
    pub learned: u64,
    pub raised: u64,
    pub forgotten: u64,
    pub cleared: u64,
}

impl FloorChanges {
    /// Adds these counts to the store's counters (once their transaction committed).
    pub(crate) fn publish(self, stats: &crate::stats::Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        stats.floors_learned.fetch_add(self.learned, Relaxed);
        stats.floors_raised.fetch_add(self.raised, Relaxed);
        stats.floors_forgotten.fetch_add(self.forgotten, Relaxed);
        stats.floors_cleared.fetch_add(self.cleared, Relaxed);
    }
}

impl Tables<'_> {
    /// Records what an L2 answer proved (see the module doc for why each check is
    /// there). Runs after the answer's events were saved in this transaction, and before
    /// eviction, whose raises then apply on top. Returns the floors lowered.
    pub(crate) fn learn(&mut self, l: &Learn, max_floors: u64) -> Result<u64, StoreError> {
        let Some(keys) = learnable(&l.filter) else {
            return Ok(0);
        };
        let mut lowered = 0;
        let mut cache = HashMap::new();
        for k in keys {
            let Some(enc) = k.encode() else { continue };
            let s = served(&self.floors, k, self.window, &mut cache, &mut |_| Ok(()))?;
            // The answer covers [floor, joins); the key's claim must still cover
            // [joins, ∞) for the two to make [floor, ∞). An eviction since the probe
            // raised `s` past `joins`: nothing is proven then.
            if s > l.joins || l.floor >= s {
                continue;
            }
            self.set_floor(&enc, l.floor.0)?;
            cache.remove(&enc);
            lowered += 1;
        }
        // Bounded: forget the least recently learned (always safe).
        while self.floors.len().map_err(backend)? > max_floors {
            let Some((tick, key)) = self
                .floor_order
                .first()
                .map_err(backend)?
                .map(|(t, k)| (t.value(), k.value().to_vec()))
            else {
                break;
            };
            self.drop_floor(&key, tick)?;
            self.floor_changes.forgotten += 1;
        }
        self.floor_changes.learned += lowered;
        Ok(lowered)
    }

    /// Removes one floor (learned at `tick`) and its place in the learning order.
    fn drop_floor(&mut self, key: &[u8], tick: u64) -> Result<(), StoreError> {
        self.floors.remove(key).map_err(backend)?;
        self.floor_order.remove(tick).map_err(backend)?;
        self.bytes = self.bytes.saturating_sub(cost(key));
        Ok(())
    }

    fn set_floor(&mut self, key: &[u8], floor: u64) -> Result<(), StoreError> {
        let tick = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let old = self
            .floors
            .insert(key, (floor, tick))
            .map_err(backend)?
            .map(|g| g.value());
        match old {
            Some((_, old_tick)) => {
                self.floor_order.remove(old_tick).map_err(backend)?;
            }
            None => self.bytes += cost(key),
        }
        self.floor_order.insert(tick, key).map_err(backend)?;
        self.floor_hint.insert(hint(key));
        Ok(())
    }

    /// The eviction rule per key: `e` leaves this store, so no key it satisfies may
    /// claim its second any more. Each such floor at or below `e.created_at` rises to
    /// just above it (and is dropped when that reaches `W`, which then serves).
    ///
    /// Every floor's key is in `floor_hint` (a superset: see `Writer::reload_hint`), so a
    /// key absent from it has no floor and costs no lookup.
    pub(crate) fn raise_floors(&mut self, e: &Event) -> Result<(), StoreError> {
        if self.floor_hint.is_empty() {
            return Ok(());
        }
        let c = e.created_at().0;
        for key in event_keys(e) {
            if !self.floor_hint.contains(&hint(&key)) {
                continue;
            }
            let Some((floor, tick)) = self
                .floors
                .get(key.as_slice())
                .map_err(backend)?
                .map(|g| g.value())
            else {
                continue;
            };
            if floor > c {
                continue;
            }
            if c.saturating_add(1) >= self.window.0 {
                self.drop_floor(&key, tick)?;
            } else {
                self.floors
                    .insert(key.as_slice(), (c + 1, tick))
                    .map_err(backend)?;
            }
            self.floor_changes.raised += 1;
        }
        Ok(())
    }

    /// Forgets every floor: `W` was raised by decree, so L1 may lack events of any key.
    pub(crate) fn clear_floors(&mut self) -> Result<(), StoreError> {
        let mut freed = 0;
        let mut n = 0;
        self.floors
            .retain(|k, _| {
                freed += cost(k);
                n += 1;
                false
            })
            .map_err(backend)?;
        self.floor_order.retain(|_, _| false).map_err(backend)?;
        self.bytes = self.bytes.saturating_sub(freed);
        self.floor_hint.clear();
        self.floor_changes.cleared += n;
        Ok(())
    }
}

/// Every floor key held (to rebuild the prefilter after a failed transaction).
pub(crate) fn all_hints(
    table: &impl ReadableTable<&'static [u8], (u64, u64)>,
) -> Result<HashSet<u64>, StoreError> {
    let mut out = HashSet::new();
    for entry in table.iter().map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        out.insert(hint(k.value()));
    }
    Ok(out)
}

/// Total budget bytes of the floors held (for the consistency check).
pub(crate) fn floor_bytes(
    table: &impl ReadableTable<&'static [u8], (u64, u64)>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for entry in table.iter().map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        n += cost(k.value());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evicted_summary_matches_as_the_event_would() {
        let keys = eventstore::Keys::from_seed(1);
        let e = eventstore::EventBuilder::new(Kind(1), "x".repeat(10_000))
            .tag(["e", "aa"])
            .tag(["p", "bb"])
            .sign_deterministic(&keys);
        let s = Evicted::new(7, &e);
        assert!(s.size() < 200, "content is not kept: {}", s.size());
        let other = eventstore::Keys::from_seed(2).public_key();
        let cases = [
            (Filter::new().author(keys.public_key()), true),
            (Filter::new().author(other), false),
            (Filter::new().author(other).author(keys.public_key()), true),
            (Filter::new().kind(Kind(7)), false),
            (Filter::new().tag('e', "aa"), true),
            (Filter::new().tag('e', "zz"), false),
            (
                Filter::new().tag('e', "aa").tag('p', "bb").kind(Kind(1)),
                true,
            ),
            (Filter::new().tag('e', "aa").tag('p', "zz"), false),
        ];
        for (f, want) in cases {
            assert_eq!(s.may_match(&f), want, "{f:?}");
            assert_eq!(
                f.matches(&e),
                want,
                "the summary agrees with the event: {f:?}"
            );
        }
    }

    #[test]
    fn weaker_keys_are_the_non_empty_subsets() {
        let pk = PublicKey([1; 32]);
        let full = Key {
            author: Some(&pk),
            kind: Some(Kind(1)),
            tag: Some((b'e', "x")),
        };
        let all: Vec<_> = full.with_weaker().collect();
        assert_eq!(all.len(), 7);
        assert!(all.contains(&full));
        assert!(!all.iter().any(Key::is_empty));
        let author_only = Key {
            author: Some(&pk),
            kind: None,
            tag: None,
        };
        assert_eq!(
            author_only.with_weaker().collect::<Vec<_>>(),
            vec![author_only]
        );
    }

    #[test]
    fn encodings_are_distinct_across_shapes() {
        let pk = PublicKey([2; 32]);
        let shapes = [
            Key {
                author: Some(&pk),
                kind: None,
                tag: None,
            },
            Key {
                author: None,
                kind: Some(Kind(1)),
                tag: None,
            },
            Key {
                author: None,
                kind: None,
                tag: Some((b't', "a")),
            },
            Key {
                author: None,
                kind: Some(Kind(1)),
                tag: Some((b't', "a")),
            },
            Key {
                author: Some(&pk),
                kind: Some(Kind(1)),
                tag: None,
            },
        ];
        let enc: HashSet<_> = shapes.iter().map(|k| k.encode().unwrap()).collect();
        assert_eq!(enc.len(), shapes.len());
        let long = "v".repeat(VALUE_MAX + 1);
        let k = Key {
            author: None,
            kind: None,
            tag: Some((b'r', &long)),
        };
        assert_eq!(k.encode(), None);
    }

    #[test]
    fn only_unions_of_keys_are_learnable() {
        let a = PublicKey([3; 32]);
        let b = PublicKey([4; 32]);
        let f = Filter::new().author(a).author(b).kind(Kind(1));
        assert_eq!(learnable(&f).unwrap().len(), 2);
        assert!(
            learnable(&Filter::new().since(Timestamp(5))).is_none(),
            "empty key"
        );
        assert!(learnable(&Filter::new().tag('e', "x").tag('p', "y")).is_none());
        assert!(learnable(&Filter::new().id(eventstore::EventId([0; 32]))).is_none());
        let f = Filter::new().tag('e', "x").tag('e', "y").kind(Kind(7));
        assert_eq!(learnable(&f).unwrap().len(), 2);
    }
}
