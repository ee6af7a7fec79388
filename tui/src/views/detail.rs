//! One instance: selector, pinned hash, state, config, counters, last error
//! and the last log lines that fit.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use strata_shared::api::InstanceState;

use super::instances::state_color;
use super::render_note;
use crate::app::{App, InstanceDetail, Loadable};
use crate::format::{relative, short_hash, uptime};

fn field(name: &str, value: impl Into<String>) -> Line<'static> {
    Line::from(vec![Span::styled(format!("{name:<12}"), Style::new().fg(Color::DarkGray)), Span::raw(value.into())])
}

pub(super) fn render(app: &App, id: &str, data: &Loadable<InstanceDetail>, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(Line::from(format!(" Instance {id} ")).bold());
    let Some((v, logs)) = data.data.as_ref() else {
        let (note, error) = match &data.error {
            Some(e) => (format!("error: {e}"), true),
            None => ("loading…".to_owned(), false),
        };
        return render_note(frame, area, block, &note, error);
    };
    let running = v.state == InstanceState::Running;
    let pinned = match &v.strategy.tag {
        Some(tag) => format!("{} ({tag})", v.strategy.hash),
        None => v.strategy.hash.to_string(),
    };
    let drift = match (&v.resolves_to, v.drift) {
        (Some(to), true) => format!("yes: {} now resolves to {}", v.strategy.selector, short_hash(to)),
        (None, _) => format!("{} no longer resolves", v.strategy.selector),
        (Some(_), false) => "no".to_owned(),
    };
    let scope = v
        .scope
        .iter()
        .map(|(provider, entry)| format!("{provider}: {}", entry.symbols.join(",")))
        .collect::<Vec<_>>()
        .join("; ");
    // `key=value` pairs separated by spaces wrap at pair boundaries.
    let config = v.strategy.config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    let c = &v.counters;
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{:<12}", "state"), Style::new().fg(Color::DarkGray)),
            Span::styled(v.state.as_str(), state_color(v.state)),
            Span::raw(format!("   uptime {}", uptime(app.now, v.started_at, running))),
        ]),
        field("strategy", v.strategy.identifier.clone()),
        field("selector", v.strategy.selector.clone()),
        field("pinned", pinned),
        field("drift", drift),
        field("scope", scope),
        field("config", config),
        field(
            "events",
            format!(
                "{} delivered, {} dropped, last {}",
                c.events_delivered,
                c.events_dropped,
                relative(app.now, c.last_event_at)
            ),
        ),
        field("orders", format!("{} submitted, {} filled", c.orders_submitted, c.orders_filled)),
        field("errors", format!("{} handler errors", c.handler_errors)),
        field("created", relative(app.now, Some(v.created_at))),
    ];
    match &v.last_error {
        Some(e) => lines.push(Line::from(vec![
            Span::styled(format!("{:<12}", "last error"), Style::new().fg(Color::DarkGray)),
            Span::styled(e.clone(), Color::Red),
        ])),
        None => lines.push(field("last error", "-")),
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // Height once wrapped (close enough for word wrapping of short fields).
    let width = usize::from(inner.width.max(1));
    let top = lines.iter().map(|l| l.width().max(1).div_ceil(width)).sum::<usize>() as u16;
    let [facts, log_area] = Layout::vertical([Constraint::Length(top), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), facts);
    let log_block = Block::bordered().title(format!(" Last log lines ({}) ", logs.len()));
    let room = usize::from(log_area.height.saturating_sub(2));
    let shown: Vec<Line> = logs[logs.len().saturating_sub(room)..]
        .iter()
        .map(|l| {
            let color = match l.level.as_str() {
                "error" => Color::Red,
                "warn" => Color::Yellow,
                _ => Color::Reset,
            };
            let ts = l.ts.time();
            Line::from(vec![
                Span::styled(format!("{:02}:{:02}:{:02} ", ts.hour(), ts.minute(), ts.second()), Color::DarkGray),
                Span::styled(format!("{:<5} ", l.level), color),
                Span::raw(l.message.clone()),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(shown).block(log_block), log_area);
}
