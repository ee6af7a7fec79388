//! Rendering: one module per view plus the overlays. Everything here takes
//! `&App` and draws; nothing mutates state or does I/O.
//!
//! Lists render only their visible window (`offset..offset+height`), so a
//! frame costs the same for 100 rows or 60,000.

mod detail;
mod dialog;
mod help;
mod instances;
mod revisions;
mod strategies;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

use crate::app::{App, ConnState, ListState, Prompt, View};
use crate::format::short_hash;
use crate::keymap::{self, Scope};

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    render_header(app, frame, header);
    match app.top() {
        View::Strategies { list, rows } => strategies::render(app, list, rows, frame, body),
        View::Revisions { strategy, list, rows } => revisions::render(app, strategy, list, rows, frame, body),
        View::Instances { list, rows, data, .. } => instances::render(app, list, rows, data, frame, body),
        View::Detail { id, data } => detail::render(app, id, data, frame, body),
    }
    render_footer(app, frame, footer);
    if let Some(scroll) = app.help {
        help::render(app.readonly, scroll, frame, area);
    }
    if let Some(d) = &app.dialog {
        dialog::render(app, d, frame, area);
    }
}

fn crumb(view: &View) -> String {
    match view {
        View::Strategies { .. } => "strategies".to_owned(),
        View::Revisions { strategy, .. } => strategy.clone(),
        View::Instances { hash, .. } => short_hash(hash),
        View::Detail { id, .. } => id.clone(),
    }
}

fn connection(app: &App) -> Span<'static> {
    match &app.conn {
        ConnState::Connected if app.live_synced => Span::styled(format!("● live #{}", app.mirror.seq), Color::Green),
        ConnState::Connected => Span::styled("● connected, awaiting snapshot", Color::Yellow),
        ConnState::Connecting { attempt } if *attempt <= 1 => Span::styled("◌ connecting…", Color::Yellow),
        ConnState::Connecting { attempt } => {
            Span::styled(format!("◌ reconnecting (attempt {attempt})…"), Color::Yellow)
        }
        ConnState::Disconnected { error, retry_in, .. } => Span::styled(
            format!("○ offline (retry in {:.1}s): {}", retry_in.as_secs_f32(), crate::format::truncate(error, 28)),
            Color::Red,
        ),
    }
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled("strata", Style::new().bold())];
    for view in &app.stack {
        spans.push(Span::raw(" › "));
        spans.push(Span::raw(crumb(view)));
    }
    if app.readonly {
        spans.push(Span::styled("  [read-only]", Color::Cyan));
    }
    let conn = connection(app);
    let width = conn.content.chars().count() as u16;
    let [left, right] = Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(Line::from(conn)), right);
}

/// `key: help` pairs for a scope, generated from the keymap.
pub(crate) fn hints(scope: Scope, readonly: bool) -> String {
    keymap::help_entries(readonly)
        .filter(|b| b.scope == scope)
        .map(|b| format!("{} {}", b.keys_label(), b.help))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let line = match (&app.prompt, &app.message) {
        (Some(Prompt::Filter { text, .. }), _) => {
            Line::from(vec![Span::raw("/"), Span::raw(text.clone()), Span::raw("█")])
        }
        (Some(Prompt::Command { text }), _) => {
            Line::from(vec![Span::raw(":"), Span::raw(text.clone()), Span::raw("█")])
        }
        (None, Some(m)) => Line::from(Span::styled(m.text.clone(), if m.error { Color::Red } else { Color::Cyan })),
        (None, None) => {
            let mut hint =
                "? help · / filter · : command · Enter open · Esc back · s sort · o running · q quit".to_owned();
            if let Some(list) = list_of(app.top()) {
                let len = app.top().len();
                if len > 0 {
                    hint = format!("{hint}   row {}/{len}", list.selected + 1);
                }
            }
            Line::from(Span::styled(hint, Color::DarkGray))
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn list_of(view: &View) -> Option<&ListState> {
    match view {
        View::Strategies { list, .. } | View::Revisions { list, .. } | View::Instances { list, .. } => Some(list),
        View::Detail { .. } => None,
    }
}

/// The list's block: title on the left, filter / sort / running-only on the right.
fn list_block(title: String, columns: &[&str], list: &ListState) -> Block<'static> {
    let mut info = format!("sort: {} {}", columns[list.sort], if list.descending { "▼" } else { "▲" });
    if !list.filter.is_empty() {
        info = format!("filter: {} · {info}", list.filter);
    }
    if list.running_only {
        info.push_str(" · running only");
    }
    Block::bordered().title(Line::from(title).bold()).title(Line::from(format!(" {info} ")).right_aligned())
}

/// Draws a list's visible window. `row(i)` builds the cells of row `i` and
/// says whether it changed recently (highlighted).
fn render_list<'a>(
    frame: &mut Frame,
    area: Rect,
    block: Block<'a>,
    (columns, widths): (&[&str], &[Constraint]),
    list: &ListState,
    len: usize,
    row: impl Fn(usize) -> (Vec<Cell<'a>>, bool),
) {
    // Borders and the column titles take three lines (see `list_rows`).
    let height = usize::from(area.height.saturating_sub(3));
    let start = list.offset.min(len);
    let end = (start + height).min(len);
    let mut header: Vec<Cell> = vec![Cell::from("")];
    for (i, c) in columns.iter().enumerate() {
        let title = if i == list.sort {
            format!("{c}{}", if list.descending { "▼" } else { "▲" })
        } else {
            (*c).to_owned()
        };
        header.push(Cell::from(title));
    }
    let rows = (start..end).map(|i| {
        let (mut cells, changed) = row(i);
        cells.insert(0, Cell::from(if changed { "•" } else { " " }));
        let r = Row::new(cells);
        if changed { r.style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)) } else { r }
    });
    let mut all_widths = vec![Constraint::Length(1)];
    all_widths.extend_from_slice(widths);
    let table = Table::new(rows, all_widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("› ");
    let mut state = TableState::default();
    if list.selected >= start && list.selected < end {
        state.select(Some(list.selected - start));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

/// A message inside an empty list's block (loading, error, nothing).
fn render_note(frame: &mut Frame, area: Rect, block: Block<'_>, note: &str, error: bool) {
    let style = if error { Style::new().fg(Color::Red) } else { Style::new().fg(Color::DarkGray) };
    frame.render_widget(Paragraph::new(Span::styled(note.to_owned(), style)).block(block), area);
}

/// A centred rectangle of at most `width` × `height` inside `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2));
    let h = height.min(area.height.saturating_sub(2));
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// `-` for zero, the number otherwise; `?` when unknown.
fn count_or_dash(n: Option<usize>) -> String {
    match n {
        None => "?".to_owned(),
        Some(0) => "-".to_owned(),
        Some(n) => n.to_string(),
    }
}
