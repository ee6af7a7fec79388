//! `stratad`: hosts versioned JavaScript trading strategies.
//!
//! Start-up order lives in [`boot::boot`]; the crate is split by domain:
//! - [`registry`]: the content-addressed registry (`registry.json`, revision
//!   files, selector resolution);
//! - [`js`]: evaluating strategy modules in QuickJS;
//! - [`store`]: durable state in SQLite;
//! - [`api`]: the HTTP API;
//! - [`metrics`]: Prometheus metrics;
//! - [`bootstrap`]: `stratad bootstrap`, migrating legacy strategy directories.

pub mod api;
pub mod boot;
pub mod bootstrap;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fixtures;
pub mod instances;
pub mod js;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod stream;
pub mod usage;
pub mod venue;

pub use boot::{BootError, Running, boot};
pub use config::Config;
pub use daemon::Daemon;
