//! Configuration: a TOML file (`--config`), environment variables and flags, validated
//! once into a typed [`Config`]. Precedence: flag, then environment, then file, then the
//! default documented on each field. Every option is described in `layer2.toml`.

pub mod access;
mod file;
pub mod retention;
pub mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use access::Access;
pub use file::FileConfig;
pub use retention::Retention;

/// Limits on what clients may send and ask, advertised in NIP-11 `limitation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes. Default 256 KiB. Larger messages
    /// get a `NOTICE`; beyond 4× this the connection is closed (code 1009).
    pub max_message_bytes: usize,
    /// Largest event (its JSON), in bytes. Default 128 KiB.
    pub max_event_bytes: usize,
    /// Open subscriptions per connection. Default 32.
    pub max_subscriptions: usize,
    /// Filters per REQ or COUNT. Default 16.
    pub max_filters: usize,
    /// A filter's `limit` is clamped to this. Default 5,000.
    pub max_limit: usize,
    /// The `limit` of a filter that gives none. Default 500.
    pub default_limit: usize,
    /// Tags per event. Default 2,000.
    pub max_event_tags: usize,
    /// Length of a subscription id. Default 64 (NIP-01).
    pub max_subid_length: usize,
    /// How far in the past `created_at` may lie, in seconds; 0 accepts any age. Default 0.
    pub created_at_lower_limit: u64,
    /// How far in the future `created_at` may lie, in seconds. Default 900 (15 minutes).
    pub created_at_upper_limit: u64,
    /// EVENT messages per second per connection (burst: twice this). Default 1,000.
    pub events_per_second: u32,
    /// REQ and COUNT messages per second per connection (burst: twice this). Default 50.
    pub reqs_per_second: u32,
    /// Open WebSocket connections per node. Default 10,000.
    pub max_connections: usize,
    /// Messages queued for one connection before its live subscriptions are closed as
    /// too slow. Default 4,096.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 256 << 10,
            max_event_bytes: 128 << 10,
            max_subscriptions: 32,
            max_filters: 16,
            max_limit: 5_000,
            default_limit: 500,
            max_event_tags: 2_000,
            max_subid_length: 64,
            created_at_lower_limit: 0,
            created_at_upper_limit: 900,
            events_per_second: 1_000,
            reqs_per_second: 50,
            max_connections: 10_000,
            outbound_queue: 4_096,
        }
    }
}

