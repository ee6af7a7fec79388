//! Events reaching the UI loop from the terminal, the clock and the I/O tasks.

use crossterm::event::KeyEvent;
use strata_shared::stream::ServerMessage;
use time::OffsetDateTime;

use crate::app::ConnState;
use crate::client::Reply;

/// One input of the UI loop. The loop turns each into an
/// [`Action`](crate::app::Action) (keys through the keymap).
#[derive(Debug, Clone)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// The terminal was resized (columns, rows).
    Resize(u16, u16),
    /// The clock ticked (wall time, for relative times and highlights).
    Tick(OffsetDateTime),
    /// A message from the WebSocket.
    Ws(ServerMessage),
    /// The WebSocket connection changed state.
    Connection(ConnState),
    /// A REST request finished.
    Reply(Reply),
}
