//! Revisions of one strategy: short hash, tags, running count, first/last
//! seen (relative to the app's "now"), retired, drift.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Cell;
use strata_shared::RevisionHash;

use super::{count_or_dash, list_block, render_list, render_note};
use crate::app::{App, ListState, REVISION_COLUMNS};
use crate::format::{relative, short_hash};

pub(super) fn render(
    app: &App,
    strategy: &str,
    list: &ListState,
    rows: &[RevisionHash],
    frame: &mut Frame,
    area: Rect,
) {
    let block = list_block(format!(" Revisions of {strategy} ({}) ", rows.len()), &REVISION_COLUMNS, list);
    if rows.is_empty() {
        return render_note(frame, area, block, "no revisions", false);
    }
    let widths = [
        Constraint::Length(13),
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(6),
    ];
    render_list(frame, area, block, (&REVISION_COLUMNS, &widths), list, rows.len(), |i| {
        let hash = &rows[i];
        let Some(r) = app.revision(strategy, hash) else {
            return (vec![Cell::from(short_hash(hash)), Cell::from("(deleted)")], false);
        };
        let cells = vec![
            Cell::from(short_hash(hash)),
            Cell::from(r.tags.join(",")),
            Cell::from(r.count.to_string()),
            Cell::from(relative(app.now, r.first_seen)),
            Cell::from(relative(app.now, r.last_seen)),
            Cell::from(if r.retired { "retired" } else { "" }),
            Cell::from(count_or_dash(app.revision_drift(strategy, hash))),
        ];
        (cells, app.revision_changed(strategy, hash))
    });
}
