//! A WebSocket whose input side is polled only once it has signalled input.
//!
//! A connection's task wakes for many things besides its client's messages: every live
//! event for one of its subscriptions, every stored answer, every `OK`. After each, its
//! loop waits on all its sources again, the socket among them, and polling a
//! tungstenite stream that has nothing to read is not free (its read buffer is
//! zero-filled before every read attempt, and its wakers are swapped in). With
//! thousands of subscribers that was a tenth of the node's CPU per live delivery.
//!
//! The gate hands the socket a waker of its own. Once a poll of the socket has come
//! back `Pending`, later polls return `Pending` at once until that waker fires (input
//! arrived, the peer closed, or buffer space came free); the task is woken through it
//! as before. A poll that returned a message leaves the gate open, since tungstenite
//! may hold more frames already read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};

/// The waker the socket is given: it records that the socket has something, then wakes
/// the connection's task.
#[derive(Debug, Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A stream (the WebSocket) that is only polled again after it signalled.
#[derive(Debug)]
pub(super) struct Gated<S> {
    pub inner: S,
    signal: Arc<Signal>,
    waker: Waker,
    /// The last poll of `inner` came back `Pending`.
    waiting: bool,
}

impl<S> Gated<S> {
    pub fn new(inner: S) -> Gated<S> {
        let signal = Arc::new(Signal::default());
        Gated {
            inner,
            waker: Waker::from(signal.clone()),
            signal,
            waiting: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let me = &mut *self;
        // Registered before looking at `fired`: a signal that comes after the look wakes
        // this task; one that came before it is seen by it.
        me.signal.task.register(cx.waker());
        if me.waiting && !me.signal.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        me.signal.fired.store(false, Ordering::Release);
        let polled = me
            .inner
            .poll_next_unpin(&mut Context::from_waker(&me.waker));
        me.waiting = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    /// A stream that counts how often it is polled.
    struct Counted {
        rx: mpsc::UnboundedReceiver<u32>,
        polls: Arc<AtomicUsize>,
    }

    impl Stream for Counted {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.rx.poll_recv(cx)
        }
    }

    #[tokio::test]
    async fn polled_again_only_after_it_signals_and_nothing_is_missed() {
        let (tx, rx) = mpsc::unbounded_channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut g = Gated::new(Counted {
            rx,
            polls: polls.clone(),
        });
        assert!(g.next().now_or_never().is_none());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Woken for something else: the stream is not polled.
        for _ in 0..5 {
            assert!(g.next().now_or_never().is_none());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Two items arrive; both come out, and the gate stays open between them.
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(g.next().now_or_never(), Some(Some(1)));
        assert_eq!(g.next().now_or_never(), Some(Some(2)));
        assert!(g.next().now_or_never().is_none());
        let before = polls.load(Ordering::Relaxed);
        assert!(g.next().now_or_never().is_none());
        assert_eq!(polls.load(Ordering::Relaxed), before);
        // A task waiting on the gate is woken by the stream's signal.
        let waiter = tokio::spawn(async move { g.next().await });
        tokio::task::yield_now().await;
        tx.send(3).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the signal")
            .unwrap();
        assert_eq!(got, Some(3));
    }
}
