//! NIP-01 messages: parsing what clients send and rendering what the relay sends.
//! Relay messages are built as text around the event's stored compact JSON, so an event
//! is never re-serialized on the way out.

use eventstore::{EventId, Filter};
use serde_json::value::RawValue;

/// A client message, parsed as far as its envelope. The event and filters stay raw
/// until their handler checks them against the limits.
#[derive(Debug)]
pub enum ClientMsg<'a> {
    Event(&'a RawValue),
    Req {
        sub_id: String,
        filters: Vec<&'a RawValue>,
    },
    Count {
        sub_id: String,
        filters: Vec<&'a RawValue>,
    },
    Close(String),
    /// NIP-42: `["AUTH", <signed event>]`.
    Auth(&'a RawValue),
}

/// Why a message could not be understood; becomes a `NOTICE` (or `CLOSED` when the
/// subscription id is known).
#[derive(Debug, PartialEq, Eq)]
pub struct BadMessage {
    /// The subscription the message named, when it named one.
    pub sub_id: Option<String>,
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> BadMessage {
    BadMessage {
        sub_id: None,
        reason: reason.into(),
    }
}

/// Parses one text frame (NIP-01 client-to-relay messages, NIP-45 COUNT, NIP-42 AUTH).
pub fn parse(text: &str) -> Result<ClientMsg<'_>, BadMessage> {
    let parts: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| bad(format!("not a JSON array of NIP-01 message parts: {e}")))?;
    let Some((head, rest)) = parts.split_first() else {
        return Err(bad(
            "empty message: expected [\"EVENT\", ...], [\"REQ\", ...], [\"CLOSE\", ...] or [\"COUNT\", ...]",
        ));
    };
    let verb: String = serde_json::from_str(head.get())
        .map_err(|_| bad("the first element of a message must be its type as a string"))?;
    match verb.as_str() {
        "EVENT" => match rest {
            [event] => Ok(ClientMsg::Event(event)),
            _ => Err(bad("EVENT takes exactly one event: [\"EVENT\", {...}]")),
        },
        "REQ" | "COUNT" => {
            let Some((sub, filters)) = rest.split_first() else {
                return Err(bad(format!("{verb} needs a subscription id")));
            };
            let sub_id: String = serde_json::from_str(sub.get())
                .map_err(|_| bad(format!("{verb}: the subscription id must be a string")))?;
            if filters.is_empty() {
                return Err(BadMessage {
                    sub_id: Some(sub_id),
                    reason: format!("{verb} needs at least one filter"),
                });
            }
            let filters = filters.to_vec();
            Ok(if verb == "REQ" {
                ClientMsg::Req { sub_id, filters }
            } else {
                ClientMsg::Count { sub_id, filters }
            })
        }
        "AUTH" => match rest {
            [event] => Ok(ClientMsg::Auth(event)),
            _ => Err(bad(
                "AUTH takes exactly one signed event: [\"AUTH\", {...}]",
            )),
        },
        "CLOSE" => match rest {
            [sub] => serde_json::from_str(sub.get())
                .map(ClientMsg::Close)
                .map_err(|_| bad("CLOSE: the subscription id must be a string")),
            _ => Err(bad("CLOSE takes exactly one subscription id")),
        },
        other => Err(bad(format!(
            "unknown message type {:?}",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

/// Parses one filter; the error names what is wrong.
pub fn parse_filter(raw: &RawValue) -> Result<Filter, String> {
    Filter::from_json(raw.get()).map_err(|e| format!("bad filter: {e}"))
}

/// The `id` of an event that failed to parse, when it has a well-formed one, so the
/// refusal can be an `OK` the client can match.
pub fn salvage_id(raw: &RawValue) -> Option<EventId> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a str>,
    }
    let v: IdOnly<'_> = serde_json::from_str(raw.get()).ok()?;
    EventId::from_hex(v.id?).ok()
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `["EVENT", <sub>, <event>]`.
pub fn event(sub_id: &str, event_json: &str) -> String {
    // Built by hand, sized once: one per event delivered, and the event is most of it.
    let mut m = String::with_capacity(13 + sub_id.len() + event_json.len());
    push_event_head(&mut m, sub_id);
    m.push_str(event_json);
    m.push(']');
    m
}

/// `["EVENT",<sub>,`: the part of an event message shared by every event of one
/// subscription's answer, written once for all of them.
pub fn event_head(sub_id: &str) -> String {
    let mut m = String::with_capacity(12 + sub_id.len());
    push_event_head(&mut m, sub_id);
    m
}

fn push_event_head(m: &mut String, sub_id: &str) {
    m.push_str("[\"EVENT\",");
    // A subscription id with nothing to escape (nearly all) is copied as it is.
    if eventstore::canonical::is_plain(sub_id) {
        m.push('"');
        m.push_str(sub_id);
        m.push('"');
    } else {
        m.push_str(&quote(sub_id));
    }
    m.push(',');
}

/// The event message of `head` (from [`event_head`]) and one event, sized once.
pub fn event_after(head: &str, event_json: &str) -> String {
    let mut m = String::with_capacity(head.len() + event_json.len() + 1);
    m.push_str(head);
    m.push_str(event_json);
    m.push(']');
    m
}

/// `["OK", <id>, <accepted>, <message>]`.
pub fn ok(id: &EventId, accepted: bool, message: &str) -> String {
    format!("[\"OK\",\"{id}\",{accepted},{}]", quote(message))
}

/// `["EOSE", <sub>]`.
pub fn eose(sub_id: &str) -> String {
    format!("[\"EOSE\",{}]", quote(sub_id))
}

/// `["CLOSED", <sub>, <message>]`.
pub fn closed(sub_id: &str, message: &str) -> String {
    format!("[\"CLOSED\",{},{}]", quote(sub_id), quote(message))
}

/// `["AUTH", <challenge>]` (NIP-42).
pub fn auth_challenge(challenge: &str) -> String {
    format!("[\"AUTH\",{}]", quote(challenge))
}

/// `["NOTICE", <message>]`.
pub fn notice(message: &str) -> String {
    format!("[\"NOTICE\",{}]", quote(message))
}

/// `["COUNT", <sub>, {"count": n}]` (NIP-45).
pub fn count(sub_id: &str, n: u64) -> String {
    format!("[\"COUNT\",{},{{\"count\":{n}}}]", quote(sub_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        assert!(matches!(
            parse(r#"["EVENT",{"a":1}]"#),
            Ok(ClientMsg::Event(_))
        ));
        match parse(r#"["REQ","s",{"kinds":[1]},{}]"#) {
            Ok(ClientMsg::Req { sub_id, filters }) => {
                assert_eq!(sub_id, "s");
                assert_eq!(filters.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(r#"["CLOSE","s"]"#), Ok(ClientMsg::Close(s)) if s == "s"));
        assert!(matches!(
            parse(r#"["COUNT","c",{}]"#),
            Ok(ClientMsg::Count { .. })
        ));
    }

    #[test]
    fn bad_envelopes_say_why() {
        for (text, needle) in [
            ("nope", "not a JSON array"),
            ("{}", "not a JSON array"),
            ("[]", "empty message"),
            ("[1]", "type as a string"),
            (r#"["AUTHX"]"#, "unknown message type"),
            (r#"["EVENT"]"#, "exactly one event"),
            (r#"["REQ"]"#, "needs a subscription id"),
            (r#"["REQ",5,{}]"#, "must be a string"),
            (r#"["CLOSE"]"#, "exactly one"),
            (r#"["AUTH"]"#, "exactly one signed event"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.reason.contains(needle), "{text}: {}", e.reason);
        }
        let e = parse(r#"["REQ","x"]"#).unwrap_err();
        assert_eq!(e.sub_id.as_deref(), Some("x"));
    }

    #[test]
    fn rendering_escapes_sub_ids() {
        assert_eq!(eose("a\"b"), r#"["EOSE","a\"b"]"#);
        assert_eq!(count("c", 3), r#"["COUNT","c",{"count":3}]"#);
        assert_eq!(notice("x"), r#"["NOTICE","x"]"#);
        assert_eq!(
            event("s\\1", r#"{"id":"ab"}"#),
            r#"["EVENT","s\\1",{"id":"ab"}]"#
        );
        assert_eq!(event("feed ☕", "{}"), r#"["EVENT","feed ☕",{}]"#);
        assert_eq!(event("a\nb\"", "{}"), r#"["EVENT","a\nb\"",{}]"#);
        // An answer's messages share one head, with the same escaping.
        for sub in ["q", "s\\1", "feed ☕", "a\nb\""] {
            let head = event_head(sub);
            assert_eq!(event_after(&head, "{}"), event(sub, "{}"), "{sub:?}");
        }
    }
}
