//! EVENT (NIP-01): check the limits and the access policy (`policy.rs`), verify the id
//! and signature, store, and answer `OK` with a machine-readable prefix. Deletion (NIP-09), replacement and expiration
//! (NIP-40) are decided by the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use eventstore::{Event, EventId, SaveOutcome, Timestamp};
use serde_json::value::RawValue;

use super::AppState;
use super::conn::{Conn, Reply};
use super::limits::check_event;
use super::proto;
use crate::metrics::Metrics;
use crate::tiered::Landing;

impl Conn {
    pub(super) async fn on_event(&mut self, raw: &RawValue) {
        let metrics = &self.state.metrics;
        metrics.message("EVENT");
        if !self.events_bucket.take() {
            metrics.event("rate_limited");
            let msg = format!(
                "rate-limited: more than {} events per second; slow down",
                self.state.limits.events_per_second
            );
            return self.refuse(raw, &msg);
        }
        let event = match Event::from_json(raw.get()) {
            Ok(e) => e,
            Err(e) => {
                metrics.event("invalid");
                return self.refuse(raw, &format!("invalid: {e}"));
            }
        };
        if let Err(msg) = check_event(&self.state.limits, &event, Timestamp::now()) {
            metrics.event("invalid");
            self.out.push(proto::ok(&event.id(), false, &msg));
            return;
        }
        if let Err(r) = self.state.policy().check_write(&event, &self.authed) {
            metrics.refusal(r.reason);
            metrics.event(if r.message.starts_with("invalid:") {
                "invalid"
            } else {
                "blocked"
            });
            self.out.push(proto::ok(&event.id(), false, &r.message));
            return;
        }
        // Waits when this connection already has many events in flight: reading pauses,
        // which is the back-pressure a fast publisher feels.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let state = self.state.clone();
        let replies = self.outlet.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (frame, landing) = decide(&state, &event).await;
            // Durable in L2: answered now, written into L1 and delivered live after
            // (reads it would match wait for it meanwhile: `tiered/unsettled.rs`).
            let _ = replies.reply(Reply::Frame(frame));
            let tiered = &state.node.tiered;
            tiered
                .stats()
                .latency
                .event_ok
                .observe(crate::latency::since(started));
            if let Some(landing) = landing {
                tiered.land(&event, landing).await;
            }
            drop(permit);
        });
    }

    /// Refuses an event that could not be parsed: `OK false` when its id can be read,
    /// otherwise a `NOTICE`.
    fn refuse(&mut self, raw: &RawValue, message: &str) {
        match proto::salvage_id(raw) {
            Some(id) => self.out.push(proto::ok(&id, false, message)),
            None => self.notice(message),
        }
    }
}

/// Checks the signature and has the store decide: the `OK` frame, and for an event
/// accepted into L2 what remains to land it in L1 (`Tiered::decide`).
async fn decide(state: &Arc<AppState>, event: &Event) -> (String, Option<Landing>) {
    let metrics = &state.metrics;
    let id = event.id();
    let started = Instant::now();
    // Checked on this worker thread: about 60 µs, within what a task may run between
    // awaits, and cheaper than handing each event to the blocking pool and back (two
    // thread wake-ups per event). Runtime workers are one per core, so checks never
    // outnumber the cores.
    let checked = event.verify();
    metrics
        .verify_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    metrics.verify_count.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = checked {
        metrics.event("invalid");
        return (proto::ok(&id, false, &format!("invalid: {e}")), None);
    }
    match state.node.tiered.decide(event).await {
        Ok((outcome, landing)) => {
            metrics.event(Metrics::outcome_label(&outcome));
            (ok_for(&id, &outcome), landing)
        }
        Err(e) => {
            metrics.event("error");
            tracing::warn!(%id, error = %e, "saving an event failed");
            let msg = match e {
                eventstore::StoreError::Unavailable(_) => {
                    "error: storage unavailable; try again later"
                }
                _ => "error: the event could not be stored; try again",
            };
            (proto::ok(&id, false, msg), None)
        }
    }
}

/// The `OK` answer for a store's decision (NIP-01 prefixes).
fn ok_for(id: &EventId, outcome: &SaveOutcome) -> String {
    match outcome {
        SaveOutcome::Stored | SaveOutcome::Replaced { .. } | SaveOutcome::Ephemeral => {
            proto::ok(id, true, "")
        }
        SaveOutcome::Duplicate => proto::ok(id, true, "duplicate: already have this event"),
        SaveOutcome::Rejected(reason) => proto::ok(id, false, reason.message()),
        _ => proto::ok(id, false, "error: unexpected store outcome"),
    }
}
