//! The console's state ([`App`]) and its only mutation, [`App::update`].
//!
//! Keys become [`Action`]s through the keymap ([`App::map_key`]); I/O results
//! arrive as actions too. `update` never performs I/O: it returns the REST
//! [`Request`]s to perform, and the loop spawns them. Rendering (in
//! [`crate::views`]) only reads the state.
//!
//! The live model is a [`UsageMirror`] fed by the WebSocket (snapshot, then
//! deltas). Until the first WebSocket snapshot arrives it is seeded from REST
//! (`/strategies/registry` + `/strategies/modules`), so the console is useful
//! even while the stream is down. Drift is not on the stream: it comes from
//! `GET /strategy/instances?drift=true` when a view opens or is reloaded, and
//! again after deltas that can change it (tag moves, uploads, re-pins,
//! refreshes), at most one request at a time.

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use strata_shared::RevisionHash;
use strata_shared::api::{InstanceState, InstanceView};
use strata_shared::stream::{DeltaKind, RevisionState, ServerMessage, UsageMirror};
use time::OffsetDateTime;

use crate::client::{InstanceList, LogLine, Outcome, Reply, Request, Target, Verb};
use crate::keymap::{self, Command, Scope};

/// How long a changed row stays highlighted.
pub const HIGHLIGHT_FOR: time::Duration = time::Duration::seconds(2);
/// How often an open instance detail is re-fetched (its counters are not on the stream).
pub const DETAIL_REFRESH: time::Duration = time::Duration::seconds(2);

/// Columns of the strategies list.
pub const STRATEGY_COLUMNS: [&str; 5] = ["Strategy", "Revisions", "Live hashes", "Running", "Drift"];
/// Columns of the revisions list.
pub const REVISION_COLUMNS: [&str; 7] = ["Hash", "Tags", "Running", "First seen", "Last seen", "Retired", "Drift"];
/// Columns of the instances list.
pub const INSTANCE_COLUMNS: [&str; 7] = ["Instance", "State", "Uptime", "Events", "Orders", "Errors", "Drift"];

/// Rows of a list that fit a terminal `height` (header, footer, borders and column titles excluded).
pub fn list_rows(height: u16) -> usize {
    usize::from(height.saturating_sub(5)).max(1)
}

/// State of the WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Trying to connect (1-based attempt).
    Connecting {
        /// Attempt number since the last good connection.
        attempt: u32,
    },
    /// Connected; messages flow.
    Connected,
    /// Down; retrying after `retry_in`.
    Disconnected {
        /// Why.
        error: String,
        /// Failed attempts in a row.
        attempt: u32,
        /// Wait before the next attempt.
        retry_in: std::time::Duration,
    },
}

/// Everything [`App::update`] reacts to.
#[derive(Debug, Clone)]
pub enum Action {
    /// A keymap command.
    Command(Command),
    /// A character typed into the prompt.
    Input(char),
    /// The terminal size (columns, rows).
    Resize(u16, u16),
    /// The clock (wall time).
    Tick(OffsetDateTime),
    /// WebSocket messages, in order (the loop batches bursts).
    Live(Vec<ServerMessage>),
    /// The WebSocket connection changed state.
    Connection(ConnState),
    /// A REST request finished.
    Reply(Reply),
}

/// Data fetched over REST.
#[derive(Debug, Clone, PartialEq)]
pub struct Loadable<T> {
    /// The last good answer.
    pub data: Option<T>,
    /// A request is in flight.
    pub loading: bool,
    /// The last request failed.
    pub error: Option<String>,
    /// A live change made it out of date: re-fetch at the next tick.
    pub stale: bool,
    /// When the last answer arrived.
    pub fetched: Option<OffsetDateTime>,
}

impl<T> Loadable<T> {
    /// Nothing yet, a request in flight.
    pub fn loading() -> Self {
        Self { data: None, loading: true, error: None, stale: false, fetched: None }
    }

    fn set(&mut self, result: Result<T, String>, now: OffsetDateTime) {
        self.loading = false;
        self.fetched = Some(now);
        match result {
            Ok(data) => {
                self.data = Some(data);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Selection, scroll, filter and sort of one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListState {
    /// Index of the selected row in the filtered, sorted rows.
    pub selected: usize,
    /// Index of the first visible row.
    pub offset: usize,
    /// Filter text; a leading `!` inverts it.
    pub filter: String,
    /// Sort column (index into the view's columns).
    pub sort: usize,
    /// Sort descending.
    pub descending: bool,
    /// Only rows with something running.
    pub running_only: bool,
    /// Row to select at the next rebuild (set when jumping to a row).
    want: Option<RowKey>,
}

/// Identity of a row, kept across rebuilds so the selection follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowKey {
    Name(String),
    Hash(RevisionHash),
}

/// One row of the strategies list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyRow {
    /// Strategy name.
    pub name: String,
    /// Revisions loaded.
    pub revisions: usize,
    /// Revisions with running instances.
    pub live: usize,
    /// Running instances over all revisions.
    pub running: usize,
    /// Drifting instances (`None` until drift is known).
    pub drift: Option<usize>,
}

/// An instance and its recent log lines.
pub type InstanceDetail = (Box<InstanceView>, Vec<LogLine>);

/// One level of the breadcrumbs.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Every strategy.
    Strategies {
        /// Selection etc.
        list: ListState,
        /// Filtered, sorted rows.
        rows: Vec<StrategyRow>,
    },
    /// Revisions of one strategy (rows are keys into the mirror).
    Revisions {
        /// The strategy.
        strategy: String,
        /// Selection etc.
        list: ListState,
        /// Filtered, sorted hashes.
        rows: Vec<RevisionHash>,
    },
    /// Instances pinned to one revision.
    Instances {
        /// The strategy.
        strategy: String,
        /// The revision.
        hash: RevisionHash,
        /// Selection etc.
        list: ListState,
        /// Filtered, sorted indices into `data`.
        rows: Vec<usize>,
        /// The instances, from REST, updated by deltas.
        data: Loadable<InstanceList>,
    },
    /// One instance.
    Detail {
        /// Instance id.
        id: String,
        /// The instance and its logs.
        data: Loadable<InstanceDetail>,
    },
}

impl View {
    fn list(&self) -> Option<&ListState> {
        match self {
            View::Strategies { list, .. } | View::Revisions { list, .. } | View::Instances { list, .. } => Some(list),
            View::Detail { .. } => None,
        }
    }

