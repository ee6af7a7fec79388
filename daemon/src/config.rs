//! Daemon configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::js::JsLimits;
use crate::runtime::logs::LogLimits;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8880";

/// Everything `stratad` can be configured with. Every field has a default,
/// so an empty file (or none) is a valid configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The strategies directory (`registry.json` and revision files).
    pub strategies_dir: PathBuf,
    /// Where the SQLite database lives; defaults to `data` beside the strategies directory.
    pub data_dir: Option<PathBuf>,
    /// Seed empty directories with the bundled example strategies.
    pub demo: bool,
    /// Bearer token required on every mutating request when set (also
    /// `STRATA_TOKEN`). Reads stay open.
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Entries in each selector-resolution cache.
    pub resolver_cache_capacity: usize,
    /// Threads that verify and compile revisions while loading (default: one per core).
    pub load_threads: Option<usize>,
    /// Sandbox limits for JavaScript.
    pub js: JsConfig,
    /// How instances run.
    pub runtime: RuntimeConfig,
    /// The usage index and its live stream.
    pub usage: UsageConfig,
    /// Market venues (`[[providers]]`); by default one simulated venue
    /// named `sim` trading `BTC-USDT` and `ETH-USDT`.
    pub providers: Vec<ProviderConfig>,
}

/// How instances run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct RuntimeConfig {
    /// Threads running JavaScript (default: one per core).
    pub workers: Option<usize>,
    /// Events queued per instance before its oldest market events are dropped.
    pub queue_capacity: usize,
    /// Longest `helpers.sleep`, in milliseconds.
    pub sleep_cap_ms: u64,
    /// Orders a second an instance may submit: over it orders are refused
    /// (throttled), and an instance that keeps going over it is failed.
    pub max_orders_per_sec: u32,
    /// Longest log line or error message kept, in bytes; longer ones are
    /// cut at a character boundary and marked when recorded.
    pub log_line_max_bytes: usize,
    /// Bytes of log lines one instance keeps (its ring drops the oldest beyond).
    pub log_ring_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: None,
            queue_capacity: 1024,
            sleep_cap_ms: 5_000,
            max_orders_per_sec: crate::runtime::orders::DEFAULT_MAX_ORDERS_PER_SEC,
            log_line_max_bytes: crate::runtime::logs::DEFAULT_LINE_MAX_BYTES,
            log_ring_bytes: crate::runtime::logs::DEFAULT_RING_BYTES,
        }
    }
}

/// The usage index and its live stream (`[usage]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct UsageConfig {
    /// Seconds a revision must go without running instances (and without
    /// tags) before it counts as retired (default 0: at once).
    pub retire_after_secs: u64,
    /// Deltas kept for WebSocket resumes (`/ws?since=`).
    pub stream_replay: usize,
    /// Deltas a WebSocket subscriber may fall behind before it is resynced.
    pub stream_queue: usize,
    /// Seconds between the passes that mark running revisions as seen
    /// (`lastSeen`, one `revisionsSeen` delta), announce retirements and
    /// persist usage (default 15; SPEC §2.1 wants `lastSeen` at most 30 s old).
    pub seen_every_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            retire_after_secs: 0,
            stream_replay: crate::stream::DEFAULT_REPLAY,
            stream_queue: crate::stream::DEFAULT_QUEUE,
            seen_every_secs: 15,
        }
    }
}

/// One market venue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ProviderConfig {
    /// Name, the key of an instance's `scope`.
    pub name: String,
    /// Kind; only `sim` (the simulated venue) exists today.
    #[serde(default = "default_provider_kind")]
    pub kind: String,
    /// Symbols traded (default `BTC-USDT`, `ETH-USDT`).
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Seed of the simulated market (same seed, same prices).
    pub seed: Option<u64>,
    /// Simulated trades per second per symbol (default 5).
    pub trades_per_sec: Option<f64>,
    /// Simulated tickers per second per symbol (default 1).
    pub tickers_per_sec: Option<f64>,
    /// Simulated book snapshots per second per symbol (default 1).
    pub books_per_sec: Option<f64>,
}

fn default_provider_kind() -> String {
    "sim".into()
}

impl ProviderConfig {
    /// The default venue: `sim` with the simulated defaults.
    pub fn default_sim() -> Self {
        Self {
            name: "sim".into(),
            kind: default_provider_kind(),
            symbols: Vec::new(),
            seed: None,
            trades_per_sec: None,
            tickers_per_sec: None,
            books_per_sec: None,
        }
    }

