//! The HTTP side of `GET /` (NIP-11 document, WebSocket upgrade, a short page for
//! browsers), `/health` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::{AppState, conn};

/// WebSocket read buffer per connection (see `root`).
const READ_BUFFER: usize = 8 * 1024;

/// NIPs this relay implements (NIP-11 `supported_nips`); 86 is added when admins are
/// configured (without them the management API refuses every call).
pub const SUPPORTED_NIPS: [u32; 8] = [1, 9, 11, 13, 40, 42, 45, 70];

pub(super) async fn root(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ack: Option<Extension<ConnectInfo<super::quickack::AckNow>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Ok(ws) = ws {
        let Some(slot) = Slot::reserve(&state) else {
            state
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections; try again later",
            )
                .into_response();
        };
        // What the client connected to: a NIP-42 `relay` tag must name it, unless the
        // node is configured with its public URLs.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Past the configured message limit a NOTICE answers; past four times that,
        // tungstenite refuses the frame and the connection closes (code 1009).
        let hard = state.limits.max_message_bytes.saturating_mul(4);
        // The slot moves into the callback: freed when the connection ends, and also
        // when the upgrade fails and axum drops the callback unrun.
        // tungstenite zero-fills its read buffer up to this size on every read attempt,
        // and a connection's task polls the socket each time it wakes (for a live event,
        // too). At the 128 KiB default that memset was a fifth of the node's CPU with
        // thousands of subscribers (`tester fanout`); most messages fit in 8 KiB, and a
        // larger one just takes more reads.
        return ws
            .read_buffer_size(READ_BUFFER)
            .max_message_size(hard)
            .max_frame_size(hard)
            .on_upgrade(move |socket| async move {
                let ack = ack.map(|Extension(ConnectInfo(a))| a);
                conn::serve(socket, state.clone(), host, ack).await;
                drop(slot);
            });
    }
    let wants_info = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/nostr+json"));
    if wants_info {
        return nip11(&state);
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>{name}</title>\
         <h1>{name}</h1><p>This is a nostr relay (layer2 {version}). Connect a nostr \
         client to this address with <code>ws://</code> or <code>wss://</code>.</p>\
         <p>Relay information (NIP-11): request this page with \
         <code>Accept: application/nostr+json</code>. Also: <a href=/health>/health</a>, \
         <a href=/metrics>/metrics</a>.</p>",
        name = html_escape(&state.info.name),
        version = env!("CARGO_PKG_VERSION"),
    ))
    .into_response()
}

/// One of the node's `max_connections` connection slots, held for a connection's life.
struct Slot(Arc<AppState>);

impl Slot {
    /// Takes a slot, atomically against the limit.
    fn reserve(state: &Arc<AppState>) -> Option<Slot> {
        let max = state.limits.max_connections as u64;
        let m = &state.metrics;
        m.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        m.connections_total.fetch_add(1, Ordering::Relaxed);
        Some(Slot(state.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The NIP-11 relay information document, with the real limits.
fn nip11(state: &AppState) -> Response {
    let l = &state.limits;
    let i = &state.info;
    let policy = state.policy();
    let r = &policy.rulings;
    let mut nips = SUPPORTED_NIPS.to_vec();
    if !state.node.config.access.admins.is_empty() {
        nips.push(86);
    }
    // Names and descriptions changed with NIP-86 win over the configured ones.
    let name = r.setting(eventstore::Setting::Name).unwrap_or(&i.name);
    let description = r
        .setting(eventstore::Setting::Description)
        .unwrap_or(&i.description);
    let mut doc = json!({
        "name": name,
        "description": description,
        "software": env!("CARGO_PKG_REPOSITORY"),
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": nips,
        "limitation": {
            "max_message_length": l.max_message_bytes,
            "max_subscriptions": l.max_subscriptions,
            "max_filters": l.max_filters,
            "max_limit": l.max_limit,
            "default_limit": l.default_limit,
            "max_subid_length": l.max_subid_length,
            "max_event_tags": l.max_event_tags,
            "max_content_length": l.max_event_bytes,
            "min_pow_difficulty": policy.min_pow(),
            "auth_required": policy.auth_required(),
            "payment_required": false,
            "restricted_writes": policy.restricts_writes(),
            "created_at_lower_limit": l.created_at_lower_limit,
            "created_at_upper_limit": l.created_at_upper_limit,
        },
    });
    if !i.contact.is_empty() {
        doc["contact"] = json!(i.contact);
    }
    if !i.pubkey.is_empty() {
        doc["pubkey"] = json!(i.pubkey);
    }
    if let Some(icon) = r.setting(eventstore::Setting::Icon) {
        doc["icon"] = json!(icon);
    }
    let mut r = axum::Json(doc).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/nostr+json"),
    );
    // NIP-11: the document must be readable from browser clients on other origins.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    r
}

pub(super) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let h = state.node.health().await;
    let status = if h.serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(h)).into_response()
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(
        &state.node.tiered,
        state.node.l1_budget(),
        state.node.l2_event_cache(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
