//! Events L2 accepted that have not landed in L1 yet.
//!
//! The relay answers `OK` once L2 has committed an event (`Tiered::decide`) and writes
//! it into L1 after (`Tiered::land`), so the `OK` does not wait on L1's commit as well.
//! Meanwhile L1 answers without the event. A read that an unsettled event would match
//! waits for it to land first: whoever was told of the event (its publisher by the
//! `OK`, anyone it told since) finds it on this node however soon they ask. A read no
//! unsettled event matches, the usual case, waits for nothing. Live subscribers get an
//! event only once it has landed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use eventstore::{Event, EventId, Filter};
use tokio::sync::Notify;

/// How long a read waits for a landing event before it asks L2 instead: far longer
/// than an L1 write takes (milliseconds), short enough that a stuck one costs a read
/// little.
pub(crate) const LANDING_WAIT: Duration = Duration::from_secs(1);

/// How long a persisting poll waits for the events landing at that moment before it
/// leaves its cursor to a later poll (`poller.rs`): a busy L1 writer lands a batch in
/// well under this, and a poll that waited longer would hold up the next one.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_millis(250);

/// Events answered before they land, at most, on one node; past it an event lands
/// before its `OK`, as a deletion does, and publishers wait on L1's writer again. (A
/// connection holds up to 256 events until they land; this bounds the node's backlog
/// whatever the number of connections.)
pub(crate) const MAX_UNSETTLED: usize = 256;

#[derive(Default)]
pub(crate) struct Unsettled {
    state: Mutex<State>,
    landed: Notify,
}

#[derive(Default)]
struct State {
    /// The next ticket.
    next: u64,
    /// The events still to land, by ticket.
    events: BTreeMap<u64, Arc<Event>>,
    /// How many of them have each id (the poller asks for each id it reads; the same
    /// event may be accepted again after a purge while its first landing is under way).
    ids: HashMap<EventId, u32>,
    /// Events whose landing was given up before L1's write was tried (a task
    /// cancelled between the `OK` and the write), for the poller to hand to the repairs.
    abandoned: Vec<Arc<Event>>,
}

/// One accepted event's place among the unsettled: it leaves when this is dropped.
/// [`Landing::landed`] says L1's write was tried (a failure is then with the repairs);
/// dropped without it, the event is recorded as abandoned (`Unsettled::take_abandoned`).
pub struct Landing {
    of: Arc<Unsettled>,
    ticket: u64,
    landed: bool,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landing")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut s = self.of.lock();
        if let Some(e) = s.events.remove(&self.ticket) {
            if let Some(n) = s.ids.get_mut(&e.id()) {
                *n -= 1;
                if *n == 0 {
                    s.ids.remove(&e.id());
                }
            }
            if !self.landed {
                s.abandoned.push(e);
            }
        }
        drop(s);
        self.of.landed.notify_waiters();
    }
}

impl Landing {
    /// Ends the landing once L1's write was tried, whatever came of it (a failed
    /// write is queued for repair by then).
    pub(super) fn landed(mut self) {
        self.landed = true;
    }
}

impl Unsettled {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters `event`, accepted by L2, until the returned [`Landing`] is dropped.
    pub fn enter(self: &Arc<Self>, event: Arc<Event>) -> Landing {
        let mut s = self.lock();
        let ticket = s.next;
        s.next += 1;
        *s.ids.entry(event.id()).or_default() += 1;
        s.events.insert(ticket, event);
        Landing {
            of: self.clone(),
            ticket,
            landed: false,
        }
    }

    /// Returns once no event accepted before this call and matched by `filters` is
    /// still to land (at once when none is): `true`; or `false` when that takes longer
    /// than `limit` (an L1 write that hangs: the caller asks L2 instead). The events to
    /// wait for are picked once, here; each landing then costs a waiter a look-up per
    /// event it still waits for, not a match of every landing event.
    pub async fn wait_for(&self, filters: &[Filter], limit: Duration) -> bool {
        let awaited: Vec<u64> = {
            let s = self.lock();
            s.events
                .iter()
                .filter(|(_, e)| filters.iter().any(|f| f.matches(e)))
                .map(|(&t, _)| t)
                .collect()
        };
        self.wait_tickets(awaited, limit).await
    }

