//! Proving who a client is: NIP-42 (`AUTH` on the WebSocket) and NIP-98 (the HTTP
//! `Authorization: Nostr <base64 event>` header that authorises NIP-86 calls). Both
//! check a signed event's kind, time, signature and the URL it was made for.

use base64::Engine as _;
use eventstore::{Event, Kind, PublicKey, Timestamp};
use sha2::Digest as _;

/// NIP-42 authentication event kind.
pub const AUTH_KIND: Kind = Kind(22242);
/// NIP-98 HTTP authorisation event kind.
pub const HTTP_AUTH_KIND: Kind = Kind(27235);
/// How far an `AUTH` event's `created_at` may lie from now (NIP-42: "~10 minutes").
const AUTH_WINDOW: u64 = 600;
/// The same for a NIP-98 event (the NIP suggests 60 seconds).
const HTTP_AUTH_WINDOW: u64 = 60;

/// A fresh challenge for one connection: 128 random bits, hex. Falls back to the
/// clock and a counter if the system has no randomness to give (the challenge need
/// only be unpredictable to other clients, and unique per connection).
pub fn challenge() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    eventstore::hex::encode(&b)
}

/// A relay URL reduced to what identifies it: host (lower case), port (none for 80 and
/// 443) and path (without a trailing `/`). The scheme is left out: a client says
/// `wss://` to a proxy that speaks `ws://` or `http://` to this node, and NIP-42 asks
/// only that the domain be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    host: String,
    port: Option<u16>,
    path: String,
}

impl RelayUrl {
    /// Parses `scheme://host[:port][/path][?query]` with a ws, wss, http or https
    /// scheme; the query and fragment are ignored.
    pub fn parse(url: &str) -> Option<RelayUrl> {
        let (scheme, rest) = url.trim().split_once("://")?;
        if !["ws", "wss", "http", "https"].contains(&scheme.to_ascii_lowercase().as_str()) {
            return None;
        }
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        RelayUrl::from_parts(authority, path)
    }

    /// The URL a request reached, from its `Host` header, on `path`.
    pub fn from_host(host: &str, path: &str) -> Option<RelayUrl> {
        RelayUrl::from_parts(host, path)
    }

