//! Frame time of the revisions list: 60,000 rows against a 100-row floor,
//! on a 200x60 `TestBackend`, plus the cost of one live delta on the big
//! list (mirror update + row rebuild). Run: `cargo bench -p strata-tui --bench render`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use strata_shared::api::InstanceState;
use strata_shared::stream::DeltaKind;
use strata_tui::app::{Action, App};
use strata_tui::fixtures;
use strata_tui::keymap::Command;

/// A console on 200x60 showing the revisions of `big` (`rows` of them), scrolled to the middle.
fn app_with(rows: usize) -> App {
    let mut app = App::new(false, fixtures::now());
    app.update(Action::Resize(200, 60));
    app.update(Action::Live(vec![fixtures::big_snapshot(rows)]));
    app.update(Action::Command(Command::CommandBar));
    for c in "strategy big".chars() {
        app.update(Action::Input(c));
    }
    app.update(Action::Command(Command::Submit));
    assert_eq!(app.top().len(), rows);
    for _ in 0..rows / 2 / 55 {
        app.update(Action::Command(Command::PageDown));
    }
    app
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("revisions_frame_200x60");
    for rows in [100, 60_000] {
        let app = app_with(rows);
        let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
        group.bench_function(format!("{rows}_rows"), |b| {
            b.iter(|| {
                terminal.draw(|f| strata_tui::views::render(black_box(&app), f)).expect("draw");
            })
        });
    }
    group.finish();
}

fn delta(c: &mut Criterion) {
    let mut app = app_with(60_000);
    let mut seq = 10;
    c.bench_function("delta_on_60000_rows", |b| {
        b.iter(|| {
            seq += 1;
            let state = if seq % 2 == 0 { InstanceState::Running } else { InstanceState::Stopped };
            let kind = if seq % 2 == 0 { DeltaKind::InstanceStarted } else { DeltaKind::InstanceStopped };
            let d = fixtures::instance_delta(seq, kind, "big", "big-30000", "y", state, (seq % 2) as usize);
            black_box(app.update(Action::Live(vec![d])));
        })
    });
}

criterion_group!(benches, frame, delta);
criterion_main!(benches);