    fn list_mut(&mut self) -> Option<&mut ListState> {
        match self {
            View::Strategies { list, .. } | View::Revisions { list, .. } | View::Instances { list, .. } => Some(list),
            View::Detail { .. } => None,
        }
    }

    /// The view's columns (empty for the detail).
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            View::Strategies { .. } => &STRATEGY_COLUMNS,
            View::Revisions { .. } => &REVISION_COLUMNS,
            View::Instances { .. } => &INSTANCE_COLUMNS,
            View::Detail { .. } => &[],
        }
    }

    /// Number of rows after filtering.
    pub fn len(&self) -> usize {
        match self {
            View::Strategies { rows, .. } => rows.len(),
            View::Revisions { rows, .. } => rows.len(),
            View::Instances { rows, .. } => rows.len(),
            View::Detail { .. } => 0,
        }
    }

    /// Whether the view shows no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn selected_key(&self) -> Option<RowKey> {
        let list = self.list()?;
        match self {
            View::Strategies { rows, .. } => rows.get(list.selected).map(|r| RowKey::Name(r.name.clone())),
            View::Revisions { rows, .. } => rows.get(list.selected).map(|h| RowKey::Hash(*h)),
            View::Instances { rows, data, .. } => rows
                .get(list.selected)
                .and_then(|&i| data.data.as_ref()?.instances.get(i))
                .map(|v| RowKey::Name(v.id.clone())),
            View::Detail { .. } => None,
        }
    }

    fn new_list(want: Option<RowKey>) -> ListState {
        ListState { want, ..ListState::default() }
    }
}

/// What the prompt line is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// `/` typing a filter (applied as typed).
    Filter {
        /// Text so far.
        text: String,
        /// Filter before the prompt opened (restored on Esc).
        previous: String,
    },
    /// `:` typing a command.
    Command {
        /// Text so far.
        text: String,
    },
}

/// Where an action dialog is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Asking for confirmation, with the instances it will touch.
    Confirm(Loadable<InstanceList>),
    /// Sent; waiting for the answer.
    Running,
    /// The daemon answered.
    Done(Result<Outcome, String>),
}

/// The confirmation / result dialog of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    /// What the action touches.
    pub target: Target,
    /// Where it is.
    pub stage: Stage,
    /// First row shown of the result table.
    pub scroll: usize,
}

/// A line for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The text.
    pub text: String,
    /// Shown as an error.
    pub error: bool,
}

/// The whole console state.
#[derive(Debug, Clone)]
pub struct App {
    /// `--readonly`: no actions at all.
    pub readonly: bool,
    /// Wall time of the last tick (relative times and highlights use it).
    pub now: OffsetDateTime,
    /// Every revision's usage.
    pub mirror: UsageMirror,
    /// The mirror comes from the WebSocket (not only from the REST seed).
    pub live_synced: bool,
    /// The WebSocket connection.
    pub conn: ConnState,
    /// Breadcrumbs; the last view is shown.
    pub stack: Vec<View>,
    /// The prompt line, when open.
    pub prompt: Option<Prompt>,
    /// The help overlay's scroll, when open.
    pub help: Option<usize>,
    /// The action dialog, when open.
    pub dialog: Option<Dialog>,
    /// The status-bar message.
    pub message: Option<Message>,
    /// Drifting instances per revision (`None` until known).
    pub drift: Option<HashMap<(String, RevisionHash), usize>>,
    drift_loading: bool,
    drift_stale: bool,
    bootstrap_loading: bool,
    changed_revisions: HashMap<(String, RevisionHash), OffsetDateTime>,
    changed_strategies: HashMap<String, OffsetDateTime>,
    changed_instances: HashMap<String, OffsetDateTime>,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    /// Set by `q`: the loop ends.
    pub quit: bool,
    dirty: bool,
}

impl App {
    /// A fresh console at `now`, showing the strategies list.
    pub fn new(readonly: bool, now: OffsetDateTime) -> Self {
        Self {
            readonly,
            now,
            mirror: UsageMirror::default(),
            live_synced: false,
            conn: ConnState::Connecting { attempt: 1 },
            stack: vec![View::Strategies { list: ListState::default(), rows: Vec::new() }],
            prompt: None,
            help: None,
            dialog: None,
            message: None,
            drift: None,
            drift_loading: false,
            drift_stale: false,
            bootstrap_loading: false,
            changed_revisions: HashMap::new(),
            changed_strategies: HashMap::new(),
            changed_instances: HashMap::new(),
            size: (100, 30),
            quit: false,
            dirty: true,
        }
    }

