//! One WebSocket connection: a single task reads frames, runs the handlers
//! (`event.rs`, `req.rs`) and writes their replies. Work that waits on the store runs in
//! spawned tasks that report back through the connection's inbox (`inbox.rs`), so a
//! slow query never stalls the connection's other subscriptions.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;

use super::AppState;
use super::inbox::{Inbox, Msg, Outlet};
use super::limits::Bucket;
use super::proto::{self, ClientMsg};
use super::subs::{ConnId, Dropped};
use eventstore::Event;

/// EVENTs of one connection being verified and stored at once. More waits: reading the
/// socket pauses, which is the back-pressure a publisher sees.
const IN_FLIGHT: usize = 256;
/// REQ and COUNT queries of one connection running at once; more wait their turn.
pub(super) const QUERIES: usize = 4;
/// Room for frames a connection keeps between writes.
const KEEP_FRAMES: usize = 64;
/// A client that does not take a reply within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for SubState {
    /// However a subscription ends (CLOSE, replacement, refusal, disconnect), its
    /// query stops too: a client cannot leave work running by going away.
    fn drop(&mut self) {
        if let Some(q) = self.query.take() {
            q.abort();
        }
    }
}

/// What spawned work reports back to its connection.
#[derive(Debug)]
pub(super) enum Reply {
    /// A finished message (`OK`, `COUNT`, `CLOSED`).
    Frame(String),
    /// A REQ's stored events (or why the query failed).
    Stored {
        sub_id: Arc<str>,
        generation: u64,
        result: Result<Vec<Event>, ()>,
    },
}

/// A subscription as its connection sees it.
#[derive(Debug)]
pub(super) struct SubState {
    pub generation: u64,
    /// Live events that arrived before the stored ones were sent (None once `EOSE`
    /// has gone out).
    pub pending: Option<Vec<Arc<Event>>>,
    /// Ids sent with the stored events, and when `EOSE` went out. For a while after,
    /// a live copy of one of them (broadcast late, or read back by the poller after
    /// it was fetched from L2) is not sent again.
    pub sent: Option<(
        std::time::Instant,
        std::collections::HashSet<eventstore::EventId>,
    )>,
    /// The query still running for this subscription, aborted if it is replaced or
    /// closed first.
    pub query: Option<tokio::task::AbortHandle>,
}

type Fast = foldhash::fast::RandomState;

/// A connection's subscriptions, found by id (REQ, CLOSE) or by generation, which is
/// unique within the connection. Live events name theirs by generation: a number is
/// hashed and compared in a nanosecond, where an id is a string to hash and compare,
/// once per delivery.
#[derive(Debug, Default)]
pub(super) struct Subs {
    by_id: HashMap<Arc<str>, u64, Fast>,
    by_generation: HashMap<u64, (Arc<str>, SubState), Fast>,
}

impl Subs {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut SubState> {
        let g = self.by_id.get(id)?;
        self.by_generation.get_mut(g).map(|(_, s)| s)
    }

    /// The subscription of generation `g`, if it is still open.
    pub fn by_generation_mut(&mut self, g: u64) -> Option<&mut SubState> {
        self.by_generation.get_mut(&g).map(|(_, s)| s)
    }

    /// Adds `s` under `id` (a subscription open under `id` must have been removed).
    pub fn insert(&mut self, id: Arc<str>, s: SubState) {
        debug_assert!(!self.by_id.contains_key(&id));
        self.by_id.insert(id.clone(), s.generation);
        self.by_generation.insert(s.generation, (id, s));
    }

    pub fn remove(&mut self, id: &str) -> Option<(Arc<str>, SubState)> {
        let g = self.by_id.remove(id)?;
        self.by_generation.remove(&g)
    }

    pub fn remove_generation(&mut self, g: u64) -> Option<(Arc<str>, SubState)> {
        let (id, s) = self.by_generation.remove(&g)?;
        self.by_id.remove(&id);
        Some((id, s))
    }

    pub fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, SubState)> + '_ {
        self.by_id.clear();
        self.by_generation.drain().map(|(_, v)| v)
    }
}

pub(super) struct Conn {
    pub id: ConnId,
    pub state: Arc<AppState>,
    pub subs: Subs,
    pub next_generation: u64,
    pub events_bucket: Bucket,
    pub reqs_bucket: Bucket,
    pub in_flight: Arc<Semaphore>,
    pub queries: Arc<Semaphore>,
    /// Where this connection's spawned work and the registry leave its messages.
    pub outlet: Outlet,
    /// Frames to send after the current step.
    pub out: Vec<String>,
    /// Stored answers a REQ got in place (`req.rs`), handled after the messages already
    /// waiting in the inbox, as a spawned query's answer would be: live events queued
    /// meanwhile go into the subscription's pending list first and are checked against
    /// the whole answer.
    pub answered: Vec<Reply>,
    /// NIP-42: this connection's challenge, the URLs an `AUTH` may name, and the
    /// pubkeys it has proven (several may authenticate on one connection).
    pub challenge: String,
    pub audience: super::auth::Audience,
    pub authed: Vec<eventstore::PublicKey>,
    /// Which private kinds' events this connection may see (from the configuration).
    pub visibility: super::policy::Visibility,
    /// Asks the socket to acknowledge a message that gets no answer; `None` without a
    /// socket (`drive.rs`) or when served without one (`relay::router` alone).
    pub ack: Option<super::quickack::AckNow>,
}

