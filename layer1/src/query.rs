//! The read side: plan each filter onto an index, walk its ranges newest first, merge
//! them, and stop at `limit`. Runs inside one read transaction, on its caller's thread
//! under a budget of steps or on a reader thread (`readers.rs`).

use std::cell::{Cell, OnceCell};
use std::collections::{BinaryHeap, HashSet};

use eventstore::{Event, Filter, StoreError, Timestamp, sort_canonical};
use redb::{ReadOnlyTable, ReadTransaction};

use crate::error::backend;
use crate::hot::Hot;
use crate::keys::*;
use crate::schema::{EVENTS, IDS, INDEX};
use crate::write::decode;

/// Above this many (author, kind) pairs the author index is walked instead.
const MAX_PAIRS: usize = 256;

/// Which index a filter walks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Point lookups.
    Ids,
    /// One range per prefix, each ordered by `created_at`.
    Ranges(Vec<Vec<u8>>),
}

/// Picks the index: ids, then author+kind, authors, a tag, kinds, and the time index.
/// Authors are usually the most selective field in client filters; among tags the
/// letter with the fewest values is taken.
pub(crate) fn plan(f: &Filter, codec: &Codec) -> Plan {
    if f.ids.is_some() {
        return Plan::Ids;
    }
    if let Some(authors) = &f.authors {
        if let Some(kinds) = &f.kinds {
            if authors.len() * kinds.len() <= MAX_PAIRS {
                return Plan::Ranges(
                    authors
                        .iter()
                        .flat_map(|a| kinds.iter().map(move |k| author_kind_prefix(a, *k)))
                        .collect(),
                );
            }
        }
        return Plan::Ranges(authors.iter().map(author_prefix).collect());
    }
    if let Some((letter, values)) = f.tags.iter().min_by_key(|(_, v)| v.len()) {
        return Plan::Ranges(
            values
                .iter()
                .map(|v| codec.tag_prefix(*letter, v))
                .collect(),
        );
    }
    if let Some(kinds) = &f.kinds {
        return Plan::Ranges(kinds.iter().map(|k| kind_prefix(*k)).collect());
    }
    Plan::Ranges(vec![created_prefix()])
}

/// What every reader of one store shares: the key codec (fixed once the file is open:
/// `reindex::ensure` runs before any reader) and the decoded events.
pub(crate) struct ReadContext {
    pub codec: Codec,
    /// The store's decoded events (`hot.rs`), if it keeps them.
    pub hot: Option<Hot>,
}

/// One snapshot's reads. Tables are opened on first use: a query served from the
/// decoded events needs only the index, and each table opened costs a lookup in the
/// file's table tree (five of them were 5% of a node serving closed-loop REQs).
pub(crate) struct Reader<'c> {
    meta: OnceCell<ReadOnlyTable<&'static str, &'static [u8]>>,
    events: OnceCell<ReadOnlyTable<u64, &'static [u8]>>,
    ids: OnceCell<ReadOnlyTable<&'static [u8; 32], u64>>,
    index: OnceCell<ReadOnlyTable<&'static [u8], ()>>,
    floors: OnceCell<ReadOnlyTable<&'static [u8], (u64, u64)>>,
    txn: ReadTransaction,
    ctx: &'c ReadContext,
    /// Steps (index entries walked, records and ids looked up) this read may still
    /// take; [`UNLIMITED`] on a reader thread. Out of steps, it fails with
    /// `readers::over_budget` and runs again on a reader thread.
    steps: Cell<u32>,
}

/// The table in `cell`, opened from `txn` the first time.
fn table<'a, K: redb::Key + 'static, V: redb::Value + 'static>(
    cell: &'a OnceCell<ReadOnlyTable<K, V>>,
    txn: &ReadTransaction,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<&'a ReadOnlyTable<K, V>, StoreError> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let t = txn.open_table(def).map_err(backend)?;
    Ok(cell.get_or_init(|| t))
}

/// The budget of a read that may take as long as it needs.
pub(crate) const UNLIMITED: u32 = u32::MAX;

type IndexRange = redb::Range<'static, &'static [u8], ()>;

/// One index range, walked newest first, with its next entry peeked.
struct Walk {
    range: IndexRange,
}

