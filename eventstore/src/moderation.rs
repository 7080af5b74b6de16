//! The operator's rulings (NIP-86 relay management): who and what a relay refuses or
//! allows, kept by the authority store so that every node of a cluster enforces the
//! same ones.
//!
//! A store enforces two of them itself, because they also remove what it holds and
//! must not race the writes that bring more: [`Ruling::BanPubkey`] and
//! [`Ruling::BanEvent`] make `save` answer [`Reason::Banned`](crate::Reason::Banned),
//! and recording either removes the events it names (without a NIP-09 tombstone: lifting
//! the ban lets them be published again). The rest (allow-lists, kinds, settings) are
//! the relay's to apply; the store only keeps them.
//!
//! Every change bumps the rulings' `version`, so readers (each node of a cluster) can
//! ask cheaply whether anything changed ([`EventStore::rulings_since`](crate::EventStore::rulings_since)).

use std::collections::{BTreeMap, HashSet};

use crate::types::{EventId, Kind, PublicKey};

/// Relay information an operator may change at run time (NIP-86 `changerelay*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setting {
    /// NIP-11 `name`.
    Name,
    /// NIP-11 `description`.
    Description,
    /// NIP-11 `icon` (a URL).
    Icon,
}

impl Setting {
    const ALL: [Setting; 3] = [Setting::Name, Setting::Description, Setting::Icon];

    fn code(self) -> u8 {
        match self {
            Setting::Name => 0,
            Setting::Description => 1,
            Setting::Icon => 2,
        }
    }
}

/// One ruling: what it is about and which way it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ruling {
    /// Events by this author are refused, and those stored are removed.
    BanPubkey(PublicKey),
    /// This author may publish. While any author is allowed, only allowed ones may.
    AllowPubkey(PublicKey),
    /// This event is refused, and removed if stored.
    BanEvent(EventId),
    /// This kind is accepted. While any kind is allowed, only allowed ones are.
    AllowKind(Kind),
    /// This kind is refused.
    DisallowKind(Kind),
    /// A relay setting; its value is the entry's note.
    Set(Setting),
}

impl Ruling {
    /// The ruling an entry of this one replaces: a pubkey is banned or allowed, a kind
    /// allowed or disallowed, never both.
    pub fn opposite(&self) -> Option<Ruling> {
        match *self {
            Ruling::BanPubkey(p) => Some(Ruling::AllowPubkey(p)),
            Ruling::AllowPubkey(p) => Some(Ruling::BanPubkey(p)),
            Ruling::AllowKind(k) => Some(Ruling::DisallowKind(k)),
            Ruling::DisallowKind(k) => Some(Ruling::AllowKind(k)),
            Ruling::BanEvent(_) | Ruling::Set(_) => None,
        }
    }

    /// Whether recording it removes stored events.
    pub fn removes_events(&self) -> bool {
        matches!(self, Ruling::BanPubkey(_) | Ruling::BanEvent(_))
    }

    /// The storage form: a list code and the subject's bytes. Every store keeps
    /// rulings under this key, so all of them agree on what one ruling is.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Ruling::BanPubkey(p) => (1, p.0.to_vec()),
            Ruling::AllowPubkey(p) => (2, p.0.to_vec()),
            Ruling::BanEvent(id) => (3, id.0.to_vec()),
            Ruling::AllowKind(k) => (4, k.0.to_be_bytes().to_vec()),
            Ruling::DisallowKind(k) => (5, k.0.to_be_bytes().to_vec()),
            Ruling::Set(s) => (6, vec![s.code()]),
        }
    }

    /// The inverse of [`Ruling::encode`]; `None` for a key no version of this code wrote.
    pub fn decode(list: u8, subject: &[u8]) -> Option<Ruling> {
        let key32 = || <[u8; 32]>::try_from(subject).ok();
        let kind = || <[u8; 2]>::try_from(subject).ok().map(u16::from_be_bytes);
        Some(match list {
            1 => Ruling::BanPubkey(PublicKey(key32()?)),
            2 => Ruling::AllowPubkey(PublicKey(key32()?)),
            3 => Ruling::BanEvent(EventId(key32()?)),
            4 => Ruling::AllowKind(Kind(kind()?)),
            5 => Ruling::DisallowKind(Kind(kind()?)),
            6 => Ruling::Set(
                *Setting::ALL
                    .iter()
                    .find(|s| subject == [s.code()].as_slice())?,
            ),
            _ => return None,
        })
    }
}

