//! The console against a real daemon: a start made over HTTP reaches the
//! console's screen through the WebSocket, without a key press.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;
use strata_shared::stream::{DeltaKind, ServerMessage};
use strata_tests::{TestDaemon, module};
use strata_tui::app::App;
use strata_tui::client::Client;
use strata_tui::event::Event;
use tokio::sync::mpsc;

/// The row of `name` in the strategies view, as drawn.
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    screen
        .lines()
        .find(|line| line.contains(&format!(" {name} ")))
        .unwrap_or_else(|| panic!("no {name} row in\n{screen}"))
}

#[tokio::test]
async fn a_start_on_the_daemon_changes_the_console_screen() {
    let d = TestDaemon::start().await;
    d.upload(&module("watched", 1), "v1").await;
    d.create_instance("w1", "watched", false).await;

    // The console's own WebSocket task feeds a tap that forwards every
    // message to the UI loop; once the start's delta has gone through, the
    // tap queues `q` behind it on the same channel, so the loop applies the
    // delta, draws, and only then quits.
    let (ui_tx, ui_rx) = mpsc::unbounded_channel();
    let (tap_tx, mut tap_rx) = mpsc::unbounded_channel();
    let live = strata_tui::live::spawn(d.url.clone(), None, tap_tx);
    let forward = ui_tx.clone();
    let tap = tokio::spawn(async move {
        let mut snapshot_count = None;
        while let Some(event) = tap_rx.recv().await {
            let started = match &event {
                Event::Ws(ServerMessage::Snapshot(snapshot)) => {
                    let watched = snapshot.revisions.iter().find(|r| r.strategy == "watched").expect("in snapshot");
                    snapshot_count = Some(watched.count);
                    false
                }
                Event::Ws(ServerMessage::Delta(delta)) => {
                    delta.kind == DeltaKind::InstanceStarted && delta.instance_id.as_deref() == Some("w1")
                }
                _ => false,
            };
            forward.send(event).expect("UI loop alive");
            if started {
                let quit = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
                forward.send(Event::Key(quit)).expect("UI loop alive");
                return snapshot_count;
            }
        }
        None
    });

    let mut terminal = Terminal::new(TestBackend::new(110, 20)).unwrap();
    let mut app = App::new(false, time::OffsetDateTime::now_utc());
    let client = Client::new(&d.url, None).unwrap();
    let ui = strata_tui::drive(&mut terminal, &mut app, futures_util::stream::pending(), ui_rx, ui_tx, client);
    let start = async {
        // Start only once the console is subscribed (its snapshot went out at connect).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while d.metric("strata_ws_subscribers").await < 1.0 {
            assert!(tokio::time::Instant::now() < deadline, "the console never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, _) = d.post("/strategy/instances/w1/start", json!({})).await;
        assert!(status.is_success());
    };
    let (ran, ()) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(ui, start) })
        .await
        .expect("the console saw the start and quit in time");
    ran.unwrap();
    live.abort();

    let before = tap.await.unwrap();
    assert_eq!(before, Some(0), "nothing ran when the console connected");
    let screen = terminal.backend().to_string();
    let watched = row(&screen, "watched");
    let cells: Vec<&str> = watched.split_whitespace().collect();
    let at = cells.iter().position(|c| *c == "watched").unwrap();
    // Revisions, Live hashes, Running after the name.
    assert_eq!(cells[at + 1..at + 4], ["1", "1", "1"], "the row changed live:\n{screen}");
    assert_eq!(cells[at - 1], "•", "the changed row is highlighted:\n{screen}");
    assert!(app.live_synced, "the console is on the live stream");
}