    /// The requests to send when the console starts.
    pub fn start(&mut self) -> Vec<Request> {
        self.bootstrap_loading = true;
        self.drift_loading = true;
        vec![Request::Bootstrap, Request::Drift { strategy: None }]
    }

    /// The view shown.
    pub fn top(&self) -> &View {
        self.stack.last().expect("the stack always holds the strategies view")
    }

    fn top_mut(&mut self) -> &mut View {
        self.stack.last_mut().expect("the stack always holds the strategies view")
    }

    /// Where keys go now.
    pub fn scope(&self) -> Scope {
        if self.prompt.is_some() {
            Scope::Prompt
        } else if let Some(dialog) = &self.dialog {
            match dialog.stage {
                Stage::Confirm(_) => Scope::Confirm,
                _ => Scope::Result,
            }
        } else if self.help.is_some() {
            Scope::Help
        } else {
            Scope::Views
        }
    }

    /// A key press as an action: a keymap command, or text for the prompt.
    pub fn map_key(&self, key: &KeyEvent) -> Option<Action> {
        let scope = self.scope();
        if let Some(command) = keymap::lookup(scope, key, self.readonly) {
            return Some(Action::Command(command));
        }
        match key.code {
            KeyCode::Char(c) if scope == Scope::Prompt && !key.modifiers.contains(KeyModifiers::CONTROL) => {
                Some(Action::Input(c))
            }
            _ => None,
        }
    }

    /// Whether a revision changed within the last [`HIGHLIGHT_FOR`].
    pub fn revision_changed(&self, strategy: &str, hash: &RevisionHash) -> bool {
        // Cloning the name is cheap next to a lookup by a borrowed tuple key.
        self.changed_revisions.get(&(strategy.to_owned(), *hash)).is_some_and(|t| *t > self.now)
    }

    /// Whether a strategy changed within the last [`HIGHLIGHT_FOR`].
    pub fn strategy_changed(&self, name: &str) -> bool {
        self.changed_strategies.get(name).is_some_and(|t| *t > self.now)
    }

    /// Whether an instance changed within the last [`HIGHLIGHT_FOR`].
    pub fn instance_changed(&self, id: &str) -> bool {
        self.changed_instances.get(id).is_some_and(|t| *t > self.now)
    }

    /// Drifting instances on a revision (`None` until drift is known).
    pub fn revision_drift(&self, strategy: &str, hash: &RevisionHash) -> Option<usize> {
        let drift = self.drift.as_ref()?;
        Some(drift.get(&(strategy.to_owned(), *hash)).copied().unwrap_or(0))
    }

    /// A revision of the mirror.
    pub fn revision(&self, strategy: &str, hash: &RevisionHash) -> Option<&RevisionState> {
        self.mirror.revisions.get(&(strategy.to_owned(), *hash))
    }

    /// Whether a REST seed is being fetched.
    pub fn bootstrapping(&self) -> bool {
        self.bootstrap_loading
    }

    /// Applies one action; returns the REST requests to perform.
    pub fn update(&mut self, action: Action) -> Vec<Request> {
        let mut out = Vec::new();
        match action {
            Action::Command(command) => self.command(command, &mut out),
            Action::Input(c) => self.input(c),
            Action::Resize(w, h) => {
                self.size = (w, h);
                self.dirty = true;
            }
            Action::Tick(now) => self.tick(now, &mut out),
            Action::Live(messages) => {
                for message in &messages {
                    self.live(message);
                }
            }
            Action::Connection(state) => {
                if matches!(state, ConnState::Disconnected { .. }) && self.live_synced {
                    // Keep showing what we have; a reconnect resumes or resyncs.
                    tracing::info!("live stream lost; keeping the last known state");
                }
                self.conn = state;
            }
            Action::Reply(reply) => self.reply(reply, &mut out),
        }
        if self.dirty {
            self.rebuild();
            self.dirty = false;
        }
        out
    }

    fn say(&mut self, text: impl Into<String>) {
        self.message = Some(Message { text: text.into(), error: false });
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.message = Some(Message { text: text.into(), error: true });
    }

    fn command(&mut self, command: Command, out: &mut Vec<Request>) {
        match self.scope() {
            Scope::Prompt => self.prompt_command(command, out),
            Scope::Confirm => match command {
                Command::Confirm => {
                    if let Some(dialog) = &mut self.dialog {
                        dialog.stage = Stage::Running;
                        out.push(Request::Run(dialog.target.clone()));
                    }
                }
                Command::Close => self.dialog = None,
                _ => {}
            },
            Scope::Result => match command {
                Command::Up => {
                    if let Some(d) = &mut self.dialog {
                        d.scroll = d.scroll.saturating_sub(1);
                    }
                }
                Command::Down => {
                    if let Some(d) = &mut self.dialog {
                        d.scroll += 1;
                    }
                }
                Command::Close => {
                    if matches!(self.dialog, Some(Dialog { stage: Stage::Running, .. })) {
                        self.say("the action is still running; its result will show here");
                    }
                    self.dialog = None;
                }
                _ => {}
            },
            Scope::Help => match command {
                Command::Up => self.help = self.help.map(|s| s.saturating_sub(1)),
                Command::Down => self.help = self.help.map(|s| s + 1),
                Command::Close => self.help = None,
                _ => {}
            },
            Scope::Views => self.view_command(command, out),
        }
    }

