//! The action dialog: confirmation with a preview of the instances the
//! action touches, then the result panel with each instance's reason code.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::{centered, hints};
use crate::app::{App, Dialog, Stage, summarize};
use crate::client::{Outcome, Target};
use crate::format::{short_hash, truncate};
use crate::keymap::Scope;

fn preview_note(target: &Target) -> &'static str {
    match target {
        Target::RefreshStrategy(_) | Target::RefreshHash { .. } => {
            "instance(s) it will re-resolve (drifting ones move; those running restart):"
        }
        Target::RestartAll { .. } => "instance(s) pinned to this hash (running ones restart):",
        Target::Instance { .. } => "instance:",
    }
}

fn confirm_lines(dialog: &Dialog, room: usize) -> Vec<Line<'static>> {
    let Stage::Confirm(preview) = &dialog.stage else { return Vec::new() };
    let mut lines = vec![Line::from(format!("{}?", capitalize(&dialog.target.describe()))).bold(), Line::from("")];
    match (&preview.data, &preview.error) {
        (_, Some(e)) => lines.push(Line::from(Span::styled(format!("cannot preview: {e}"), Color::Red))),
        (None, None) => lines.push(Line::from("loading the instances it touches…")),
        (Some(list), None) if list.instances.is_empty() => lines.push(Line::from("It touches no instance.")),
        (Some(list), None) => {
            lines.push(Line::from(format!("{} {}", list.total, preview_note(&dialog.target))));
            let room = room.saturating_sub(lines.len() + 2).max(1);
            for v in list.instances.iter().take(room) {
                let drift = match (v.drift, &v.resolves_to) {
                    (true, Some(to)) => format!("drift → {}", short_hash(to)),
                    _ => String::new(),
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("  {:<24} ", truncate(&v.id, 24))),
                    Span::styled(format!("{:<9}", v.state.as_str()), super::instances::state_color(v.state)),
                    Span::raw(format!("{:<24} ", truncate(&v.strategy.selector, 24))),
                    Span::styled(drift, Color::Yellow),
                ]));
            }
            if list.total > room.min(list.instances.len()) {
                lines.push(Line::from(format!("  … and {} more", list.total - room.min(list.instances.len()))));
            }
        }
    }
    lines
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn result_row(
    lines: &mut Vec<Line<'static>>,
    who: String,
    reason: &'static str,
    moved: String,
    error: Option<&String>,
) {
    let color = match reason {
        "refreshed" => Color::Green,
        "failed" | "notFound" => Color::Red,
        "retired" => Color::Yellow,
        _ => Color::Reset,
    };
    lines.push(Line::from(vec![
        Span::raw(format!("  {:<26} ", truncate(&who, 26))),
        Span::styled(format!("{reason:<14}"), color),
        Span::raw(moved),
    ]));
    if let Some(e) = error {
        lines.push(Line::from(Span::styled(format!("      error: {e}"), Color::Red)));
    }
}

fn result_lines(dialog: &Dialog) -> Vec<Line<'static>> {
    let Stage::Done(result) = &dialog.stage else {
        return vec![
            Line::from(format!("{}…", capitalize(&dialog.target.describe()))),
            Line::from("waiting for the daemon"),
        ];
    };
    let outcome = match result {
        Err(e) => {
            return vec![
                Line::from(format!("{} failed", capitalize(&dialog.target.describe()))).bold(),
                Line::from(Span::styled(e.clone(), Color::Red)),
            ];
        }
        Ok(o) => o,
    };
    let moved =
        |prev: Option<&strata_shared::RevisionHash>, now: Option<&strata_shared::RevisionHash>| match (prev, now) {
            (Some(p), Some(n)) if p != n => format!("{} → {}", short_hash(p), short_hash(n)),
            (_, Some(n)) => short_hash(n),
            _ => String::new(),
        };
    let columns = match outcome {
        Outcome::Instance(_) => format!("  {:<26} {}", "instance", "state"),
        _ => format!("  {:<26} {:<14}{}", "instance", "reason", "hash"),
    };
    let mut lines = vec![
        Line::from(format!("{}: {}", capitalize(&dialog.target.describe()), summarize(outcome))).bold(),
        Line::from(Span::styled(columns, Style::new().underlined())),
    ];
    match outcome {
        Outcome::Refresh(r) => {
            for res in &r.results {
                let who = if res.instances.is_empty() { res.selector.clone() } else { res.instances.join(",") };
                result_row(
                    &mut lines,
                    who,
                    res.reason.as_str(),
                    moved(res.previous_hash.as_ref(), res.hash.as_ref()),
                    res.error.as_ref(),
                );
            }
        }
        Outcome::Batch(b) => {
            for res in &b.results {
                let m = moved(Some(&res.previous_hash), Some(&res.hash));
                result_row(&mut lines, res.instance_id.clone(), res.reason.as_str(), m, res.error.as_ref());
            }
        }
        Outcome::Instance(v) => {
            lines.push(Line::from(vec![
                Span::raw(format!("  {:<26} ", truncate(&v.id, 26))),
                Span::styled(v.state.as_str(), super::instances::state_color(v.state)),
            ]));
        }
    }
    lines
}

pub(super) fn render(app: &App, dialog: &Dialog, frame: &mut Frame, area: Rect) {
    let room = usize::from(area.height.saturating_sub(6));
    let (title, lines, scope) = match dialog.stage {
        Stage::Confirm(_) => (" Confirm ", confirm_lines(dialog, room), Scope::Confirm),
        _ => (" Result ", result_lines(dialog), Scope::Result),
    };
    let popup = centered(area, 90, (lines.len() + 3).min(room + 2) as u16);
    let room = usize::from(popup.height.saturating_sub(2));
    let scroll = dialog.scroll.min(lines.len().saturating_sub(room));
    let block = Block::bordered()
        .title(Line::from(title).bold())
        .title_bottom(Line::from(format!(" {} ", hints(scope, app.readonly))).right_aligned())
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Clear, popup);
    frame
        .render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }).scroll((scroll as u16, 0)), popup);
}
