//! The one keymap table: it drives key dispatch ([`lookup`]) and the help
//! overlay ([`help_entries`]), so the two can never disagree. Bindings whose
//! command is an action ([`Command::is_action`]) vanish in `--readonly`.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks for. The app turns it into state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Move the selection (or scroll) up one row.
    Up,
    /// Move the selection (or scroll) down one row.
    Down,
    /// Up one page.
    PageUp,
    /// Down one page.
    PageDown,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// Drill down into the selected row.
    Enter,
    /// Back to the previous view (clears an active filter first).
    Back,
    /// Open the `/` filter prompt.
    Filter,
    /// Open the `:` command bar.
    CommandBar,
    /// Sort by the next column.
    SortNext,
    /// Reverse the sort order.
    SortReverse,
    /// Toggle "running only".
    RunningOnly,
    /// Re-fetch the current view from the daemon.
    Reload,
    /// Show the help overlay.
    Help,
    /// Quit the console.
    Quit,
    /// Targeted refresh of the selected strategy or hash (with confirmation).
    Refresh,
    /// Restart every instance on the selected hash (with confirmation).
    RestartAll,
    /// Start the selected instance.
    Start,
    /// Stop the selected instance.
    Stop,
    /// Restart the selected instance.
    Restart,
    /// Confirm a dialog.
    Confirm,
    /// Dismiss a dialog, the help or a prompt.
    Close,
    /// Apply the text typed in a prompt.
    Submit,
    /// Delete the last character of a prompt.
    Erase,
}

impl Command {
    /// Whether the command changes something on the daemon (hidden in `--readonly`).
    pub fn is_action(self) -> bool {
        matches!(self, Command::Refresh | Command::RestartAll | Command::Start | Command::Stop | Command::Restart)
    }
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Browsing a view (lists and the instance detail).
    Views,
    /// Typing in the `/` filter or `:` command prompt (other keys are text).
    Prompt,
    /// The confirmation dialog of an action.
    Confirm,
    /// The result panel of an action.
    Result,
    /// The help overlay.
    Help,
}

impl Scope {
    /// Every scope, in help order.
    pub const ALL: [Scope; 5] = [Scope::Views, Scope::Prompt, Scope::Confirm, Scope::Result, Scope::Help];

    /// Heading used in the help overlay and docs.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Views => "Views",
            Scope::Prompt => "Filter / command prompt",
            Scope::Confirm => "Confirmation dialog",
            Scope::Result => "Result panel",
            Scope::Help => "Help",
        }
    }
}

/// One key: a code, with or without Ctrl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key code (`Char` codes match regardless of Shift).
    pub code: KeyCode,
    /// Whether Ctrl must be held.
    pub ctrl: bool,
}

impl Key {
    const fn plain(code: KeyCode) -> Key {
        Key { code, ctrl: false }
    }

    const fn ch(c: char) -> Key {
        Key { code: KeyCode::Char(c), ctrl: false }
    }

    const fn ctrl(c: char) -> Key {
        Key { code: KeyCode::Char(c), ctrl: true }
    }

    /// Whether a terminal key event is this key.
    pub fn matches(&self, event: &KeyEvent) -> bool {
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        let code = match event.code {
            KeyCode::Char(c) if ctrl => KeyCode::Char(c.to_ascii_lowercase()),
            other => other,
        };
        code == self.code && ctrl == self.ctrl
    }

    /// How the key is written in the help: `↑`, `PgDn`, `Ctrl-c`, `G`.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Up => "↑".to_owned(),
            KeyCode::Down => "↓".to_owned(),
            KeyCode::PageUp => "PgUp".to_owned(),
            KeyCode::PageDown => "PgDn".to_owned(),
            KeyCode::Home => "Home".to_owned(),
            KeyCode::End => "End".to_owned(),
            KeyCode::Enter => "Enter".to_owned(),
            KeyCode::Esc => "Esc".to_owned(),
            KeyCode::Backspace => "Backspace".to_owned(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::Char(c) => c.to_string(),
            other => format!("{other:?}"),
        };
        if self.ctrl { format!("Ctrl-{base}") } else { base }
    }
}

