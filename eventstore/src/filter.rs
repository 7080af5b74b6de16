//! NIP-01 filters: JSON form, matching, and the single definition of what matches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::types::{EventId, Kind, PublicKey, Timestamp};

/// A NIP-01 filter. Conditions are ANDed; the values inside one condition are ORed.
/// `None` means "no condition"; an empty set matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ids: Option<BTreeSet<EventId>>,
    pub authors: Option<BTreeSet<PublicKey>>,
    pub kinds: Option<BTreeSet<Kind>>,
    /// `#x` conditions, keyed by the ASCII letter `x`.
    pub tags: BTreeMap<u8, BTreeSet<String>>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<Timestamp>,
    /// Inclusive upper bound on `created_at`.
    pub until: Option<Timestamp>,
    /// The most events the initial query returns: the newest ones.
    pub limit: Option<usize>,
}

/// A condition of a filter already known to hold for an event (see
/// [`Filter::matches_known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Nothing,
    /// The event's id is among the filter's `ids`.
    Id,
    /// Its author is among the filter's `authors`.
    Author,
    /// Its kind is among the filter's `kinds`.
    Kind,
    /// One of its tags with this letter has a value among the filter's `#letter` values.
    Tag(u8),
}

impl Filter {
    /// A filter that matches everything.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Adds an id.
    pub fn id(mut self, id: EventId) -> Filter {
        self.ids.get_or_insert_with(BTreeSet::new).insert(id);
        self
    }
    /// Adds an author.
    pub fn author(mut self, pk: PublicKey) -> Filter {
        self.authors.get_or_insert_with(BTreeSet::new).insert(pk);
        self
    }
    /// Adds a kind.
    pub fn kind(mut self, k: Kind) -> Filter {
        self.kinds.get_or_insert_with(BTreeSet::new).insert(k);
        self
    }
    /// Adds a `#letter` value. `letter` must be an ASCII letter.
    pub fn tag(mut self, letter: char, value: impl Into<String>) -> Filter {
        debug_assert!(letter.is_ascii_alphabetic());
        self.tags
            .entry(letter as u8)
            .or_default()
            .insert(value.into());
        self
    }
    /// Sets `since`.
    pub fn since(mut self, t: Timestamp) -> Filter {
        self.since = Some(t);
        self
    }
    /// Sets `until`.
    pub fn until(mut self, t: Timestamp) -> Filter {
        self.until = Some(t);
        self
    }
    /// Sets `limit`.
    pub fn limit(mut self, n: usize) -> Filter {
        self.limit = Some(n);
        self
    }

    /// Does `event` satisfy every condition? The one definition of filter semantics
    /// (`limit` is not a condition). Expiration is the store's business, not the filter's.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_known(event, Known::Nothing)
    }

    /// [`Filter::matches`], skipping the one condition the caller already knows `event`
    /// meets (an index found this filter under the event's id, author, kind or a value
    /// of one of its tags). Calling it with a fact that does not hold is a bug.
    pub fn matches_known(&self, event: &Event, known: Known) -> bool {
        if let Some(ids) = self.ids.as_ref().filter(|_| known != Known::Id) {
            if !ids.contains(&event.id()) {
                return false;
            }
        }
        if let Some(authors) = self.authors.as_ref().filter(|_| known != Known::Author) {
            if !authors.contains(&event.pubkey()) {
                return false;
            }
        }
        if let Some(kinds) = self.kinds.as_ref().filter(|_| known != Known::Kind) {
            if !kinds.contains(&event.kind()) {
                return false;
            }
        }
        if !self.time_matches(event.created_at()) {
            return false;
        }
        self.tags.iter().all(|(&letter, values)| {
            known == Known::Tag(letter)
                || event
                    .indexable_tags()
                    .any(|(l, v)| l == letter && values.contains(v))
        })
    }

    /// Is `t` within `since..=until`?
    pub fn time_matches(&self, t: Timestamp) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// True when no event can match: an empty value set, `since > until`, or `limit 0`.
    pub fn is_empty_result(&self) -> bool {
        self.limit == Some(0)
            || self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.authors.as_ref().is_some_and(BTreeSet::is_empty)
            || self.kinds.as_ref().is_some_and(BTreeSet::is_empty)
            || self.tags.values().any(BTreeSet::is_empty)
            || matches!((self.since, self.until), (Some(s), Some(u)) if s > u)
    }

    /// Parses one filter from JSON text.
    pub fn from_json(s: &str) -> Result<Filter, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.ids {
            m.serialize_entry("ids", v)?;
        }
        if let Some(v) = &self.authors {
            m.serialize_entry("authors", v)?;
        }
        if let Some(v) = &self.kinds {
            m.serialize_entry("kinds", v)?;
        }
        for (letter, values) in &self.tags {
            let key = format!("#{}", *letter as char);
            m.serialize_entry(&key, values)?;
        }
        if let Some(v) = &self.since {
            m.serialize_entry("since", v)?;
        }
        if let Some(v) = &self.until {
            m.serialize_entry("until", v)?;
        }
        if let Some(v) = &self.limit {
            m.serialize_entry("limit", v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FilterVisitor)
    }
}

