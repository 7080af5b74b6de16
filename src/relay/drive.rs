//! A connection without a socket: feeds text frames to a real connection of a node and
//! collects what it writes back. For the fuzz targets (`fuzz/`), which drive the whole
//! text path (parsing, limits, policy, verification, the stores) up to the replies.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use super::conn::Conn;

/// Sends `texts` in order on a fresh connection of `state`, then gathers replies until
/// none has come for `quiet` (or `max` passed). Returns every frame written, the NIP-42
/// challenge first. The connection's subscriptions end with it.
pub async fn converse(
    state: &Arc<AppState>,
    texts: &[&str],
    quiet: Duration,
    max: Duration,
) -> Vec<String> {
    let (mut c, mut inbox) = Conn::open(state.clone(), Some("127.0.0.1"));
    for t in texts {
        c.on_text(t).await;
        while c.take_waiting(&mut inbox) {}
    }
    let deadline = tokio::time::Instant::now() + max;
    loop {
        while c.take_waiting(&mut inbox) {}
        let woke = tokio::select! {
            r = inbox.replies.recv() => r.map(|r| c.on_reply(r)).is_some(),
            l = inbox.live.recv() => l.map(|l| c.on_live(l)).is_some(),
            _ = tokio::time::sleep(quiet) => false,
        };
        if !woke || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    c.forget_subs();
    std::mem::take(&mut c.out)
}
