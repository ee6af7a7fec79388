//! Console tests: state driven by keys and events (`state`), and whole
//! screens rendered on a `TestBackend` and compared with insta snapshots
//! (`screens`). Everything runs at the fixtures' fixed "now".

mod headless;
mod help;
mod live;
mod screens;
mod state;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use strata_shared::api::{RefreshReason, RefreshResponse, RefreshResult};
use strata_tui::app::{Action, App, ConnState};
use strata_tui::client::{Reply, Request};
use strata_tui::fixtures::{self, hash, now};

/// A plain key.
pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// A character key (Shift for capitals, as terminals report them).
pub fn ch(c: char) -> KeyEvent {
    let modifiers = if c.is_ascii_uppercase() { KeyModifiers::SHIFT } else { KeyModifiers::NONE };
    KeyEvent::new(KeyCode::Char(c), modifiers)
}

/// Presses a key through the keymap; returns the requests it caused.
pub fn press(app: &mut App, event: KeyEvent) -> Vec<Request> {
    match app.map_key(&event) {
        Some(action) => app.update(action),
        None => Vec::new(),
    }
}

/// Types text, one key per character.
pub fn type_text(app: &mut App, text: &str) -> Vec<Request> {
    text.chars().flat_map(|c| press(app, ch(c))).collect()
}

/// Presses each key in turn; returns every request.
pub fn keys(app: &mut App, events: &[KeyEvent]) -> Vec<Request> {
    events.iter().flat_map(|e| press(app, *e)).collect()
}

/// A console on 100x30, connected, with the demo snapshot and drift applied.
pub fn demo_app(readonly: bool) -> App {
    let mut app = App::new(readonly, now());
    app.update(Action::Resize(100, 30));
    app.update(Action::Connection(ConnState::Connected));
    app.update(Action::Live(vec![fixtures::snapshot()]));
    // A snapshot makes drift stale; the next tick asks for it.
    let requests = app.update(Action::Tick(now()));
    assert_eq!(requests, [Request::Drift { strategy: None }]);
    app.update(Action::Reply(Reply::Drift { strategy: None, result: Ok(fixtures::drift()) }));
    app
}

/// The demo console drilled into `momentum-v1.1.0`'s instances, loaded.
pub fn instances_app() -> App {
    let mut app = demo_app(false);
    type_text(&mut app, ":hash ");
    type_text(&mut app, &hash("momentum-v1.1.0").to_hex()[..10]);
    press(&mut app, key(KeyCode::Enter));
    app.update(Action::Reply(Reply::Instances {
        hash: hash("momentum-v1.1.0"),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    app
}

/// The daemon's answer to refreshing `momentum-v1.1.0`.
pub fn refresh_response() -> RefreshResponse {
    let result = |id: &str, reason, previous: Option<&str>, error: Option<&str>| RefreshResult {
        selector: if id == "momentum-shadow" { "momentum".into() } else { "momentum:prod".into() },
        strategy: Some("momentum".into()),
        hash: Some(hash(if previous.is_some() { "momentum-v1.2.0" } else { "momentum-v1.1.0" })),
        previous_hash: previous.map(hash),
        instances: vec![id.to_owned()],
        reason,
        error: error.map(str::to_owned),
    };
    RefreshResponse {
        status: "ok".into(),
        results: vec![
            result("momentum-eu", RefreshReason::Failed, Some("momentum-v1.1.0"), Some("start failed: boom")),
            result("momentum-prod", RefreshReason::AlreadyPinned, None, None),
            result("momentum-shadow", RefreshReason::Refreshed, Some("momentum-v1.1.0"), None),
        ],
    }
}

/// The screen as text (100x30).
pub fn screen(app: &App) -> String {
    screen_sized(app, 100, 30)
}

/// The screen as text at any size.
pub fn screen_sized(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|frame| strata_tui::views::render(app, frame)).expect("draw");
    terminal.backend().to_string()
}
