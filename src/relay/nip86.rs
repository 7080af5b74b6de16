//! NIP-86 relay management: JSON-RPC-like calls over HTTP `POST /` with
//! `Content-Type: application/nostr+json+rpc`, authorised by a NIP-98 event from one of
//! the configured admins (`access.admins`). Rulings are recorded in L2, so a ban made
//! on one node is enforced by every node within one poll period (`follow_rulings`),
//! and what it names is removed from L2 and, through the `removed` log, from every L1.
//!
//! Answers: 200 with `{"result": ...}` or `{"error": "..."}`; 401 when the
//! authorisation is missing or invalid (NIP-86), 403 when its signer is no admin, 415
//! without the NIP-86 content type.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventstore::{Change, EventId, Kind, PublicKey, Ruling, Setting, Timestamp};
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Audience, verify_http};

/// The NIP-86 content type.
pub const CONTENT_TYPE: &str = "application/nostr+json+rpc";

/// Every method this relay answers, as `supportedmethods` lists them.
pub const METHODS: [&str; 17] = [
    "supportedmethods",
    "banpubkey",
    "unbanpubkey",
    "listbannedpubkeys",
    "allowpubkey",
    "unallowpubkey",
    "listallowedpubkeys",
    "banevent",
    "unbanevent",
    "listbannedevents",
    "allowkind",
    "disallowkind",
    "listallowedkinds",
    "listdisallowedkinds",
    "changerelayname",
    "changerelaydescription",
    "changerelayicon",
];

fn answer(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

pub(super) async fn handle(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = &state.metrics;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(CONTENT_TYPE) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("POST / takes NIP-86 calls with Content-Type: {CONTENT_TYPE}"),
        )
            .into_response();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let audience = Audience::new(&state.node.config.access.relay_urls, host);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match verify_http(auth, "POST", &body, &audience, Timestamp::now()) {
        Ok(pk) => pk,
        Err(e) => {
            m.management("unauthorized");
            return answer(StatusCode::UNAUTHORIZED, json!({ "error": e }));
        }
    };
    if !state.node.config.access.admins.contains(&caller) {
        m.management("forbidden");
        return answer(
            StatusCode::FORBIDDEN,
            json!({ "error": "this pubkey may not manage this relay" }),
        );
    }
    let (method, params) = match parse_call(&body) {
        Ok(c) => c,
        Err(e) => {
            m.management("error");
            return answer(StatusCode::OK, json!({ "error": e }));
        }
    };
    match run(&state, &method, &params).await {
        Ok(result) => {
            m.management("ok");
            tracing::info!(%caller, method, "NIP-86 call");
            answer(StatusCode::OK, json!({ "result": result }))
        }
        Err(e) => {
            m.management("error");
            answer(StatusCode::OK, json!({ "error": e }))
        }
    }
}

/// A request body: `{"method": "...", "params": [...]}`.
pub fn parse_call(body: &[u8]) -> Result<(String, Vec<Value>), String> {
    let call: Value =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON request: {e}"))?;
    let method = call["method"]
        .as_str()
        .ok_or("the request has no method")?
        .to_owned();
    let params = match &call["params"] {
        Value::Array(p) => p.clone(),
        Value::Null => Vec::new(),
        _ => return Err("params must be an array".into()),
    };
    Ok((method, params))
}

fn text(params: &[Value], i: usize) -> &str {
    params.get(i).and_then(Value::as_str).unwrap_or("")
}

fn pubkey(params: &[Value]) -> Result<PublicKey, String> {
    PublicKey::from_hex(text(params, 0))
        .map_err(|_| "the first parameter must be a 32-byte hex public key".to_string())
}

fn event_id(params: &[Value]) -> Result<EventId, String> {
    EventId::from_hex(text(params, 0))
        .map_err(|_| "the first parameter must be a 32-byte hex event id".to_string())
}

fn kind(params: &[Value]) -> Result<Kind, String> {
    params
        .first()
        .and_then(Value::as_u64)
        .and_then(|k| u16::try_from(k).ok())
        .map(Kind)
        .ok_or_else(|| "the first parameter must be a kind number".to_string())
}

/// Runs one call; `Err` is the answer's `error`.
async fn run(state: &AppState, method: &str, params: &[Value]) -> Result<Value, String> {
    let reason = text(params, 1).to_owned();
    let change = match method {
        "supportedmethods" => return Ok(json!(METHODS)),
        "listbannedpubkeys"
        | "listallowedpubkeys"
        | "listbannedevents"
        | "listallowedkinds"
        | "listdisallowedkinds" => {
            // From L2 itself, not this node's copy of up to one period ago.
            if let Err(e) = state.refresh_rulings().await {
                tracing::warn!(error = %e, "listing the rulings this node last read");
            }
            let policy = state.policy();
            let out = policy.rulings.entries.iter();
            return Ok(out.filter_map(|(r, why)| listed(method, r, why)).collect());
        }
        "banpubkey" => Change::add(Ruling::BanPubkey(pubkey(params)?), reason),
        "unbanpubkey" => Change::Remove(Ruling::BanPubkey(pubkey(params)?)),
        "allowpubkey" => Change::add(Ruling::AllowPubkey(pubkey(params)?), reason),
        "unallowpubkey" => Change::Remove(Ruling::AllowPubkey(pubkey(params)?)),
        "banevent" => Change::add(Ruling::BanEvent(event_id(params)?), reason),
        "unbanevent" => Change::Remove(Ruling::BanEvent(event_id(params)?)),
        "allowkind" => Change::add(Ruling::AllowKind(kind(params)?), ""),
        "disallowkind" => Change::add(Ruling::DisallowKind(kind(params)?), ""),
        "changerelayname" => Change::add(Ruling::Set(Setting::Name), text(params, 0)),
        "changerelaydescription" => Change::add(Ruling::Set(Setting::Description), text(params, 0)),
        "changerelayicon" => Change::add(Ruling::Set(Setting::Icon), text(params, 0)),
        other => return Err(format!("unsupported method {other:?}")),
    };
    let ruled = state.store.rule(&change).await.map_err(|e| match e {
        eventstore::StoreError::Unavailable(_) => {
            "storage unavailable; try again later".to_string()
        }
        e => format!("the change could not be recorded: {e}"),
    })?;
    if !ruled.removed.is_empty() {
        tracing::info!(removed = ruled.removed.len(), "a ban removed stored events");
    }
    // This node enforces it at once; the others at their next check.
    if let Err(e) = state.refresh_rulings().await {
        tracing::warn!(error = %e, "rulings recorded but not reloaded; the next check will");
    }
    Ok(json!(true))
}

/// One ruling as a `list*` method shows it, if it belongs to that method's list.
fn listed(method: &str, r: &Ruling, why: &str) -> Option<Value> {
    match (method, r) {
        ("listbannedpubkeys", Ruling::BanPubkey(p))
        | ("listallowedpubkeys", Ruling::AllowPubkey(p)) => {
            Some(json!({ "pubkey": p.to_hex(), "reason": why }))
        }
        ("listbannedevents", Ruling::BanEvent(id)) => {
            Some(json!({ "id": id.to_hex(), "reason": why }))
        }
        ("listallowedkinds", Ruling::AllowKind(k))
        | ("listdisallowedkinds", Ruling::DisallowKind(k)) => Some(json!(k.0)),
        _ => None,
    }
}