/// NIP-11 identity of the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Default "layer2".
    pub name: String,
    pub description: String,
    pub contact: String,
    /// The operator's public key (hex), if given.
    pub pubkey: String,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to serve. Default `127.0.0.1:7777`.
    pub listen: SocketAddr,
    /// Where L1 (and the embedded L2) live. Default `./data`.
    pub data_dir: PathBuf,
    /// PostgreSQL L2; `None` runs the embedded L2 under `data_dir`. Default none.
    pub database_url: Option<String>,
    /// L1's byte budget. Default 512 MiB.
    pub l1_max_bytes: u64,
    /// Sync every L1 commit to disk (`Some(true)`, `immediate`) or only those that
    /// record the poller's cursor (`Some(false)`, `eventual`). `None` (the default):
    /// eventual with PostgreSQL, where a crash rolls L1 back to its last synced cursor
    /// and the poller reads everything since again; immediate for an embedded L1, which
    /// has no poller to repair it.
    pub l1_durable: Option<bool>,
    /// With the embedded L2: also keep a separate bounded L1 file (`l1.redb`) in front
    /// of it. Default false: one unbounded redb file (`l2.redb`) serves both tiers, so
    /// every event is written once, not twice; `l1_max_bytes` and `l1_durability` then
    /// do not apply. Ignored with a PostgreSQL L2 (L1 is always kept there).
    pub embedded_l1: bool,
    /// How often the poller reads L2's change feed. Default 250 ms.
    pub poll_frequency: Duration,
    /// The poller's look-back, in multiples of `poll_frequency`. Default 4.
    pub poll_overlap: u32,
    /// Events a fresh L1 loads from L2 at start. Default 100,000.
    pub warm_events: usize,
    /// PostgreSQL connections per node. Default 16.
    pub pg_max_connections: u32,
    /// Write transactions a node runs against PostgreSQL at once for events with an
    /// address or deleting something; plain events (most) have a writer of their own
    /// besides, whose batches commit in one statement. Default 1: the writer
    /// takes every event waiting when it starts a transaction, so batches grow with the
    /// load, and fewer, larger batches cost both sides less per event (closed-loop
    /// bench, 2 cores: 1 writer 2,478 events/s at 286 µs node and 204 µs PostgreSQL
    /// CPU per event; 4 writers 1,964 at 373 and 376). The nodes of a cluster already
    /// write concurrently.
    pub pg_writers: usize,
    /// While PostgreSQL is unreachable, answer reads from L1 alone (`serve`, the
    /// default: answers can miss events L1 never held) or refuse them (`refuse`).
    pub serve_degraded: bool,
    /// Bytes of events the outbox keeps while PostgreSQL is unreachable; past it, writes
    /// are refused (`error: storage unavailable`). 0 turns the outbox off: writes are
    /// then refused during an outage. Default 256 MiB.
    pub outbox_max_bytes: u64,
    /// Decoded events each store file keeps in memory (`layer1::RedbConfig::
    /// event_cache_bytes`): the events read most are served without a lookup and a
    /// decode. 0 turns it off. Default 32 MiB.
    pub event_cache_bytes: u64,
    pub info: Info,
    pub limits: Limits,
    /// Who may write and read (NIP-42, NIP-70, private kinds, lists, NIP-86 admins).
    pub access: Access,
    /// Retention rules and cluster maintenance (`[maintenance]`, `[[retention]]`).
    pub retention: Retention,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            l1_max_bytes: 512 << 20,
            l1_durable: None,
            embedded_l1: false,
            poll_frequency: Duration::from_millis(250),
            poll_overlap: 4,
            warm_events: 100_000,
            pg_max_connections: 16,
            pg_writers: 1,
            serve_degraded: true,
            outbox_max_bytes: 256 << 20,
            event_cache_bytes: 32 << 20,
            info: Info {
                name: "layer2".into(),
                ..Info::default()
            },
            limits: Limits::default(),
            access: Access::default(),
            retention: Retention::default(),
        }
    }
}

/// Flags and environment variables (a flag wins over its variable).
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    /// TOML configuration file (see layer2.toml for every option).
    #[arg(long, global = true, env = "LAYER2_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to serve on [default: 127.0.0.1:7777].
    #[arg(long, global = true, env = "LAYER2_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Where L1 (and the embedded L2) live [default: ./data].
    #[arg(long, global = true, env = "LAYER2_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL L2 (also read from DATABASE_URL); absent: embedded L2 [default: none].
    #[arg(long, global = true, env = "LAYER2_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// L1 byte budget, such as 512MiB or 2GiB [default: 512MiB].
    #[arg(long, global = true, env = "LAYER2_L1_MAX_BYTES", value_name = "SIZE")]
    pub l1_max_bytes: Option<String>,
    /// How often the poller reads L2's change feed, such as 250ms or 1s [default: 250ms].
    #[arg(
        long,
        global = true,
        env = "LAYER2_POLL_FREQUENCY",
        value_name = "DURATION"
    )]
    pub poll_frequency: Option<String>,
    /// The poller's look-back as a multiple of the poll frequency [default: 4].
    #[arg(long, global = true, env = "LAYER2_POLL_OVERLAP", value_name = "N")]
    pub poll_overlap: Option<u32>,
    /// Events a fresh L1 loads from L2 at start [default: 100000].
    #[arg(long, global = true, env = "LAYER2_WARM_EVENTS", value_name = "N")]
    pub warm_events: Option<usize>,
    /// EVENT messages per second per connection [default: 1000].
    #[arg(
        long,
        global = true,
        env = "LAYER2_EVENTS_PER_SECOND",
        value_name = "N"
    )]
    pub events_per_second: Option<u32>,
    /// REQ and COUNT messages per second per connection [default: 50].
    #[arg(long, global = true, env = "LAYER2_REQS_PER_SECOND", value_name = "N")]
    pub reqs_per_second: Option<u32>,
    /// While PostgreSQL is unreachable: `serve` reads from L1 alone, or `refuse` them
    /// [default: serve].
    #[arg(
        long,
        global = true,
        env = "LAYER2_DEGRADED_READS",
        value_name = "serve|refuse"
    )]
    pub degraded_reads: Option<String>,
    /// Outbox bound for writes during a PostgreSQL outage; 0 turns it off
    /// [default: 256MiB].
    #[arg(
        long,
        global = true,
        env = "LAYER2_OUTBOX_MAX_BYTES",
        value_name = "BYTES"
    )]
    pub outbox_max_bytes: Option<String>,
    /// Decoded events kept in memory per store file, such as 32MiB; 0: none
    /// [default: 32MiB].
    #[arg(
        long,
        global = true,
        env = "LAYER2_EVENT_CACHE_BYTES",
        value_name = "SIZE"
    )]
    pub event_cache_bytes: Option<String>,
    /// URLs clients reach this node by, comma-separated, for NIP-42 and NIP-98
    /// [default: the Host header of each request].
    #[arg(long, global = true, env = "LAYER2_RELAY_URLS", value_name = "URL,...")]
    pub relay_urls: Option<String>,
    /// Public keys (hex) allowed to call the NIP-86 management API, comma-separated
    /// [default: none].
    #[arg(long, global = true, env = "LAYER2_ADMINS", value_name = "PUBKEY,...")]
    pub admins: Option<String>,
}