/// One row of the keymap.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Keys that trigger it.
    pub keys: &'static [Key],
    /// What it does.
    pub command: Command,
    /// Where it applies.
    pub scope: Scope,
    /// Help text.
    pub help: &'static str,
}

impl Binding {
    /// The keys as written in the help: `↑ k`.
    pub fn keys_label(&self) -> String {
        self.keys.iter().map(Key::label).collect::<Vec<_>>().join(" ")
    }
}

const fn bind(keys: &'static [Key], command: Command, scope: Scope, help: &'static str) -> Binding {
    Binding { keys, command, scope, help }
}

use Command as C;
use KeyCode as K;
use Scope as S;

/// Every binding, in help order.
pub const KEYMAP: &[Binding] = &[
    bind(&[Key::plain(K::Up), Key::ch('k')], C::Up, S::Views, "move up"),
    bind(&[Key::plain(K::Down), Key::ch('j')], C::Down, S::Views, "move down"),
    bind(&[Key::plain(K::PageUp)], C::PageUp, S::Views, "page up"),
    bind(&[Key::plain(K::PageDown)], C::PageDown, S::Views, "page down"),
    bind(&[Key::plain(K::Home), Key::ch('g')], C::Top, S::Views, "first row"),
    bind(&[Key::plain(K::End), Key::ch('G')], C::Bottom, S::Views, "last row"),
    bind(&[Key::plain(K::Enter)], C::Enter, S::Views, "drill down"),
    bind(&[Key::plain(K::Esc), Key::plain(K::Backspace)], C::Back, S::Views, "clear filter, else go back"),
    bind(&[Key::ch('/')], C::Filter, S::Views, "filter rows (!text inverts)"),
    bind(&[Key::ch(':')], C::CommandBar, S::Views, "command bar (:strategy :hash …)"),
    bind(&[Key::ch('s')], C::SortNext, S::Views, "sort by next column"),
    bind(&[Key::ch('S')], C::SortReverse, S::Views, "reverse sort order"),
    bind(&[Key::ch('o')], C::RunningOnly, S::Views, "toggle running only"),
    bind(&[Key::plain(K::F(5)), Key::ctrl('r')], C::Reload, S::Views, "reload view from the daemon"),
    bind(&[Key::ch('r')], C::Refresh, S::Views, "refresh selected strategy/hash…"),
    bind(&[Key::ch('R')], C::RestartAll, S::Views, "restart all instances on hash…"),
    bind(&[Key::ch('t')], C::Start, S::Views, "start instance…"),
    bind(&[Key::ch('x')], C::Stop, S::Views, "stop instance…"),
    bind(&[Key::ch('X')], C::Restart, S::Views, "restart instance…"),
    bind(&[Key::ch('?')], C::Help, S::Views, "this help"),
    bind(&[Key::ch('q'), Key::ctrl('c')], C::Quit, S::Views, "quit"),
    bind(&[Key::plain(K::Enter)], C::Submit, S::Prompt, "apply"),
    bind(&[Key::plain(K::Esc)], C::Close, S::Prompt, "cancel"),
    bind(&[Key::plain(K::Backspace)], C::Erase, S::Prompt, "delete a character"),
    bind(&[Key::ch('y'), Key::plain(K::Enter)], C::Confirm, S::Confirm, "run the action"),
    bind(&[Key::ch('n'), Key::plain(K::Esc)], C::Close, S::Confirm, "cancel"),
    bind(&[Key::plain(K::Up), Key::ch('k')], C::Up, S::Result, "scroll up"),
    bind(&[Key::plain(K::Down), Key::ch('j')], C::Down, S::Result, "scroll down"),
    bind(&[Key::plain(K::Enter), Key::plain(K::Esc)], C::Close, S::Result, "close"),
    bind(&[Key::plain(K::Up), Key::ch('k')], C::Up, S::Help, "scroll up"),
    bind(&[Key::plain(K::Down), Key::ch('j')], C::Down, S::Help, "scroll down"),
    bind(&[Key::plain(K::Esc), Key::ch('?'), Key::ch('q')], C::Close, S::Help, "close"),
    bind(&[Key::ctrl('c')], C::Quit, S::Prompt, "quit"),
];