    fn prompt_command(&mut self, command: Command, out: &mut Vec<Request>) {
        match command {
            Command::Submit => match self.prompt.take() {
                Some(Prompt::Command { text }) => self.run_command(&text, out),
                Some(Prompt::Filter { .. }) | None => {}
            },
            Command::Close => {
                if let Some(Prompt::Filter { previous, .. }) = self.prompt.take() {
                    self.set_filter(previous);
                }
            }
            Command::Erase => {
                let text = match &mut self.prompt {
                    Some(Prompt::Filter { text, .. }) => {
                        text.pop();
                        Some(text.clone())
                    }
                    Some(Prompt::Command { text }) => {
                        text.pop();
                        None
                    }
                    None => None,
                };
                if let Some(text) = text {
                    self.set_filter(text);
                }
            }
            Command::Quit => self.quit = true,
            _ => {}
        }
    }

    fn input(&mut self, c: char) {
        let text = match &mut self.prompt {
            Some(Prompt::Filter { text, .. }) => {
                text.push(c);
                Some(text.clone())
            }
            Some(Prompt::Command { text }) => {
                text.push(c);
                None
            }
            None => None,
        };
        if let Some(text) = text {
            self.set_filter(text);
        }
    }

    fn set_filter(&mut self, text: String) {
        if let Some(list) = self.top_mut().list_mut() {
            list.filter = text;
            list.selected = 0;
            list.offset = 0;
            self.dirty = true;
        }
    }

    fn view_command(&mut self, command: Command, out: &mut Vec<Request>) {
        let page = list_rows(self.size.1) as isize;
        match command {
            Command::Up => self.move_by(-1),
            Command::Down => self.move_by(1),
            Command::PageUp => self.move_by(-page),
            Command::PageDown => self.move_by(page),
            Command::Top => self.move_by(isize::MIN / 2),
            Command::Bottom => self.move_by(isize::MAX / 2),
            Command::Enter => self.enter(out),
            Command::Back => {
                let has_filter = self.top().list().is_some_and(|l| !l.filter.is_empty());
                if has_filter {
                    self.set_filter(String::new());
                } else if self.stack.len() > 1 {
                    self.stack.pop();
                    self.dirty = true;
                }
            }
            Command::Filter => match self.top().list() {
                Some(list) => {
                    let filter = list.filter.clone();
                    self.prompt = Some(Prompt::Filter { text: filter.clone(), previous: filter });
                }
                None => self.say("nothing to filter here"),
            },
            Command::CommandBar => self.prompt = Some(Prompt::Command { text: String::new() }),
            Command::SortNext | Command::SortReverse | Command::RunningOnly => {
                let columns = self.top().columns();
                let Some(list) = self.top_mut().list_mut() else { return };
                match command {
                    Command::SortNext => list.sort = (list.sort + 1) % columns.len(),
                    Command::SortReverse => list.descending = !list.descending,
                    _ => list.running_only = !list.running_only,
                }
                let text = format!(
                    "sorted by {} {}{}",
                    columns[list.sort],
                    if list.descending { "▼" } else { "▲" },
                    if list.running_only { ", running only" } else { "" }
                );
                self.dirty = true;
                self.say(text);
            }
            Command::Reload => self.reload(out),
            Command::Help => self.help = Some(0),
            Command::Quit => self.quit = true,
            Command::Refresh | Command::RestartAll | Command::Start | Command::Stop | Command::Restart => {
                self.begin_action(command, out)
            }
            Command::Confirm | Command::Close | Command::Submit | Command::Erase => {}
        }
    }

    fn move_by(&mut self, delta: isize) {
        let len = self.top().len();
        let height = list_rows(self.size.1);
        let Some(list) = self.top_mut().list_mut() else { return };
        if len == 0 {
            return;
        }
        list.selected = list.selected.saturating_add_signed(delta).min(len - 1);
        scroll_into_view(list, len, height);
    }

    fn enter(&mut self, out: &mut Vec<Request>) {
        let next = match self.top() {
            View::Strategies { list, rows } => rows.get(list.selected).map(|r| {
                out.push(Request::Drift { strategy: Some(r.name.clone()) });
                View::Revisions { strategy: r.name.clone(), list: ListState::default(), rows: Vec::new() }
            }),
            View::Revisions { strategy, list, rows } => rows.get(list.selected).map(|hash| {
                out.push(Request::Instances { hash: *hash });
                View::Instances {
                    strategy: strategy.clone(),
                    hash: *hash,
                    list: ListState::default(),
                    rows: Vec::new(),
                    data: Loadable::loading(),
                }
            }),
            View::Instances { list, rows, data, .. } => {
                rows.get(list.selected).and_then(|&i| data.data.as_ref()?.instances.get(i)).map(|v| {
                    out.push(Request::Instance { id: v.id.clone() });
                    View::Detail { id: v.id.clone(), data: Loadable::loading() }
                })
            }
            View::Detail { .. } => None,
        };
        if let Some(view) = next {
            self.stack.push(view);
            self.dirty = true;
        }
    }

    fn reload(&mut self, out: &mut Vec<Request>) {
        if !self.live_synced && !self.bootstrap_loading {
            self.bootstrap_loading = true;
            out.push(Request::Bootstrap);
        }
        match self.top_mut() {
            View::Strategies { .. } | View::Revisions { .. } => {
                if !self.drift_loading {
                    self.drift_loading = true;
                    out.push(Request::Drift { strategy: None });
                }
            }
            View::Instances { hash, data, .. } => {
                data.loading = true;
                out.push(Request::Instances { hash: *hash });
            }
            View::Detail { id, data } => {
                data.loading = true;
                out.push(Request::Instance { id: id.clone() });
            }
        }
        self.say("reloading…");
    }

