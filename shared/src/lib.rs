//! Types shared by the Strata daemon, its console and its tests.
//!
//! Everything here is pure: no I/O, no clocks, no threads. The daemon and the
//! console agree on the wire format by both using these definitions.

pub mod api;
pub mod hash;
pub mod json;
pub mod metadata;
pub mod names;
pub mod schema;
pub mod selector;
pub mod stream;

pub use hash::RevisionHash;
pub use selector::{HashRef, Selector};
