//! LISTEN/NOTIFY, the optional fast path beside the change feed:
//!
//! - after a write transaction that changed something commits, [`CHANGES`] is notified
//!   (no payload: the feed stays the only source of events), so pollers can read at once
//!   instead of waiting for their next tick. The notification is sent by one task per
//!   node, at most every few milliseconds, outside the write transactions: PostgreSQL
//!   serializes the commits of notifying transactions on one global lock;
//! - ephemeral events, which L2 never stores, go out on [`EPHEMERAL`] with their JSON so
//!   every node can deliver them live. NOTIFY payloads are limited to 8,000 bytes, so
//!   larger ephemeral events reach only the receiving node's subscribers.
//!
//! Notifications are lost while a listener reconnects. That only delays a poll (polling
//! is the guarantee) or drops an ephemeral event, which NIP-01 lets relays do.

use std::sync::Arc;
use std::time::Duration;

use eventstore::Event;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};

/// Channel of the commit notifications.
pub const CHANGES: &str = "layer2_changes";
/// Channel of relayed ephemeral events.
pub const EPHEMERAL: &str = "layer2_ephemeral";
/// Largest ephemeral event JSON relayed (PostgreSQL's payload limit is 8,000 bytes).
pub const MAX_EPHEMERAL: usize = 7_900;

/// What a node's listener receives.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// Woken after any node's write transaction commits a change.
    pub changed: Arc<Notify>,
    /// Ephemeral events published on any node (this one included).
    pub ephemeral: broadcast::Sender<Arc<Event>>,
    /// Woken when the LISTEN connection drops: the first sign of a database going away,
    /// well before a pool time-out.
    pub lost: Arc<Notify>,
}

/// Sends a [`CHANGES`] notification after `changed` is woken, at most once per 5 ms
/// (commits in between share it), until the pool closes.
pub(crate) async fn announce_changes(pool: PgPool, changed: Arc<Notify>) {
    loop {
        changed.notified().await;
        if pool.is_closed() {
            return;
        }
        let sent = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANGES)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            // Only a hint: pollers still poll.
            tracing::debug!(error = %e, "change notification not sent");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a listener task on `pool`; it reconnects until the pool is closed.
pub(crate) fn spawn_listener(pool: PgPool) -> Notifications {
    let n = Notifications {
        changed: Arc::new(Notify::new()),
        ephemeral: broadcast::channel(4_096).0,
        lost: Arc::new(Notify::new()),
    };
    let out = n.clone();
    tokio::spawn(async move {
        while !pool.is_closed() {
            let r = listen(&pool, &out).await;
            if pool.is_closed() {
                break;
            }
            match r {
                Ok(()) => {
                    out.lost.notify_one();
                    tracing::warn!("LISTEN connection lost; reconnecting (polling continues)");
                }
                Err(e) => tracing::debug!(error = %e, "LISTEN connection failed; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    n
}

/// Listens until the connection drops (`Ok`) or cannot be made (`Err`).
async fn listen(pool: &PgPool, out: &Notifications) -> Result<(), sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    // Report a lost connection at once; reconnecting is this task's loop's business.
    l.eager_reconnect(false);
    l.listen_all([CHANGES, EPHEMERAL]).await?;
    loop {
        // `try_recv` reports a lost connection as `None` (where `recv` would silently
        // reconnect), or as the server's error (an administrator shutdown), so the node
        // hears of it at once.
        let n = match l.try_recv().await {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection ended");
                return Ok(());
            }
        };
        if n.channel() == CHANGES {
            out.changed.notify_one();
        } else if let Ok(e) = Event::from_stored_json(n.payload()) {
            // No receivers is fine: nobody subscribed on this node right now.
            let _ = out.ephemeral.send(Arc::new(e));
        }
    }
}