    fn from_parts(authority: &str, path: &str) -> Option<RelayUrl> {
        // Userinfo is never part of a relay's identity.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal's colons sit inside brackets.
            Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
            _ => (authority, None),
        };
        if host.is_empty() {
            return None;
        }
        Some(RelayUrl {
            host: host.to_ascii_lowercase(),
            port: port.filter(|p| *p != 80 && *p != 443),
            path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Where this node may be reached: its configured URLs, else the request's `Host`.
#[derive(Debug, Clone)]
pub struct Audience {
    urls: Vec<RelayUrl>,
}

impl Audience {
    /// `configured` (validated at start) or, when empty, the request's `host` on `/`.
    pub fn new(configured: &[String], host: Option<&str>) -> Audience {
        let mut urls: Vec<RelayUrl> = configured
            .iter()
            .filter_map(|u| RelayUrl::parse(u))
            .collect();
        if urls.is_empty() {
            urls.extend(host.and_then(|h| RelayUrl::from_host(h, "/")));
        }
        Audience { urls }
    }

    fn accepts(&self, url: &str) -> bool {
        RelayUrl::parse(url).is_some_and(|u| self.urls.contains(&u))
    }
}

fn within(t: Timestamp, now: Timestamp, window: u64) -> bool {
    t.0.abs_diff(now.0) <= window
}

fn tag<'a>(e: &'a Event, name: &'a str) -> Option<&'a str> {
    e.tag_values(name).next()
}

/// Checks a NIP-42 `AUTH` event against this connection's `challenge` and the URLs
/// the node answers to. Returns the authenticated pubkey, or why not (an `OK false`
/// message with its NIP-01 prefix).
pub fn verify_auth(
    e: &Event,
    challenge: &str,
    audience: &Audience,
    now: Timestamp,
) -> Result<PublicKey, String> {
    if e.kind() != AUTH_KIND {
        return Err(format!(
            "invalid: an AUTH event has kind {AUTH_KIND}, not {}",
            e.kind()
        ));
    }
    if !within(e.created_at(), now, AUTH_WINDOW) {
        return Err(format!(
            "invalid: created_at must be within {AUTH_WINDOW} seconds of now"
        ));
    }
    match tag(e, "challenge") {
        Some(c) if c == challenge => {}
        Some(_) => {
            return Err("invalid: the challenge tag does not match this connection's".into());
        }
        None => return Err("invalid: an AUTH event needs a challenge tag".into()),
    }
    match tag(e, "relay") {
        Some(u) if audience.accepts(u) => {}
        Some(u) => return Err(format!("invalid: this relay is not {u}")),
        None => return Err("invalid: an AUTH event needs a relay tag".into()),
    }
    e.verify().map_err(|err| format!("invalid: {err}"))?;
    Ok(e.pubkey())
}

/// Checks a NIP-98 `Authorization` header for a `method` request with `body` to this
/// node. Returns the signer, or why not (the 401 answer's text).
pub fn verify_http(
    header: Option<&str>,
    method: &str,
    body: &[u8],
    audience: &Audience,
    now: Timestamp,
) -> Result<PublicKey, String> {
    let header = header.ok_or("an Authorization header with a NIP-98 event is required")?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or("Authorization must be \"Nostr <base64 event>\"")?;
    if !scheme.eq_ignore_ascii_case("nostr") {
        return Err("Authorization must use the Nostr scheme (NIP-98)".into());
    }
    let json = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|e| format!("Authorization is not base64: {e}"))?;
    let json = String::from_utf8(json).map_err(|_| "the NIP-98 event is not UTF-8")?;
    let e = Event::from_json(&json).map_err(|err| format!("bad NIP-98 event: {err}"))?;
    if e.kind() != HTTP_AUTH_KIND {
        return Err(format!("a NIP-98 event has kind {HTTP_AUTH_KIND}"));
    }
    if !within(e.created_at(), now, HTTP_AUTH_WINDOW) {
        return Err(format!(
            "the NIP-98 event must be made within {HTTP_AUTH_WINDOW} seconds of now"
        ));
    }
    match tag(&e, "u") {
        Some(u) if audience.accepts(u) => {}
        _ => return Err("the NIP-98 u tag does not name this relay".into()),
    }
    if !tag(&e, "method").is_some_and(|m| m.eq_ignore_ascii_case(method)) {
        return Err(format!("the NIP-98 method tag must be {method}"));
    }
    // NIP-86 requires the payload tag: the signature then covers the request body.
    let digest = eventstore::hex::encode(&sha2::Sha256::digest(body));
    if !tag(&e, "payload").is_some_and(|p| p.eq_ignore_ascii_case(&digest)) {
        return Err("the NIP-98 payload tag must be the SHA-256 of the body".into());
    }
    e.verify()
        .map_err(|err| format!("bad NIP-98 event: {err}"))?;
    Ok(e.pubkey())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_by_host_port_and_path_whatever_the_scheme() {
        let a = Audience::new(&["wss://Relay.Example.com/".into()], None);
        for ok in [
            "wss://relay.example.com",
            "ws://relay.example.com/",
            "https://relay.example.com:443",
            "wss://relay.example.com/?x=1",
        ] {
            assert!(a.accepts(ok), "{ok}");
        }
        for bad in [
            "wss://relay.example.org",
            "wss://relay.example.com:8080",
            "wss://relay.example.com/other",
            "relay.example.com",
            "ftp://relay.example.com",
        ] {
            assert!(!a.accepts(bad), "{bad}");
        }
        let h = Audience::new(&[], Some("127.0.0.1:7777"));
        assert!(h.accepts("ws://127.0.0.1:7777"));
        assert!(!h.accepts("ws://127.0.0.1:7778"));
        let v6 = Audience::new(&[], Some("[::1]:7777"));
        assert!(v6.accepts("ws://[::1]:7777/"));
    }

    #[test]
    fn challenges_differ() {
        let (a, b) = (challenge(), challenge());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
