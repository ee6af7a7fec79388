//! The `?` overlay, generated from the keymap (actions absent in read-only).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::centered;
use crate::keymap::{self, Scope};

/// The help's lines: a heading per scope, then `keys  what`.
pub(super) fn lines(readonly: bool) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for scope in Scope::ALL {
        let entries: Vec<_> = keymap::help_entries(readonly).filter(|b| b.scope == scope).collect();
        if entries.is_empty() {
            continue;
        }
        out.push(Line::from(Span::styled(scope.title(), Style::new().bold().fg(Color::Cyan))));
        for b in entries {
            out.push(Line::from(vec![Span::raw(format!("  {:<16}", b.keys_label())), Span::raw(b.help)]));
        }
    }
    out
}

pub(super) fn render(readonly: bool, scroll: usize, frame: &mut Frame, area: Rect) {
    let lines = lines(readonly);
    let popup = centered(area, 64, lines.len() as u16 + 2);
    let visible = usize::from(popup.height.saturating_sub(2));
    let scroll = scroll.min(lines.len().saturating_sub(visible));
    let title = if readonly { " Keys (read-only) " } else { " Keys " };
    let more = if scroll + visible < lines.len() { " ↓ more " } else { "" };
    let block = Block::bordered().title(Line::from(title).bold()).title_bottom(Line::from(more).right_aligned());
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block).scroll((scroll as u16, 0)), popup);
}