    /// The target of an action key in the current view.
    fn target_for(&self, command: Command) -> Result<Target, String> {
        let verb = match command {
            Command::Start => Some(Verb::Start),
            Command::Stop => Some(Verb::Stop),
            Command::Restart => Some(Verb::Restart),
            _ => None,
        };
        let instance_pin = |data: &Loadable<InstanceDetail>| {
            data.data.as_ref().map(|(v, _)| (v.strategy.identifier.clone(), v.strategy.hash))
        };
        let revision = match self.top() {
            View::Strategies { list, rows } => {
                let row = rows.get(list.selected).ok_or("no strategy selected")?;
                return match command {
                    Command::Refresh => Ok(Target::RefreshStrategy(row.name.clone())),
                    Command::RestartAll => Err("select a revision (Enter) to restart its instances".into()),
                    _ => Err("select an instance first".into()),
                };
            }
            View::Revisions { strategy, list, rows } => {
                if verb.is_some() {
                    return Err("select an instance first".into());
                }
                rows.get(list.selected).map(|h| (strategy.clone(), *h)).ok_or("no revision selected")?
            }
            View::Instances { strategy, hash, list, rows, data } => {
                if let Some(verb) = verb {
                    let id = rows
                        .get(list.selected)
                        .and_then(|&i| data.data.as_ref()?.instances.get(i))
                        .map(|v| v.id.clone())
                        .ok_or("no instance selected")?;
                    return Ok(Target::Instance { id, verb });
                }
                (strategy.clone(), *hash)
            }
            View::Detail { id, data } => {
                if let Some(verb) = verb {
                    return Ok(Target::Instance { id: id.clone(), verb });
                }
                instance_pin(data).ok_or("the instance is still loading")?
            }
        };
        let (strategy, hash) = revision;
        Ok(match command {
            Command::RestartAll => Target::RestartAll { strategy, hash },
            _ => Target::RefreshHash { strategy, hash },
        })
    }

    fn begin_action(&mut self, command: Command, out: &mut Vec<Request>) {
        if self.readonly {
            self.fail("read-only console: actions are disabled");
            return;
        }
        match self.target_for(command) {
            Ok(target) => {
                out.push(Request::Preview(target.clone()));
                self.dialog = Some(Dialog { target, stage: Stage::Confirm(Loadable::loading()), scroll: 0 });
            }
            Err(e) => self.fail(e),
        }
    }

