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
    let (mut c, inbox) = Conn::open(state.clone(), Some("127.0.0.1"), None);
    let mut waiting = std::collections::VecDeque::new();
    for t in texts {
        c.on_text(t).await;
        c.take_waiting(&inbox, &mut waiting);
    }
    let deadline = tokio::time::Instant::now() + max;
    loop {
        c.take_waiting(&inbox, &mut waiting);
        let woke = tokio::select! {
            () = inbox.next(&mut waiting) => {
                c.on_messages(&mut waiting);
                true
            }
            _ = tokio::time::sleep(quiet) => false,
        };
        if !woke || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    c.forget_subs();
    std::mem::take(&mut c.out)
}
