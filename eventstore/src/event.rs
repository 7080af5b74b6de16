//! The signed event: typed fields plus the compact JSON it is stored and served as.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::canonical::{self, Parts};
use crate::hex::HexError;
use crate::tags::Tags;
use crate::types::{EventId, Kind, PublicKey, Signature, Timestamp};

/// Why an event was refused. Every variant says what is wrong, for an `invalid:` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Not a JSON object of the NIP-01 shape (missing field, wrong type, bad syntax).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A hex field with the wrong length or a non-hex character.
    #[error("bad {field}: {error}")]
    Hex {
        field: &'static str,
        error: HexError,
    },
    /// The id is not the sha256 of the canonical serialization.
    #[error("event id does not match its content (computed {computed})")]
    IdMismatch { computed: EventId },
    /// The pubkey is not a valid x-only secp256k1 point.
    #[error("pubkey is not a valid secp256k1 x-only key")]
    BadPublicKey,
    /// The signature does not verify against the id and pubkey.
    #[error("signature does not verify")]
    BadSignature,
}

/// A nostr event (NIP-01). Built only by parsing or signing, so the fields and the
/// stored JSON always agree.
///
/// Shared, not copied: a clone is a reference count. An event is handed from the store
/// to every subscription it matches and to caches (a store's decoded events, the
/// live broadcast), and it never changes once built.
#[derive(Clone, PartialEq, Eq)]
pub struct Event(Arc<Fields>);

#[derive(PartialEq, Eq)]
struct Fields {
    id: EventId,
    pubkey: PublicKey,
    created_at: Timestamp,
    kind: Kind,
    tags: Tags,
    content: Box<str>,
    sig: Signature,
    json: Box<str>,
    /// The NIP-40 expiration, read from the tags once: every read and every live
    /// delivery asks for it.
    expires: Option<Timestamp>,
}

/// The NIP-40 expiration time in `tags`: the first `expiration` tag's value, when it is
/// a well-formed number of seconds.
fn expiration_in(tags: &Tags) -> Option<Timestamp> {
    values_named(tags, "expiration")
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Timestamp)
}

/// Values of the tags named `name` in `tags` (each tag's second element).
fn values_named<'a>(tags: &'a Tags, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    tags.iter().filter_map(move |t| {
        let mut values = t.iter();
        if values.next()? != name {
            return None;
        }
        values.next()
    })
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
    created_at: u64,
    kind: u16,
    tags: Tags,
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow)]
    sig: Cow<'a, str>,
}

fn hex_field<T>(
    field: &'static str,
    s: &str,
    parse: fn(&str) -> Result<T, HexError>,
) -> Result<T, EventError> {
    parse(s).map_err(|error| EventError::Hex { field, error })
}

impl Event {
    /// Parses an event object strictly: all seven NIP-01 fields with their exact types,
    /// ids/keys/signatures as lower-case hex of the right length. Unknown fields are
    /// dropped: the kept JSON is the compact NIP-01 object. The signature is not checked
    /// here; see [`Event::verify`].
    pub fn from_json(json: &str) -> Result<Event, EventError> {
        let w: Wire<'_> =
            serde_json::from_str(json).map_err(|e| EventError::Malformed(e.to_string()))?;
        let id = hex_field("id", &w.id, EventId::from_hex)?;
        let pubkey = hex_field("pubkey", &w.pubkey, PublicKey::from_hex)?;
        let sig = hex_field("sig", &w.sig, Signature::from_hex)?;
        Ok(Event::assemble(
            id,
            pubkey,
            Timestamp(w.created_at),
            Kind(w.kind),
            w.tags,
            &w.content,
            sig,
        ))
    }

    /// Parses JSON that this crate wrote itself (a store's own record). Same checks as
    /// [`Event::from_json`], but the text is kept as it is instead of being rewritten.
    pub fn from_stored_json(json: &str) -> Result<Event, EventError> {
        let w: Wire<'_> =
            serde_json::from_str(json).map_err(|e| EventError::Malformed(e.to_string()))?;
        Ok(Event(Arc::new(Fields {
            id: hex_field("id", &w.id, EventId::from_hex)?,
            pubkey: hex_field("pubkey", &w.pubkey, PublicKey::from_hex)?,
            created_at: Timestamp(w.created_at),
            kind: Kind(w.kind),
            expires: expiration_in(&w.tags),
            tags: w.tags,
            content: w.content.into(),
            sig: hex_field("sig", &w.sig, Signature::from_hex)?,
            json: json.into(),
        })))
    }

    /// Builds an event from fields a store kept itself (its own binary record): the
    /// JSON is written afresh in the canonical form every stored event already has, so
    /// it is byte for byte what was stored. Neither the id nor the signature is checked.
    pub fn from_stored_parts(
        id: EventId,
        pubkey: PublicKey,
        created_at: Timestamp,
        kind: Kind,
        tags: Tags,
        content: &str,
        sig: Signature,
    ) -> Event {
        Event::assemble(id, pubkey, created_at, kind, tags, content, sig)
    }

