//! A node's stores, built from its [`Config`]: L1 under `data_dir`, and L2 either the
//! shared PostgreSQL (with the poller) or an unbounded embedded redb beside L1.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use eventstore::{EventId, EventStore};
use layer1::{Durability, RedbConfig, RedbStore};
use layer2::{PgConfig, PgStore};
use serde::Serialize;

use crate::config::Config;
use crate::tiered::{Tiered, TieredConfig};

/// The authority behind L1.
#[derive(Debug, Clone)]
pub enum L2 {
    /// Single node: an unbounded redb file, `l2.redb`.
    Embedded(Arc<RedbStore>),
    /// Cluster: the shared PostgreSQL.
    Postgres(Arc<PgStore>),
}

/// A running node's stores.
#[derive(Debug)]
pub struct Node {
    pub config: Config,
    pub tiered: Arc<Tiered>,
    pub l2: L2,
    /// The operator's rulings as L2 held them at start (the relay follows changes).
    pub rulings: eventstore::Rulings,
}

/// What `/health` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// True when the node can serve: L1 works, and L2 answers or reads may be served
    /// from L1 alone meanwhile.
    pub serving: bool,
    /// True while L2 is unreachable and L1 answers alone (writes go to the outbox).
    pub degraded: bool,
    /// Events in the outbox, waiting for L2.
    pub outbox: u64,
    pub l1: Part,
    pub l2: Part,
    pub poller: Poller,
}

#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Poller {
    /// "embedded" (no poller needed), "healthy" or "unhealthy".
    pub state: &'static str,
    pub lag_ms: u64,
}

impl Part {
    fn of<T, E: std::fmt::Display>(r: Result<T, E>) -> Part {
        match r {
            Ok(_) => Part {
                ok: true,
                error: None,
            },
            Err(e) => Part {
                ok: false,
                error: Some(e.to_string()),
            },
        }
    }
}

impl Node {
    /// Opens L1 and L2, warms L1, and starts the poller (cluster mode).
    pub async fn open(config: Config) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let mut tiered_config = TieredConfig {
            poll_frequency: config.poll_frequency,
            poll_overlap: config.poll_overlap,
            warm_events: config.warm_events,
            serve_degraded: config.serve_degraded,
            ..TieredConfig::default()
        };
        let (l2, tiered) = match &config.database_url {
            Some(url) => {
                let l1 = open_l1(&config)?;
                let mut pg = PgConfig::new(url);
                pg.max_connections = config.pg_max_connections;
                pg.writers = config.pg_writers;
                let pg = Arc::new(
                    PgStore::connect(pg)
                        .await
                        .context("cannot connect to the PostgreSQL L2 (check --database-url)")?,
                );
                if config.outbox_max_bytes > 0 {
                    let path = config.data_dir.join("outbox.redb");
                    let outbox = layer1::Outbox::open(&path, config.outbox_max_bytes)
                        .with_context(|| format!("cannot open the outbox at {}", path.display()))?;
                    if !outbox.is_empty() {
                        tracing::info!(
                            events = outbox.len(),
                            "outbox holds events from before; replaying them into L2"
                        );
                    }
                    tiered_config.outbox = Some(Arc::new(outbox));
                }
                let t = Tiered::start(l1, pg.clone(), Some(pg.clone()), tiered_config)
                    .await
                    .context("cannot start the tiered store")?;
                (L2::Postgres(pg), t)
            }
            None => {
                let path = config.data_dir.join("l2.redb");
                let mut l2 = RedbConfig::new(&path);
                l2.event_cache_bytes = cache_bytes(&config);
                let l2 =
                    Arc::new(RedbStore::open(l2).with_context(|| {
                        format!("cannot open embedded L2 at {}", path.display())
                    })?);
                let t = if config.embedded_l1 {
                    let l1 = open_l1(&config)?;
                    Tiered::start(l1, l2.clone(), None, tiered_config).await
                } else {
                    drop_stale_l1(&config.data_dir);
                    Tiered::start_single(l2.clone(), tiered_config).await
                }
                .context("cannot start the tiered store")?;
                (L2::Embedded(l2), t)
            }
        };
        let rulings = tiered
            .rulings_since(0)
            .await
            .context("cannot read the operator's rulings from L2")?
            .unwrap_or_default();
        Ok(Node {
            config,
            tiered,
            l2,
            rulings,
        })
    }

    /// L1's byte budget; 0 when one unbounded embedded file serves both tiers.
    pub fn l1_budget(&self) -> u64 {
        if self.tiered.single() {
            0
        } else {
            self.config.l1_max_bytes
        }
    }

    /// The embedded L2's decoded-event cache, when it is a file of its own beside L1
    /// (`embedded_l1`); one file serving both tiers reports its cache as L1's.
    pub fn l2_event_cache(&self) -> Option<layer1::EventCacheTotals> {
        match &self.l2 {
            L2::Embedded(s) if !self.tiered.single() => Some(s.event_cache()),
            _ => None,
        }
    }

    /// The store the relay serves from.
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.tiered.clone()
    }

    /// L2 itself, the authority (export and stats read it without touching L1).
    pub fn l2_store(&self) -> Arc<dyn EventStore> {
        match &self.l2 {
            L2::Embedded(s) => s.clone(),
            L2::Postgres(pg) => pg.clone(),
        }
    }

    /// Checks each part with a real read, within a couple of seconds.
    pub async fn health(&self) -> Health {
        let probe = [EventId([0; 32])];
        let limit = Duration::from_secs(2);
        let timed_out = |_| "no answer within 2 s".to_string();
        let l1 = tokio::time::timeout(limit, self.tiered.l1().contains(&probe))
            .await
            .map_err(timed_out)
            .and_then(|r| r.map_err(|e| e.to_string()));
        let l2 = match &self.l2 {
            L2::Embedded(s) => tokio::time::timeout(limit, s.contains(&probe))
                .await
                .map_err(timed_out)
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            // While the breaker is open its probe is already asking: no second wait.
            L2::Postgres(_) if self.tiered.degraded() => {
                Err("unreachable (circuit open)".to_string())
            }
            L2::Postgres(pg) => tokio::time::timeout(limit, pg.db_now())
                .await
                .map_err(timed_out)
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        };
        let (l1, l2) = (Part::of(l1), Part::of(l2));
        let stats = self.tiered.stats();
        let state = match (&self.l2, self.tiered.window_trusted()) {
            (L2::Embedded(_), _) => "embedded",
            (L2::Postgres(_), true) => "healthy",
            (L2::Postgres(_), false) => "unhealthy",
        };
        let degraded = !l2.ok;
        Health {
            serving: l1.ok && (l2.ok || self.config.serve_degraded),
            degraded,
            outbox: self.tiered.outbox().map_or(0, |o| o.len()),
            l1,
            l2,
            poller: Poller {
                state,
                lag_ms: stats.poll_lag_ms.load(std::sync::atomic::Ordering::Relaxed),
            },
        }
    }

    /// Stops the poller and closes the stores once nothing else holds them. Every
    /// acknowledged write is already durable; this lets queued ones finish.
    pub async fn close(self) {
        let Node { tiered, l2, .. } = self;
        if let Err(e) = tiered.keep_routes_now().await {
            tracing::warn!(error = %e, "query route counts not kept in L1");
        }
        tiered.shutdown();
        let l1 = tiered.l1().clone();
        let single = tiered.single();
        drop(tiered);
        if single {
            // One file serves both tiers: it is closed once, as the embedded L2.
            drop(l1);
        } else {
            close_when_free(l1, "L1").await;
        }
        match l2 {
            L2::Embedded(s) => close_when_free(s, "embedded L2").await,
            L2::Postgres(pg) => {
                for _ in 0..500 {
                    if Arc::strong_count(&pg) == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                match Arc::try_unwrap(pg) {
                    Ok(pg) => pg.close().await,
                    Err(_) => tracing::warn!("PostgreSQL L2 still in use at shutdown"),
                }
            }
        }
    }
}

