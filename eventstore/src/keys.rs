//! Signing: key pairs and an event builder, so tests and the tester make real events.

use crate::canonical::Parts;
use crate::event::{Event, compute_id};
use crate::tags::Tags;
use crate::types::{Kind, PublicKey, Signature, Timestamp};

/// Why a secret key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a valid secp256k1 scalar (zero, or not below the group order).
    #[error("not a valid secp256k1 secret key")]
    InvalidSecret,
    /// The system random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

/// A secp256k1 key pair that signs events (BIP-340).
#[derive(Clone)]
pub struct Keys {
    keypair: secp256k1::Keypair,
    public: PublicKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Keys")
            .field("public", &self.public)
            .finish()
    }
}

impl Keys {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Result<Keys, KeyError> {
        loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
            // Out-of-range scalars are astronomically rare; draw again if one comes up.
            if let Ok(keys) = Keys::from_secret_bytes(secret) {
                return Ok(keys);
            }
        }
    }

    /// A key pair from a 32-byte secret.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Result<Keys, KeyError> {
        let keypair =
            secp256k1::Keypair::from_secret_bytes(secret).map_err(|_| KeyError::InvalidSecret)?;
        let public = PublicKey(keypair.x_only_public_key().0.to_byte_array());
        Ok(Keys { keypair, public })
    }

    /// A deterministic key pair for tests and load generation: the same seed gives the
    /// same key. Not for real identities.
    pub fn from_seed(seed: u64) -> Keys {
        use sha2::Digest;
        let mut counter = 0u64;
        loop {
            let mut h = sha2::Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(counter.to_le_bytes());
            if let Ok(keys) = Keys::from_secret_bytes(h.finalize().into()) {
                return keys;
            }
            counter += 1;
        }
    }

    /// The x-only public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }
}

/// Builds and signs an event.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    kind: Kind,
    tags: Vec<Vec<String>>,
    content: String,
    created_at: Option<Timestamp>,
}

impl EventBuilder {
    /// A new event of `kind` with `content`, no tags, created now unless set.
    pub fn new(kind: Kind, content: impl Into<String>) -> EventBuilder {
        EventBuilder {
            kind,
            tags: Vec::new(),
            content: content.into(),
            created_at: None,
        }
    }

    /// A kind-1 text note.
    pub fn text_note(content: impl Into<String>) -> EventBuilder {
        EventBuilder::new(Kind::TEXT_NOTE, content)
    }

    /// Appends a tag.
    pub fn tag<I, S>(mut self, tag: I) -> EventBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.push(tag.into_iter().map(Into::into).collect());
        self
    }

    /// Appends many tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = Vec<String>>) -> EventBuilder {
        self.tags.extend(tags);
        self
    }

    /// Sets the creation time.
    pub fn created_at(mut self, t: Timestamp) -> EventBuilder {
        self.created_at = Some(t);
        self
    }

    fn sign_with(self, keys: &Keys, aux: Option<[u8; 32]>) -> Event {
        let created_at = self.created_at.unwrap_or_else(Timestamp::now);
        let pubkey = keys.public;
        let tags = Tags::from(self.tags);
        let id = compute_id(&Parts {
            pubkey: &pubkey.0,
            created_at: created_at.0,
            kind: self.kind.0,
            tags: &tags,
            content: &self.content,
        });
        let sig = match aux {
            Some(aux) => secp256k1::schnorr::sign_with_aux_rand(&id.0, &keys.keypair, &aux),
            None => secp256k1::schnorr::sign_no_aux_rand(&id.0, &keys.keypair),
        };
        Event::assemble(
            id,
            pubkey,
            created_at,
            self.kind,
            tags,
            &self.content,
            Signature(sig.to_byte_array()),
        )
    }

    /// Signs with fresh auxiliary randomness (BIP-340's recommendation).
    pub fn sign(self, keys: &Keys) -> Event {
        let mut aux = [0u8; 32];
        let aux = getrandom::fill(&mut aux).ok().map(|()| aux);
        self.sign_with(keys, aux)
    }

    /// Signs deterministically (no auxiliary randomness): same input, same signature.
    pub fn sign_deterministic(self, keys: &Keys) -> Event {
        self.sign_with(keys, None)
    }
}