struct FilterVisitor;

fn set_once<E: de::Error, T>(slot: &mut Option<T>, key: &str, v: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("duplicate filter field `{key}`")));
    }
    *slot = Some(v);
    Ok(())
}

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = Filter;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a NIP-01 filter object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filter, A::Error> {
        let mut f = Filter::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "ids" => set_once(&mut f.ids, "ids", map.next_value()?)?,
                "authors" => set_once(&mut f.authors, "authors", map.next_value()?)?,
                "kinds" => set_once(&mut f.kinds, "kinds", map.next_value()?)?,
                "since" => set_once(&mut f.since, "since", map.next_value()?)?,
                "until" => set_once(&mut f.until, "until", map.next_value()?)?,
                "limit" => set_once(&mut f.limit, "limit", map.next_value()?)?,
                k if k.len() == 2
                    && k.as_bytes()[0] == b'#'
                    && k.as_bytes()[1].is_ascii_alphabetic() =>
                {
                    let letter = k.as_bytes()[1];
                    let values: BTreeSet<String> = map.next_value()?;
                    if f.tags.insert(letter, values).is_some() {
                        return Err(de::Error::custom(format_args!(
                            "duplicate filter field `{k}`"
                        )));
                    }
                }
                // Strict: an ignored condition (e.g. NIP-50 `search`) would silently widen
                // the answer, so an unknown field is an error the client can see.
                other => {
                    return Err(de::Error::custom(format_args!(
                        "unsupported filter field `{other}`"
                    )));
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventBuilder, Keys};

    #[test]
    fn a_known_condition_is_skipped_and_the_others_still_count() {
        let (a, b) = (Keys::from_seed(1), Keys::from_seed(2));
        let e = EventBuilder::new(Kind(1), "x")
            .tags(vec![vec!["t".into(), "nostr".into()]])
            .created_at(Timestamp(100))
            .sign(&a);
        let full = Filter::new()
            .author(a.public_key())
            .kind(Kind(1))
            .tag('t', "nostr")
            .since(Timestamp(50));
        for k in [Known::Nothing, Known::Author, Known::Kind, Known::Tag(b't')] {
            assert!(full.matches_known(&e, k), "{k:?}");
        }
        // Each skip covers its own condition only.
        let other_author = full.clone().author(b.public_key());
        let only_b = Filter {
            authors: Some([b.public_key()].into()),
            ..full.clone()
        };
        assert!(other_author.matches(&e));
        assert!(!only_b.matches(&e));
        assert!(only_b.matches_known(&e, Known::Author));
        assert!(!only_b.matches_known(&e, Known::Kind));
        let late = full.clone().since(Timestamp(101));
        for k in [
            Known::Nothing,
            Known::Id,
            Known::Author,
            Known::Kind,
            Known::Tag(b't'),
        ] {
            assert!(!late.matches_known(&e, k), "time is never known: {k:?}");
        }
        let other_tag = full.clone().tag('p', "someone");
        assert!(!other_tag.matches_known(&e, Known::Tag(b't')));
        assert!(other_tag.matches_known(&e, Known::Tag(b'p')));
        let by_id = Filter::new().id(EventId([0; 32]));
        assert!(!by_id.matches(&e) && by_id.matches_known(&e, Known::Id));
    }
}
