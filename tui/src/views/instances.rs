//! Instances pinned to one revision: id, state, uptime, events, orders, errors, drift.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Color;
use ratatui::widgets::Cell;
use strata_shared::api::InstanceState;

use super::{list_block, render_list, render_note};
use crate::app::{App, INSTANCE_COLUMNS, ListState, Loadable};
use crate::client::InstanceList;
use crate::format::uptime;

/// Colour of a state.
pub(super) fn state_color(state: InstanceState) -> Color {
    match state {
        InstanceState::Running => Color::Green,
        InstanceState::Failed => Color::Red,
        InstanceState::Starting | InstanceState::Stopping => Color::Yellow,
        InstanceState::Stopped => Color::Gray,
    }
}

pub(super) fn render(
    app: &App,
    list: &ListState,
    rows: &[usize],
    data: &Loadable<InstanceList>,
    frame: &mut Frame,
    area: Rect,
) {
    let total = data.data.as_ref().map(|d| d.total).unwrap_or(0);
    let mut title = format!(" Instances ({}/{total}) ", rows.len());
    if data.loading && data.data.is_some() {
        title.push_str("loading… ");
    }
    let block = list_block(title, &INSTANCE_COLUMNS, list);
    let Some(instances) = data.data.as_ref() else {
        let (note, error) = match &data.error {
            Some(e) => (format!("error: {e}"), true),
            None => ("loading…".to_owned(), false),
        };
        return render_note(frame, area, block, &note, error);
    };
    if rows.is_empty() {
        return render_note(frame, area, block, "no instances on this revision", false);
    }
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    render_list(frame, area, block, (&INSTANCE_COLUMNS, &widths), list, rows.len(), |i| {
        let v = &instances.instances[rows[i]];
        let running = v.state == InstanceState::Running;
        let cells = vec![
            Cell::from(v.id.clone()),
            Cell::from(v.state.as_str()).style(state_color(v.state)),
            Cell::from(uptime(app.now, v.started_at, running)),
            Cell::from(v.counters.events_delivered.to_string()),
            Cell::from(v.counters.orders_submitted.to_string()),
            Cell::from(v.counters.handler_errors.to_string()),
            Cell::from(if v.drift { "drift" } else { "" }),
        ];
        (cells, app.instance_changed(&v.id))
    });
}