/// Removes an L1 file left from running with `embedded_l1 = true` (or from before
/// one file served both tiers). Kept, it would go stale while `l2.redb` changes without
/// it, and a later start with `embedded_l1 = true` would resume it as a restart (its
/// cursor is there) and serve what it held: deleted and replaced events back, new ones
/// hidden. It is a cache: removing it loses nothing; a new one warms from `l2.redb`.
fn drop_stale_l1(data_dir: &std::path::Path) {
    for name in ["l1.redb", "l1.repair-needed"] {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                "removed: l2.redb serves as both tiers (embedded_l1 = false)"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale L1 file")
            }
        }
    }
}

/// `event_cache_bytes` as the store takes it (a budget past the address space: all).
fn cache_bytes(config: &Config) -> usize {
    usize::try_from(config.event_cache_bytes).unwrap_or(usize::MAX)
}

/// Opens the bounded L1 file under `data_dir`.
fn open_l1(config: &Config) -> anyhow::Result<Arc<RedbStore>> {
    // Without a synced commit per batch, L1 relies on the poller to read again what a
    // crash took from it (see `layer1::Durability::Eventual`): only with PostgreSQL.
    let durable = config.l1_durable.unwrap_or(config.database_url.is_none());
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::Eventual
    };
    let l1_path = config.data_dir.join("l1.redb");
    let mut l1 = RedbConfig::new(&l1_path)
        .max_bytes(config.l1_max_bytes)
        .durability(durability);
    l1.event_cache_bytes = cache_bytes(config);
    let l1 = Arc::new(
        RedbStore::open(l1).with_context(|| format!("cannot open L1 at {}", l1_path.display()))?,
    );
    Ok(l1)
}

/// Closes a redb store once background tasks have let go of it (they stop on shutdown;
/// a poll or promotion in flight finishes first, so this waits up to 10 s).
async fn close_when_free(mut store: Arc<RedbStore>, what: &str) {
    for _ in 0..500 {
        match Arc::try_unwrap(store) {
            Ok(s) => {
                if let Err(e) = s.close().await {
                    tracing::warn!(error = %e, "closing {what} failed");
                }
                return;
            }
            Err(s) => store = s,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("{what} still in use at shutdown; dropping it (its writer drains on drop)");
}
