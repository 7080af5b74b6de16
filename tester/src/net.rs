//! The tester's only ways into a node: a NIP-01 WebSocket connection and HTTP GETs of
//! `/metrics` on the relay URL's host and port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One WebSocket connection to a relay.
#[derive(Debug)]
pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub url: String,
}

/// Whether connections set `TCP_NODELAY` (see [`set_nodelay`]).
static NODELAY: AtomicBool = AtomicBool::new(true);

/// Whether connections opened from now on set `TCP_NODELAY`. On by default: requests
/// are small and their latency is what is measured. `bench` turns it off, as most
/// clients leave it.
pub fn set_nodelay(on: bool) {
    NODELAY.store(on, Ordering::Relaxed);
}

/// Whether publishers and subscribers connect again when a connection is lost.
static RECONNECT: AtomicBool = AtomicBool::new(false);

/// Whether a lost connection is opened again (a run through node restarts) instead of
/// failing the run.
pub fn set_reconnecting(on: bool) {
    RECONNECT.store(on, Ordering::Relaxed);
}

/// See [`set_reconnecting`].
pub fn reconnecting() -> bool {
    RECONNECT.load(Ordering::Relaxed)
}

/// Whether connections authenticate (NIP-42) as they open (see [`set_auth`]).
static AUTH: AtomicBool = AtomicBool::new(false);

/// Whether connections opened from now on authenticate with NIP-42 AUTH.
pub fn set_auth(on: bool) {
    AUTH.store(on, Ordering::Relaxed);
}

/// tungstenite zero-fills its whole read buffer before every read: at its 128 KiB
/// default that memset was a third of the tester's CPU while 2,000 connections took
/// 200,000 small deliveries a second (`fanout`), leaving less of the shared cores to
/// the node it measures. Larger messages just take more reads.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

impl Conn {
    pub async fn open(url: &str) -> anyhow::Result<Conn> {
        let mut c = Conn::connect(url).await?;
        if AUTH.load(Ordering::Relaxed) {
            c.authenticate().await?;
        }
        Ok(c)
    }

