//! The NIP rules every store applies, as pure functions: addresses (NIP-01), which of two
//! versions wins, what a deletion request targets (NIP-09).

use crate::event::Event;
use crate::kind::KindClass;
use crate::types::{EventId, Kind, PublicKey, Timestamp};

/// The address of a replaceable (`d` is empty) or addressable event: `kind:pubkey:d`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub kind: Kind,
    pub pubkey: PublicKey,
    pub d: String,
}

impl Address {
    /// Parses an `a` tag value `<kind>:<pubkey hex>:<d>` (the `d` part may contain `:`).
    /// Only replaceable and addressable kinds have addresses.
    pub fn parse(s: &str) -> Option<Address> {
        let mut it = s.splitn(3, ':');
        let kind = Kind(it.next()?.parse().ok()?);
        let pubkey = PublicKey::from_hex(it.next()?).ok()?;
        let d = it.next().unwrap_or("");
        match kind.class() {
            KindClass::Addressable => Some(Address {
                kind,
                pubkey,
                d: d.to_owned(),
            }),
            // A replaceable kind has one address per (pubkey, kind); any `d` is ignored.
            KindClass::Replaceable => Some(Address {
                kind,
                pubkey,
                d: String::new(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind.0, self.pubkey, self.d)
    }
}

impl Event {
    /// The address, for replaceable and addressable events.
    pub fn address(&self) -> Option<Address> {
        let d = match self.kind().class() {
            KindClass::Replaceable => String::new(),
            KindClass::Addressable => self.d_tag().to_owned(),
            _ => return None,
        };
        Some(Address {
            kind: self.kind(),
            pubkey: self.pubkey(),
            d,
        })
    }

    /// What a deletion request (NIP-09, kind 5) asks to delete: ids from `e` tags and
    /// addresses from `a` tags. Addresses of other authors are dropped here, since a
    /// deletion only ever applies to its own author's events. Empty for other kinds.
    pub fn deletion_targets(&self) -> DeletionTargets {
        let mut t = DeletionTargets::default();
        if self.kind() != Kind::DELETION {
            return t;
        }
        for v in self.tag_values("e") {
            if let Ok(id) = EventId::from_hex(v) {
                if id != self.id() && !t.ids.contains(&id) {
                    t.ids.push(id);
                }
            }
        }
        for v in self.tag_values("a") {
            if let Some(a) = Address::parse(v) {
                if a.pubkey == self.pubkey() && !t.addresses.contains(&a) {
                    t.addresses.push(a);
                }
            }
        }
        t
    }
}

/// The targets of one deletion request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionTargets {
    /// Event ids (`e` tags). Each applies only if the target has the deleter's pubkey.
    pub ids: Vec<EventId>,
    /// Addresses (`a` tags), all of the deleter's own pubkey: every version with
    /// `created_at` up to the request's is deleted.
    pub addresses: Vec<Address>,
}

/// May a deletion by `deleter` remove `target`? Same author only, and a deletion
/// request can't itself be deleted (NIP-09: that has no effect).
pub fn deletion_applies(deleter: PublicKey, target: &Event) -> bool {
    target.pubkey() == deleter && target.kind() != Kind::DELETION
}

/// Does `candidate` replace `current` at the same address? Newer `created_at` wins; on
/// equal timestamps the lowest id is kept (NIP-01).
pub fn supersedes(candidate: (Timestamp, EventId), current: (Timestamp, EventId)) -> bool {
    candidate.0 > current.0 || (candidate.0 == current.0 && candidate.1 < current.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_parsing() {
        let pk = "a".repeat(64);
        let a = Address::parse(&format!("30023:{pk}:my:slug")).unwrap();
        assert_eq!(a.d, "my:slug");
        assert_eq!(a.kind, Kind(30023));
        let r = Address::parse(&format!("10002:{pk}:ignored")).unwrap();
        assert_eq!(r.d, "");
        assert!(Address::parse(&format!("1:{pk}:")).is_none());
        assert!(Address::parse("30023:zz:x").is_none());
        assert!(Address::parse("x:y").is_none());
    }

    #[test]
    fn newer_wins_then_lowest_id() {
        let lo = EventId([1; 32]);
        let hi = EventId([2; 32]);
        assert!(supersedes((Timestamp(2), hi), (Timestamp(1), lo)));
        assert!(!supersedes((Timestamp(1), lo), (Timestamp(2), hi)));
        assert!(supersedes((Timestamp(1), lo), (Timestamp(1), hi)));
        assert!(!supersedes((Timestamp(1), hi), (Timestamp(1), lo)));
        assert!(!supersedes((Timestamp(1), lo), (Timestamp(1), lo)));
    }
}
