//! State logic driven by keys and events.

use crossterm::event::KeyCode;
use strata_shared::api::InstanceState;
use strata_shared::stream::{Delta, DeltaKind, ServerMessage};
use strata_tui::app::{Action, App, ConnState, Prompt, Stage, View, list_rows};
use strata_tui::client::{Outcome, Reply, Request, Target, Verb};
use strata_tui::fixtures::{self, hash, now};
use time::Duration;

use super::*;

fn strategy_names(app: &App) -> Vec<String> {
    match app.top() {
        View::Strategies { rows, .. } => rows.iter().map(|r| r.name.clone()).collect(),
        other => panic!("not the strategies view: {other:?}"),
    }
}

fn revision_rows(app: &App) -> Vec<strata_shared::RevisionHash> {
    match app.top() {
        View::Revisions { rows, .. } => rows.clone(),
        other => panic!("not a revisions view: {other:?}"),
    }
}

fn selected(app: &App) -> usize {
    match app.top() {
        View::Strategies { list, .. } | View::Revisions { list, .. } | View::Instances { list, .. } => list.selected,
        View::Detail { .. } => panic!("no list"),
    }
}

#[test]
fn enter_drills_down_and_esc_goes_back_keeping_the_selection() {
    let mut app = demo_app(false);
    assert_eq!(strategy_names(&app), ["grid", "mean-reversion", "momentum", "noop"]);
    let requests = keys(&mut app, &[ch('j'), ch('j'), key(KeyCode::Enter)]);
    assert_eq!(requests, [Request::Drift { strategy: Some("momentum".into()) }]);
    assert!(matches!(app.top(), View::Revisions { strategy, .. } if strategy == "momentum"));
    assert_eq!(revision_rows(&app).len(), 3);

    // Revisions sort by hash; pick momentum-v1.1.0 wherever it is.
    let at = revision_rows(&app).iter().position(|h| *h == hash("momentum-v1.1.0")).unwrap();
    for _ in 0..at {
        press(&mut app, ch('j'));
    }
    let requests = press(&mut app, key(KeyCode::Enter));
    assert_eq!(requests, [Request::Instances { hash: hash("momentum-v1.1.0") }]);
    app.update(Action::Reply(Reply::Instances {
        hash: hash("momentum-v1.1.0"),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    assert_eq!(app.top().len(), 3);
    let requests = keys(&mut app, &[ch('j'), key(KeyCode::Enter)]);
    assert_eq!(requests, [Request::Instance { id: "momentum-prod".into() }], "instances sort by id");
    assert_eq!(app.stack.len(), 4);

    keys(&mut app, &[key(KeyCode::Esc), key(KeyCode::Esc)]);
    assert_eq!(selected(&app), at, "the revisions view kept its selection");
    press(&mut app, key(KeyCode::Esc));
    assert_eq!(selected(&app), 2);
    press(&mut app, key(KeyCode::Esc));
    assert_eq!(app.stack.len(), 1, "Esc on the first view stays there");
}

#[test]
fn the_filter_applies_as_typed_and_a_bang_inverts_it() {
    let mut app = demo_app(false);
    type_text(&mut app, "/mom");
    assert_eq!(app.prompt, Some(Prompt::Filter { text: "mom".into(), previous: String::new() }));
    assert_eq!(strategy_names(&app), ["momentum"]);
    press(&mut app, key(KeyCode::Esc));
    assert_eq!(app.prompt, None);
    assert_eq!(strategy_names(&app).len(), 4, "Esc in the prompt restores the previous filter");

    type_text(&mut app, "/!mom");
    press(&mut app, key(KeyCode::Enter));
    assert_eq!(strategy_names(&app), ["grid", "mean-reversion", "noop"]);
    press(&mut app, key(KeyCode::Backspace));
    assert_eq!(strategy_names(&app).len(), 4, "Esc/Backspace in a view clears the filter first");
    assert_eq!(app.stack.len(), 1);

    // Revisions filter on hash digits and tags.
    type_text(&mut app, ":strategy momentum");
    press(&mut app, key(KeyCode::Enter));
    type_text(&mut app, "/prod");
    assert_eq!(revision_rows(&app), [hash("momentum-v1.1.0")]);
    press(&mut app, key(KeyCode::Backspace));
    press(&mut app, key(KeyCode::Backspace));
    press(&mut app, key(KeyCode::Backspace));
    press(&mut app, key(KeyCode::Backspace));
    type_text(&mut app, "!latest");
    assert_eq!(revision_rows(&app).len(), 2);
}

#[test]
fn command_bar_jumps_to_strategies_hashes_and_instances() {
    let mut app = demo_app(false);
    type_text(&mut app, ":strategy noop");
    let requests = press(&mut app, key(KeyCode::Enter));
    assert_eq!(requests, [Request::Drift { strategy: Some("noop".into()) }]);
    assert!(matches!(app.top(), View::Revisions { strategy, .. } if strategy == "noop"));
    press(&mut app, key(KeyCode::Esc));
    assert_eq!(selected(&app), 3, "the strategies list selects the strategy jumped to");

    let prefix = format!(":hash sha256:{}", &hash("momentum-v1.2.0").to_hex()[..8]);
    type_text(&mut app, &prefix);
    let requests = press(&mut app, key(KeyCode::Enter));
    assert_eq!(requests, [Request::Instances { hash: hash("momentum-v1.2.0") }]);
    assert_eq!(app.stack.len(), 3);

    type_text(&mut app, ":instance momentum-prod");
    let requests = press(&mut app, key(KeyCode::Enter));
    assert_eq!(requests, [Request::Instance { id: "momentum-prod".into() }]);
    assert_eq!(app.stack.len(), 2);
    let view =
        fixtures::instance("momentum-prod", "momentum", "momentum-v1.1.0", "momentum:prod", InstanceState::Running);
    let requests = app.update(Action::Reply(Reply::Instance {
        id: "momentum-prod".into(),
        result: Ok((Box::new(view), fixtures::logs())),
    }));
    assert_eq!(requests, [Request::Instances { hash: hash("momentum-v1.1.0") }]);
    assert_eq!(app.stack.len(), 4, "breadcrumbs filled in once the instance's pin is known");
    assert!(matches!(&app.stack[2], View::Instances { hash: h, .. } if *h == hash("momentum-v1.1.0")));

    type_text(&mut app, ":frobnicate");
    press(&mut app, key(KeyCode::Enter));
    assert!(app.message.as_ref().is_some_and(|m| m.error && m.text.contains("unknown command")));
    type_text(&mut app, ":hash ffff0000ffff");
    press(&mut app, key(KeyCode::Enter));
    assert!(app.message.as_ref().is_some_and(|m| m.text.contains("no revision matches")));

    type_text(&mut app, ":refresh");
    let requests = press(&mut app, key(KeyCode::Enter));
    let target = Target::RefreshHash { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") };
    assert_eq!(requests, [Request::Preview(target)], ":refresh on an instance refreshes its hash");
}

#[test]
fn a_key_cycles_the_sort_column_and_another_reverses_it() {
    let mut app = demo_app(false);
    type_text(&mut app, ":strategy momentum");
    press(&mut app, key(KeyCode::Enter));
    keys(&mut app, &[ch('s'), ch('s'), ch('s')]);
    match app.top() {
        View::Revisions { list, .. } => assert_eq!(list.sort, 3, "First seen"),
        _ => unreachable!(),
    }
    let oldest_first = [hash("momentum-v1.0.0"), hash("momentum-v1.1.0"), hash("momentum-v1.2.0")];
    assert_eq!(revision_rows(&app), oldest_first);
    press(&mut app, ch('S'));
    let mut newest_first = oldest_first;
    newest_first.reverse();
    assert_eq!(revision_rows(&app), newest_first);
    for _ in 0..4 {
        press(&mut app, ch('s'));
    }
    match app.top() {
        View::Revisions { list, .. } => assert_eq!(list.sort, 0, "the cycle wraps"),
        _ => unreachable!(),
    }
}

#[test]
fn running_only_hides_idle_rows() {
    let mut app = demo_app(false);
    press(&mut app, ch('o'));
    assert_eq!(strategy_names(&app), ["grid", "mean-reversion", "momentum"]);
    type_text(&mut app, ":strategy momentum");
    press(&mut app, key(KeyCode::Enter));
    press(&mut app, ch('o'));
    assert_eq!(revision_rows(&app).len(), 2);
}

#[test]
fn readonly_removes_every_action() {
    let mut app = demo_app(true);
    for c in ['r', 'R', 't', 'x', 'X'] {
        assert!(app.map_key(&ch(c)).is_none(), "{c} is not bound in read-only");
    }
    type_text(&mut app, ":refresh");
    let requests = press(&mut app, key(KeyCode::Enter));
    assert!(requests.is_empty());
    assert!(app.dialog.is_none());
    assert!(app.message.as_ref().is_some_and(|m| m.error && m.text.contains("read-only")));
    press(&mut app, ch('?'));
    let help = screen(&app);
    assert!(!help.contains("refresh selected"), "{help}");
    assert!(help.contains("filter rows"), "{help}");
}

#[test]
fn a_refresh_is_confirmed_with_a_preview_then_shows_each_reason() {
    let mut app = instances_app();
    let requests = press(&mut app, ch('r'));
    let target = Target::RefreshHash { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") };
    assert_eq!(requests, [Request::Preview(target.clone())]);
    assert!(matches!(&app.dialog, Some(d) if matches!(&d.stage, Stage::Confirm(p) if p.loading)));
    app.update(Action::Reply(Reply::Preview {
        target: target.clone(),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    assert!(
        matches!(&app.dialog, Some(d) if matches!(&d.stage, Stage::Confirm(p) if p.data.as_ref().unwrap().total == 3))
    );

    // Navigation keys do nothing while confirming.
    assert!(press(&mut app, ch('j')).is_empty());
    let requests = press(&mut app, ch('y'));
    assert_eq!(requests, [Request::Run(target.clone())]);
    assert!(matches!(&app.dialog, Some(d) if d.stage == Stage::Running));

    app.update(Action::Reply(Reply::Done { target, result: Ok(Outcome::Refresh(refresh_response())) }));
    let shown = screen(&app);
    for expected in
        ["refreshed", "alreadyPinned", "failed", "error: start failed: boom", "1 alreadyPinned, 1 failed, 1 refreshed"]
    {
        assert!(shown.contains(expected), "{expected} missing:\n{shown}");
    }
    press(&mut app, key(KeyCode::Enter));
    assert!(app.dialog.is_none());
    let requests = app.update(Action::Tick(now() + Duration::seconds(1)));
    assert!(requests.contains(&Request::Instances { hash: hash("momentum-v1.1.0") }), "{requests:?}");
    assert!(requests.contains(&Request::Drift { strategy: None }), "{requests:?}");
}

#[test]
fn cancelling_a_confirmation_runs_nothing_and_instance_actions_target_the_row() {
    let mut app = instances_app();
    press(&mut app, ch('j'));
    let requests = press(&mut app, ch('x'));
    let target = Target::Instance { id: "momentum-prod".into(), verb: Verb::Stop };
    assert_eq!(requests, [Request::Preview(target)]);
    assert!(press(&mut app, ch('n')).is_empty());
    assert!(app.dialog.is_none());
    let requests = press(&mut app, ch('R'));
    assert_eq!(
        requests,
        [Request::Preview(Target::RestartAll { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") })]
    );
    press(&mut app, key(KeyCode::Esc));
    keys(&mut app, &[key(KeyCode::Esc), key(KeyCode::Esc)]);
    let requests = press(&mut app, ch('t'));
    assert!(requests.is_empty(), "no instance on the strategies view");
    assert!(app.message.as_ref().is_some_and(|m| m.error));
}

#[test]
fn restart_all_and_instance_actions_show_their_results() {
    use strata_shared::api::{BatchResponse, BatchResult, RefreshReason};
    let mut app = instances_app();
    let restart_all = Target::RestartAll { strategy: "momentum".into(), hash: hash("momentum-v1.1.0") };
    assert_eq!(press(&mut app, ch('R')), [Request::Preview(restart_all.clone())]);
    app.update(Action::Reply(Reply::Preview {
        target: restart_all.clone(),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    assert_eq!(press(&mut app, ch('y')), [Request::Run(restart_all.clone())]);
    let result = |id: &str, reason, error: Option<&str>| BatchResult {
        instance_id: id.into(),
        previous_hash: hash("momentum-v1.1.0"),
        hash: hash("momentum-v1.1.0"),
        reason,
        error: error.map(str::to_owned),
    };
    let batch = BatchResponse {
        results: vec![
            result("momentum-prod", RefreshReason::Refreshed, None),
            result("momentum-eu", RefreshReason::Failed, Some("start failed: boom")),
        ],
    };
    app.update(Action::Reply(Reply::Done { target: restart_all, result: Ok(Outcome::Batch(batch)) }));
    let shown = screen(&app);
    for expected in ["Result", "1 failed, 1 refreshed", "momentum-prod", "refreshed", "error: start failed: boom"] {
        assert!(shown.contains(expected), "{expected} missing:\n{shown}");
    }
    press(&mut app, key(KeyCode::Enter));
    assert!(app.dialog.is_none());

    // One instance: stop the selected row, the panel shows its new state.
    let stop = Target::Instance { id: "momentum-prod".into(), verb: Verb::Stop };
    press(&mut app, ch('j'));
    assert_eq!(press(&mut app, ch('x')), [Request::Preview(stop.clone())]);
    app.update(Action::Reply(Reply::Preview { target: stop.clone(), result: Ok(fixtures::momentum_prod_instances()) }));
    assert_eq!(press(&mut app, ch('y')), [Request::Run(stop.clone())]);
    let mut stopped = fixtures::momentum_prod_instances().instances.remove(0);
    stopped.state = InstanceState::Stopped;
    app.update(Action::Reply(Reply::Done { target: stop, result: Ok(Outcome::Instance(Box::new(stopped))) }));
    let shown = screen(&app);
    assert!(shown.contains("now stopped"), "the summary names the new state:\n{shown}");
    // A refused action shows the daemon's error instead of results.
    press(&mut app, key(KeyCode::Enter));
    let start = Target::Instance { id: "momentum-prod".into(), verb: Verb::Start };
    press(&mut app, ch('t'));
    app.update(Action::Reply(Reply::Preview {
        target: start.clone(),
        result: Ok(fixtures::momentum_prod_instances()),
    }));
    press(&mut app, ch('y'));
    app.update(Action::Reply(Reply::Done { target: start, result: Err("409 conflict: already running".into()) }));
    let shown = screen(&app);
    assert!(shown.contains("409 conflict: already running"), "{shown}");
}

#[test]
fn a_resync_is_announced_and_its_snapshot_highlights_only_what_differs() {
    let mut app = demo_app(false);
    app.update(Action::Live(vec![ServerMessage::Resync { reason: "lagged".into(), missed: 7 }]));
    assert!(app.message.as_ref().is_some_and(|m| m.text.contains("resyncing (lagged, 7 missed)")));
    let ServerMessage::Snapshot(mut reset) = fixtures::snapshot() else { unreachable!() };
    reset.reset = true;
    reset.seq += 10;
    let changed = reset.revisions.iter_mut().find(|r| r.hash == hash("momentum-v1.0.0")).expect("in the fixture");
    changed.count += 1;
    changed.instances.push("old".into());
    app.update(Action::Live(vec![ServerMessage::Snapshot(reset.clone())]));
    assert_eq!(app.mirror.seq, reset.seq);
    assert!(app.revision_changed("momentum", &hash("momentum-v1.0.0")), "what differs is highlighted");
    assert!(!app.revision_changed("momentum", &hash("momentum-v1.1.0")), "what did not, is not");
}

#[test]
fn a_delta_changes_the_rows_and_highlights_them_briefly() {
    let mut app = demo_app(false);
    let running = |app: &App| match app.top() {
        View::Strategies { rows, .. } => rows.iter().find(|r| r.name == "momentum").unwrap().running,
        _ => unreachable!(),
    };
    assert_eq!(running(&app), 2);
    assert!(!app.strategy_changed("momentum"));
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
    assert_eq!(running(&app), 3);
    assert!(app.strategy_changed("momentum"));
    assert!(app.revision_changed("momentum", &hash("momentum-v1.0.0")));
    assert!(!app.revision_changed("momentum", &hash("momentum-v1.1.0")));
    assert_eq!(app.mirror.seq, 42);
    let requests = app.update(Action::Tick(now() + Duration::seconds(1)));
    assert!(app.strategy_changed("momentum"), "still highlighted after 1 s");
    assert!(requests.is_empty(), "starts don't change drift: {requests:?}");
    app.update(Action::Tick(now() + Duration::seconds(3)));
    assert!(!app.strategy_changed("momentum"), "highlight gone after 2 s");
}

#[test]
fn the_heartbeat_moves_last_seen_of_running_revisions_without_a_highlight_or_a_request() {
    let mut app = demo_app(false);
    let later = now() + Duration::seconds(15);
    let mut heartbeat = Delta::new(43, later, DeltaKind::RevisionsSeen, None, None);
    heartbeat.last_seen = Some(later);
    let before = app.mirror.clone();
    let requests = app.update(Action::Live(vec![ServerMessage::Delta(heartbeat)]));
    assert!(requests.is_empty(), "a heartbeat fetches nothing: {requests:?}");
    let requests = app.update(Action::Tick(now() + Duration::seconds(1)));
    assert!(requests.is_empty(), "not even at the next tick (drift is unchanged): {requests:?}");
    assert!(!app.strategy_changed("momentum"), "nor highlights anything");
    for (key, revision) in &app.mirror.revisions {
        let was = &before.revisions[key];
        if revision.count > 0 {
            assert_eq!(revision.last_seen, Some(later), "{key:?} runs: seen now");
        } else {
            assert_eq!(revision.last_seen, was.last_seen, "{key:?} does not run: unchanged");
        }
    }
    assert!(app.mirror.revisions.values().any(|r| r.count > 0) && app.mirror.revisions.values().any(|r| r.count == 0));
    assert_eq!(app.mirror.seq, 43);
}

#[test]
fn instance_deltas_update_the_open_list_and_new_instances_trigger_a_reload() {
    let mut app = instances_app();
    let stop = fixtures::instance_delta(
        42,
        DeltaKind::InstanceStopped,
        "momentum",
        "momentum-v1.1.0",
        "momentum-prod",
        InstanceState::Stopped,
        0,
    );
    app.update(Action::Live(vec![stop]));
    let View::Instances { data, .. } = app.top() else { panic!() };
    let prod = data.data.as_ref().unwrap().instances.iter().find(|v| v.id == "momentum-prod").unwrap();
    assert_eq!(prod.state, InstanceState::Stopped);
    assert!(app.instance_changed("momentum-prod"));
    assert!(app.revision("momentum", &hash("momentum-v1.1.0")).unwrap().count == 0);

    let created = fixtures::instance_delta(
        43,
        DeltaKind::InstanceCreated,
        "momentum",
        "momentum-v1.1.0",
        "fresh",
        InstanceState::Stopped,
        0,
    );
    app.update(Action::Live(vec![created]));
    let requests = app.update(Action::Tick(now() + Duration::milliseconds(250)));
    assert!(requests.contains(&Request::Instances { hash: hash("momentum-v1.1.0") }), "{requests:?}");
    assert!(requests.contains(&Request::Drift { strategy: None }), "a new instance may drift: {requests:?}");
}

#[test]
fn lists_scroll_through_sixty_thousand_rows() {
    let mut app = App::new(false, now());
    app.update(Action::Resize(100, 30));
    app.update(Action::Live(vec![fixtures::big_snapshot(60_000)]));
    type_text(&mut app, ":strategy big");
    press(&mut app, key(KeyCode::Enter));
    assert_eq!(app.top().len(), 60_000);
    let height = list_rows(30);
    press(&mut app, key(KeyCode::End));
    let View::Revisions { list, .. } = app.top() else { panic!() };
    assert_eq!((list.selected, list.offset), (59_999, 60_000 - height));
    press(&mut app, key(KeyCode::PageUp));
    let View::Revisions { list, .. } = app.top() else { panic!() };
    assert_eq!((list.selected, list.offset), (59_999 - height, 59_999 - height));
    press(&mut app, key(KeyCode::Home));
    press(&mut app, ch('k'));
    let View::Revisions { list, .. } = app.top() else { panic!() };
    assert_eq!((list.selected, list.offset), (0, 0));
    assert!(screen(&app).contains("row 1/60000"));
}

#[test]
fn the_rest_seed_never_overwrites_the_live_mirror() {
    let mut app = App::new(false, now());
    let requests = app.start();
    assert_eq!(requests, [Request::Bootstrap, Request::Drift { strategy: None }]);
    let strata_shared::stream::ServerMessage::Snapshot(seed) = fixtures::snapshot() else { unreachable!() };
    app.update(Action::Live(vec![fixtures::big_snapshot(3)]));
    app.update(Action::Reply(Reply::Bootstrap(Ok(seed.clone()))));
    assert_eq!(app.mirror.revisions.len(), 3, "the WebSocket snapshot wins");

    let mut offline = App::new(false, now());
    offline.start();
    offline.update(Action::Connection(ConnState::Disconnected {
        error: "connection refused".into(),
        attempt: 2,
        retry_in: std::time::Duration::from_secs(1),
    }));
    offline.update(Action::Reply(Reply::Bootstrap(Ok(seed))));
    assert_eq!(offline.mirror.revisions.len(), 6, "without the stream the REST seed is shown");
    assert!(screen(&offline).contains("offline (retry in 1.0s): connection refused"));
}