/// Pubkeys one connection may authenticate as, at most.
const MAX_AUTHED: usize = 16;

impl Conn {
    /// What was read gets no answer: acknowledge it now (`quickack.rs`), so a client's
    /// next small write is not held back waiting for that ACK.
    pub fn ack_now(&self) {
        if let Some(a) = &self.ack {
            a.ask();
        }
    }

    pub fn notice(&mut self, message: &str) {
        self.state
            .metrics
            .notices
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.out.push(proto::notice(message));
    }

    pub(super) async fn on_text(&mut self, text: &str) {
        let max = self.state.limits.max_message_bytes;
        if text.len() > max {
            let msg = format!(
                "invalid: message of {} bytes exceeds the {max}-byte limit",
                text.len()
            );
            // An EVENT whose id can be read gets its OK, so the publisher learns its fate.
            if let Ok(ClientMsg::Event(raw)) = proto::parse(text) {
                self.state.metrics.message("EVENT");
                self.state.metrics.event("invalid");
                if let Some(id) = proto::salvage_id(raw) {
                    self.out.push(proto::ok(&id, false, &msg));
                    return;
                }
            } else {
                self.state.metrics.message("other");
            }
            self.notice(&msg);
            return;
        }
        match proto::parse(text) {
            Ok(ClientMsg::Event(raw)) => self.on_event(raw).await,
            Ok(ClientMsg::Req { sub_id, filters }) => self.on_req(sub_id, &filters).await,
            Ok(ClientMsg::Count { sub_id, filters }) => self.on_count(sub_id, &filters).await,
            Ok(ClientMsg::Close(sub_id)) => self.on_close(&sub_id),
            Ok(ClientMsg::Auth(raw)) => self.on_auth(raw),
            Err(bad) => {
                self.state.metrics.message("other");
                match bad.sub_id {
                    Some(sub) => self
                        .out
                        .push(proto::closed(&sub, &format!("invalid: {}", bad.reason))),
                    None => self.notice(&format!("invalid: {}", bad.reason)),
                }
            }
        }
    }

    /// NIP-42 `AUTH`: answered with `OK`; on success the pubkey joins this connection's
    /// authenticated ones for the rest of the connection.
    fn on_auth(&mut self, raw: &serde_json::value::RawValue) {
        let m = &self.state.metrics;
        m.message("AUTH");
        let event = match Event::from_json(raw.get()) {
            Ok(e) => e,
            Err(e) => {
                m.auth("invalid");
                let msg = format!("invalid: {e}");
                return match proto::salvage_id(raw) {
                    Some(id) => self.out.push(proto::ok(&id, false, &msg)),
                    None => self.notice(&msg),
                };
            }
        };
        if !self.events_bucket.take() {
            m.auth("rate_limited");
            let msg = "rate-limited: too many EVENT and AUTH messages; slow down";
            return self.out.push(proto::ok(&event.id(), false, msg));
        }
        let checked = super::auth::verify_auth(
            &event,
            &self.challenge,
            &self.audience,
            eventstore::Timestamp::now(),
        );
        match checked {
            Ok(pk) => {
                if !self.authed.contains(&pk) {
                    if self.authed.len() >= MAX_AUTHED {
                        m.auth("refused");
                        let msg = format!(
                            "restricted: at most {MAX_AUTHED} pubkeys may authenticate on one connection"
                        );
                        return self.out.push(proto::ok(&event.id(), false, &msg));
                    }
                    self.authed.push(pk);
                }
                m.auth("ok");
                tracing::debug!(conn = self.id, pubkey = %pk, "authenticated");
                self.out.push(proto::ok(&event.id(), true, ""));
            }
            Err(msg) => {
                m.auth("refused");
                self.out.push(proto::ok(&event.id(), false, &msg));
            }
        }
    }

    fn on_dropped(&mut self, d: Dropped) {
        if self.subs.remove_generation(d.generation).is_some() {
            self.out.push(proto::closed(&d.sub_id, d.reason));
        }
    }

    /// Removes every subscription of this connection from the registry.
    pub(super) fn forget_subs(&mut self) {
        for (sub_id, s) in self.subs.drain() {
            self.state
                .registry
                .remove(self.id, &sub_id, Some(s.generation));
        }
    }
}

