//! The UI loop itself, headless: a `TestBackend`, scripted key presses and
//! stream events injected through the loop's channel (the REST client points
//! at a closed port, so its replies are errors shown in the status line).

use std::time::Duration;

use crossterm::event::{Event as TermEvent, KeyCode};
use futures_util::stream;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use strata_tui::app::{App, ConnState, View};
use strata_tui::client::Client;
use strata_tui::event::Event;
use strata_tui::fixtures::{self, now};
use tokio::sync::mpsc;

use super::*;

#[tokio::test]
async fn the_loop_applies_stream_events_and_keys_then_quits() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Event::Connection(ConnState::Connected)).unwrap();
    tx.send(Event::Ws(fixtures::snapshot())).unwrap();
    // Keys arrive after the queued stream events, 50 ms apart.
    let script = vec![ch('j'), ch('j'), key(KeyCode::Enter), ch('q')];
    let input = Box::pin(stream::unfold(script.into_iter(), |mut keys| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        keys.next().map(|k| (Ok(TermEvent::Key(k)), keys))
    }));
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let mut app = App::new(false, now());
    let client = Client::new("http://127.0.0.1:9", None).unwrap();
    let run = strata_tui::drive(&mut terminal, &mut app, input, rx, tx.clone(), client);
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("quits in time").unwrap();

    assert!(app.quit);
    assert!(app.live_synced);
    assert!(matches!(app.top(), View::Revisions { strategy, .. } if strategy == "momentum"));
    let shown = terminal.backend().to_string();
    assert!(shown.contains("Revisions of momentum (3)"), "{shown}");
    assert!(shown.contains("● live #41"), "{shown}");
}
