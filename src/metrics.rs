//! Relay counters and their Prometheus text rendering (`/metrics`). Plain atomics for
//! counts; the latency histograms (`latency.rs`) are `prometheus-client`'s.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstore::{Reason, SaveOutcome};

use crate::tiered::Tiered;

/// Client message types counted by `layer2_messages_total{type}`.
pub const MESSAGE_TYPES: [&str; 6] = ["EVENT", "REQ", "CLOSE", "COUNT", "AUTH", "other"];

/// NIP-42 `AUTH` outcomes counted by `layer2_auth_total{outcome}`.
pub const AUTH_OUTCOMES: [&str; 4] = ["ok", "refused", "invalid", "rate_limited"];

/// NIP-86 call outcomes counted by `layer2_management_calls_total{outcome}`.
pub const MANAGEMENT_OUTCOMES: [&str; 4] = ["ok", "unauthorized", "forbidden", "error"];

use crate::relay::policy::REFUSALS;

/// Outcomes counted by `layer2_events_total{outcome}`.
pub const OUTCOMES: [&str; 11] = [
    "stored",
    "replaced",
    "duplicate",
    "ephemeral",
    "deleted",
    "superseded",
    "expired",
    "invalid",
    "blocked",
    "rate_limited",
    "error",
];

fn count(labels: &[&str], counts: &[AtomicU64], label: &str) {
    if let Some(i) = labels.iter().position(|t| *t == label) {
        counts[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The relay's own counters (the stores keep theirs).
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub subscriptions: AtomicU64,
    messages: [AtomicU64; MESSAGE_TYPES.len()],
    events: [AtomicU64; OUTCOMES.len()],
    auths: [AtomicU64; AUTH_OUTCOMES.len()],
    refusals: [AtomicU64; REFUSALS.len()],
    management: [AtomicU64; MANAGEMENT_OUTCOMES.len()],
    /// Subscriptions closed because their client could not keep up.
    pub slow_closed: AtomicU64,
    /// Live events sent to subscribers.
    pub live_sent: AtomicU64,
    /// NOTICEs sent for bad input.
    pub notices: AtomicU64,
    pub verify_count: AtomicU64,
    pub verify_micros: AtomicU64,
    pub query_count: AtomicU64,
    pub query_micros: AtomicU64,
    /// Maintenance runs by this node: done, failed.
    maintenance: [AtomicU64; 2],
    /// Events its runs purged: by retention rules, expired (NIP-40).
    purged: [AtomicU64; 2],
    /// Rows its runs pruned from the removal log.
    log_pruned: AtomicU64,
}

impl Metrics {
    pub fn message(&self, kind: &str) {
        let i = MESSAGE_TYPES
            .iter()
            .position(|t| *t == kind)
            .unwrap_or(MESSAGE_TYPES.len() - 1);
        self.messages[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one event by outcome (one of [`OUTCOMES`]).
    pub fn event(&self, outcome: &str) {
        count(&OUTCOMES, &self.events, outcome);
    }

    /// Counts one `AUTH` by outcome (one of [`AUTH_OUTCOMES`]).
    pub fn auth(&self, outcome: &str) {
        count(&AUTH_OUTCOMES, &self.auths, outcome);
    }

    /// Counts one write or read refused by the access policy (one of [`REFUSALS`]).
    pub fn refusal(&self, reason: &str) {
        count(&REFUSALS, &self.refusals, reason);
    }

    /// Counts one NIP-86 call by outcome (one of [`MANAGEMENT_OUTCOMES`]).
    pub fn management(&self, outcome: &str) {
        count(&MANAGEMENT_OUTCOMES, &self.management, outcome);
    }

    /// Counts a maintenance run this node made.
    pub fn maintenance_run(&self, r: &crate::maintenance::Report) {
        self.maintenance[0].fetch_add(1, Ordering::Relaxed);
        let by_rules = r.retention.values().sum::<u64>();
        self.purged[0].fetch_add(by_rules, Ordering::Relaxed);
        self.purged[1].fetch_add(r.expired, Ordering::Relaxed);
        self.log_pruned.fetch_add(r.log_pruned, Ordering::Relaxed);
    }

    /// Counts a maintenance run that failed.
    pub fn maintenance_failed(&self) {
        self.maintenance[1].fetch_add(1, Ordering::Relaxed);
    }

    /// The outcome label of a store's answer.
    pub fn outcome_label(o: &SaveOutcome) -> &'static str {
        match o {
            SaveOutcome::Stored => "stored",
            SaveOutcome::Replaced { .. } => "replaced",
            SaveOutcome::Duplicate => "duplicate",
            SaveOutcome::Ephemeral => "ephemeral",
            SaveOutcome::Rejected(Reason::Deleted) => "deleted",
            SaveOutcome::Rejected(Reason::Superseded) => "superseded",
            SaveOutcome::Rejected(Reason::Expired) => "expired",
            SaveOutcome::Rejected(Reason::Banned) => "blocked",
            _ => "error",
        }
    }

    /// Prometheus text exposition of these counters and the tiered store's. `l2_cache`:
    /// the embedded L2's decoded-event cache, when it is a store of its own
    /// ([`crate::node::Node::l2_event_cache`]).
    pub fn render(
        &self,
        tiered: &Tiered,
        l1_budget: u64,
        l2_cache: Option<layer1::EventCacheTotals>,
    ) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| get(a) as f64 / 1e6;
        let mut t = Text(String::with_capacity(4096));
        t.one(
            "layer2_connections",
            "gauge",
            "Open WebSocket connections.",
            get(&self.connections),
        );
        t.one(
            "layer2_connections_total",
            "counter",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        t.one(
            "layer2_connections_refused_total",
            "counter",
            "Connections refused at the connection limit.",
            get(&self.connections_refused),
        );
        t.one(
            "layer2_subscriptions",
            "gauge",
            "Open subscriptions.",
            get(&self.subscriptions),
        );
        t.one(
            "layer2_subscriptions_closed_slow_total",
            "counter",
            "Subscriptions closed because the client could not keep up.",
            get(&self.slow_closed),
        );
        t.one(
            "layer2_live_events_sent_total",
            "counter",
            "Live events sent to subscribers.",
            get(&self.live_sent),
        );
        t.one(
            "layer2_notices_total",
            "counter",
            "NOTICE messages sent.",
            get(&self.notices),
        );
        t.one(
            "layer2_verify_seconds_count",
            "counter",
            "Events whose id and signature were checked.",
            get(&self.verify_count),
        );
        t.one(
            "layer2_verify_seconds_sum",
            "counter",
            "Time spent checking ids and signatures.",
            secs(&self.verify_micros),
        );
        t.one(
            "layer2_query_seconds_count",
            "counter",
            "REQ queries answered.",
            get(&self.query_count),
        );
        t.one(
            "layer2_query_seconds_sum",
            "counter",
            "Time spent answering REQ queries.",
            secs(&self.query_micros),
        );
        t.labelled(
            "layer2_messages_total",
            "Client messages by type.",
            "type",
            &MESSAGE_TYPES,
            &self.messages,
        );
        t.labelled(
            "layer2_events_total",
            "EVENT messages by outcome.",
            "outcome",
            &OUTCOMES,
            &self.events,
        );
        t.labelled(
            "layer2_auth_total",
            "NIP-42 AUTH messages by outcome.",
            "outcome",
            &AUTH_OUTCOMES,
            &self.auths,
        );
        t.labelled(
            "layer2_refusals_total",
            "Writes and reads refused by the access policy, by reason.",
            "reason",
            &REFUSALS,
            &self.refusals,
        );
        t.labelled(
            "layer2_management_calls_total",
            "NIP-86 management calls by outcome.",
            "outcome",
            &MANAGEMENT_OUTCOMES,
            &self.management,
        );

        t.labelled(
            "layer2_maintenance_runs_total",
            "Maintenance runs (retention, expiry, log pruning) this node made, by outcome.",
            "outcome",
            &["ok", "error"],
            &self.maintenance,
        );
        t.labelled(
            "layer2_purged_total",
            "Events this node's maintenance runs purged, by cause.",
            "cause",
            &["retention", "expired"],
            &self.purged,
        );
        t.one(
            "layer2_log_pruned_total",
            "counter",
            "Rows this node's maintenance runs pruned from the removal log.",
            get(&self.log_pruned),
        );

        let s = tiered.stats();
        let l1 = tiered.l1();
        t.one(
            "layer2_l1_resets_total",
            "counter",
            "Starts at which L1 was emptied: its cursor was older than the removal log keeps.",
            get(&s.l1_resets),
        );
        t.one(
            "layer2_l1_hits_total",
            "counter",
            "Queries answered by L1 alone.",
            get(&s.l1_hits),
        );
        t.one(
            "layer2_l2_queries_total",
            "counter",
            "Queries that asked L2.",
            get(&s.l2_queries),
        );
        t.routes(s);
        t.floors(l1.stats());
        t.outage(tiered);
        t.one(
            "layer2_negative_hits_total",
            "counter",
            "Id lookups answered by the negative cache.",
            get(&s.negative_hits),
        );
        t.one(
            "layer2_promotions_total",
            "counter",
            "Events promoted from L2 into L1.",
            get(&s.promotions),
        );
        t.one(
            "layer2_promotions_dropped_total",
            "counter",
            "Promotions dropped on a full queue.",
            get(&s.promotions_dropped),
        );
        t.one(
            "layer2_l1_write_errors_total",
            "counter",
            "L1 writes that failed after L2 accepted.",
            get(&s.l1_write_errors),
        );
        t.one(
            "layer2_evictions_total",
            "counter",
            "Events evicted from L1.",
            get(&l1.stats().evictions),
        );
        t.one(
            "layer2_l1_reads_rescued_total",
            "counter",
            "L1 reads that waited 50 ms for a reader thread (all held by long reads) and ran on a thread of their own.",
            layer1::reads_rescued(),
        );
        let places = layer1::read_places();
        t.one(
            "layer2_l1_reads_inline_total",
            "counter",
            "L1 (and embedded L2) reads answered on the calling worker thread within their budget of steps.",
            places.inline,
        );
        t.one(
            "layer2_l1_reads_over_budget_total",
            "counter",
            "L1 (and embedded L2) reads that ran out of inline steps and ran again on a reader thread.",
            places.over_budget,
        );
        t.one(
            "layer2_l1_reads_slow_inline_total",
            "counter",
            "Inline L1 reads that took 10 ms and read from storage: each sends every L1 read to the reader threads for 250 ms.",
            places.slow,
        );
        let cache = l1.event_cache();
        t.one(
            "layer2_l1_event_cache_hits_total",
            "counter",
            "L1 records served from the decoded-event cache, without a lookup and a decode.",
            cache.hits,
        );
        t.one(
            "layer2_l1_event_cache_misses_total",
            "counter",
            "L1 records read and decoded (then kept in the decoded-event cache).",
            cache.misses,
        );
        t.one(
            "layer2_l1_event_cache_bytes",
            "gauge",
            "Bytes the decoded-event cache holds (its budget: event_cache_bytes).",
            cache.bytes,
        );
        if let Some(cache) = l2_cache {
            t.one(
                "layer2_l2_event_cache_hits_total",
                "counter",
                "Embedded L2 records served from its own decoded-event cache (embedded_l1 only).",
                cache.hits,
            );
            t.one(
                "layer2_l2_event_cache_misses_total",
                "counter",
                "Embedded L2 records read and decoded (embedded_l1 only).",
                cache.misses,
            );
            t.one(
                "layer2_l2_event_cache_bytes",
                "gauge",
                "Bytes the embedded L2's decoded-event cache holds (embedded_l1 only; its budget: event_cache_bytes).",
                cache.bytes,
            );
        }
        t.one(
            "layer2_l1_commits_total",
            "counter",
            "L1 write transactions committed (events saved per commit is L1's batch size).",
            get(&l1.stats().commits),
        );
        t.one(
            "layer2_l1_synced_commits_total",
            "counter",
            "L1 write transactions synced to disk (every one for an embedded L2 or a node without PostgreSQL).",
            get(&l1.stats().synced_commits),
        );
        t.one(
            "layer2_l1_growth_syncs_total",
            "counter",
            "Unsynced L1 batches written again after a synced commit because they would have grown the file.",
            get(&l1.stats().growth_syncs),
        );
        t.one(
            "layer2_l1_bytes",
            "gauge",
            "L1 budget bytes in use.",
            l1.bytes_used(),
        );
        t.one(
            "layer2_l1_budget_bytes",
            "gauge",
            "L1 byte budget.",
            l1_budget,
        );
        t.one(
            "layer2_l1_file_bytes",
            "gauge",
            "Size of the L1 file.",
            l1.file_size(),
        );
        t.one(
            "layer2_l1_window",
            "gauge",
            "L1 window watermark W (unix seconds).",
            l1.window().0,
        );
        t.one(
            "layer2_poll_runs_total",
            "counter",
            "Poller runs.",
            get(&s.poll_runs),
        );
        t.one(
            "layer2_poll_errors_total",
            "counter",
            "Poller runs that failed.",
            get(&s.poll_errors),
        );
        t.one(
            "layer2_poll_broadcast_total",
            "counter",
            "Events the poller brought from other nodes.",
            get(&s.poll_broadcast),
        );
        t.one(
            "layer2_poll_read_total",
            "counter",
            "Events the poller read whole from L2 (new to this node's L1).",
            get(&s.poll_read),
        );
        t.one(
            "layer2_poll_tombstones_total",
            "counter",
            "Tombstones the poller applied to L1.",
            get(&s.poll_tombstones),
        );
        t.one(
            "layer2_poll_lag_milliseconds",
            "gauge",
            "Database time minus the poller's cursor (during a poll that reads page after page, the age of the last row read).",
            get(&s.poll_lag_ms),
        );
        t.one(
            "layer2_window_trusted",
            "gauge",
            "1 when L1's window may answer alone.",
            u64::from(tiered.window_trusted()),
        );
        s.latency.render(&mut t.0);
        crate::process::render(&mut t.0);
        t.0
    }
}

/// Prometheus text format, one metric family at a time.
struct Text(String);

impl Text {
    /// Where queries of each shape were answered.
    fn routes(&mut self, s: &crate::tiered::TieredStats) {
        let name = "layer2_query_routes_total";
        let _ = writeln!(
            self.0,
            "# HELP {name} Queries by shape, answered by L1 alone (route=\"l1\") or asking L2.\n# TYPE {name} counter"
        );
        for (i, shape) in crate::tiered::Shape::ALL.iter().enumerate() {
            for (route, c) in [("l1", &s.l1_by_shape[i]), ("l2", &s.l2_by_shape[i])] {
                let _ = writeln!(
                    self.0,
                    "{name}{{shape=\"{}\",route=\"{route}\"}} {}",
                    shape.label(),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }

    /// The breaker in front of L2, degraded reads and the outbox.
    fn outage(&mut self, tiered: &Tiered) {
        let b = tiered.breaker();
        let s = tiered.stats();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let outbox = tiered.outbox();
        for (name, kind, help, v) in [
            (
                "layer2_l2_circuit_open",
                "gauge",
                "1 while L2 is unreachable and L1 serves alone.",
                u64::from(tiered.degraded()),
            ),
            (
                "layer2_l2_circuit_trips_total",
                "counter",
                "Times L2 was found unreachable.",
                get(&b.trips),
            ),
            (
                "layer2_l2_circuit_recoveries_total",
                "counter",
                "Times L2 answered again.",
                get(&b.recoveries),
            ),
            (
                "layer2_l2_circuit_refused_total",
                "counter",
                "L2 calls refused at once while the circuit was open.",
                get(&b.refused),
            ),
            (
                "layer2_degraded_reads_total",
                "counter",
                "Reads answered by L1 alone while L2 was unreachable.",
                get(&s.degraded_reads),
            ),
            (
                "layer2_outbox_events",
                "gauge",
                "Events in the outbox, waiting for L2.",
                outbox.map_or(0, |o| o.len()),
            ),
            (
                "layer2_outbox_bytes",
                "gauge",
                "Bytes in the outbox.",
                outbox.map_or(0, |o| o.bytes()),
            ),
            (
                "layer2_outbox_appended_total",
                "counter",
                "Events written to the outbox.",
                get(&s.outbox_appended),
            ),
            (
                "layer2_outbox_replayed_total",
                "counter",
                "Outbox events handed to L2.",
                get(&s.outbox_replayed),
            ),
            (
                "layer2_outbox_refused_total",
                "counter",
                "Replayed events L2 refused (L1 followed).",
                get(&s.outbox_refused),
            ),
        ] {
            self.one(name, kind, help, v);
        }
    }

    /// L1's completeness floors: held, and changes by cause.
    fn floors(&mut self, s: &layer1::Stats) {
        self.one(
            "layer2_l1_floors",
            "gauge",
            "Completeness floors L1 holds (query keys it can answer below W).",
            s.floors.load(Ordering::Relaxed),
        );
        let causes = ["learned", "raised", "forgotten", "cleared"];
        let counts = [
            &s.floors_learned,
            &s.floors_raised,
            &s.floors_forgotten,
            &s.floors_cleared,
        ];
        let name = "layer2_l1_floor_changes_total";
        let _ = writeln!(
            self.0,
            "# HELP {name} Floors lowered by L2 answers (learned), raised by evictions, forgotten at the bound, cleared by a window reset.\n# TYPE {name} counter"
        );
        for (cause, c) in causes.iter().zip(counts) {
            let _ = writeln!(
                self.0,
                "{name}{{cause=\"{cause}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }

    fn labelled(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
        counts: &[AtomicU64],
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} counter");
        for (v, c) in values.iter().zip(counts) {
            let _ = writeln!(
                self.0,
                "{name}{{{label}=\"{v}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
}
