//! Kind classes (NIP-01): how a store treats an event is decided by its kind alone.

use crate::types::Kind;

/// How a store keeps events of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindClass {
    /// Every event is kept.
    Regular,
    /// One event per (pubkey, kind): kinds 0, 3 and 10000–19999.
    Replaceable,
    /// Never stored, only delivered live: kinds 20000–29999.
    Ephemeral,
    /// One event per (pubkey, kind, `d` tag): kinds 30000–39999.
    Addressable,
}

impl Kind {
    /// The deletion request kind (NIP-09).
    pub const DELETION: Kind = Kind(5);
    /// Profile metadata, a replaceable kind.
    pub const METADATA: Kind = Kind(0);
    /// A short text note.
    pub const TEXT_NOTE: Kind = Kind(1);

    /// The class of this kind under NIP-01.
    pub fn class(self) -> KindClass {
        match self.0 {
            0 | 3 | 10_000..=19_999 => KindClass::Replaceable,
            20_000..=29_999 => KindClass::Ephemeral,
            30_000..=39_999 => KindClass::Addressable,
            _ => KindClass::Regular,
        }
    }

    /// Replaceable or addressable: at most one event per address.
    pub fn is_replaceable_or_addressable(self) -> bool {
        matches!(
            self.class(),
            KindClass::Replaceable | KindClass::Addressable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_at_the_boundaries() {
        let c = |k| Kind(k).class();
        assert_eq!(c(0), KindClass::Replaceable);
        assert_eq!(c(1), KindClass::Regular);
        assert_eq!(c(3), KindClass::Replaceable);
        assert_eq!(c(5), KindClass::Regular);
        assert_eq!(c(9_999), KindClass::Regular);
        assert_eq!(c(10_000), KindClass::Replaceable);
        assert_eq!(c(19_999), KindClass::Replaceable);
        assert_eq!(c(20_000), KindClass::Ephemeral);
        assert_eq!(c(29_999), KindClass::Ephemeral);
        assert_eq!(c(30_000), KindClass::Addressable);
        assert_eq!(c(39_999), KindClass::Addressable);
        assert_eq!(c(40_000), KindClass::Regular);
        assert_eq!(c(65_535), KindClass::Regular);
    }
}
