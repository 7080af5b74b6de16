//! Who may write and read (`[access]` in the file): NIP-42 authentication, private
//! kinds, allow- and deny-lists, proof of work (NIP-13) and the NIP-86 admins. The
//! operator's rulings made at run time (`eventstore::moderation`) add to these lists;
//! see `relay/policy.rs` for how both are applied.

use std::collections::BTreeSet;

use eventstore::{Kind, PublicKey};
use serde::Deserialize;

/// The validated access configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The URLs clients reach this node by (`wss://relay.example.com`), matched against
    /// a NIP-42 `relay` tag and a NIP-98 `u` tag by host, port and path (the scheme is
    /// ignored: TLS usually ends at a proxy). Empty (the default): the `Host` header of
    /// the request, i.e. whatever address the client connected to.
    pub relay_urls: Vec<String>,
    /// `EVENT` only from authenticated connections (`auth-required:`). Default false.
    pub auth_required_for_writes: bool,
    /// `REQ` and `COUNT` only from authenticated connections. Default false.
    pub auth_required_for_reads: bool,
    /// Kinds served only to a connection authenticated as the event's author or as one
    /// of its `p`-tagged recipients, in stored answers, live delivery and COUNT.
    /// Default 4 (NIP-04 direct messages) and 1059 (NIP-59 gift wraps).
    pub private_kinds: BTreeSet<Kind>,
    /// When not empty, only events by these authors are accepted (the NIP-86 allow-list
    /// adds to it). Default empty.
    pub allowed_pubkeys: BTreeSet<PublicKey>,
    /// Events by these authors are refused. Default empty.
    pub denied_pubkeys: BTreeSet<PublicKey>,
    /// Events of these kinds are refused. Default empty.
    pub denied_kinds: BTreeSet<Kind>,
    /// Least NIP-13 difficulty (leading zero bits of the id) an event must have; 0
    /// accepts any. Default 0.
    pub min_pow_difficulty: u8,
    /// Pubkeys allowed to call the NIP-86 management API. Default empty: the API
    /// refuses every call.
    pub admins: BTreeSet<PublicKey>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            relay_urls: Vec::new(),
            auth_required_for_writes: false,
            auth_required_for_reads: false,
            private_kinds: [Kind(4), Kind(1059)].into_iter().collect(),
            allowed_pubkeys: BTreeSet::new(),
            denied_pubkeys: BTreeSet::new(),
            denied_kinds: BTreeSet::new(),
            min_pow_difficulty: 0,
            admins: BTreeSet::new(),
        }
    }
}

/// `[access]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    pub relay_urls: Option<Vec<String>>,
    pub auth_required_for_writes: Option<bool>,
    pub auth_required_for_reads: Option<bool>,
    pub private_kinds: Option<Vec<u16>>,
    pub allowed_pubkeys: Option<Vec<String>>,
    pub denied_pubkeys: Option<Vec<String>>,
    pub denied_kinds: Option<Vec<u16>>,
    pub min_pow_difficulty: Option<u8>,
    pub admins: Option<Vec<String>>,
}

/// Parses hex public keys; the error names the option and the bad value.
pub fn parse_pubkeys(option: &str, values: &[String]) -> Result<BTreeSet<PublicKey>, String> {
    values
        .iter()
        .map(|v| {
            PublicKey::from_hex(v.trim())
                .map_err(|_| format!("{option}: {v:?} is not a public key (64 hex characters)"))
        })
        .collect()
}

impl AccessFile {
    /// Applies what the file sets over `a`.
    pub fn apply(&self, a: &mut Access) -> Result<(), String> {
        let kinds = |v: &Vec<u16>| v.iter().copied().map(Kind).collect::<BTreeSet<_>>();
        if let Some(v) = &self.relay_urls {
            a.relay_urls.clone_from(v);
        }
        if let Some(v) = self.auth_required_for_writes {
            a.auth_required_for_writes = v;
        }
        if let Some(v) = self.auth_required_for_reads {
            a.auth_required_for_reads = v;
        }
        if let Some(v) = &self.private_kinds {
            a.private_kinds = kinds(v);
        }
        if let Some(v) = &self.allowed_pubkeys {
            a.allowed_pubkeys = parse_pubkeys("access.allowed_pubkeys", v)?;
        }
        if let Some(v) = &self.denied_pubkeys {
            a.denied_pubkeys = parse_pubkeys("access.denied_pubkeys", v)?;
        }
        if let Some(v) = &self.denied_kinds {
            a.denied_kinds = kinds(v);
        }
        if let Some(v) = self.min_pow_difficulty {
            a.min_pow_difficulty = v;
        }
        if let Some(v) = &self.admins {
            a.admins = parse_pubkeys("access.admins", v)?;
        }
        Ok(())
    }
}

impl Access {
    /// Checks the values together; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        for u in &self.relay_urls {
            if crate::relay::auth::RelayUrl::parse(u).is_none() {
                return Err(format!(
                    "access.relay_urls: {u:?} is not a URL such as wss://relay.example.com"
                ));
            }
        }
        Ok(())
    }
}
