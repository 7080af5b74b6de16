//! A plain NIP-01 WebSocket client and real relay nodes on `127.0.0.1:0`, for the
//! end-to-end tests. Everything goes over sockets; nothing calls the relay's internals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{Event, EventBuilder, Keys, Kind};
use futures_util::{SinkExt, StreamExt};
use layer2_relay::Node;
use layer2_relay::config::{Config, Limits};
use layer2_relay::relay::{self, AppState};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A relay node serving on a loopback port.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    running: relay::Running,
    pub dir: Option<tempfile::TempDir>,
}

impl TestRelay {
    /// A single node with an embedded L2 in a fresh directory.
    pub async fn embedded(limits: Limits) -> TestRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            l1_max_bytes: 8 << 20,
            l1_durable: Some(false),
            limits,
            ..Config::default()
        };
        let mut r = TestRelay::start(config).await;
        r.dir = Some(dir);
        r
    }

    /// A node with the given configuration (its `listen` is ignored: port 0).
    pub async fn start(config: Config) -> TestRelay {
        let node = Node::open(config).await.expect("open node");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = relay::spawn(node, listener).expect("serve");
        TestRelay {
            addr: running.addr,
            state: running.state.clone(),
            running,
            dir: None,
        }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// An HTTP GET on this node: (status, headers, body).
    pub async fn get(&self, path: &str, accept: &str) -> (u16, String, String) {
        http_get(self.addr, path, accept).await
    }

    /// Stops serving and waits for the server task (connections get a close frame).
    pub async fn stop(&mut self) {
        self.running.stop().await.expect("server stops cleanly");
    }

    /// Stops serving (if not yet) and closes the node, so another can open its files.
    pub async fn close(mut self) {
        self.stop().await;
        let mut state = self.state.clone();
        drop(self);
        // Background tasks (the rulings follower, a query finishing) hold the state for
        // a moment at a time: wait for them to let go.
        for _ in 0..250 {
            match Arc::try_unwrap(state) {
                Ok(s) => {
                    // The rest of the state (its handle on the store too) goes first.
                    let node = s.node.clone();
                    drop(s);
                    let node = Arc::try_unwrap(node).expect("sole node");
                    node.close().await;
                    return;
                }
                Err(s) => state = s,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the relay's state is still held 5 s after it stopped");
    }
}

/// An embedded node with `limits`, fresh keys, and one client connected to it.
pub async fn relay_with(limits: Limits) -> (TestRelay, Keys, Client) {
    let relay = TestRelay::embedded(limits).await;
    let keys = Keys::generate().expect("keys");
    let client = relay.client().await;
    (relay, keys, client)
}

/// A minimal HTTP/1.1 GET: (status, headers, body).
pub async fn http_get(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    read_response(&mut s).await
}

/// A minimal HTTP/1.1 POST with extra header lines: (status, headers, body).
pub async fn http_post(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    read_response(&mut s).await
}

/// Reads a whole HTTP/1.1 response (the server closes): (status, headers, body).
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("HTTP answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The URL connected to, and the NIP-42 challenge the relay sent on connect.
    pub url: String,
    pub challenge: String,
}

impl Client {
    /// Connects and takes the relay's NIP-42 `AUTH` challenge, which comes first.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        let mut c = Client {
            ws,
            url: url.to_string(),
            challenge: String::new(),
        };
        let first = c.recv().await;
        assert_eq!(first[0], "AUTH", "the relay's first message: {first}");
        c.challenge = first[1].as_str().expect("challenge string").to_string();
        c
    }

    /// A NIP-42 `AUTH` event for this connection, signed by `keys`.
    pub fn auth_event(&self, keys: &Keys) -> Event {
        EventBuilder::new(Kind(22242), "")
            .tag(["relay", self.url.as_str()])
            .tag(["challenge", self.challenge.as_str()])
            .sign(keys)
    }

    /// Authenticates as `keys` (NIP-42) and returns the `OK` (accepted, message).
    pub async fn auth(&mut self, keys: &Keys) -> (bool, String) {
        let e = self.auth_event(keys);
        self.send(&format!("[\"AUTH\",{}]", e.as_json())).await;
        self.ok_for(&e.id().to_string()).await
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// The next text message as JSON; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT)
            .await
            .expect("a message from the relay in time")
    }

    /// The next text message within `wait`, if any.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match m.expect("websocket read") {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("relay sends JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Whether the relay closed the connection (reads until the stream ends).
    pub async fn is_closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Publishes and returns the `OK` (accepted, message).
    pub async fn publish(&mut self, e: &Event) -> (bool, String) {
        self.send(&format!("[\"EVENT\",{}]", e.as_json())).await;
        self.ok_for(&e.id().to_string()).await
    }

    /// Waits for the `OK` about `id`.
    pub async fn ok_for(&mut self, id: &str) -> (bool, String) {
        loop {
            let v = self.recv().await;
            if v[0] == "OK" && v[1] == id {
                return (
                    v[2].as_bool().expect("bool"),
                    v[3].as_str().unwrap_or("").to_string(),
                );
            }
        }
    }

    /// Sends a REQ and collects the stored events' ids up to `EOSE`.
    pub async fn req(&mut self, sub: &str, filters: &[Value]) -> Vec<String> {
        let mut msg = vec![Value::from("REQ"), Value::from(sub)];
        msg.extend(filters.iter().cloned());
        self.send(&Value::Array(msg).to_string()).await;
        self.until_eose(sub).await
    }

    /// Collects events of `sub` until its `EOSE`; panics on `CLOSED`.
    pub async fn until_eose(&mut self, sub: &str) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let v = self.recv().await;
            match v[0].as_str() {
                Some("EVENT") if v[1] == sub => {
                    ids.push(v[2]["id"].as_str().expect("id").to_string())
                }
                Some("EOSE") if v[1] == sub => return ids,
                Some("CLOSED") if v[1] == sub => panic!("subscription closed: {v}"),
                _ => {}
            }
        }
    }

    /// The next message, which must be of type `kind`; returns it.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v[0], kind, "expected {kind}, got {v}");
        v
    }

    /// No message arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(v) = self.try_recv(wait).await {
            panic!("unexpected message: {v}");
        }
    }
}

/// A signed text note with a unique content.
pub fn note(keys: &Keys, content: &str) -> Event {
    EventBuilder::text_note(content).sign(keys)
}

/// A signed event of `kind` with `tags`.
pub fn event(keys: &Keys, kind: u16, content: &str, tags: &[&[&str]]) -> Event {
    EventBuilder::new(Kind(kind), content)
        .tags(
            tags.iter()
                .map(|t| t.iter().map(|s| s.to_string()).collect()),
        )
        .sign(keys)
}