    /// Runs a `:` command.
    fn run_command(&mut self, text: &str, out: &mut Vec<Request>) {
        let mut words = text.trim().trim_start_matches(':').split_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        match (verb, arg) {
            ("strategy" | "s", Some(name)) => {
                if !self.mirror.revisions.keys().any(|(s, _)| s == name) {
                    return self.fail(format!("no strategy {name}"));
                }
                self.stack = vec![
                    View::Strategies { list: View::new_list(Some(RowKey::Name(name.to_owned()))), rows: Vec::new() },
                    View::Revisions { strategy: name.to_owned(), list: ListState::default(), rows: Vec::new() },
                ];
                out.push(Request::Drift { strategy: Some(name.to_owned()) });
                self.dirty = true;
            }
            ("hash" | "h", Some(prefix)) => {
                let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
                if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return self.fail(format!("not a hash prefix: {prefix}"));
                }
                let matches: Vec<(String, RevisionHash)> =
                    self.mirror.revisions.keys().filter(|(_, h)| h.has_hex_prefix(hex)).take(2).cloned().collect();
                match matches.as_slice() {
                    [] => self.fail(format!("no revision matches {prefix}")),
                    [(strategy, hash)] => self.open_revision(strategy.clone(), *hash, out),
                    _ => self.fail(format!("{prefix} is ambiguous: type more digits")),
                }
            }
            ("instance" | "i", Some(id)) => {
                self.stack.truncate(1);
                self.stack.push(View::Detail { id: id.to_owned(), data: Loadable::loading() });
                out.push(Request::Instance { id: id.to_owned() });
                self.dirty = true;
            }
            ("refresh", None) => self.begin_action(Command::Refresh, out),
            ("reload", None) => self.reload(out),
            ("help", None) => self.help = Some(0),
            ("q" | "quit", None) => self.quit = true,
            ("", _) => {}
            _ => self.fail(format!(
                "unknown command :{} (try :strategy NAME, :hash PREFIX, :instance ID, :refresh, :reload, :quit)",
                text.trim()
            )),
        }
    }

    /// Breadcrumbs strategies › strategy › hash, with the parents' selection on the path.
    fn open_revision(&mut self, strategy: String, hash: RevisionHash, out: &mut Vec<Request>) {
        self.stack = vec![
            View::Strategies { list: View::new_list(Some(RowKey::Name(strategy.clone()))), rows: Vec::new() },
            View::Revisions {
                strategy: strategy.clone(),
                list: View::new_list(Some(RowKey::Hash(hash))),
                rows: Vec::new(),
            },
            View::Instances { strategy, hash, list: ListState::default(), rows: Vec::new(), data: Loadable::loading() },
        ];
        out.push(Request::Instances { hash });
        self.dirty = true;
    }

    fn tick(&mut self, now: OffsetDateTime, out: &mut Vec<Request>) {
        self.now = now;
        self.changed_revisions.retain(|_, t| *t > now);
        self.changed_strategies.retain(|_, t| *t > now);
        self.changed_instances.retain(|_, t| *t > now);
        if self.drift_stale && !self.drift_loading {
            self.drift_stale = false;
            self.drift_loading = true;
            out.push(Request::Drift { strategy: None });
        }
        let top = self.stack.len() - 1;
        for (i, view) in self.stack.iter_mut().enumerate() {
            match view {
                View::Instances { hash, data, .. } if data.stale && !data.loading => {
                    data.stale = false;
                    data.loading = true;
                    out.push(Request::Instances { hash: *hash });
                }
                View::Detail { id, data } if !data.loading => {
                    let due = data.fetched.is_none_or(|t| now - t >= DETAIL_REFRESH);
                    if data.stale || (i == top && due) {
                        data.stale = false;
                        data.loading = true;
                        out.push(Request::Instance { id: id.clone() });
                    }
                }
                _ => {}
            }
        }
    }

    fn mark(&mut self, strategy: &str, hash: RevisionHash) {
        let until = self.now + HIGHLIGHT_FOR;
        self.changed_revisions.insert((strategy.to_owned(), hash), until);
        self.changed_strategies.insert(strategy.to_owned(), until);
    }

    fn live(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::Snapshot(snapshot) => {
                let old = std::mem::take(&mut self.mirror.revisions);
                self.mirror.apply(message);
                // A resync replacing live data highlights what differs; the
                // first snapshot (over nothing or the REST seed) does not.
                if self.live_synced && !old.is_empty() {
                    let changed: Vec<_> = self
                        .mirror
                        .revisions
                        .iter()
                        .filter(|(k, v)| old.get(*k) != Some(*v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for (strategy, hash) in changed {
                        self.mark(&strategy, hash);
                    }
                }
                tracing::info!(
                    seq = snapshot.seq,
                    reset = snapshot.reset,
                    revisions = snapshot.revisions.len(),
                    "snapshot"
                );
                self.live_synced = true;
                self.drift_stale = true;
                self.mark_views_stale();
                self.dirty = true;
            }
            ServerMessage::Delta(delta) => {
                for (strategy, hash) in self.mirror.apply(message) {
                    self.mark(&strategy, hash);
                }
                if !matches!(
                    delta.kind,
                    DeltaKind::InstanceStarted
                        | DeltaKind::InstanceStopped
                        | DeltaKind::InstanceFailed
                        | DeltaKind::RevisionsSeen
                ) {
                    self.drift_stale = true;
                }
                if let Some(id) = &delta.instance_id {
                    self.live_instance(delta, id);
                }
                self.dirty = true;
            }
            ServerMessage::Resync { reason, missed } => {
                self.say(format!("resyncing ({reason}, {missed} missed)"));
            }
            ServerMessage::Resumed { since } => tracing::info!(since, "stream resumed"),
            ServerMessage::Subscribed { .. } => {}
            ServerMessage::Error { error } => tracing::warn!(error, "the daemon rejected a stream message"),
        }
    }

    /// Applies an instance delta to the open instance lists and detail.
    fn live_instance(&mut self, delta: &strata_shared::stream::Delta, id: &str) {
        let mut touched = false;
        for view in &mut self.stack {
            match view {
                View::Instances { hash, data, .. } => {
                    let into = delta.hash == Some(*hash);
                    let away = delta.previous_hash == Some(*hash) || (into && delta.kind == DeltaKind::InstanceDeleted);
                    let Some(list) = data.data.as_mut() else {
                        data.stale |= into;
                        continue;
                    };
                    let at = list.instances.iter().position(|v| v.id == id);
                    match at {
                        Some(at) if away => {
                            list.instances.remove(at);
                            list.total = list.total.saturating_sub(1);
                        }
                        Some(at) if into => {
                            let view = &mut list.instances[at];
                            if let Some(state) = delta.state {
                                if state == InstanceState::Running && view.state != InstanceState::Running {
                                    view.started_at = Some(delta.ts);
                                }
                                view.state = state;
                            }
                            touched = true;
                        }
                        None if into => {
                            data.stale = true;
                            touched = true;
                        }
                        _ => {}
                    }
                }
                View::Detail { id: shown, data } if shown == id => {
                    if let (Some((view, _)), Some(state)) = (data.data.as_mut(), delta.state) {
                        view.state = state;
                    }
                    data.stale = true;
                    touched = true;
                }
                _ => {}
            }
        }
        if touched {
            self.changed_instances.insert(id.to_owned(), self.now + HIGHLIGHT_FOR);
        }
    }

    fn reply(&mut self, reply: Reply, out: &mut Vec<Request>) {
        let now = self.now;
        match reply {
            Reply::Bootstrap(result) => {
                self.bootstrap_loading = false;
                match result {
                    Ok(snapshot) if !self.live_synced => {
                        self.mirror.apply(&ServerMessage::Snapshot(snapshot));
                        self.dirty = true;
                    }
                    Ok(_) => {}
                    Err(e) => self.fail(format!("cannot read the registry: {e}")),
                }
            }
            Reply::Drift { strategy, result } => {
                if strategy.is_none() {
                    self.drift_loading = false;
                }
                match result {
                    Ok(entries) => {
                        let drift = self.drift.get_or_insert_with(HashMap::new);
                        match &strategy {
                            Some(s) => drift.retain(|(name, _), _| name != s),
                            None => drift.clear(),
                        }
                        for e in entries {
                            *drift.entry((e.strategy, e.hash)).or_insert(0) += 1;
                        }
                        self.dirty = true;
                    }
                    Err(e) => self.fail(format!("cannot read drift: {e}")),
                }
            }
            Reply::Instances { hash, result } => {
                let mut failed = None;
                for view in &mut self.stack {
                    if let View::Instances { hash: h, data, .. } = view
                        && *h == hash
                    {
                        if let Err(e) = &result {
                            failed = Some(e.clone());
                        }
                        data.set(result.clone(), now);
                        self.dirty = true;
                    }
                }
                if let Some(e) = failed {
                    self.fail(format!("cannot list instances: {e}"));
                }
            }
            Reply::Instance { id, result } => self.instance_reply(id, result, out),
            Reply::Preview { target, result } => {
                if let Some(Dialog { target: t, stage: Stage::Confirm(preview), .. }) = &mut self.dialog
                    && *t == target
                {
                    preview.set(result, now);
                }
            }
            Reply::Done { target, result } => {
                tracing::info!(action = target.describe(), ok = result.is_ok(), "action finished");
                let summary = match &result {
                    Ok(outcome) => format!("{}: {}", target.describe(), summarize(outcome)),
                    Err(e) => format!("{} failed: {e}", target.describe()),
                };
                match &mut self.dialog {
                    Some(dialog) if dialog.target == target => {
                        dialog.stage = Stage::Done(result);
                        dialog.scroll = 0;
                    }
                    _ => self.say(summary),
                }
                self.drift_stale = true;
                self.mark_views_stale();
            }
        }
    }

    /// Every open instance list and detail re-fetches at the next tick.
    fn mark_views_stale(&mut self) {
        for view in &mut self.stack {
            match view {
                View::Instances { data, .. } => data.stale = true,
                View::Detail { data, .. } => data.stale = true,
                View::Strategies { .. } | View::Revisions { .. } => {}
            }
        }
    }

    fn instance_reply(&mut self, id: String, result: Result<InstanceDetail, String>, out: &mut Vec<Request>) {
        let now = self.now;
        let is_top = matches!(self.top(), View::Detail { id: shown, .. } if *shown == id);
        let pin = result.as_ref().ok().map(|(v, _)| (v.strategy.identifier.clone(), v.strategy.hash));
        if let Err(e) = &result
            && is_top
        {
            self.fail(format!("cannot read instance {id}: {e}"));
        }
        for view in &mut self.stack {
            if let View::Detail { id: shown, data } = view
                && *shown == id
            {
                data.set(result.clone(), now);
            }
        }
        // `:instance ID` opens the detail straight from the top: fill in the
        // breadcrumbs once we know where the instance is pinned.
        if let (true, Some((strategy, hash)), 2) = (is_top, pin, self.stack.len()) {
            let detail = self.stack.pop().expect("two views");
            self.open_revision(strategy.clone(), hash, out);
            if let View::Instances { list, .. } = self.top_mut() {
                list.want = Some(RowKey::Name(id.clone()));
            }
            self.stack.push(detail);
        }
        self.dirty = true;
    }

    /// Recomputes the shown view's rows (filter, running-only, sort) and keeps
    /// the selection on the same row.
    fn rebuild(&mut self) {
        let height = list_rows(self.size.1);
        let key = self.top_mut().list_mut().and_then(|l| l.want.take()).or_else(|| self.top().selected_key());
        let mirror = &self.mirror;
        let drift = self.drift.as_ref();
        match self.stack.last_mut().expect("never empty") {
            View::Strategies { list, rows } => {
                *rows = strategy_rows(mirror, drift, list);
            }
            View::Revisions { strategy, list, rows } => {
                *rows = revision_rows(mirror, drift, strategy, list);
            }
            View::Instances { list, rows, data, .. } => {
                let instances = data.data.as_ref().map(|d| d.instances.as_slice()).unwrap_or(&[]);
                *rows = instance_rows(instances, list, self.now);
            }
            View::Detail { .. } => return,
        }
        let position = key.and_then(|key| {
            let top = self.top();
            match (top, key) {
                (View::Strategies { rows, .. }, RowKey::Name(n)) => rows.iter().position(|r| r.name == n),
                (View::Revisions { rows, .. }, RowKey::Hash(h)) => rows.iter().position(|r| *r == h),
                (View::Instances { rows, data, .. }, RowKey::Name(n)) => {
                    let list = data.data.as_ref()?;
                    rows.iter().position(|&i| list.instances[i].id == n)
                }
                _ => None,
            }
        });
        let len = self.top().len();
        let list = self.top_mut().list_mut().expect("a list view");
        if let Some(p) = position {
            list.selected = p;
        }
        list.selected = list.selected.min(len.saturating_sub(1));
        scroll_into_view(list, len, height);
    }
}