impl Walk {
    fn next(&mut self) -> Result<Option<(Timestamp, u64)>, StoreError> {
        match self.range.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (k, _) = entry.map_err(backend)?;
                Ok(split_suffix(k.value()))
            }
        }
    }
}

impl<'c> Reader<'c> {
    /// A reader of `txn` that may take `steps` steps ([`UNLIMITED`]: any number).
    pub fn new(txn: ReadTransaction, steps: u32, ctx: &'c ReadContext) -> Reader<'c> {
        Reader {
            meta: OnceCell::new(),
            events: OnceCell::new(),
            ids: OnceCell::new(),
            index: OnceCell::new(),
            floors: OnceCell::new(),
            txn,
            ctx,
            steps: Cell::new(steps),
        }
    }

    fn meta(&self) -> Result<&ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        table(&self.meta, &self.txn, crate::schema::META)
    }

    fn events(&self) -> Result<&ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        table(&self.events, &self.txn, EVENTS)
    }

    fn ids(&self) -> Result<&ReadOnlyTable<&'static [u8; 32], u64>, StoreError> {
        table(&self.ids, &self.txn, IDS)
    }

    fn index(&self) -> Result<&ReadOnlyTable<&'static [u8], ()>, StoreError> {
        table(&self.index, &self.txn, INDEX)
    }

    fn floors(&self) -> Result<&ReadOnlyTable<&'static [u8], (u64, u64)>, StoreError> {
        table(&self.floors, &self.txn, crate::schema::FLOORS)
    }

    /// Spends `n` steps, or fails once there are not enough left.
    fn step(&self, n: usize) -> Result<(), StoreError> {
        let left = self.steps.get();
        if left == UNLIMITED {
            return Ok(());
        }
        match u32::try_from(n).ok().and_then(|n| left.checked_sub(n)) {
            Some(left) => {
                self.steps.set(left);
                Ok(())
            }
            None => Err(crate::readers::over_budget()),
        }
    }

    /// The id of the event at `serial`, read from the front of its record without
    /// decoding the rest.
    fn id_of(&self, serial: u64) -> Result<Option<eventstore::EventId>, StoreError> {
        self.step(1)?;
        match self.events()?.get(serial).map_err(backend)? {
            Some(v) => crate::record::id_of(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn load(&self, serial: u64) -> Result<Option<Event>, StoreError> {
        self.step(1)?;
        // Serials come from this snapshot's own entries, and a serial's event never
        // changes: a copy held is the record's (`hot.rs`).
        if let Some(e) = self.ctx.hot.as_ref().and_then(|h| h.get(serial)) {
            return Ok(Some(e));
        }
        match self.events()?.get(serial).map_err(backend)? {
            Some(v) => {
                let e = decode(v.value())?;
                if let Some(h) = &self.ctx.hot {
                    h.put(serial, &e);
                }
                Ok(Some(e))
            }
            None => Ok(None),
        }
    }

    /// Up to `max` authors with more than `keep` events of `kinds` (any: `None`): one
    /// walk of the author+kind index, counting runs of equal author prefixes. Two
    /// authors sharing a prefix count as one (the caller's query re-checks each
    /// author), and the full key is read from one event of each run found over.
    pub fn authors_over(
        &self,
        kinds: Option<&std::collections::BTreeSet<eventstore::Kind>>,
        keep: u64,
        max: usize,
    ) -> Result<Vec<eventstore::PublicKey>, StoreError> {
        use crate::keys::IX_AUTHOR_KIND;
        let lo: &[u8] = &[IX_AUTHOR_KIND];
        let hi: &[u8] = &[IX_AUTHOR_KIND + 1];
        let mut out = Vec::new();
        // The author prefix of the current run, its count, and one serial in it.
        let mut run: Option<([u8; 8], u64, u64)> = None;
        let close = |run: Option<([u8; 8], u64, u64)>, out: &mut Vec<_>| {
            if let Some((_, _, serial)) = run.filter(|&(_, n, _)| n > keep) {
                if let Some(e) = self.load(serial)? {
                    out.push(e.pubkey());
                }
            }
            Ok::<(), StoreError>(())
        };
        for entry in self.index()?.range(lo..hi).map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            let k = k.value();
            // IX_AUTHOR_KIND | prefix (8) | kind (2) | created_at | serial.
            let (Some(Ok(prefix)), Some(kind), Some((_, serial))) = (
                k.get(1..9).map(<[u8; 8]>::try_from),
                k.get(9..11).map(|b| u16::from_be_bytes([b[0], b[1]])),
                split_suffix(k),
            ) else {
                return Err(StoreError::Corrupt("short author+kind index key".into()));
            };
            if kinds.is_some_and(|ks| !ks.contains(&eventstore::Kind(kind))) {
                continue;
            }
            match &mut run {
                Some((p, n, s)) if *p == prefix => {
                    *n += 1;
                    *s = serial;
                }
                _ => {
                    close(run.take(), &mut out)?;
                    if out.len() >= max {
                        return Ok(out);
                    }
                    run = Some((prefix, 1, serial));
                }
            }
        }
        close(run, &mut out)?;
        out.truncate(max);
        Ok(out)
    }

    /// The window watermark `W` in this snapshot.
    pub fn window(&self) -> Result<Timestamp, StoreError> {
        crate::write::get_u64(self.meta()?, crate::schema::META_WINDOW).map(Timestamp)
    }

    /// Events evicted up to this snapshot (the eviction epoch).
    pub fn evictions(&self) -> Result<u64, StoreError> {
        crate::write::get_u64(self.meta()?, crate::schema::META_EVICTIONS)
    }

    /// Which of `ids` are held.
    pub fn contains(&self, ids: &[eventstore::EventId]) -> Result<Vec<bool>, StoreError> {
        self.step(ids.len())?;
        ids.iter()
            .map(|id| Ok(self.ids()?.get(&id.0).map_err(backend)?.is_some()))
            .collect()
    }

    /// The union of the filters' answers in canonical order, plus the serials served
    /// (for access recency).
    pub fn query(
        &self,
        filters: &[Filter],
        now: Timestamp,
    ) -> Result<(Vec<Event>, Vec<u64>), StoreError> {
        let room = filters.iter().map(answer_room).sum();
        let mut out = Vec::with_capacity(room);
        let mut serials = Vec::with_capacity(room);
        for f in filters {
            if f.is_empty_result() {
                continue;
            }
            self.run(f, now, f.limit.unwrap_or(usize::MAX), &mut |s, e| {
                serials.push(s);
                out.push(e);
            })?;
        }
        sort_canonical(&mut out);
        Ok((out, serials))
    }

    /// One filter's answer, how far it is provably complete, and the matches held in
    /// the gap below `until` (see `store::Probe`), plus the serials served.
    pub fn probe(
        &self,
        f: &Filter,
        now: Timestamp,
    ) -> Result<(crate::store::Probe, Vec<u64>), StoreError> {
        let w = self.window()?;
        let (events, serials) = self.query(std::slice::from_ref(f), now)?;
        let limit = f.limit.unwrap_or(usize::MAX);
        let complete_above = |floor: Timestamp| {
            floor.0 == 0
                || f.since.is_some_and(|s| s >= floor)
                || events.iter().filter(|e| e.created_at() >= floor).count() >= limit
        };
        // Floors are looked up only when the window alone does not settle it.
        let floor = if complete_above(w) {
            w
        } else {
            crate::floors::filter_floor(self.floors()?, f, w, |n| self.step(n))?
        };
        let mut gap = 0;
        if let Some(until) = f.until.filter(|u| u.0.saturating_add(1) < floor.0) {
            if !complete_above(floor) {
                let g = Filter {
                    since: Some(Timestamp(until.0 + 1).max(f.since.unwrap_or(Timestamp(0)))),
                    until: Some(Timestamp(floor.0 - 1)),
                    limit: None,
                    ..f.clone()
                };
                let cap = limit.saturating_add(1);
                self.run(&g, now, cap, &mut |_, _| gap += 1)?;
            }
        }
        let evictions = self.evictions()?;
        let probe = crate::store::Probe {
            events,
            floor,
            gap,
            evictions,
        };
        Ok((probe, serials))
    }

    /// Distinct matches of any filter, ignoring limits.
    pub fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64, StoreError> {
        let mut seen = HashSet::new();
        for f in filters {
            let unlimited = Filter {
                limit: None,
                ..f.clone()
            };
            if unlimited.is_empty_result() {
                continue;
            }
            self.run(&unlimited, now, usize::MAX, &mut |s, _| {
                seen.insert(s);
            })?;
        }
        Ok(seen.len() as u64)
    }

    /// Feeds `emit` the filter's newest `limit` matches (in canonical order, ties on the
    /// last timestamp resolved by id).
    fn run(
        &self,
        f: &Filter,
        now: Timestamp,
        limit: usize,
        emit: &mut dyn FnMut(u64, Event),
    ) -> Result<(), StoreError> {
        let keep = |e: &Event| f.matches(e) && !e.is_expired(now);
        let mut found: Vec<(u64, Event)> = Vec::with_capacity(answer_room(f));
        match plan(f, &self.ctx.codec) {
            Plan::Ids => {
                for id in f.ids.iter().flatten() {
                    self.step(1)?;
                    let Some(serial) = self.ids()?.get(&id.0).map_err(backend)?.map(|v| v.value())
                    else {
                        continue;
                    };
                    if let Some(e) = self.load(serial)? {
                        if keep(&e) {
                            found.push((serial, e));
                        }
                    }
                }
            }
            Plan::Ranges(prefixes) => {
                let since = f.since.unwrap_or(Timestamp(0));
                let until = f.until.unwrap_or(Timestamp(u64::MAX));
                // Canonical order: each range yields created_at descending; the heap
                // merges them, newest first.
                let mut walks = Vec::with_capacity(prefixes.len());
                let mut heap = BinaryHeap::with_capacity(prefixes.len());
                self.step(prefixes.len())?;
                let index = self.index()?;
                for p in &prefixes {
                    let lo = with_suffix(p, since, 0);
                    let hi = with_suffix(p, until, u64::MAX);
                    let mut w = Walk {
                        range: index
                            .range(lo.as_slice()..=hi.as_slice())
                            .map_err(backend)?,
                    };
                    if let Some((t, s)) = w.next()? {
                        heap.push((t, s, walks.len()));
                    }
                    walks.push(w);
                }
                // One timestamp at a time, newest first. Within a second canonical order
                // is by id, and a busy second can hold thousands of candidates: when
                // more than needed, they are ranked by id read straight from the front
                // of each record, and only the winners are decoded.
                // A serial found in two ranges (an event with two of a tag filter's
                // values) has the same timestamp in both: it repeats within its group,
                // next to itself, since the heap hands a group out by serial, highest
                // first.
                while found.len() < limit {
                    let Some(&(t, _, _)) = heap.peek() else { break };
                    let mut group: Vec<u64> = Vec::new();
                    while let Some(&(gt, serial, i)) = heap.peek() {
                        if gt != t {
                            break;
                        }
                        heap.pop();
                        self.step(1)?;
                        if let Some((nt, ns)) = walks[i].next()? {
                            heap.push((nt, ns, i));
                        }
                        group.push(serial);
                    }
                    group.dedup();
                    if group.len() > limit - found.len() {
                        let mut ranked = Vec::with_capacity(group.len());
                        for serial in group {
                            if let Some(id) = self.id_of(serial)? {
                                ranked.push((id, serial));
                            }
                        }
                        ranked.sort_unstable();
                        group = ranked.into_iter().map(|(_, s)| s).collect();
                    }
                    for serial in group {
                        if found.len() >= limit {
                            break;
                        }
                        if let Some(e) = self.load(serial)? {
                            if keep(&e) {
                                found.push((serial, e));
                            }
                        }
                    }
                }
            }
        }
        found.sort_by(|a, b| eventstore::canonical_cmp(&a.1, &b.1));
        found.truncate(limit);
        for (s, e) in found {
            emit(s, e);
        }
        Ok(())
    }
}

/// Room to reserve for one filter's answer: its limit, up to 64 events (an event is
/// about 220 bytes in a list, and growing one copies them all; past 64 the doublings
/// are few), and a little when it has none (rare, and usually narrow).
fn answer_room(f: &Filter) -> usize {
    f.limit.map_or(16, |l| l.min(64))
}
