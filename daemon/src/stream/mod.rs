//! The live usage stream (SPEC §3.1): the delta [`Bus`] the usage index
//! publishes on, and the `GET /ws` WebSocket endpoint that serves it.

mod bus;

pub use bus::{Bus, DEFAULT_QUEUE, DEFAULT_REPLAY, Receiver};
