//! Who may write and read: the `[access]` configuration and the operator's rulings
//! (NIP-86, kept by L2 and shared by every node) combined into one [`Policy`], rebuilt
//! whenever the rulings change.
//!
//! - Writes: NIP-42 authentication when required; NIP-70 protected events only from
//!   their authenticated author; deny- and allow-lists of authors and kinds; banned
//!   events; NIP-13 proof of work. Refusals carry the NIP-01 prefix their cause calls
//!   for (`auth-required:`, `restricted:`, `blocked:`, `pow:`).
//! - Reads: authentication when required; private kinds (NIP-04 DMs, NIP-59 gift
//!   wraps) only to a connection authenticated as their author or a `p`-tagged
//!   recipient. A filter that names a private kind from an unauthenticated connection
//!   is refused with `auth-required:`; other answers, live events and counts leave out
//!   what the connection may not see (see [`Visibility`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use eventstore::{Event, EventId, Filter, Kind, PublicKey, Ruling, Rulings};

use crate::config::Access;

/// Why a write was refused: a label for `/metrics` and the `OK` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Refusal labels, counted by `layer2_refusals_total{reason}`.
pub const REFUSALS: [&str; 11] = [
    "auth_required_write",
    "auth_required_read",
    "protected",
    "private_kind",
    "denied_pubkey",
    "not_allowed_pubkey",
    "denied_kind",
    "not_allowed_kind",
    "banned_event",
    "pow",
    "auth_kind",
];

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// The configuration and the rulings, ready to be checked against. A deny (configured
/// or ruled) always wins over an allow.
#[derive(Debug, Default)]
pub struct Policy {
    pub rulings: Arc<Rulings>,
    auth_writes: bool,
    auth_reads: bool,
    min_pow: u8,
    denied_pubkeys: HashSet<PublicKey>,
    allowed_pubkeys: HashSet<PublicKey>,
    denied_kinds: HashSet<Kind>,
    allowed_kinds: HashSet<Kind>,
    banned_events: HashSet<EventId>,
    /// Kinds served only to their parties.
    pub private: Visibility,
}

impl Policy {
    pub fn new(access: &Access, rulings: Arc<Rulings>) -> Policy {
        let mut p = Policy {
            auth_writes: access.auth_required_for_writes,
            auth_reads: access.auth_required_for_reads,
            min_pow: access.min_pow_difficulty,
            denied_pubkeys: access.denied_pubkeys.iter().copied().collect(),
            allowed_pubkeys: access.allowed_pubkeys.iter().copied().collect(),
            denied_kinds: access.denied_kinds.iter().copied().collect(),
            private: Visibility {
                kinds: access.private_kinds.clone(),
            },
            ..Policy::default()
        };
        for r in rulings.entries.keys() {
            match *r {
                Ruling::BanPubkey(pk) => drop(p.denied_pubkeys.insert(pk)),
                Ruling::AllowPubkey(pk) => drop(p.allowed_pubkeys.insert(pk)),
                Ruling::BanEvent(id) => drop(p.banned_events.insert(id)),
                Ruling::AllowKind(k) => drop(p.allowed_kinds.insert(k)),
                Ruling::DisallowKind(k) => drop(p.denied_kinds.insert(k)),
                _ => {}
            }
        }
        p.rulings = rulings;
        p
    }

    /// Whether anything is asked of a writer beyond NIP-01 (NIP-11 `restricted_writes`).
    pub fn restricts_writes(&self) -> bool {
        self.auth_writes
            || self.min_pow > 0
            || !self.denied_pubkeys.is_empty()
            || !self.allowed_pubkeys.is_empty()
            || !self.denied_kinds.is_empty()
            || !self.allowed_kinds.is_empty()
    }

    /// Authentication is needed before anything else (NIP-11 `auth_required`).
    pub fn auth_required(&self) -> bool {
        self.auth_writes && self.auth_reads
    }

    /// The NIP-11 `min_pow_difficulty`.
    pub fn min_pow(&self) -> u8 {
        self.min_pow
    }

