//! Running strategy instances: the JS host of one instance ([`host`]), the
//! validation of instance configs ([`config`]) and per-instance logs and
//! counters ([`logs`]).

pub mod config;
pub mod host;
pub mod logs;