/// The command bound to `event` in `scope`, skipping actions when `readonly`.
pub fn lookup(scope: Scope, event: &KeyEvent, readonly: bool) -> Option<Command> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    KEYMAP
        .iter()
        .filter(|b| b.scope == scope && !(readonly && b.command.is_action()))
        .find(|b| b.keys.iter().any(|k| k.matches(event)))
        .map(|b| b.command)
}

/// The bindings shown in the help, in order (without actions when `readonly`).
pub fn help_entries(readonly: bool) -> impl Iterator<Item = &'static Binding> {
    Scope::ALL.into_iter().flat_map(move |scope| {
        // Read-only consoles never open an action dialog: its keys are left out too.
        let hidden = readonly && matches!(scope, Scope::Confirm | Scope::Result);
        KEYMAP.iter().filter(move |b| !hidden && b.scope == scope && !(readonly && b.command.is_action()))
    })
}

/// The keymap as a Markdown table (`docs/console.md` carries it verbatim).
pub fn markdown_table() -> String {
    let mut out = String::from("| Where | Keys | Does |\n|---|---|---|\n");
    for b in help_entries(false) {
        let keys = b.keys.iter().map(|k| format!("`{}`", k.label())).collect::<Vec<_>>().join(" ");
        let keys = keys.replace('|', "\\|");
        let action = if b.command.is_action() { " *(action)*" } else { "" };
        out.push_str(&format!("| {} | {} | {}{} |\n", b.scope.title(), keys, b.help, action));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_dispatch_by_scope_and_readonly_drops_actions() {
        let enter = key(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(lookup(Scope::Views, &enter, false), Some(Command::Enter));
        assert_eq!(lookup(Scope::Prompt, &enter, false), Some(Command::Submit));
        assert_eq!(lookup(Scope::Confirm, &enter, false), Some(Command::Confirm));
        let big_r = key(KeyCode::Char('R'), KeyModifiers::SHIFT);
        assert_eq!(lookup(Scope::Views, &big_r, false), Some(Command::RestartAll));
        assert_eq!(lookup(Scope::Views, &big_r, true), None);
        let ctrl_c = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(Scope::Views, &ctrl_c, true), Some(Command::Quit));
        assert_eq!(lookup(Scope::Views, &key(KeyCode::Char('c'), KeyModifiers::NONE), true), None);
        assert!(help_entries(true).all(|b| !b.command.is_action()));
        assert!(help_entries(false).any(|b| b.command == Command::Refresh));
    }

    #[test]
    fn no_key_is_bound_twice_in_one_scope() {
        for scope in Scope::ALL {
            let keys: Vec<Key> =
                KEYMAP.iter().filter(|b| b.scope == scope).flat_map(|b| b.keys.iter().copied()).collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(k), "{:?} bound twice in {scope:?}", k.label());
            }
        }
    }

    #[test]
    fn the_docs_carry_the_keymap_table() {
        let doc = include_str!("../../docs/console.md");
        let table = markdown_table();
        let header = table.lines().next().expect("a header line");
        // The table in the doc runs from its header to the first blank line,
        // and must be exactly the generated one (nothing appended to it).
        let start = doc.find(header).expect("docs/console.md has the key table");
        let end = doc[start..].find("\n\n").map_or(doc.len(), |n| start + n + 1);
        assert_eq!(
            &doc[start..end],
            table,
            "docs/console.md's key table is stale; replace it with the table between the markers:\n\
             --- begin ---\n{table}--- end ---"
        );
    }
}
