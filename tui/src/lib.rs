//! `strata`: the operator console for `stratad` (SPEC §5).
//!
//! - [`app`]: the state and its only mutation, `App::update(Action)`.
//! - [`keymap`]: the one table of key bindings (dispatch and help).
//! - [`views`]: rendering from `&App`.
//! - [`client`]: REST requests and replies; [`live`]: the WebSocket task.
//! - [`run_app`]: the UI loop, generic over the ratatui backend so it runs
//!   headless on a `TestBackend` as well as in a terminal.

pub mod app;
pub mod client;
pub mod event;
pub mod fixtures;
pub mod format;
pub mod keymap;
pub mod live;
pub mod views;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crossterm::event::Event as TermEvent;
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use strata_shared::stream::ServerMessage;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::app::{Action, App};
use crate::client::{Client, Request};
use crate::event::Event;

/// Command-line options of `strata` (SPEC §5).
#[derive(Debug, Clone, Parser)]
#[command(name = "strata", version, about = "Operator console for stratad")]
pub struct Cli {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:8880")]
    pub url: String,
    /// Bearer token, when the daemon requires one. `--help` names the
    /// variable but never shows its value.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Hide every action: browse only.
    #[arg(long)]
    pub readonly: bool,
    /// Log file (default: `$XDG_STATE_HOME/strata/strata.log`, else
    /// `~/.local/state/strata/strata.log`). Nothing is ever logged to the screen.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl Cli {
    /// Where logs go.
    pub fn log_path(&self) -> PathBuf {
        if let Some(path) = &self.log_file {
            return path.clone();
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("strata").join("strata.log")
    }
}

/// How often the clock ticks (relative times, highlights, detail refresh).
pub const TICK: Duration = Duration::from_millis(250);

/// Runs the console against the daemon at `cli.url` until `q`: starts the
/// WebSocket task, reads terminal events from `input` and draws on
/// `terminal`. Returns the final state (handy for headless tests).
pub async fn run_app<B, S>(terminal: &mut Terminal<B>, cli: &Cli, input: S) -> anyhow::Result<App>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<TermEvent>> + Unpin,
{
    let client = Client::new(&cli.url, cli.token.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let live = live::spawn(cli.url.clone(), cli.token.clone(), tx.clone());
    let mut app = App::new(cli.readonly, OffsetDateTime::now_utc());
    let result = drive(terminal, &mut app, input, rx, tx, client).await;
    live.abort();
    result.map(|()| app)
}

/// The UI loop: draw, wait for the next event (terminal input, a queued
/// I/O event, or a tick), apply it and everything queued behind it, repeat.
/// REST requests returned by `update` are spawned; their replies come back
/// through `tx`. Drawing never waits for I/O.
pub async fn drive<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut input: S,
    mut events: mpsc::UnboundedReceiver<Event>,
    tx: mpsc::UnboundedSender<Event>,
    client: Client,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<TermEvent>> + Unpin,
{
    let size = terminal.size()?;
    app.update(Action::Resize(size.width, size.height));
    for request in app.start() {
        spawn_request(&client, request, &tx);
    }
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut input_open = true;
    loop {
        terminal.draw(|frame| views::render(app, frame))?;
        if app.quit {
            return Ok(());
        }
        let first = tokio::select! {
            term = input.next(), if input_open => match term {
                Some(Ok(TermEvent::Key(key))) => Event::Key(key),
                Some(Ok(TermEvent::Resize(w, h))) => Event::Resize(w, h),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => {
                    input_open = false;
                    continue;
                }
            },
            Some(event) = events.recv() => event,
            _ = ticker.tick() => Event::Tick(OffsetDateTime::now_utc()),
        };
        // Apply everything already queued before drawing again, so a burst
        // of deltas costs one frame (and one row rebuild per batch).
        let mut batch = vec![first];
        while batch.len() < 10_000 {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut live: Vec<ServerMessage> = Vec::new();
        for event in batch {
            if let Event::Ws(message) = event {
                live.push(message);
                continue;
            }
            if !live.is_empty() {
                apply(app, Action::Live(std::mem::take(&mut live)), &client, &tx);
            }
            let action = match event {
                Event::Key(key) => app.map_key(&key),
                Event::Resize(w, h) => Some(Action::Resize(w, h)),
                Event::Tick(now) => Some(Action::Tick(now)),
                Event::Connection(state) => Some(Action::Connection(state)),
                Event::Reply(reply) => Some(Action::Reply(reply)),
                Event::Ws(_) => None,
            };
            if let Some(action) = action {
                apply(app, action, &client, &tx);
            }
        }
        if !live.is_empty() {
            apply(app, Action::Live(live), &client, &tx);
        }
    }
}

fn apply(app: &mut App, action: Action, client: &Client, tx: &mpsc::UnboundedSender<Event>) {
    for request in app.update(action) {
        spawn_request(client, request, tx);
    }
}

fn spawn_request(client: &Client, request: Request, tx: &mpsc::UnboundedSender<Event>) {
    tracing::debug!(?request, "request");
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let reply = client.perform(request).await;
        let _ = tx.send(Event::Reply(reply));
    });
}