impl Conn {
    /// A new connection of `state`, reached at `host`, with its NIP-42 challenge
    /// already queued in `out`.
    pub(super) fn open(
        state: Arc<AppState>,
        host: Option<&str>,
        ack: Option<super::quickack::AckNow>,
    ) -> (Conn, Inbox) {
        let limits = &state.limits;
        let (outlet, inbox) = super::inbox::inbox(limits.outbound_queue);
        let mut c = Conn {
            id: state
                .next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            subs: Subs::default(),
            next_generation: 0,
            events_bucket: Bucket::new(limits.events_per_second),
            reqs_bucket: Bucket::new(limits.reqs_per_second),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            queries: Arc::new(Semaphore::new(QUERIES)),
            outlet,
            out: Vec::new(),
            answered: Vec::new(),
            challenge: super::auth::challenge(),
            audience: super::auth::Audience::new(&state.node.config.access.relay_urls, host),
            authed: Vec::new(),
            visibility: super::policy::Visibility {
                kinds: state.node.config.access.private_kinds.clone(),
            },
            state,
            ack,
        };
        // NIP-42: the challenge goes out at once, so a client has it whenever it is
        // asked to authenticate (clients that do not speak NIP-42 ignore the message).
        c.out.push(proto::auth_challenge(&c.challenge));
        (c, inbox)
    }

    /// Handles the messages in `waiting`, in the order they came, leaving it empty.
    pub(super) fn on_messages(&mut self, waiting: &mut VecDeque<Msg>) {
        while let Some(m) = waiting.pop_front() {
            match m {
                Msg::Reply(r) => self.on_reply(r),
                Msg::Dropped(d) => self.on_dropped(d),
                Msg::Live(l) => self.on_live(l),
            }
        }
    }

    /// Handles every message already waiting in `inbox` (`spare` is an empty buffer),
    /// then the answers REQs got in place.
    pub(super) fn take_waiting(&mut self, inbox: &Inbox, spare: &mut VecDeque<Msg>) {
        inbox.take(spare);
        self.on_messages(spare);
        let mut answered = std::mem::take(&mut self.answered);
        for r in answered.drain(..) {
            self.on_reply(r);
        }
        // The buffer is kept for the next one.
        self.answered = answered;
    }
}

/// Serves one upgraded connection until the client leaves or the node shuts down.
pub(super) async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    host: Option<String>,
    ack: Option<super::quickack::AckNow>,
) {
    // One task both reads and writes, so the socket is not split (a lock on every poll).
    let mut ws = super::gate::Gated::new(socket);
    let (mut c, inbox) = Conn::open(state.clone(), host.as_deref(), ack);
    let mut shutdown = state.shutdown.subscribe();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    if !flush(&mut ws.inner, &mut c.out).await {
        return;
    }
    let mut going_away = false;
    let mut waiting = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => { going_away = true; break; }
            () = inbox.next(&mut waiting) => c.on_messages(&mut waiting),
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => c.on_text(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    c.state.metrics.message("other");
                    c.notice("invalid: binary frames are not supported; send NIP-01 messages as text");
                }
                // A ping is answered (tungstenite queues the pong); a pong is not.
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Pong(_))) => c.ack_now(),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Oversized frames end here: tungstenite refuses them past its hard cap.
                    tracing::debug!(conn = c.id, error = %e, "websocket read failed");
                    break;
                }
            },
        }
        // What else is already waiting goes out in the same write (one `send` for many
        // OKs or live events, not one each).
        c.take_waiting(&inbox, &mut waiting);
        if !flush(&mut ws.inner, &mut c.out).await {
            break;
        }
    }
    c.forget_subs();
    if going_away {
        // Let in-flight EVENTs finish and tell their publishers, then say goodbye.
        // Bounded, so that every connection is gone well within the server's 15 s wait
        // and the stores can be closed: at most 5 s for in-flight events, 2 s to say it.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            c.in_flight.acquire_many(IN_FLIGHT as u32),
        )
        .await;
        inbox.take(&mut waiting);
        for m in waiting.drain(..) {
            if let Msg::Reply(Reply::Frame(f)) = m {
                c.out.push(f);
            }
        }
        let goodbye = async {
            if flush(&mut ws.inner, &mut c.out).await {
                let bye = Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "relay shutting down".into(),
                }));
                let _ = ws.inner.send(bye).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }
}

/// Sends queued frames; false when the client is gone or too slow to take them.
async fn flush(sink: &mut WebSocket, out: &mut Vec<String>) -> bool {
    if out.is_empty() {
        return true;
    }
    let sent = {
        // Drained, not taken: the buffer keeps its room for the next write.
        let mut send = std::pin::pin!(async {
            for f in out.drain(..) {
                sink.feed(Message::Text(f.into())).await?;
            }
            sink.flush().await
        });
        // A client's socket nearly always has room, and the write is done in the first
        // poll: the timer is armed only when it is not (one per live delivery otherwise).
        match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
            Poll::Ready(r) => r.is_ok(),
            Poll::Pending => {
                matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(())))
            }
        }
    };
    // But not a burst's room: thousands of connections would each keep their largest.
    out.shrink_to(KEEP_FRAMES);
    sent
}