fn scroll_into_view(list: &mut ListState, len: usize, height: usize) {
    if list.selected < list.offset {
        list.offset = list.selected;
    } else if list.selected >= list.offset + height {
        list.offset = list.selected + 1 - height;
    }
    list.offset = list.offset.min(len.saturating_sub(height));
}

/// `momentum` matches names containing it; `!momentum` those that don't.
fn filter_matcher(filter: &str) -> impl Fn(&[&str]) -> bool {
    let (invert, needle) = match filter.strip_prefix('!') {
        Some(rest) => (true, rest.to_lowercase()),
        None => (false, filter.to_lowercase()),
    };
    move |fields: &[&str]| {
        if needle.is_empty() {
            return true;
        }
        let hit = fields.iter().any(|f| f.to_lowercase().contains(&needle));
        hit != invert
    }
}

fn order<T: Ord>(a: T, b: T, descending: bool) -> std::cmp::Ordering {
    if descending { b.cmp(&a) } else { a.cmp(&b) }
}

fn strategy_rows(
    mirror: &UsageMirror,
    drift: Option<&HashMap<(String, RevisionHash), usize>>,
    list: &ListState,
) -> Vec<StrategyRow> {
    let mut rows: Vec<StrategyRow> = Vec::new();
    for ((strategy, _), state) in &mirror.revisions {
        if rows.last().is_none_or(|r| r.name != *strategy) {
            rows.push(StrategyRow {
                name: strategy.clone(),
                revisions: 0,
                live: 0,
                running: 0,
                drift: drift.map(|_| 0),
            });
        }
        let row = rows.last_mut().expect("just pushed");
        row.revisions += 1;
        if state.count > 0 {
            row.live += 1;
            row.running += state.count;
        }
    }
    if let Some(drift) = drift {
        for ((strategy, _), n) in drift {
            if let Ok(at) = rows.binary_search_by(|r| r.name.as_str().cmp(strategy)) {
                *rows[at].drift.get_or_insert(0) += n;
            }
        }
    }
    let matches = filter_matcher(&list.filter);
    rows.retain(|r| matches(&[&r.name]) && (!list.running_only || r.running > 0));
    let d = list.descending;
    rows.sort_by(|a, b| match list.sort {
        1 => order(a.revisions, b.revisions, d),
        2 => order(a.live, b.live, d),
        3 => order(a.running, b.running, d),
        4 => order(a.drift, b.drift, d),
        _ => order(&a.name, &b.name, d),
    });
    rows
}

