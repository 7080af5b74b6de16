//! The relay server (DESIGN.md §6): NIP-01 over WebSocket on `GET /`, NIP-11 on the
//! same path for `Accept: application/nostr+json`, `/metrics` and `/health`.
//!
//! - [`router`] builds the routes without a socket; [`run`] serves them until the
//!   shutdown future resolves, then lets connections finish.
//! - `conn.rs` runs one connection; `event.rs` and `req.rs` handle its messages;
//!   `subs.rs` indexes live subscriptions; `http.rs` serves the HTTP pages;
//!   `quickack.rs` keeps TCP acknowledgements prompt.
//! - Access: `auth.rs` checks NIP-42 `AUTH` and NIP-98 HTTP authorisation;
//!   `policy.rs` decides who may write and read (NIP-70, private kinds, lists, PoW);
//!   `nip86.rs` serves the NIP-86 management API on `POST /`.

pub mod auth;
mod conn;
#[doc(hidden)]
pub mod drive;
mod event;
mod gate;
mod http;
mod inbox;
pub mod limits;
pub mod nip86;
pub mod policy;
pub mod proto;
mod quickack;
mod req;
pub mod subs;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use eventstore::EventStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Info, Limits};
use crate::metrics::Metrics;
use crate::node::Node;
use policy::Policy;
use subs::Registry;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub node: Arc<Node>,
    pub store: Arc<dyn EventStore>,
    pub limits: Limits,
    pub info: Info,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// The access configuration and the operator's rulings, rebuilt when they change.
    policy: RwLock<Arc<Policy>>,
    next_conn: AtomicU64,
    /// Set to true when the node stops; connections then finish and close.
    shutdown: watch::Sender<bool>,
}

impl AppState {
    /// State for `node`, with its live-event dispatcher running.
    pub fn new(node: Arc<Node>) -> Arc<AppState> {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(metrics.clone()));
        tokio::spawn(subs::dispatch_loop(
            registry.clone(),
            node.tiered.subscribe(),
        ));
        let policy = Policy::new(&node.config.access, Arc::new(node.rulings.clone()));
        let state = Arc::new(AppState {
            store: node.store(),
            limits: node.config.limits.clone(),
            info: node.config.info.clone(),
            node,
            metrics,
            registry,
            policy: RwLock::new(Arc::new(policy)),
            next_conn: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
        });
        tokio::spawn(follow_rulings(Arc::downgrade(&state)));
        tokio::spawn(crate::maintenance::task(Arc::downgrade(&state)));
        state
    }

    /// Turns true when the node stops.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the rulings from the store if they changed; returns whether they did.
    pub async fn refresh_rulings(&self) -> Result<bool, eventstore::StoreError> {
        let version = self.policy().rulings.version;
        let Some(r) = self.store.rulings_since(version).await? else {
            return Ok(false);
        };
        let fresh = Arc::new(Policy::new(&self.node.config.access, Arc::new(r)));
        // The store's answer wins, even at a lower version (a database restored from a
        // backup): a refresh racing this one can only put back an older answer until
        // the next period's check, which then differs and reloads.
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(true)
    }

    /// Tells every connection to finish; returns once they have (or after `wait`).
    pub async fn stop_connections(&self, wait: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + wait;
        while self.metrics.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Keeps a node's policy in step with the rulings in L2, which any node (or the CLI)
/// may change: one cheap version check per poll period, so every node enforces a
/// change within one period. A failed check is retried at the next period; meanwhile
/// the last rulings stay in force (L2 itself still refuses banned events).
async fn follow_rulings(state: std::sync::Weak<AppState>) {
    let mut stop = match state.upgrade() {
        Some(s) => s.shutdown.subscribe(),
        None => return,
    };
    loop {
        let period = match state.upgrade() {
            Some(s) => s.node.config.poll_frequency,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(s) = state.upgrade() else { return };
        if let Err(e) = s.refresh_rulings().await {
            tracing::debug!(error = %e, "rulings not refreshed; retrying next period");
        }
    }
}

/// The routes, buildable without a socket.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(http::root).post(nip86::handle))
        .route("/health", get(http::health))
        .route("/metrics", get(http::metrics))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves: then stops accepting, lets
/// open connections finish their in-flight events (up to 15 s) and returns. The caller
/// closes the node.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let stopping = state.clone();
    // No Nagle delay on replies, no delayed ACK holding a client's next write.
    axum::serve(
        quickack::Prompt(listener),
        app.into_make_service_with_connect_info::<quickack::AckNow>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.shutdown.send(true);
    })
    .await?;
    state.stop_connections(Duration::from_secs(15)).await;
    Ok(())
}

/// A relay serving in the background (embedding and tests): [`spawn`] starts it,
/// [`Running::stop`] shuts it down as SIGTERM would.
#[derive(Debug)]
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Serves `node` on `listener` in a background task.
pub fn spawn(node: Node, listener: TcpListener) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let state = AppState::new(Arc::new(node));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

impl Running {
    /// `ws://` URL of the relay.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stops accepting, lets connections finish, and waits for the server task.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}