    /// The simulated venue's settings, defaults filled in.
    pub fn sim_config(&self) -> crate::venue::sim::SimConfig {
        let defaults = crate::venue::sim::SimConfig::default();
        crate::venue::sim::SimConfig {
            name: self.name.clone(),
            symbols: if self.symbols.is_empty() { defaults.symbols.clone() } else { self.symbols.clone() },
            seed: self.seed.unwrap_or(defaults.seed),
            trades_per_sec: self.trades_per_sec.unwrap_or(defaults.trades_per_sec),
            tickers_per_sec: self.tickers_per_sec.unwrap_or(defaults.tickers_per_sec),
            books_per_sec: self.books_per_sec.unwrap_or(defaults.books_per_sec),
            ..defaults
        }
    }
}

/// JavaScript sandbox limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct JsConfig {
    /// Heap cap per runtime, in MiB.
    pub memory_limit_mib: usize,
    /// CPU budget per call, in milliseconds.
    pub cpu_budget_ms: u64,
    /// Native stack cap per runtime, in KiB.
    pub stack_limit_kib: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            strategies_dir: PathBuf::from("strategies"),
            data_dir: None,
            demo: false,
            token: None,
            max_body_bytes: strata_shared::api::MAX_BODY_BYTES,
            resolver_cache_capacity: 100_000,
            load_threads: None,
            js: JsConfig::default(),
            runtime: RuntimeConfig::default(),
            usage: UsageConfig::default(),
            providers: vec![ProviderConfig::default_sim()],
        }
    }
}

impl Default for JsConfig {
    fn default() -> Self {
        let limits = JsLimits::default();
        Self {
            memory_limit_mib: limits.memory_bytes / (1024 * 1024),
            cpu_budget_ms: limits.cpu_budget.as_millis() as u64,
            stack_limit_kib: limits.stack_bytes / 1024,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// The data directory, defaulting to `data` beside the strategies directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let parent = self.strategies_dir.parent().filter(|p| !p.as_os_str().is_empty());
            parent.unwrap_or(Path::new(".")).join("data")
        })
    }

    /// Checks what serde cannot: provider kinds and unique names.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for provider in &self.providers {
            if provider.kind != "sim" {
                return Err(format!(
                    "provider \"{}\": unknown kind \"{}\" (only \"sim\" exists)",
                    provider.name, provider.kind
                ));
            }
            if !names.insert(&provider.name) {
                return Err(format!("provider name \"{}\" is used twice", provider.name));
            }
        }
        if self.usage.seen_every_secs == 0 {
            return Err("[usage] seen_every_secs must be at least 1".into());
        }
        if self.runtime.max_orders_per_sec == 0 {
            return Err("[runtime] max_orders_per_sec must be at least 1".into());
        }
        self.log_limits().validate()
    }

    /// How much of each instance's logging is kept.
    pub fn log_limits(&self) -> LogLimits {
        LogLimits { line_max_bytes: self.runtime.log_line_max_bytes, ring_bytes: self.runtime.log_ring_bytes }
    }

    /// The sandbox limits as the JS engine takes them.
    pub fn js_limits(&self) -> JsLimits {
        JsLimits {
            memory_bytes: self.js.memory_limit_mib * 1024 * 1024,
            stack_bytes: self.js.stack_limit_kib * 1024,
            cpu_budget: Duration::from_millis(self.js.cpu_budget_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_unknown_keys_are_rejected() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir(), PathBuf::from("./data"));
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
        let config: Config =
            toml::from_str("strategies_dir = \"/srv/strata/strategies\"\n[js]\ncpu_budget_ms = 100").unwrap();
        assert_eq!(config.data_dir(), PathBuf::from("/srv/strata/data"));
        assert_eq!(config.js_limits().cpu_budget, Duration::from_millis(100));
    }

    #[test]
    fn the_seen_pass_needs_a_period() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.usage.seen_every_secs, 15);
        assert!(config.validate().is_ok());
        let config: Config = toml::from_str("[usage]\nseen_every_secs = 0").unwrap();
        assert_eq!(config.validate().unwrap_err(), "[usage] seen_every_secs must be at least 1");
    }

    #[test]
    fn log_limits_default_to_8_kib_lines_and_a_256_kib_ring() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.log_limits(), LogLimits { line_max_bytes: 8192, ring_bytes: 256 * 1024 });
        let config: Config = toml::from_str("[runtime]\nlog_line_max_bytes = 100\nlog_ring_bytes = 4096").unwrap();
        assert_eq!(config.log_limits(), LogLimits { line_max_bytes: 100, ring_bytes: 4096 });
        assert!(config.validate().is_ok());
        let config: Config = toml::from_str("[runtime]\nlog_ring_bytes = 1000").unwrap();
        assert!(config.validate().unwrap_err().contains("log_ring_bytes"));
    }
}
