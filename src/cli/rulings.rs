//! `ban`, `unban`, `allow`, `unallow`, `disallow` and `rulings`: the NIP-86 rulings
//! from the command line, for operators without an HTTP client. With PostgreSQL they go
//! straight to the shared database (running nodes follow within a poll period); the
//! embedded store belongs to one process, so its node must be stopped first.

use std::sync::Arc;

use anyhow::{Context, bail};
use eventstore::{Change, EventId, EventStore, Kind, PublicKey, Ruling};
use serde_json::{Value, json};

use crate::config::Config;
use crate::node::Node;

/// What a ruling command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Subject {
    /// An author (64 hex characters).
    Pubkey,
    /// An event id (64 hex characters).
    Event,
    /// An event kind (a number).
    Kind,
}

/// The verb of a ruling command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ban,
    Unban,
    Allow,
    Unallow,
    Disallow,
}

/// The change a command asks for; the error says which combinations exist.
pub fn change(verb: Verb, what: Subject, value: &str, reason: &str) -> anyhow::Result<Change> {
    let pk = || PublicKey::from_hex(value.trim()).context("not a public key (64 hex characters)");
    let id = || EventId::from_hex(value.trim()).context("not an event id (64 hex characters)");
    let kind = || {
        value
            .trim()
            .parse::<u16>()
            .map(Kind)
            .context("not a kind (a number from 0 to 65535)")
    };
    Ok(match (verb, what) {
        (Verb::Ban, Subject::Pubkey) => Change::add(Ruling::BanPubkey(pk()?), reason),
        (Verb::Ban, Subject::Event) => Change::add(Ruling::BanEvent(id()?), reason),
        (Verb::Unban, Subject::Pubkey) => Change::Remove(Ruling::BanPubkey(pk()?)),
        (Verb::Unban, Subject::Event) => Change::Remove(Ruling::BanEvent(id()?)),
        (Verb::Allow, Subject::Pubkey) => Change::add(Ruling::AllowPubkey(pk()?), reason),
        (Verb::Allow, Subject::Kind) => Change::add(Ruling::AllowKind(kind()?), reason),
        (Verb::Unallow, Subject::Pubkey) => Change::Remove(Ruling::AllowPubkey(pk()?)),
        (Verb::Unallow, Subject::Kind) => Change::Remove(Ruling::AllowKind(kind()?)),
        (Verb::Disallow, Subject::Kind) => Change::add(Ruling::DisallowKind(kind()?), reason),
        (v, w) => bail!(
            "{v:?} {w:?} is not a ruling; there are: ban/unban pubkey|event, \
             allow/unallow pubkey|kind, disallow kind"
        ),
    })
}

/// The store that keeps the rulings: PostgreSQL alone (nodes may be running), or the
/// embedded node's (which must be stopped).
pub(crate) async fn authority(
    config: Config,
) -> anyhow::Result<(Arc<dyn EventStore>, Option<Node>)> {
    match &config.database_url {
        Some(url) => {
            let mut pg = layer2::PgConfig::new(url);
            pg.max_connections = 2;
            let store = layer2::PgStore::connect(pg)
                .await
                .context("cannot connect to the PostgreSQL L2 (check --database-url)")?;
            Ok((Arc::new(store), None))
        }
        None => {
            let node = Node::open(config).await.context(
                "cannot open the embedded store; stop the node first (its files belong to one process)",
            )?;
            Ok((node.store(), Some(node)))
        }
    }
}

/// Records `change` and says what it did, as JSON.
pub async fn rule(config: Config, change: Change) -> anyhow::Result<Value> {
    let (store, node) = authority(config).await?;
    let ruled = store.rule(&change).await.context("recording the ruling");
    drop(store);
    if let Some(n) = node {
        n.close().await;
    }
    let ruled = ruled?;
    Ok(json!({ "version": ruled.version, "removed": ruled.removed.len() }))
}

/// Every ruling, as JSON.
pub async fn list(config: Config) -> anyhow::Result<Value> {
    let (store, node) = authority(config).await?;
    let rulings = store.rulings_since(0).await.context("reading the rulings");
    drop(store);
    if let Some(n) = node {
        n.close().await;
    }
    let rulings = rulings?.unwrap_or_default();
    let entries: Vec<Value> = rulings
        .entries
        .iter()
        .map(|(r, note)| {
            let (ruling, subject) = match r {
                Ruling::BanPubkey(p) => ("ban pubkey", p.to_hex()),
                Ruling::AllowPubkey(p) => ("allow pubkey", p.to_hex()),
                Ruling::BanEvent(id) => ("ban event", id.to_hex()),
                Ruling::AllowKind(k) => ("allow kind", k.0.to_string()),
                Ruling::DisallowKind(k) => ("disallow kind", k.0.to_string()),
                Ruling::Set(s) => ("set", format!("{s:?}").to_lowercase()),
                _ => ("unknown", String::new()),
            };
            json!({ "ruling": ruling, "subject": subject, "note": note })
        })
        .collect();
    Ok(json!({ "version": rulings.version, "rulings": entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_rulings_and_nonsense_is_named() {
        let pk = "a".repeat(64);
        let c = change(Verb::Ban, Subject::Pubkey, &pk, "spam").unwrap();
        assert_eq!(
            c,
            Change::add(Ruling::BanPubkey(PublicKey::from_hex(&pk).unwrap()), "spam")
        );
        let c = change(Verb::Disallow, Subject::Kind, "7", "").unwrap();
        assert_eq!(c, Change::add(Ruling::DisallowKind(Kind(7)), ""));
        assert!(change(Verb::Ban, Subject::Kind, "7", "").is_err());
        assert!(change(Verb::Ban, Subject::Pubkey, "xyz", "").is_err());
        assert!(change(Verb::Allow, Subject::Kind, "70000", "").is_err());
    }
}