/// A comma-separated list, without empty items.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Options {
    /// Layers flags and environment over the file over the defaults, and validates.
    pub fn resolve(&self) -> Result<Config, String> {
        let file = match &self.config {
            Some(p) => FileConfig::read(p)?,
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        apply_file(&mut c, &file)?;
        if let Some(v) = &self.listen {
            c.listen = parse_listen(v)?;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        let env_url = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
        if let Some(v) = self.database_url.clone().or(env_url) {
            c.database_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = &self.l1_max_bytes {
            c.l1_max_bytes = units::parse_bytes(v).map_err(|e| format!("--l1-max-bytes: {e}"))?;
        }
        if let Some(v) = &self.poll_frequency {
            c.poll_frequency =
                units::parse_duration(v).map_err(|e| format!("--poll-frequency: {e}"))?;
        }
        if let Some(v) = self.poll_overlap {
            c.poll_overlap = v;
        }
        if let Some(v) = self.warm_events {
            c.warm_events = v;
        }
        if let Some(v) = self.events_per_second {
            c.limits.events_per_second = v;
        }
        if let Some(v) = self.reqs_per_second {
            c.limits.reqs_per_second = v;
        }
        if let Some(v) = &self.degraded_reads {
            c.serve_degraded = parse_degraded_reads(v)?;
        }
        if let Some(v) = &self.outbox_max_bytes {
            c.outbox_max_bytes =
                units::parse_bytes(v).map_err(|e| format!("--outbox-max-bytes: {e}"))?;
        }
        if let Some(v) = &self.event_cache_bytes {
            c.event_cache_bytes =
                units::parse_bytes(v).map_err(|e| format!("--event-cache-bytes: {e}"))?;
        }
        if let Some(v) = &self.relay_urls {
            c.access.relay_urls = list(v);
        }
        if let Some(v) = &self.admins {
            c.access.admins = access::parse_pubkeys("--admins", &list(v))?;
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_degraded_reads(s: &str) -> Result<bool, String> {
    match s {
        "serve" => Ok(true),
        "refuse" => Ok(false),
        other => Err(format!(
            "degraded_reads: {other:?} is neither \"serve\" nor \"refuse\""
        )),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("listen address {s:?} is not ADDR:PORT (such as 127.0.0.1:7777)"))
}

fn apply_file(c: &mut Config, f: &FileConfig) -> Result<(), String> {
    let ctx = |field: &'static str| move |e: String| format!("config {field}: {e}");
    if let Some(v) = &f.listen {
        c.listen = parse_listen(v)?;
    }
    if let Some(v) = &f.data_dir {
        c.data_dir = PathBuf::from(v);
    }
    if let Some(v) = &f.database_url {
        c.database_url = Some(v.clone()).filter(|s| !s.is_empty());
    }
    if let Some(v) = &f.l1_max_bytes {
        c.l1_max_bytes = v.resolve().map_err(ctx("l1_max_bytes"))?;
    }
    if let Some(v) = &f.l1_durability {
        c.l1_durable = match v.as_str() {
            "auto" => None,
            "immediate" => Some(true),
            "eventual" => Some(false),
            other => {
                return Err(format!(
                    "config l1_durability: {other:?} is not \"auto\", \"immediate\" or \"eventual\""
                ));
            }
        };
    }
    if let Some(v) = f.embedded_l1 {
        c.embedded_l1 = v;
    }
    if let Some(v) = &f.poll_frequency {
        c.poll_frequency = v.resolve().map_err(ctx("poll_frequency"))?;
    }
    if let Some(v) = f.poll_overlap {
        c.poll_overlap = v;
    }
    if let Some(v) = f.warm_events {
        c.warm_events = v;
    }
    if let Some(v) = f.pg_writers {
        c.pg_writers = v;
    }
    if let Some(v) = f.pg_max_connections {
        c.pg_max_connections = v;
    }
    if let Some(v) = &f.degraded_reads {
        c.serve_degraded = parse_degraded_reads(v)?;
    }
    if let Some(v) = &f.outbox_max_bytes {
        c.outbox_max_bytes = v.resolve().map_err(ctx("outbox_max_bytes"))?;
    }
    if let Some(v) = &f.event_cache_bytes {
        c.event_cache_bytes = v.resolve().map_err(ctx("event_cache_bytes"))?;
    }
    let i = &f.info;
    for (dst, src) in [
        (&mut c.info.name, &i.name),
        (&mut c.info.description, &i.description),
        (&mut c.info.contact, &i.contact),
        (&mut c.info.pubkey, &i.pubkey),
    ] {
        if let Some(v) = src {
            dst.clone_from(v);
        }
    }
    f.access.apply(&mut c.access)?;
    retention::apply(&mut c.retention, &f.maintenance, &f.retention)?;
    apply_limits(&mut c.limits, &f.limits)
}

fn apply_limits(l: &mut Limits, f: &file::LimitsFile) -> Result<(), String> {
    let ctx = |field: &'static str| move |e: String| format!("config limits.{field}: {e}");
    if let Some(v) = &f.max_message_bytes {
        l.max_message_bytes = v.resolve().map_err(ctx("max_message_bytes"))? as usize;
    }
    if let Some(v) = &f.max_event_bytes {
        l.max_event_bytes = v.resolve().map_err(ctx("max_event_bytes"))? as usize;
    }
    if let Some(v) = &f.created_at_lower_limit {
        l.created_at_lower_limit = v
            .resolve()
            .map_err(ctx("created_at_lower_limit"))?
            .as_secs();
    }
    if let Some(v) = &f.created_at_upper_limit {
        l.created_at_upper_limit = v
            .resolve()
            .map_err(ctx("created_at_upper_limit"))?
            .as_secs();
    }
    for (dst, src) in [
        (&mut l.max_subscriptions, f.max_subscriptions),
        (&mut l.max_filters, f.max_filters),
        (&mut l.max_limit, f.max_limit),
        (&mut l.default_limit, f.default_limit),
        (&mut l.max_event_tags, f.max_event_tags),
        (&mut l.max_subid_length, f.max_subid_length),
        (&mut l.max_connections, f.max_connections),
        (&mut l.outbound_queue, f.outbound_queue),
    ] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    if let Some(v) = f.events_per_second {
        l.events_per_second = v;
    }
    if let Some(v) = f.reqs_per_second {
        l.reqs_per_second = v;
    }
    Ok(())
}

impl Config {
    /// Checks the values together; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let positive = [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_event_bytes", l.max_event_bytes),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.max_filters", l.max_filters),
            ("limits.max_limit", l.max_limit),
            ("limits.max_subid_length", l.max_subid_length),
            ("limits.max_connections", l.max_connections),
            ("limits.outbound_queue", l.outbound_queue),
            ("limits.events_per_second", l.events_per_second as usize),
            ("limits.reqs_per_second", l.reqs_per_second as usize),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if l.default_limit > l.max_limit {
            return Err("limits.default_limit must not exceed limits.max_limit".into());
        }
        if l.max_event_bytes > l.max_message_bytes {
            return Err("limits.max_event_bytes must not exceed limits.max_message_bytes".into());
        }
        if self.l1_max_bytes < 1 << 20 {
            return Err(format!(
                "l1_max_bytes {} is below the 1 MiB minimum",
                self.l1_max_bytes
            ));
        }
        if self.poll_frequency < Duration::from_millis(10)
            || self.poll_frequency > Duration::from_secs(60)
        {
            return Err("poll_frequency must lie between 10ms and 60s".into());
        }
        if self.pg_writers == 0 || self.pg_writers > 64 {
            return Err("pg_writers must lie between 1 and 64".into());
        }
        if self.poll_overlap == 0 || self.poll_overlap > 100 {
            return Err("poll_overlap must lie between 1 and 100".into());
        }
        if self.pg_max_connections < 2 {
            // One connection is held for LISTEN; queries and writes need the rest.
            return Err("pg_max_connections must be at least 2".into());
        }
        if !self.info.pubkey.is_empty()
            && eventstore::PublicKey::from_hex(&self.info.pubkey).is_err()
        {
            return Err("info.pubkey must be 64 hex characters".into());
        }
        self.access.validate()?;
        self.retention.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_are_the_embedded_node() {
        let c = Options::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7777");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.poll_overlap, 4);
        assert_eq!(c.poll_frequency, Duration::from_millis(250));
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = write(
            "listen = \"0.0.0.0:7001\"\nl1_max_bytes = \"64MiB\"\npoll_frequency = \"1s\"\n\
             event_cache_bytes = \"1MiB\"\n\
             [limits]\nmax_filters = 3\nmax_message_bytes = 65536\nmax_event_bytes = \"32KiB\"\n",
        );
        let o = Options {
            config: Some(f.path().to_path_buf()),
            listen: Some("127.0.0.1:9000".into()),
            ..Options::default()
        };
        let c = o.resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.l1_max_bytes, 64 << 20);
        assert_eq!(c.poll_frequency, Duration::from_secs(1));
        assert_eq!(c.event_cache_bytes, 1 << 20);
        assert_eq!(c.limits.max_filters, 3);
        assert_eq!(c.limits.max_event_bytes, 32 << 10);
    }

    #[test]
    fn mistakes_are_named() {
        let f = write("lisen = \"0.0.0.0:1\"\n");
        let o = Options {
            config: Some(f.path().to_path_buf()),
            ..Options::default()
        };
        assert!(o.resolve().unwrap_err().contains("lisen"));
        let o = Options {
            l1_max_bytes: Some("lots".into()),
            ..Options::default()
        };
        assert!(o.resolve().unwrap_err().contains("--l1-max-bytes"));
        let o = Options {
            event_cache_bytes: Some("lots".into()),
            ..Options::default()
        };
        assert!(o.resolve().unwrap_err().contains("--event-cache-bytes"));
        let o = Options {
            poll_overlap: Some(0),
            ..Options::default()
        };
        assert!(o.resolve().unwrap_err().contains("poll_overlap"));
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/layer2.toml");
        let o = Options {
            config: Some(path.into()),
            ..Options::default()
        };
        let c = o.resolve().unwrap();
        let d = Config::default();
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.l1_max_bytes, d.l1_max_bytes);
        assert_eq!(c.event_cache_bytes, d.event_cache_bytes);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.access, d.access);
        assert_eq!(c.retention, d.retention);
    }

    #[test]
    fn retention_rules_are_read_and_checked() {
        let f = write(
            "[maintenance]\ninterval = \"10m\"\nlog_horizon = \"3d\"\n\
             [[retention]]\nkinds = [7]\nolder_than = \"30d\"\n\
             [[retention]]\nolder_than = \"365d\"\n\
             [[retention]]\nkinds = [1]\nmax_per_author = 500\n",
        );
        let o = Options {
            config: Some(f.path().to_path_buf()),
            ..Options::default()
        };
        let c = o.resolve().unwrap();
        assert_eq!(c.retention.interval, Duration::from_secs(600));
        assert_eq!(c.retention.log_horizon, Duration::from_secs(3 * 86_400));
        assert_eq!(c.retention.rules.len(), 3);
        assert_eq!(c.retention.rules[1].kinds, None);
        assert_eq!(c.retention.rules[2].max_per_author, Some(500));
        assert_eq!(c.retention.rules[2].older_than, None);
        let bad = write("[[retention]]\nkinds = []\nolder_than = \"1d\"\n");
        let o = Options {
            config: Some(bad.path().to_path_buf()),
            ..Options::default()
        };
        assert!(o.resolve().unwrap_err().contains("retention[0].kinds"));
        for (text, says) in [
            (
                "[[retention]]\nkinds = [7]\n",
                "needs older_than, max_per_author",
            ),
            (
                "[[retention]]\nmax_per_author = 0\n",
                "max_per_author must be at least 1",
            ),
        ] {
            let bad = write(text);
            let o = Options {
                config: Some(bad.path().to_path_buf()),
                ..Options::default()
            };
            let e = o.resolve().unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