    /// May a connection authenticated as `authed` publish `e`? Checked before the
    /// signature (every rule reads fields the signature will then vouch for).
    pub fn check_write(&self, e: &Event, authed: &[PublicKey]) -> Result<(), Refusal> {
        if e.kind() == super::auth::AUTH_KIND {
            // NIP-42: never stored, never broadcast; it belongs in an AUTH message.
            return Err(refuse(
                "auth_kind",
                "invalid: kind 22242 is sent with AUTH, not EVENT",
            ));
        }
        if self.auth_writes && authed.is_empty() {
            return Err(refuse(
                "auth_required_write",
                "auth-required: this relay accepts events only from authenticated users",
            ));
        }
        // NIP-70: an event with a ["-"] tag only from its author, authenticated.
        if e.tags()
            .iter()
            .any(|t| t.len() == 1 && t.name() == Some("-"))
            && !authed.contains(&e.pubkey())
        {
            let msg = if authed.is_empty() {
                "auth-required: a protected event (NIP-70) is accepted only from its author; authenticate first"
            } else {
                "restricted: a protected event (NIP-70) is accepted only from its author"
            };
            return Err(refuse("protected", msg));
        }
        if self.banned_events.contains(&e.id()) {
            return Err(refuse(
                "banned_event",
                "blocked: this event is banned from this relay",
            ));
        }
        if self.denied_pubkeys.contains(&e.pubkey()) {
            return Err(refuse(
                "denied_pubkey",
                "blocked: events by this author are not accepted here",
            ));
        }
        if !self.allowed_pubkeys.is_empty() && !self.allowed_pubkeys.contains(&e.pubkey()) {
            return Err(refuse(
                "not_allowed_pubkey",
                "blocked: this relay accepts events only from the authors it allows",
            ));
        }
        let k = e.kind();
        if self.denied_kinds.contains(&k)
            || (!self.allowed_kinds.is_empty() && !self.allowed_kinds.contains(&k))
        {
            let reason = if self.denied_kinds.contains(&k) {
                "denied_kind"
            } else {
                "not_allowed_kind"
            };
            return Err(refuse(
                reason,
                format!("blocked: events of kind {k} are not accepted here"),
            ));
        }
        if self.min_pow > 0 {
            let d = pow_difficulty(e);
            if d < self.min_pow {
                return Err(refuse(
                    "pow",
                    format!("pow: difficulty {d} is less than {}", self.min_pow),
                ));
            }
        }
        Ok(())
    }

    /// May a connection authenticated as `authed` run a REQ or COUNT with `filters`?
    /// `Err` is the `CLOSED` message, with the label for `/metrics`.
    pub fn check_read(&self, filters: &[Filter], authed: &[PublicKey]) -> Result<(), Refusal> {
        if !authed.is_empty() {
            return Ok(());
        }
        if self.auth_reads {
            return Err(refuse(
                "auth_required_read",
                "auth-required: this relay serves only authenticated users",
            ));
        }
        if let Some(k) = filters.iter().find_map(|f| self.private.named(f)) {
            return Err(refuse(
                "private_kind",
                format!(
                    "auth-required: kind {k} events are served only to their author and recipients; authenticate first"
                ),
            ));
        }
        Ok(())
    }
}

/// NIP-13 difficulty: the id's leading zero bits, or the target the event's `nonce`
/// tag commits to when that is lower (a spammer aiming low who got lucky earns no more).
pub fn pow_difficulty(e: &Event) -> u8 {
    let mut bits = 0u32;
    for b in e.id().0 {
        bits += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    let bits = bits.min(255) as u8;
    let committed = e
        .tags()
        .iter()
        .find(|t| t.name() == Some("nonce"))
        .and_then(|t| t.get(2))
        .and_then(|v| v.parse::<u8>().ok());
    committed.map_or(bits, |c| bits.min(c))
}

/// Kinds whose events only their parties may read: the author, and whoever a `p` tag
/// names (NIP-04 DMs, NIP-59 gift wraps, whose author is a throw-away key).
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    pub kinds: BTreeSet<Kind>,
}

impl Visibility {
    /// May a connection authenticated as `authed` see `e`?
    pub fn allows(&self, e: &Event, authed: &[PublicKey]) -> bool {
        if !self.kinds.contains(&e.kind()) {
            return true;
        }
        if authed.contains(&e.pubkey()) {
            return true;
        }
        e.tag_values("p")
            .any(|v| PublicKey::from_hex(v).is_ok_and(|pk| authed.contains(&pk)))
    }

    /// The first private kind `f` names explicitly, if any.
    fn named(&self, f: &Filter) -> Option<Kind> {
        f.kinds
            .as_ref()?
            .iter()
            .find(|k| self.kinds.contains(k))
            .copied()
    }

    /// The part of `f` that can match private events (`None`: no part can).
    fn private_part(&self, f: &Filter) -> Option<Filter> {
        if self.kinds.is_empty() {
            return None;
        }
        let kinds: BTreeSet<Kind> = match &f.kinds {
            Some(k) => k.intersection(&self.kinds).copied().collect(),
            None => self.kinds.clone(),
        };
        (!kinds.is_empty()).then(|| Filter {
            kinds: Some(kinds),
            ..f.clone()
        })
    }