    pub(crate) fn assemble(
        id: EventId,
        pubkey: PublicKey,
        created_at: Timestamp,
        kind: Kind,
        tags: Tags,
        content: &str,
        sig: Signature,
    ) -> Event {
        let json = canonical::serialize_event(
            &Parts {
                pubkey: &pubkey.0,
                created_at: created_at.0,
                kind: kind.0,
                tags: &tags,
                content,
            },
            &id.0,
            &sig.0,
        );
        Event(Arc::new(Fields {
            id,
            pubkey,
            created_at,
            kind,
            expires: expiration_in(&tags),
            tags,
            content: content.into(),
            sig,
            json: json.into_boxed_str(),
        }))
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            pubkey: &self.0.pubkey.0,
            created_at: self.0.created_at.0,
            kind: self.0.kind.0,
            tags: &self.0.tags,
            content: &self.0.content,
        }
    }

    /// The sha256 of the NIP-01 canonical serialization: what the id must be.
    pub fn compute_id(&self) -> EventId {
        compute_id(&self.parts())
    }

    /// Checks the id against the content, then the BIP-340 signature over the id.
    /// CPU-bound (tens of microseconds): async callers run it on a blocking pool.
    pub fn verify(&self) -> Result<(), EventError> {
        let computed = self.compute_id();
        if computed != self.0.id {
            return Err(EventError::IdMismatch { computed });
        }
        let pk = lift(&self.0.pubkey.0).ok_or(EventError::BadPublicKey)?;
        let sig = secp256k1::schnorr::Signature::from_byte_array(self.0.sig.0);
        secp256k1::schnorr::verify(&sig, &self.0.id.0, &pk).map_err(|_| EventError::BadSignature)
    }

    /// The event id.
    pub fn id(&self) -> EventId {
        self.0.id
    }
    /// The author.
    pub fn pubkey(&self) -> PublicKey {
        self.0.pubkey
    }
    /// The author's claimed creation time.
    pub fn created_at(&self) -> Timestamp {
        self.0.created_at
    }
    /// The kind.
    pub fn kind(&self) -> Kind {
        self.0.kind
    }
    /// All tags, each a list of strings (possibly empty).
    pub fn tags(&self) -> &Tags {
        &self.0.tags
    }
    /// The content.
    pub fn content(&self) -> &str {
        &self.0.content
    }
    /// The signature.
    pub fn sig(&self) -> Signature {
        self.0.sig
    }
    /// The compact NIP-01 JSON object, ready to be served.
    pub fn as_json(&self) -> &str {
        &self.0.json
    }

    /// Values of the tags named `name` (each tag's second element).
    pub fn tag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        values_named(&self.0.tags, name)
    }

    /// Single-letter tags with a value, as (letter, value): what `#x` filters match.
    pub fn indexable_tags(&self) -> impl Iterator<Item = (u8, &str)> + '_ {
        self.0.tags.iter().filter_map(|t| {
            let mut values = t.iter();
            let letter = match values.next()?.as_bytes() {
                &[l] if l.is_ascii_alphabetic() => l,
                _ => return None,
            };
            Some((letter, values.next()?))
        })
    }

    /// The `d` tag of an addressable event; absent means the empty string (NIP-01).
    pub fn d_tag(&self) -> &str {
        self.tag_values("d").next().unwrap_or("")
    }

    /// The NIP-40 expiration time, if the event carries a well-formed one.
    pub fn expiration(&self) -> Option<Timestamp> {
        self.0.expires
    }

    /// NIP-40: expired once `now` reaches the expiration time.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiration().is_some_and(|exp| exp <= now)
    }

    /// Size of the stored JSON in bytes.
    pub fn json_len(&self) -> usize {
        self.0.json.len()
    }

    /// Bytes this event holds in memory, allocator overhead included (about 16 bytes
    /// per allocation): for caches that keep events within a byte budget.
    pub fn heap_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        let f = &self.0;
        // The shared fields (with their two counts), the JSON, the content and the
        // tags' two.
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Fields>()
            + f.json.len()
            + f.content.len()
            + f.tags.heap_bytes()
            + 5 * PER_ALLOCATION
    }
}

pub(crate) fn compute_id(parts: &Parts<'_>) -> EventId {
    let mut buf = Vec::with_capacity(128 + parts.content.len() + canonical::tags_room(parts.tags));
    canonical::serialize_for_id(parts, &mut buf);
    EventId(Sha256::digest(&buf).into())
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.0.id.to_hex())
            .field("pubkey", &self.0.pubkey.to_hex())
            .field("created_at", &self.0.created_at.0)
            .field("kind", &self.0.kind.0)
            .field("tags", &self.0.tags.len())
            .field("content_len", &self.0.content.len())
            .finish()
    }
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The stored JSON is already the compact object; embed it as is.
        match serde_json::value::RawValue::from_string(self.0.json.to_string()) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

