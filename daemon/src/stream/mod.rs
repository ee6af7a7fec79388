//! The live usage stream (SPEC §3.1): the delta [`Bus`] the usage index
//! publishes on, and the `GET /ws` WebSocket connection task that serves it
//! ([`ws`]; the route itself is in `api::stream`).

mod bus;
pub mod ws;

pub use bus::{Bus, DEFAULT_QUEUE, DEFAULT_REPLAY, Published, Receiver};