fn revision_rows(
    mirror: &UsageMirror,
    drift: Option<&HashMap<(String, RevisionHash), usize>>,
    strategy: &str,
    list: &ListState,
) -> Vec<RevisionHash> {
    let low = (strategy.to_owned(), RevisionHash::from_bytes([0; 32]));
    let high = (strategy.to_owned(), RevisionHash::from_bytes([0xff; 32]));
    let matches = filter_matcher(&list.filter);
    let filtering = !list.filter.trim_start_matches('!').is_empty();
    let mut rows: Vec<&RevisionState> = mirror
        .revisions
        .range(low..=high)
        .map(|(_, s)| s)
        .filter(|s| !list.running_only || s.count > 0)
        .filter(|s| {
            if !filtering {
                return true;
            }
            let hex = s.hash.to_hex();
            let mut fields: Vec<&str> = vec![&hex];
            fields.extend(s.tags.iter().map(String::as_str));
            matches(&fields)
        })
        .collect();
    let drift_of = |s: &RevisionState| drift.map(|d| d.get(&(s.strategy.clone(), s.hash)).copied().unwrap_or(0));
    let d = list.descending;
    match list.sort {
        1 => rows.sort_by(|a, b| order(&a.tags, &b.tags, d)),
        2 => rows.sort_by(|a, b| order(a.count, b.count, d)),
        3 => rows.sort_by(|a, b| order(a.first_seen, b.first_seen, d)),
        4 => rows.sort_by(|a, b| order(a.last_seen, b.last_seen, d)),
        5 => rows.sort_by(|a, b| order(a.retired, b.retired, d)),
        6 => {
            rows.sort_by_cached_key(|s| drift_of(s));
            if d {
                rows.reverse();
            }
        }
        _ if d => rows.reverse(),
        _ => {}
    }
    rows.into_iter().map(|s| s.hash).collect()
}

fn instance_rows(instances: &[InstanceView], list: &ListState, now: OffsetDateTime) -> Vec<usize> {
    let matches = filter_matcher(&list.filter);
    let mut rows: Vec<usize> = (0..instances.len())
        .filter(|&i| {
            let v = &instances[i];
            (!list.running_only || v.state == InstanceState::Running) && matches(&[&v.id, v.state.as_str()])
        })
        .collect();
    let d = list.descending;
    let uptime = |v: &InstanceView| match (v.state, v.started_at) {
        (InstanceState::Running, Some(t)) => (now - t).whole_seconds(),
        _ => -1,
    };
    rows.sort_by(|&a, &b| {
        let (a, b) = (&instances[a], &instances[b]);
        match list.sort {
            1 => order(a.state.as_str(), b.state.as_str(), d),
            2 => order(uptime(a), uptime(b), d),
            3 => order(a.counters.events_delivered, b.counters.events_delivered, d),
            4 => order(a.counters.orders_submitted, b.counters.orders_submitted, d),
            5 => order(a.counters.handler_errors, b.counters.handler_errors, d),
            6 => order(a.drift, b.drift, d),
            _ => order(&a.id, &b.id, d),
        }
    });
    rows
}

/// `2 refreshed, 1 alreadyPinned`: counts by reason code.
pub fn summarize(outcome: &Outcome) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    match outcome {
        Outcome::Refresh(r) => r.results.iter().for_each(|r| *counts.entry(r.reason.as_str()).or_default() += 1),
        Outcome::Batch(b) => b.results.iter().for_each(|r| *counts.entry(r.reason.as_str()).or_default() += 1),
        Outcome::Instance(v) => return format!("now {}", v.state.as_str()),
    }
    if counts.is_empty() {
        return "no instances".to_owned();
    }
    counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect::<Vec<_>>().join(", ")
}
