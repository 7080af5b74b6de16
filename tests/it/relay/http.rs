//! NIP-11, the browser page, `/metrics`, `/health`, and slow subscribers being closed
//! visibly.

use std::time::Duration;

use eventstore::Keys;
use layer2_relay::config::Limits;
use serde_json::{Value, json};

use super::client::{TestRelay, note, relay_with};

/// The value of an unlabelled metric (or of the labelled line given whole).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_document_advertises_the_real_limits() {
    let limits = Limits {
        max_subscriptions: 7,
        max_limit: 123,
        max_message_bytes: 50_000,
        ..Limits::default()
    };
    let relay = TestRelay::embedded(limits).await;
    let (status, head, body) = relay.get("/", "application/nostr+json").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/nostr+json"),
        "{head}"
    );
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["name"], "layer2");
    for nip in [1, 9, 11, 40, 45] {
        assert!(
            doc["supported_nips"]
                .as_array()
                .unwrap()
                .contains(&json!(nip)),
            "NIP-{nip}"
        );
    }
    assert_eq!(doc["limitation"]["max_subscriptions"], 7);
    assert_eq!(doc["limitation"]["max_limit"], 123);
    assert_eq!(doc["limitation"]["max_message_length"], 50_000);
    assert!(doc["software"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(doc["version"].is_string());

    let (status, _, body) = relay.get("/", "text/html").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("nostr relay") && body.contains("ws://"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_report_what_happened() {
    let relay = TestRelay::embedded(Limits::default()).await;
    let (status, _, body) = relay.get("/health", "*/*").await;
    assert_eq!(status, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["serving"], true);
    assert_eq!(h["l1"]["ok"], true);
    assert_eq!(h["l2"]["ok"], true);
    assert_eq!(h["poller"]["state"], "embedded");

    let keys = Keys::generate().unwrap();
    let mut c = relay.client().await;
    let e = note(&keys, "counted");
    assert!(c.publish(&e).await.0);
    assert!(c.publish(&e).await.0);
    c.send("nonsense").await;
    c.expect("NOTICE").await;
    c.req("m", &[json!({"ids": [e.id().to_string()]})]).await;

    let (status, head, text) = relay.get("/metrics", "*/*").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"), "{head}");
    assert_eq!(metric(&text, "layer2_connections"), 1.0);
    assert_eq!(metric(&text, "layer2_subscriptions"), 1.0);
    assert_eq!(metric(&text, "layer2_messages_total{type=\"EVENT\"}"), 2.0);
    assert_eq!(metric(&text, "layer2_messages_total{type=\"REQ\"}"), 1.0);
    assert_eq!(metric(&text, "layer2_messages_total{type=\"other\"}"), 1.0);
    assert_eq!(
        metric(&text, "layer2_events_total{outcome=\"stored\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "layer2_events_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(metric(&text, "layer2_verify_seconds_count"), 2.0);
    assert!(metric(&text, "layer2_verify_seconds_sum") > 0.0);
    assert!(
        metric(&text, "layer2_l1_hits_total") >= 1.0,
        "the id lookup was an L1 hit"
    );
    assert!(metric(&text, "layer2_l1_bytes") > 0.0);
    // The embedded default: one unbounded file serves both tiers, so no budget.
    assert_eq!(metric(&text, "layer2_l1_budget_bytes"), 0.0);
    // The standard process metrics.
    assert!(metric(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(metric(&text, "process_resident_memory_bytes") > 1e6);
    assert!(metric(&text, "process_open_fds") >= 3.0);
    for name in [
        "layer2_l2_queries_total",
        "layer2_promotions_total",
        "layer2_evictions_total",
        "layer2_poll_lag_milliseconds",
        "layer2_subscriptions_closed_slow_total",
    ] {
        metric(&text, name);
    }
    // The latency histograms saw the two EVENTs and the REQ.
    assert_eq!(metric(&text, "layer2_event_ok_seconds_count"), 2.0);
    assert_eq!(metric(&text, "layer2_req_seconds_count{route=\"l1\"}"), 1.0);
    assert_eq!(
        metric(&text, "layer2_req_seconds_bucket{le=\"+Inf\",route=\"l2\"}"),
        0.0
    );
}

/// The metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("layer2_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_uses_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/layer2.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let mut names: Vec<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "{names:?}");
    let (relay, _, _client) = relay_with(Limits::default()).await;
    let (_, _, text) = relay.get("/metrics", "*/*").await;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics no node exports: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_slow_to_read_is_closed_visibly() {
    let limits = Limits {
        outbound_queue: 4,
        ..Limits::default()
    };
    let (relay, keys, mut slow) = relay_with(limits).await;
    slow.req("firehose", &[json!({"kinds": [1]})]).await;
    // The slow client stops reading; big events fill the socket buffers, then its
    // queue of four.
    let mut p = relay.client().await;
    for i in 0..300 {
        let e = note(&keys, &format!("{i}{}", "x".repeat(60_000)));
        assert!(p.publish(&e).await.0);
    }
    let mut closed = None;
    let mut events = 0;
    while let Some(v) = slow.try_recv(Duration::from_secs(5)).await {
        match v[0].as_str() {
            Some("EVENT") => events += 1,
            Some("CLOSED") => {
                closed = Some(v);
                break;
            }
            _ => {}
        }
    }
    let closed = closed.unwrap_or_else(|| panic!("no CLOSED after {events} events"));
    assert_eq!(closed[1], "firehose");
    assert!(
        closed[2].as_str().unwrap().starts_with("error:"),
        "{closed}"
    );
    assert!(events < 300, "the subscription was cut short ({events})");
    let (_, _, text) = relay.get("/metrics", "*/*").await;
    assert!(metric(&text, "layer2_subscriptions_closed_slow_total") >= 1.0);
    // The connection itself still works.
    assert!(slow.publish(&note(&keys, "still here")).await.0);
}
