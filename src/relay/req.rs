//! REQ, CLOSE (NIP-01) and COUNT (NIP-45).
//!
//! A REQ registers its live subscription *before* querying, so nothing stored in
//! between is missed: live events that arrive while the query runs wait in the
//! subscription's `pending` list and go out after `EOSE`, minus those the stored answer
//! already held. A REQ reusing an open id replaces that subscription; a generation
//! number lets late answers for the old one be recognised and dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use eventstore::{EventId, Filter};
use serde_json::value::RawValue;

use super::conn::{Conn, Reply, SubState};
use super::limits::clamp_filter;
use super::proto;
use super::subs::{Live, SLOW};

/// How long after `EOSE` a live copy of an event sent with the stored ones is held
/// back: longer than a poll's look-back plus a period at the defaults, so an event
/// fetched from L2 and later read back by the poller is not sent twice.
const SENT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// How many of the stored events (the newest) are remembered for that.
const SENT_KEEP: usize = 1_000;

impl Conn {
    /// Checks a REQ or COUNT's id, rate and filters; `Err` is the `CLOSED` to send.
    fn admit(&mut self, sub_id: &str, raws: &[&RawValue]) -> Result<Vec<Filter>, String> {
        let limits = &self.state.limits;
        if sub_id.is_empty() || sub_id.chars().count() > limits.max_subid_length {
            return Err(format!(
                "invalid: a subscription id must have 1 to {} characters",
                limits.max_subid_length
            ));
        }
        if !self.reqs_bucket.take() {
            return Err(format!(
                "rate-limited: more than {} REQ/COUNT per second; slow down",
                limits.reqs_per_second
            ));
        }
        if raws.len() > limits.max_filters {
            return Err(format!(
                "invalid: {} filters; the limit is {}",
                raws.len(),
                limits.max_filters
            ));
        }
        let filters = raws
            .iter()
            .map(|r| proto::parse_filter(r).map_err(|e| format!("invalid: {e}")))
            .collect::<Result<Vec<Filter>, String>>()?;
        if let Err(r) = self.state.policy().check_read(&filters, &self.authed) {
            self.state.metrics.refusal(r.reason);
            return Err(r.message);
        }
        Ok(filters)
    }

    /// Refuses a REQ or COUNT with `CLOSED`. A subscription open under that id is
    /// closed with it: after `CLOSED` the client expects nothing more for the id.
    fn refuse_sub(&mut self, sub_id: &str, msg: &str) {
        self.drop_sub(sub_id);
        self.out.push(proto::closed(sub_id, msg));
    }

    /// Ends subscription `sub_id` if open: registry entry, running query and all.
    fn drop_sub(&mut self, sub_id: &str) {
        // Dropping the state aborts its query (see `SubState`'s Drop).
        if let Some((id, s)) = self.subs.remove(sub_id) {
            self.state.registry.remove(self.id, &id, Some(s.generation));
        }
    }

