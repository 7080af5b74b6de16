//! The outbox (DESIGN.md §5b): verified events accepted while L2 is unreachable, kept
//! durably beside L1 until L2 has committed them. A redb file of its own, written by one
//! thread that groups concurrent appends into one durable commit; readers take their
//! own snapshots. Bounded in bytes: past the bound, appends are refused.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstore::{Event, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::error::backend;
use crate::write::decode;

/// Event JSON by append order.
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Appends grouped into one commit at most.
const MAX_GROUP: usize = 1_000;

enum Request {
    Append(Event, oneshot::Sender<Result<(), StoreError>>),
    /// Removes every entry up to and including this sequence number.
    Remove(u64, oneshot::Sender<Result<(), StoreError>>),
}

/// A durable, bounded queue of events waiting for L2.
pub struct Outbox {
    db: Arc<Database>,
    tx: mpsc::Sender<Request>,
    path: PathBuf,
    max_bytes: u64,
    bytes: Arc<AtomicU64>,
    len: Arc<AtomicU64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

/// The cost of one entry against the bound: its JSON and its key.
fn cost(json_len: usize) -> u64 {
    json_len as u64 + 8
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, holding at most `max_bytes` of events.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Outbox, StoreError> {
        let path = path.into();
        let db = Arc::new(Database::create(&path).map_err(backend)?);
        let (mut bytes, mut len, mut next) = (0, 0, 1);
        {
            let txn = db.begin_write().map_err(backend)?;
            {
                let t = txn.open_table(QUEUE).map_err(backend)?;
                for entry in t.iter().map_err(backend)? {
                    let (k, v) = entry.map_err(backend)?;
                    bytes += cost(v.value().len());
                    len += 1;
                    next = k.value() + 1;
                }
            }
            txn.commit().map_err(backend)?;
        }
        let bytes = Arc::new(AtomicU64::new(bytes));
        let len = Arc::new(AtomicU64::new(len));
        let (tx, rx) = mpsc::channel(4_096);
        let writer = Writer {
            db: db.clone(),
            next,
            bytes: bytes.clone(),
            len: len.clone(),
        };
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Outbox {
            db,
            tx,
            path,
            max_bytes,
            bytes,
            len,
        })
    }

    /// Appends `e`, durably: returns once its commit is on disk. Refused with
    /// `Unavailable` when the outbox is full.
    pub async fn append(&self, e: &Event) -> Result<(), StoreError> {
        if self.bytes.load(Ordering::SeqCst) + cost(e.json_len()) > self.max_bytes {
            return Err(StoreError::Unavailable(
                "storage unavailable: L2 is unreachable and the outbox is full".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Append(e.clone(), tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The oldest `n` entries, in append order: `(sequence, event)`.
    pub async fn peek(&self, n: usize) -> Result<Vec<(u64, Event)>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(QUEUE).map_err(backend)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(backend)?.take(n) {
                let (k, v) = entry.map_err(backend)?;
                out.push((k.value(), decode(v.value())?));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Removes every entry up to and including `seq` (L2 has committed them).
    pub async fn remove_through(&self, seq: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Remove(seq, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Events waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting (against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

struct Writer {
    db: Arc<Database>,
    next: u64,
    bytes: Arc<AtomicU64>,
    len: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let next = self.next;
            match self.commit(&group) {
                Ok((next, bytes, len)) => {
                    self.next = next;
                    self.bytes.store(bytes, Ordering::SeqCst);
                    self.len.store(len, Ordering::SeqCst);
                    for r in group {
                        let tx = match r {
                            Request::Append(_, tx) | Request::Remove(_, tx) => tx,
                        };
                        let _ = tx.send(Ok(()));
                    }
                }
                Err(e) => {
                    self.next = next;
                    tracing::error!(error = %e, "outbox commit failed");
                    for r in group {
                        let tx = match r {
                            Request::Append(_, tx) | Request::Remove(_, tx) => tx,
                        };
                        let _ = tx.send(Err(StoreError::Backend(e.to_string().into())));
                    }
                }
            }
        }
    }

    /// One durable transaction for the whole group; returns the next sequence number and
    /// the new byte and entry counts.
    fn commit(&self, group: &[Request]) -> Result<(u64, u64, u64), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut next = self.next;
        let mut bytes = self.bytes.load(Ordering::SeqCst);
        let mut len = self.len.load(Ordering::SeqCst);
        {
            let mut t = txn.open_table(QUEUE).map_err(backend)?;
            for r in group {
                match r {
                    Request::Append(e, _) => {
                        t.insert(next, e.as_json().as_bytes()).map_err(backend)?;
                        next += 1;
                        bytes += cost(e.json_len());
                        len += 1;
                    }
                    Request::Remove(seq, _) => {
                        let mut freed = 0;
                        let mut n = 0;
                        t.retain_in(..=*seq, |_, v| {
                            freed += cost(v.len());
                            n += 1;
                            false
                        })
                        .map_err(backend)?;
                        bytes = bytes.saturating_sub(freed);
                        len = len.saturating_sub(n);
                    }
                }
            }
        }
        txn.commit().map_err(backend)?;
        Ok((next, bytes, len))
    }
}