/// A ruling as recorded, with the operator's note (a reason, or a setting's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ruling: Ruling,
    pub note: String,
}

/// A change to the rulings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Records an entry (replacing one for the same ruling, and removing its opposite).
    Add(Entry),
    /// Removes a ruling, if recorded.
    Remove(Ruling),
}

impl Change {
    /// Records `ruling` with `note`.
    pub fn add(ruling: Ruling, note: impl Into<String>) -> Change {
        Change::Add(Entry {
            ruling,
            note: note.into(),
        })
    }
}

/// What a change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruled {
    /// The rulings' version after the change.
    pub version: u64,
    /// Events the change removed from the store (a ban's).
    pub removed: Vec<EventId>,
}

/// Every recorded ruling, at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rulings {
    /// Bumped by every change; 0 before the first.
    pub version: u64,
    /// By ruling, so two stores holding the same rulings compare equal.
    pub entries: BTreeMap<Ruling, String>,
}

impl Rulings {
    /// Applies a change to this in-memory copy (the reference semantics every store
    /// follows). Returns whether anything changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        let changed = match change {
            Change::Add(e) => {
                let opposite = e
                    .ruling
                    .opposite()
                    .and_then(|o| self.entries.remove(&o))
                    .is_some();
                let old = self.entries.insert(e.ruling, e.note.clone());
                opposite || old.as_deref() != Some(e.note.as_str())
            }
            Change::Remove(r) => self.entries.remove(r).is_some(),
        };
        // Every change bumps the version, even one that changed nothing: a caller that
        // asked for a change learns a version at least as new as its own.
        self.version += 1;
        changed
    }

    /// Is this author banned?
    pub fn bans_pubkey(&self, pk: &PublicKey) -> bool {
        self.entries.contains_key(&Ruling::BanPubkey(*pk))
    }

    /// Is this event banned?
    pub fn bans_event(&self, id: &EventId) -> bool {
        self.entries.contains_key(&Ruling::BanEvent(*id))
    }

    /// The authors of every `BanPubkey` ruling.
    pub fn banned_pubkeys(&self) -> HashSet<PublicKey> {
        self.entries
            .keys()
            .filter_map(|r| match r {
                Ruling::BanPubkey(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// A setting's value, if set.
    pub fn setting(&self, s: Setting) -> Option<&str> {
        self.entries.get(&Ruling::Set(s)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ruling_round_trips_through_its_storage_form() {
        let rulings = [
            Ruling::BanPubkey(PublicKey([1; 32])),
            Ruling::AllowPubkey(PublicKey([2; 32])),
            Ruling::BanEvent(EventId([3; 32])),
            Ruling::AllowKind(Kind(7)),
            Ruling::DisallowKind(Kind(65_535)),
            Ruling::Set(Setting::Name),
            Ruling::Set(Setting::Description),
            Ruling::Set(Setting::Icon),
        ];
        for r in rulings {
            let (list, subject) = r.encode();
            assert_eq!(Ruling::decode(list, &subject), Some(r));
        }
        assert_eq!(Ruling::decode(1, &[0; 31]), None);
        assert_eq!(Ruling::decode(9, &[]), None);
        assert_eq!(Ruling::decode(6, &[7]), None);
    }

    #[test]
    fn a_ban_replaces_an_allowance_and_back() {
        let pk = PublicKey([9; 32]);
        let mut r = Rulings::default();
        assert!(r.apply(&Change::add(Ruling::AllowPubkey(pk), "friend")));
        assert!(r.apply(&Change::add(Ruling::BanPubkey(pk), "spam")));
        assert!(r.bans_pubkey(&pk));
        assert!(!r.entries.contains_key(&Ruling::AllowPubkey(pk)));
        assert!(!r.apply(&Change::add(Ruling::BanPubkey(pk), "spam")));
        assert!(r.apply(&Change::Remove(Ruling::BanPubkey(pk))));
        assert!(r.entries.is_empty());
        assert_eq!(r.version, 4);
    }
}
