//! The `?` overlay, generated from the keymap (actions absent in read-only):
//! view keys on the left, prompt and dialog keys on the right.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::centered;
use crate::keymap::{self, Scope};

/// The help's lines for some scopes: a heading per scope, then `keys  what`.
fn lines(readonly: bool, scopes: &[Scope]) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for &scope in scopes {
        let entries: Vec<_> = keymap::help_entries(readonly).filter(|b| b.scope == scope).collect();
        if entries.is_empty() {
            continue;
        }
        out.push(Line::from(Span::styled(scope.title(), Style::new().bold().fg(Color::Cyan))));
        for b in entries {
            out.push(Line::from(vec![Span::raw(format!("  {:<14}", b.keys_label())), Span::raw(b.help)]));
        }
    }
    out
}

pub(super) fn render(readonly: bool, scroll: usize, frame: &mut Frame, area: Rect) {
    let left = lines(readonly, &[Scope::Views]);
    let right = lines(readonly, &[Scope::Prompt, Scope::Confirm, Scope::Result, Scope::Help]);
    let tallest = left.len().max(right.len());
    let popup = centered(area, 100, tallest as u16 + 2);
    let visible = usize::from(popup.height.saturating_sub(2));
    let scroll = scroll.min(tallest.saturating_sub(visible));
    let title = if readonly { " Keys (read-only) " } else { " Keys " };
    let more = if scroll + visible < tallest { " ↓ more " } else { "" };
    let block = Block::bordered().title(Line::from(title).bold()).title_bottom(Line::from(more).right_aligned());
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let [l, r] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner);
    frame.render_widget(Paragraph::new(left).scroll((scroll as u16, 0)), l);
    frame.render_widget(Paragraph::new(right).scroll((scroll as u16, 0)), r);
}
