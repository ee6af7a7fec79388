//! Running strategy instances: the JS host of one instance ([`host`]), the
//! validation of instance configs ([`config`]), per-instance logs and
//! counters ([`logs`]) and the order-rate cap ([`orders`]).

pub mod config;
pub mod host;
pub mod logs;
pub mod orders;