/// An author's x-only key as a curve point. Lifting it takes a square root (about a
/// twentieth of a signature check), and a relay sees the same authors again and
/// again: each thread keeps the points of the keys it lifted last, direct-mapped by
/// the key's first bytes (a collision costs only a lift; a hit compares all 32 bytes).
/// A key that does not lift is not kept.
fn lift(pk: &[u8; 32]) -> Option<secp256k1::XOnlyPublicKey> {
    const SLOTS: usize = 1024;
    type Lifted = Option<([u8; 32], secp256k1::XOnlyPublicKey)>;
    thread_local! {
        static LIFTED: std::cell::RefCell<Vec<Lifted>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    LIFTED.with(|cell| {
        let mut slots = cell.borrow_mut();
        if slots.is_empty() {
            slots.resize(SLOTS, None);
        }
        let at = usize::from(u16::from_le_bytes([pk[0], pk[1]])) % SLOTS;
        if let Some((key, point)) = &slots[at] {
            if key == pk {
                return Some(*point);
            }
        }
        let point = secp256k1::XOnlyPublicKey::from_byte_array(*pk).ok()?;
        slots[at] = Some((*pk, point));
        Some(point)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventBuilder, Keys};

    /// `event` with another event's signature in place of its own.
    fn with_sig_of(event: &Event, other: &Event) -> Event {
        let json = event
            .as_json()
            .replace(&event.sig().to_string(), &other.sig().to_string());
        Event::from_json(&json).unwrap()
    }

    #[test]
    fn heap_bytes_count_every_part_held() {
        let keys = Keys::from_seed(3);
        let small = EventBuilder::text_note("a").sign_deterministic(&keys);
        let big = EventBuilder::text_note("a".repeat(1_000))
            .tags(vec![vec!["t".into(), "b".repeat(500)]])
            .sign_deterministic(&keys);
        assert!(small.heap_bytes() > small.json_len() + std::mem::size_of::<Fields>());
        // The content twice (raw and in the JSON), the tag value twice.
        assert!(big.heap_bytes() >= small.heap_bytes() + 2 * 999 + 2 * 500);
    }

    #[test]
    fn the_expiration_is_the_first_valued_expiration_tag() {
        let keys = Keys::from_seed(3);
        let tag = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (tags, want) in [
            (vec![], None),
            (vec![tag(&["expiration", "100"])], Some(100)),
            // A tag without a value is passed over; a later one counts.
            (
                vec![tag(&["expiration"]), tag(&["expiration", "200"])],
                Some(200),
            ),
            // The first valued one decides, even when it is not a number.
            (
                vec![tag(&["expiration", "soon"]), tag(&["expiration", "300"])],
                None,
            ),
            (vec![tag(&["t", "expiration"]), tag(&["e", "100"])], None),
        ] {
            let e = EventBuilder::text_note("x")
                .tags(tags.clone())
                .sign_deterministic(&keys);
            // Every way an event is built reads it alike.
            let parsed = Event::from_json(e.as_json()).unwrap();
            let stored = Event::from_stored_json(e.as_json()).unwrap();
            for got in [&e, &parsed, &stored] {
                assert_eq!(got.expiration(), want.map(Timestamp), "{tags:?}");
            }
            assert_eq!(e.is_expired(Timestamp(250)), want.is_some_and(|w| w <= 250));
        }
    }

    #[test]
    fn a_kept_key_still_checks_every_signature() {
        let keys = Keys::from_seed(3);
        let good = EventBuilder::text_note("a").sign_deterministic(&keys);
        good.verify().unwrap();
        // The author's point now comes from the thread's slots.
        good.verify().unwrap();
        let other = EventBuilder::text_note("b").sign_deterministic(&keys);
        assert!(matches!(
            with_sig_of(&good, &other).verify(),
            Err(EventError::BadSignature)
        ));
    }

    #[test]
    fn keys_sharing_a_slot_are_told_apart() {
        // Two authors whose keys map to the same slot.
        let slot = |k: &Keys| {
            let pk = k.public_key().0;
            usize::from(u16::from_le_bytes([pk[0], pk[1]])) % 1024
        };
        let mut first = std::collections::HashMap::new();
        let (a, b) = (0..10_000u64)
            .find_map(|seed| {
                let k = Keys::from_seed(seed);
                match first.entry(slot(&k)) {
                    std::collections::hash_map::Entry::Occupied(o) => {
                        Some((Keys::from_seed(*o.get()), k))
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(seed);
                        None
                    }
                }
            })
            .unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let by_a = EventBuilder::text_note("x").sign_deterministic(&a);
        let by_b = EventBuilder::text_note("x").sign_deterministic(&b);
        by_a.verify().unwrap();
        by_b.verify().unwrap();
        by_a.verify().unwrap();
        // B's event carrying A's signature over another id: refused whatever is kept.
        assert!(matches!(
            with_sig_of(&by_b, &by_a).verify(),
            Err(EventError::BadSignature)
        ));
    }
}
