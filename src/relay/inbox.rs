//! A connection's inbox: what reaches it from elsewhere (its spawned work's replies,
//! live events from the registry, subscriptions the registry dropped) in one queue, in
//! the order it arrived.
//!
//! It replaced three channels, which the connection's task looked at one by one each
//! time it woke and emptied with one operation per message: with thousands of
//! subscribers that was a tenth of the node's CPU per live delivery. Now a wake-up takes
//! everything waiting at once, in one lock, and senders wake the task only while it
//! waits (a burst of live events for one connection wakes it once).
//!
//! Live events are bounded (`cap` waiting at once): a subscriber that does not keep up
//! is told so (see `subs.rs`) rather than left to grow the queue. Replies and drop
//! notices are not; the connection's own limits bound them (EVENTs in flight, queries
//! running, subscriptions open).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::conn::Reply;
use super::subs::{Dropped, Live};

/// Room for messages an inbox keeps between bursts.
const KEEP: usize = 256;

/// One message for a connection.
#[derive(Debug)]
pub(super) enum Msg {
    Reply(Reply),
    Dropped(Dropped),
    Live(Live),
}

/// Why a live event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `cap` live events are waiting already: the subscriber is not keeping up.
    Full,
    /// The connection has ended.
    Closed,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Msg>,
    /// How many of `items` are live events.
    live: usize,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    task: AtomicWaker,
    cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side, held by the registry (for the connection's subscriptions) and by
/// the connection's spawned work.
#[derive(Debug, Clone)]
pub struct Outlet(Arc<Shared>);

/// The connection's side.
#[derive(Debug)]
pub(super) struct Inbox(Arc<Shared>);

/// A new inbox holding at most `cap` live events at once.
pub(super) fn inbox(cap: usize) -> (Outlet, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            live: 0,
            closed: false,
        }),
        task: AtomicWaker::new(),
        cap: cap.max(1),
    });
    (Outlet(shared.clone()), Inbox(shared))
}

impl Outlet {
    /// Queues a message that is not held to the bound; false when the connection has
    /// ended.
    fn send(&self, m: Msg) -> bool {
        debug_assert!(!matches!(m, Msg::Live(_)), "live events go through `live`");
        {
            let mut q = self.0.lock();
            if q.closed {
                return false;
            }
            q.items.push_back(m);
        }
        self.0.task.wake();
        true
    }

    /// Queues a reply from the connection's spawned work; false when it has ended.
    pub(super) fn reply(&self, r: Reply) -> bool {
        self.send(Msg::Reply(r))
    }

    /// Tells the connection that the registry dropped one of its subscriptions.
    pub(super) fn dropped(&self, d: Dropped) -> bool {
        self.send(Msg::Dropped(d))
    }

    /// Queues a live event unless `cap` are waiting already or the connection ended.
    pub(super) fn live(&self, l: Live) -> Result<(), Refused> {
        {
            let mut q = self.0.lock();
            if q.closed {
                return Err(Refused::Closed);
            }
            if q.live >= self.0.cap {
                return Err(Refused::Full);
            }
            q.live += 1;
            q.items.push_back(Msg::Live(l));
        }
        self.0.task.wake();
        Ok(())
    }
}

impl Inbox {
    /// Moves everything waiting into `out` (which must be empty); false when nothing was.
    pub fn take(&self, out: &mut VecDeque<Msg>) -> bool {
        debug_assert!(out.is_empty());
        let mut q = self.0.lock();
        if q.items.is_empty() {
            return false;
        }
        // The two buffers trade places: no copying. The one going back into the queue
        // (emptied by the caller since the last take) does not keep a burst's size, or
        // thousands of connections would each hold room for their largest burst.
        std::mem::swap(&mut q.items, out);
        q.items.shrink_to(KEEP);
        q.live = 0;
        true
    }