    /// Returns once every event entered before this call has landed: `true`; or
    /// `false` when that takes longer than `limit`. The poller's barrier before it
    /// commits its cursor past events it left to their landing (`poller.rs`).
    pub async fn settle(&self, limit: Duration) -> bool {
        let awaited: Vec<u64> = self.lock().events.keys().copied().collect();
        self.wait_tickets(awaited, limit).await
    }

    /// Whether `id` is still to land.
    pub fn landing(&self, id: &EventId) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// The events whose landing was given up since the last call.
    pub fn take_abandoned(&self) -> Vec<Arc<Event>> {
        std::mem::take(&mut self.lock().abandoned)
    }

    async fn wait_tickets(&self, awaited: Vec<u64>, limit: Duration) -> bool {
        if awaited.is_empty() {
            return true;
        }
        tokio::time::timeout(limit, self.landed(awaited))
            .await
            .is_ok()
    }

    async fn landed(&self, mut awaited: Vec<u64>) {
        loop {
            let notified = self.landed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                awaited.retain(|t| s.events.contains_key(t));
            }
            if awaited.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Events still to land.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys, Kind};

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_read_waits_only_for_unsettled_events_it_matches() {
        let u = Arc::new(Unsettled::default());
        let keys = Keys::from_seed(1);
        let note = Arc::new(EventBuilder::text_note("x").sign_deterministic(&keys));
        let landing = u.enter(note.clone());
        assert_eq!(u.len(), 1);
        // Another kind: nothing to wait for.
        assert!(u.wait_for(&[Filter::new().kind(Kind(7))], LONG).await);
        // Its author: waits until it lands.
        let waiting = tokio::spawn({
            let u = u.clone();
            let mine = [Filter::new().author(keys.public_key())];
            async move { u.wait_for(&mine, LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered before the event landed");
        drop(landing);
        assert!(
            waiting.await.unwrap(),
            "the read goes on once the event landed"
        );
        assert_eq!(u.len(), 0);

        // An event accepted after the read began is not waited for.
        let first = u.enter(note.clone());
        let waiting = tokio::spawn({
            let u = u.clone();
            let mine = [Filter::new().author(keys.public_key())];
            async move { u.wait_for(&mine, LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let later = u.enter(note.clone());
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "waits only for events accepted before it"
        );

        // One that does not land in time: the read is told so (and asks L2).
        let mine = [Filter::new().author(keys.public_key())];
        assert!(!u.wait_for(&mine, Duration::from_millis(20)).await);
        drop(later);
        assert!(u.wait_for(&mine, Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn the_poller_finds_landing_ids_and_waits_for_all_of_them() {
        let u = Arc::new(Unsettled::default());
        let keys = Keys::from_seed(2);
        let a = Arc::new(EventBuilder::text_note("a").sign_deterministic(&keys));
        let b = Arc::new(EventBuilder::text_note("b").sign_deterministic(&keys));
        let short = Duration::from_millis(20);
        assert!(u.settle(short).await, "nothing to wait for");
        let la = u.enter(a.clone());
        let lb = u.enter(b.clone());
        assert!(u.landing(&a.id()) && u.landing(&b.id()));
        assert!(!u.settle(short).await);
        la.landed();
        assert!(!u.landing(&a.id()) && u.landing(&b.id()));
        assert!(!u.settle(short).await, "b still lands");
        // The same event accepted again while its first landing is under way: it is
        // landing until both have ended, in either order.
        let again = u.enter(b.clone());
        lb.landed();
        assert!(u.landing(&b.id()));
        let first = u.enter(b.clone());
        let second = u.enter(b.clone());
        again.landed();
        second.landed();
        assert!(u.landing(&b.id()));
        let settled = tokio::spawn({
            let u = u.clone();
            async move { u.settle(LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!settled.is_finished());
        first.landed();
        assert!(settled.await.unwrap());
        assert!(!u.landing(&b.id()));
        assert!(u.take_abandoned().is_empty(), "every landing ended landed");

        // Given up before L1's write was tried: recorded once, for the repairs.
        let given_up = u.enter(a.clone());
        drop(given_up);
        assert!(!u.landing(&a.id()));
        let abandoned = u.take_abandoned();
        assert_eq!(abandoned.len(), 1);
        assert_eq!(abandoned[0].id(), a.id());
        assert!(u.take_abandoned().is_empty());
    }
}
