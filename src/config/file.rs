//! The TOML configuration file (`--config`): every field optional, unknown fields are
//! an error (a typo must not silently fall back to a default). See `layer2.toml`.

use serde::Deserialize;

/// A byte size: `524288` or `"512MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn resolve(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => super::units::parse_bytes(s),
        }
    }
}

/// A duration: `2` (seconds) or `"250ms"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Span {
    Seconds(u64),
    Text(String),
}

impl Span {
    pub fn resolve(&self) -> Result<std::time::Duration, String> {
        match self {
            Span::Seconds(n) => Ok(std::time::Duration::from_secs(*n)),
            Span::Text(s) => super::units::parse_duration(s),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub l1_max_bytes: Option<Size>,
    pub l1_durability: Option<String>,
    pub embedded_l1: Option<bool>,
    pub poll_frequency: Option<Span>,
    pub poll_overlap: Option<u32>,
    pub warm_events: Option<usize>,
    pub pg_max_connections: Option<u32>,
    pub pg_writers: Option<usize>,
    pub degraded_reads: Option<String>,
    pub outbox_max_bytes: Option<Size>,
    pub event_cache_bytes: Option<Size>,
    #[serde(default)]
    pub info: InfoFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub access: super::access::AccessFile,
    #[serde(default)]
    pub maintenance: super::retention::MaintenanceFile,
    #[serde(default)]
    pub retention: Vec<super::retention::RuleFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoFile {
    pub name: Option<String>,
    pub description: Option<String>,
    pub contact: Option<String>,
    pub pubkey: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_message_bytes: Option<Size>,
    pub max_event_bytes: Option<Size>,
    pub max_subscriptions: Option<usize>,
    pub max_filters: Option<usize>,
    pub max_limit: Option<usize>,
    pub default_limit: Option<usize>,
    pub max_event_tags: Option<usize>,
    pub max_subid_length: Option<usize>,
    pub created_at_lower_limit: Option<Span>,
    pub created_at_upper_limit: Option<Span>,
    pub events_per_second: Option<u32>,
    pub reqs_per_second: Option<u32>,
    pub max_connections: Option<usize>,
    pub outbound_queue: Option<usize>,
}

impl FileConfig {
    pub fn read(path: &std::path::Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}