    /// Opens `url` again after a lost connection: every 250 ms, for up to two minutes
    /// (a node restarting, or a network coming back).
    pub async fn reopen(url: &str) -> anyhow::Result<Conn> {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match Conn::open(url).await {
                Ok(c) => return Ok(c),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                }
                Err(e) => {
                    return Err(e.context(format!("{url} did not come back within 2 minutes")));
                }
            }
        }
    }

    /// NIP-42: waits for the relay's challenge, answers it signed by a fresh key, and
    /// waits for the `OK`.
    async fn authenticate(&mut self) -> anyhow::Result<()> {
        let wait = Duration::from_secs(10);
        let challenge = loop {
            let v = self
                .recv(wait)
                .await?
                .with_context(|| format!("{} sent no AUTH challenge", self.url))?;
            if v[0] == "AUTH" {
                break v[1].as_str().unwrap_or("").to_string();
            }
        };
        let keys = eventstore::Keys::generate().map_err(|e| anyhow!("no keys: {e}"))?;
        let e = eventstore::EventBuilder::new(eventstore::Kind(22242), "")
            .tag(["relay", self.url.as_str()])
            .tag(["challenge", challenge.as_str()])
            .sign(&keys);
        self.send(format!("[\"AUTH\",{}]", e.as_json())).await?;
        let id = e.id().to_string();
        loop {
            let v = self
                .recv(wait)
                .await?
                .with_context(|| format!("{} did not answer AUTH", self.url))?;
            if v[0] == "OK" && v[1] == id.as_str() {
                if v[2] == true {
                    return Ok(());
                }
                bail!("{} refused AUTH: {}", self.url, v[3]);
            }
        }
    }

    async fn connect(url: &str) -> anyhow::Result<Conn> {
        let nodelay = NODELAY.load(Ordering::Relaxed);
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), nodelay),
        )
        .await
        .map_err(|_| anyhow!("connecting to {url} timed out"))?
        .with_context(|| format!("cannot connect to {url}"))?;
        Ok(Conn {
            ws,
            url: url.to_string(),
        })
    }

    /// Queues a message (sent on the next flush).
    pub async fn feed(&mut self, text: String) -> anyhow::Result<()> {
        self.ws
            .feed(Message::Text(text.into()))
            .await
            .with_context(|| format!("sending to {}", self.url))
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.ws
            .flush()
            .await
            .with_context(|| format!("sending to {}", self.url))
    }

    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.feed(text).await?;
        self.flush().await
    }

    /// The next relay message as JSON, or `None` after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<Option<Value>> {
        match self.recv_text(wait).await? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .with_context(|| format!("{} sent something that is not JSON", self.url)),
        }
    }

    /// The next text message as it came, or `None` after `wait`.
    pub async fn recv_text(&mut self, wait: Duration) -> anyhow::Result<Option<String>> {
        match tokio::time::timeout(wait, self.next_text()).await {
            Err(_) => Ok(None),
            Ok(t) => Ok(Some(t?.to_string())),
        }
    }

    /// The next text message, however long it takes, without copying it.
    pub async fn next_text(&mut self) -> anyhow::Result<Utf8Bytes> {
        loop {
            let m = match self.ws.next().await {
                None => bail!("{} closed the connection", self.url),
                Some(m) => m.with_context(|| format!("reading from {}", self.url))?,
            };
            match m {
                Message::Text(t) => return Ok(t),
                Message::Close(f) => bail!("{} closed the connection: {f:?}", self.url),
                _ => continue,
            }
        }
    }

    /// Sends a REQ and collects the stored events up to `EOSE`. A `rate-limited:`
    /// refusal is retried after a pause, as a well-behaved client would.
    pub async fn fetch(&mut self, sub: &str, filter: Value) -> anyhow::Result<Vec<Value>> {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.fetch_once(sub, &filter).await? {
                Ok(events) => return Ok(events),
                Err(reason)
                    if reason.starts_with("rate-limited:") && pause < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(reason) => bail!("{}: subscription {sub} closed: {reason}", self.url),
            }
        }
    }

    /// One REQ to `EOSE`, then `CLOSE`: the events, or the `CLOSED` reason.
    pub async fn fetch_once(
        &mut self,
        sub: &str,
        filter: &Value,
    ) -> anyhow::Result<Result<Vec<Value>, String>> {
        let mut events = Vec::new();
        let answer = self
            .req_once(sub, filter, false, |e| events.extend(e))
            .await?;
        Ok(answer.map(|()| events))
    }

    /// [`Conn::fetch_once`] for load loops: the number of events, or the `CLOSED`
    /// reason. An event frame is recognised by its head (`["EVENT",<sub>,`) and not
    /// parsed further: building every event's JSON tree cost the tester about as much
    /// CPU per REQ as the node spent answering it, on the cores the node runs on.
    pub async fn count_once(
        &mut self,
        sub: &str,
        filter: &Value,
    ) -> anyhow::Result<Result<usize, String>> {
        let mut events = 0;
        let answer = self.req_once(sub, filter, true, |_| events += 1).await?;
        Ok(answer.map(|()| events))
    }

    /// One REQ to `EOSE`, then `CLOSE`, handing each event to `event` (`None` for a
    /// frame only recognised by its head, with `by_head`), or the `CLOSED` reason.
    /// Every other message is parsed whole.
    async fn req_once(
        &mut self,
        sub: &str,
        filter: &Value,
        by_head: bool,
        mut event: impl FnMut(Option<Value>),
    ) -> anyhow::Result<Result<(), String>> {
        let head = format!("[\"EVENT\",{},{{", Value::from(sub));
        self.send(serde_json::json!(["REQ", sub, filter]).to_string())
            .await?;
        loop {
            let t = tokio::time::timeout(Duration::from_secs(30), self.next_text())
                .await
                .map_err(|_| anyhow!("{}: no EOSE for {sub} within 30 s", self.url))??;
            if by_head && t.starts_with(head.as_str()) && t.ends_with("}]") {
                event(None);
                continue;
            }
            let mut v: Value = serde_json::from_str(&t)
                .with_context(|| format!("{} sent something that is not JSON", self.url))?;
            match v[0].as_str() {
                Some("EVENT") if v[1] == sub => event(Some(v[2].take())),
                Some("EOSE") if v[1] == sub => break,
                Some("CLOSED") if v[1] == sub => {
                    return Ok(Err(v[2].as_str().unwrap_or("").to_string()));
                }
                _ => {}
            }
        }
        self.send(serde_json::json!(["CLOSE", sub]).to_string())
            .await?;
        Ok(Ok(()))
    }
}

/// `host:port` of a `ws://` or `wss://` URL.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| anyhow!("{url} is not a ws:// URL"))?;
    let hp = rest.split('/').next().unwrap_or(rest);
    Ok(if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:80")
    })
}

/// GET `path` on the relay's host and port: (status, body).
pub async fn http_get(relay_url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let hp = host_port(relay_url)?;
    let fetch = async {
        let mut s = TcpStream::connect(&hp)
            .await
            .with_context(|| format!("cannot connect to {hp}"))?;
        let host = hp.split(':').next().unwrap_or(&hp);
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow!("GET {path} on {hp} timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{hp}{path}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{hp}{path}: no status"))?;
    Ok((status, body.to_string()))
}

/// The node's `/metrics`, as name (with labels) → value.
pub async fn metrics(relay_url: &str) -> anyhow::Result<HashMap<String, f64>> {
    let (status, body) = http_get(relay_url, "/metrics").await?;
    if status != 200 {
        bail!("{relay_url}: /metrics answered {status}");
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_from_the_relay_url() {
        assert_eq!(host_port("ws://127.0.0.1:7001").unwrap(), "127.0.0.1:7001");
        assert_eq!(host_port("ws://node1:7002/").unwrap(), "node1:7002");
        assert_eq!(host_port("ws://relay.example").unwrap(), "relay.example:80");
        assert!(host_port("http://x").is_err());
    }
}