    /// Like [`Inbox::take`], but waits until something is waiting.
    pub fn poll_take(&self, cx: &mut Context<'_>, out: &mut VecDeque<Msg>) -> Poll<()> {
        if self.take(out) {
            return Poll::Ready(());
        }
        // Registered before looking again: a message queued after the look wakes the
        // task, one queued before it is found by it.
        self.0.task.register(cx.waker());
        match self.take(out) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Waits until something is waiting and moves it into `out`.
    pub async fn next(&self, out: &mut VecDeque<Msg>) {
        std::future::poll_fn(|cx| self.poll_take(cx, out)).await
    }
}

impl Drop for Inbox {
    /// Senders are refused from now on, and what waits is freed now rather than when
    /// the last sender goes.
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.items.clear();
        q.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventBuilder, Keys, Kind};
    use futures_util::FutureExt;

    fn live(n: u64) -> Live {
        let e = EventBuilder::new(Kind(1), "x").sign(&Keys::from_seed(n));
        Live {
            sub_id: "s".into(),
            generation: n,
            event: Arc::new(e),
        }
    }

    fn kinds(q: &VecDeque<Msg>) -> Vec<String> {
        q.iter()
            .map(|m| match m {
                Msg::Reply(Reply::Frame(f)) => f.clone(),
                Msg::Reply(_) => "stored".into(),
                Msg::Dropped(d) => format!("dropped {}", d.generation),
                Msg::Live(l) => format!("live {}", l.generation),
            })
            .collect()
    }

    #[test]
    fn messages_come_out_in_order_and_live_ones_are_bounded() {
        let (tx, rx) = inbox(2);
        let mut out = VecDeque::new();
        assert!(!rx.take(&mut out));
        assert_eq!(tx.live(live(1)), Ok(()));
        assert!(tx.reply(Reply::Frame("ok".into())));
        assert_eq!(tx.live(live(2)), Ok(()));
        assert_eq!(tx.live(live(3)), Err(Refused::Full));
        // Replies and notices are not held back by the bound.
        let notice = Dropped {
            sub_id: "s".into(),
            generation: 9,
            reason: "slow",
        };
        assert!(tx.dropped(notice));
        assert!(rx.take(&mut out));
        assert_eq!(kinds(&out), ["live 1", "ok", "live 2", "dropped 9"]);
        // Taking them makes room again.
        out.clear();
        assert_eq!(tx.live(live(4)), Ok(()));
        assert_eq!(tx.live(live(5)), Ok(()));
        assert!(rx.take(&mut out));
        assert_eq!(kinds(&out), ["live 4", "live 5"]);
        drop(rx);
        assert_eq!(tx.live(live(6)), Err(Refused::Closed));
        assert!(!tx.reply(Reply::Frame("late".into())));
    }

    #[test]
    fn a_burst_does_not_keep_its_room() {
        let (tx, rx) = inbox(10_000);
        let one = live(1);
        for _ in 0..5_000 {
            let l = Live {
                sub_id: one.sub_id.clone(),
                generation: 1,
                event: one.event.clone(),
            };
            assert_eq!(tx.live(l), Ok(()));
        }
        let mut out = VecDeque::new();
        assert!(rx.take(&mut out));
        assert_eq!(out.len(), 5_000);
        out.clear();
        assert!(tx.reply(Reply::Frame("next".into())));
        assert!(rx.take(&mut out));
        // The burst's buffer went back into the queue at this take, and was shrunk.
        assert!(rx.0.lock().items.capacity() <= KEEP);
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_message() {
        let (tx, rx) = inbox(4);
        let mut out = VecDeque::new();
        assert!(rx.next(&mut out).now_or_never().is_none());
        let waiter = tokio::spawn(async move {
            let mut out = VecDeque::new();
            rx.next(&mut out).await;
            kinds(&out)
        });
        tokio::task::yield_now().await;
        assert_eq!(tx.live(live(7)), Ok(()));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, ["live 7"]);
    }
}
