//! Whole screens at 100x30, compared with insta snapshots.

use crossterm::event::KeyCode;
use strata_shared::api::InstanceState;
use strata_shared::stream::DeltaKind;
use strata_tui::app::{Action, View};
use strata_tui::client::{Outcome, Reply, Target};
use strata_tui::fixtures::{self, hash};

use super::*;

fn momentum_revisions() -> strata_tui::app::App {
    let mut app = demo_app(false);
    type_text(&mut app, ":strategy momentum");
    press(&mut app, key(KeyCode::Enter));
    app
}

#[test]
fn strategies_view() {
    insta::assert_snapshot!(screen(&demo_app(false)));
}

#[test]
fn revisions_view() {
    insta::assert_snapshot!(screen(&momentum_revisions()));
}

#[test]
fn revisions_view_highlights_a_live_change() {
    let mut app = momentum_revisions();
    let delta = fixtures::instance_delta(
        42,
        DeltaKind::InstanceStarted,
        "momentum",
        "momentum-v1.0.0",
        "old",
        InstanceState::Running,
        1,
    );
    app.update(Action::Live(vec![delta]));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn instances_view() {
    insta::assert_snapshot!(screen(&instances_app()));
}

#[test]
fn instance_detail_view() {
    let mut app = instances_app();
    press(&mut app, ch('j'));
    press(&mut app, key(KeyCode::Enter));
    assert!(matches!(app.top(), View::Detail { .. }));
    let view =
        fixtures::instance("momentum-prod", "momentum", "momentum-v1.1.0", "momentum:prod", InstanceState::Running);
    app.update(Action::Reply(Reply::Instance {
        id: "momentum-prod".into(),
        result: Ok((Box::new(view), fixtures::logs())),
    }));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn help_overlay() {
    let mut app = demo_app(false);
    press(&mut app, ch('?'));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn help_overlay_readonly() {
    let mut app = demo_app(true);
    press(&mut app, ch('?'));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn confirmation_dialog() {
    let mut app = instances_app();
    press(&mut app, ch('r'));
    let target = Target::RefreshHash { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") };
    app.update(Action::Reply(Reply::Preview { target, result: Ok(fixtures::momentum_prod_instances()) }));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn result_dialog() {
    let mut app = instances_app();
    press(&mut app, ch('r'));
    let target = Target::RefreshHash { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") };
    app.update(Action::Reply(Reply::Preview {
        target: target.clone(),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    press(&mut app, ch('y'));
    app.update(Action::Reply(Reply::Done { target, result: Ok(Outcome::Refresh(refresh_response())) }));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn filter_prompt_and_command_bar() {
    let mut app = demo_app(false);
    type_text(&mut app, "/!mom");
    insta::assert_snapshot!("filter_prompt", screen(&app));
    press(&mut app, key(KeyCode::Enter));
    type_text(&mut app, ":strategy mom");
    insta::assert_snapshot!("command_bar", screen(&app));
}