    pub(super) async fn on_req(&mut self, sub_id: String, raws: &[&RawValue]) {
        self.state.metrics.message("REQ");
        let filters = match self.admit(&sub_id, raws) {
            Ok(f) => f,
            Err(msg) => return self.refuse_sub(&sub_id, &msg),
        };
        let sub_id: Arc<str> = sub_id.into();
        let max = self.state.limits.max_subscriptions;
        if !self.subs.contains(&sub_id) && self.subs.len() >= max {
            let msg = format!("blocked: {max} subscriptions are open; CLOSE one first");
            return self.out.push(proto::closed(&sub_id, &msg));
        }
        // Replacing: the old subscription's query is of no use any more.
        self.drop_sub(&sub_id);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut stored_filters = filters.clone();
        for f in &mut stored_filters {
            clamp_filter(&self.state.limits, f);
        }
        self.state.registry.insert(
            self.id,
            sub_id.clone(),
            generation,
            filters,
            self.outlet.clone(),
        );
        self.subs.insert(
            sub_id.clone(),
            SubState {
                generation,
                pending: Some(Vec::new()),
                sent: None,
                query: None,
            },
        );
        // `limit: 0` everywhere: no stored events, EOSE at once, then live events.
        if stored_filters.iter().all(|f| f.limit == Some(0)) {
            return self.on_stored(&sub_id, generation, Ok(Vec::new()));
        }
        // A few queries per connection at once; waiting here pauses reading, which is
        // the back-pressure a client sending REQs faster than they finish feels.
        let Ok(permit) = self.queries.clone().acquire_owned().await else {
            return;
        };
        let state = self.state.clone();
        let mut query = Box::pin(async move {
            let _permit = permit;
            let started = Instant::now();
            let (result, asked_l2) = state.node.tiered.query_routed(&stored_filters).await;
            state
                .node
                .tiered
                .stats()
                .latency
                .req(!asked_l2, crate::latency::since(started));
            let m = &state.metrics;
            m.query_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            m.query_count.fetch_add(1, Ordering::Relaxed);
            result.map_err(|e| tracing::warn!(error = %e, "REQ query failed"))
        });
        // Tried here first: a read L1 answers within its inline budget (most REQs)
        // completes in this one poll, and its answer is handled without a task spawned,
        // woken and handing it back (after the messages already waiting, see
        // `Conn::answered`). Otherwise (a reader thread, L2) the rest runs as a task of
        // its own while this connection reads on; its first poll there registers the
        // task's waker in place of the no-op one used here. A panic in this poll fails
        // the query, not the connection, as it would in a task of its own.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            query.as_mut().poll(&mut cx)
        }));
        match polled {
            Ok(std::task::Poll::Pending) => {}
            Ok(std::task::Poll::Ready(result)) => {
                return self.answered.push(Reply::Stored {
                    sub_id,
                    generation,
                    result,
                });
            }
            Err(_) => {
                tracing::error!("a REQ query panicked");
                return self.answered.push(Reply::Stored {
                    sub_id,
                    generation,
                    result: Err(()),
                });
            }
        }
        let replies = self.outlet.clone();
        let key = sub_id.clone();
        let task = tokio::spawn(async move {
            let result = query.await;
            let _ = replies.reply(Reply::Stored {
                sub_id,
                generation,
                result,
            });
        });
        if let Some(s) = self.subs.get_mut(&key) {
            s.query = Some(task.abort_handle());
        }
    }

    pub(super) async fn on_count(&mut self, sub_id: String, raws: &[&RawValue]) {
        self.state.metrics.message("COUNT");
        let filters = match self.admit(&sub_id, raws) {
            Ok(f) => f,
            Err(msg) => return self.refuse_sub(&sub_id, &msg),
        };
        let Ok(permit) = self.queries.clone().acquire_owned().await else {
            return;
        };
        let state = self.state.clone();
        let replies = self.outlet.clone();
        let plan = self.visibility.count_plan(&filters, &self.authed);
        tokio::spawn(async move {
            let _permit = permit;
            let frame = match count_visible(state.store.as_ref(), &filters, plan).await {
                Ok(n) => proto::count(&sub_id, n),
                Err(e) => {
                    tracing::warn!(error = %e, "COUNT failed");
                    proto::closed(&sub_id, "error: could not count events; try again")
                }
            };
            let _ = replies.reply(Reply::Frame(frame));
        });
    }

    pub(super) fn on_close(&mut self, sub_id: &str) {
        self.state.metrics.message("CLOSE");
        // NIP-01 gives CLOSE no answer to carry its ACK.
        self.ack_now();
        self.drop_sub(sub_id);
    }

    pub(super) fn on_reply(&mut self, r: Reply) {
        match r {
            Reply::Frame(f) => self.out.push(f),
            Reply::Stored {
                sub_id,
                generation,
                result,
            } => self.on_stored(&sub_id, generation, result),
        }
    }

    fn on_stored(
        &mut self,
        sub_id: &Arc<str>,
        generation: u64,
        result: Result<Vec<eventstore::Event>, ()>,
    ) {
        let Some(s) = self.subs.by_generation_mut(generation) else {
            return; // Replaced or closed meanwhile.
        };
        let events = match result {
            Ok(events) => events,
            Err(()) => {
                self.subs.remove_generation(generation);
                self.state
                    .registry
                    .remove(self.id, sub_id, Some(generation));
                self.out.push(proto::closed(
                    sub_id,
                    "error: could not query events; try again",
                ));
                return;
            }
        };
        let pending = s.pending.take().unwrap_or_default();
        s.query = None;
        // Private kinds the connection may not see are left out (the answer may then
        // hold fewer than `limit` events).
        let events: Vec<_> = events
            .into_iter()
            .filter(|e| self.visibility.allows(e, &self.authed))
            .collect();
        let head = proto::event_head(sub_id);
        for e in &events {
            self.out.push(proto::event_after(&head, e.as_json()));
        }
        self.out.push(proto::eose(sub_id));
        if !pending.is_empty() {
            let sent: HashSet<EventId> = events.iter().map(|e| e.id()).collect();
            for e in pending.iter().filter(|e| !sent.contains(&e.id())) {
                // Already checked against the connection's visibility in `on_live`.
                self.out.push(proto::event_after(&head, e.as_json()));
            }
        }
        if !events.is_empty() {
            // The newest ones only: a late live copy is of a just-published event, and
            // this bounds what an idle subscription holds (32 × 1,000 ids at most).
            let newest = events.iter().take(SENT_KEEP).map(|e| e.id()).collect();
            s.sent = Some((Instant::now(), newest));
        }
    }

    pub(super) fn on_live(&mut self, l: Live) {
        let cap = self.state.limits.outbound_queue;
        if !self.visibility.allows(&l.event, &self.authed) {
            return; // A private kind this connection may not see.
        }
        let Some(s) = self.subs.by_generation_mut(l.generation) else {
            return; // Replaced or closed meanwhile.
        };
        if let Some((at, ids)) = &s.sent {
            if at.elapsed() > SENT_GRACE {
                s.sent = None;
            } else if ids.contains(&l.event.id()) {
                return; // Already sent with the stored events.
            }
        }
        match &mut s.pending {
            None => self.out.push(proto::event(&l.sub_id, l.event.as_json())),
            Some(p) if p.len() < cap => p.push(l.event),
            Some(_) => {
                // The stored answer is taking so long that live events pile up.
                self.subs.remove_generation(l.generation);
                if self
                    .state
                    .registry
                    .remove(self.id, &l.sub_id, Some(l.generation))
                {
                    self.state
                        .metrics
                        .slow_closed
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.out.push(proto::closed(&l.sub_id, SLOW));
            }
        }
    }
}

/// NIP-45 count of `filters`, leaving out private events the connection may not see
/// (see `Visibility::count_plan`). The counts are taken one after another and can see
/// different states (an event stored or removed in between moves the answer by one);
/// NIP-45 counts are estimates, and no event's content is ever revealed.
pub(super) async fn count_visible(
    store: &dyn eventstore::EventStore,
    filters: &[Filter],
    plan: Option<super::policy::CountPlan>,
) -> Result<u64, eventstore::StoreError> {
    let all = store.count(filters).await?;
    let Some(p) = plan else { return Ok(all) };
    let private = store.count(&p.private).await?;
    let visible = if p.visible.is_empty() {
        0
    } else {
        store.count(&p.visible).await?
    };
    Ok(all.saturating_sub(private) + visible.min(private))
}