    /// How to count `filters` for a connection authenticated as `authed` without
    /// counting what it may not see (NIP-45 counts cannot be filtered afterwards):
    /// `count(filters) - count(private) + count(visible)`, where `private` are the
    /// filters' private parts and `visible` those parts narrowed to events by, or
    /// `p`-tagging, an authenticated pubkey. The private part of a union is the union
    /// of the private parts, so each invisible event is subtracted exactly once.
    /// `None`: no filter can match a private event; count as asked.
    pub fn count_plan(&self, filters: &[Filter], authed: &[PublicKey]) -> Option<CountPlan> {
        let private: Vec<Filter> = filters
            .iter()
            .filter_map(|f| self.private_part(f))
            .collect();
        if private.is_empty() {
            return None;
        }
        let mut visible = Vec::new();
        if !authed.is_empty() {
            let mine: BTreeSet<PublicKey> = authed.iter().copied().collect();
            let mine_hex: BTreeSet<String> = authed.iter().map(PublicKey::to_hex).collect();
            for p in &private {
                let authors = match &p.authors {
                    Some(a) => a.intersection(&mine).copied().collect(),
                    None => mine.clone(),
                };
                if !authors.is_empty() {
                    visible.push(Filter {
                        authors: Some(authors),
                        ..p.clone()
                    });
                }
                let tagged: BTreeSet<String> = match p.tags.get(&b'p') {
                    Some(v) => v.intersection(&mine_hex).cloned().collect(),
                    None => mine_hex.clone(),
                };
                if !tagged.is_empty() {
                    let mut f = p.clone();
                    f.tags.insert(b'p', tagged);
                    visible.push(f);
                }
            }
        }
        Some(CountPlan { private, visible })
    }
}

/// See [`Visibility::count_plan`].
#[derive(Debug, Clone)]
pub struct CountPlan {
    pub private: Vec<Filter>,
    pub visible: Vec<Filter>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys, MemoryStore};

    fn dm(from: &Keys, to: &Keys) -> Event {
        EventBuilder::new(Kind(4), "secret")
            .tag(["p", to.public_key().to_hex().as_str()])
            .sign(from)
    }

    #[test]
    fn private_events_are_visible_to_their_parties_only() {
        let (a, b, c) = (Keys::from_seed(1), Keys::from_seed(2), Keys::from_seed(3));
        let v = Visibility {
            kinds: [Kind(4)].into_iter().collect(),
        };
        let e = dm(&a, &b);
        assert!(v.allows(&e, &[a.public_key()]));
        assert!(v.allows(&e, &[c.public_key(), b.public_key()]));
        assert!(!v.allows(&e, &[c.public_key()]));
        assert!(!v.allows(&e, &[]));
        let note = EventBuilder::text_note("hi").sign(&a);
        assert!(v.allows(&note, &[]));
    }

    #[tokio::test]
    async fn counts_leave_out_what_a_connection_may_not_see() {
        use eventstore::EventStore;
        let (a, b, c) = (Keys::from_seed(1), Keys::from_seed(2), Keys::from_seed(3));
        let s = MemoryStore::new();
        let events = [
            dm(&a, &b),
            dm(&b, &a),
            dm(&c, &b),
            dm(&a, &a),
            EventBuilder::text_note("public").sign(&c),
        ];
        for e in &events {
            s.save(e).await.unwrap();
        }
        let v = Visibility {
            kinds: [Kind(4), Kind(1059)].into_iter().collect(),
        };
        let count = |filters: Vec<Filter>, authed: Vec<PublicKey>| {
            let (s, plan) = (&s, v.count_plan(&filters, &authed));
            async move {
                super::super::req::count_visible(s, &filters, plan)
                    .await
                    .unwrap()
            }
        };
        // By brute force: what the connection may see among what the filters match.
        for authed in [
            vec![],
            vec![a.public_key()],
            vec![b.public_key(), c.public_key()],
        ] {
            for filters in [
                vec![Filter::new()],
                vec![Filter::new().kind(Kind(4))],
                vec![
                    Filter::new().author(a.public_key()),
                    Filter::new().kind(Kind(1)),
                ],
                vec![Filter::new().tag('p', b.public_key().to_hex())],
            ] {
                let expected = events
                    .iter()
                    .filter(|e| filters.iter().any(|f| f.matches(e)) && v.allows(e, &authed))
                    .count() as u64;
                assert_eq!(
                    count(filters.clone(), authed.clone()).await,
                    expected,
                    "{filters:?} as {authed:?}"
                );
            }
        }
    }

    #[test]
    fn pow_counts_leading_zero_bits_and_honours_the_commitment() {
        let k = Keys::from_seed(9);
        let mut nonce = 0u64;
        let e = loop {
            let e = EventBuilder::text_note("work")
                .tag(["nonce", nonce.to_string().as_str(), "4"])
                .sign_deterministic(&k);
            if e.id().0[0] < 0x10 {
                break e;
            }
            nonce += 1;
        };
        assert_eq!(pow_difficulty(&e), 4, "{}", e.id());
        let p = Policy::new(
            &Access {
                min_pow_difficulty: 5,
                ..Access::default()
            },
            Arc::default(),
        );
        let r = p.check_write(&e, &[]).unwrap_err();
        assert_eq!(r.message, "pow: difficulty 4 is less than 5");
    }
}
