//! The strategies list: revisions, live hashes, running instances, drift.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Cell;

use super::{count_or_dash, list_block, render_list, render_note};
use crate::app::{App, ListState, STRATEGY_COLUMNS, StrategyRow};

pub(super) fn render(app: &App, list: &ListState, rows: &[StrategyRow], frame: &mut Frame, area: Rect) {
    let block = list_block(format!(" Strategies ({}) ", rows.len()), &STRATEGY_COLUMNS, list);
    if rows.is_empty() {
        let note = if app.bootstrapping() && app.mirror.revisions.is_empty() { "loading…" } else { "no strategies" };
        return render_note(frame, area, block, note, false);
    }
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(6),
    ];
    render_list(frame, area, block, (&STRATEGY_COLUMNS, &widths), list, rows.len(), |i| {
        let r = &rows[i];
        let cells = vec![
            Cell::from(r.name.clone()),
            Cell::from(r.revisions.to_string()),
            Cell::from(r.live.to_string()),
            Cell::from(r.running.to_string()),
            Cell::from(count_or_dash(r.drift)),
        ];
        (cells, app.strategy_changed(&r.name))
    });
}
