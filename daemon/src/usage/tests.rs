use std::sync::Arc;

use strata_shared::RevisionHash;
use strata_shared::stream::{DeltaKind, ServerMessage, UsageMirror};
use time::{Duration, OffsetDateTime};

use super::*;

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

fn pin<'a>(strategy: &'a str, hash: RevisionHash, id: &'a str) -> Pin<'a> {
    Pin { strategy, hash, selector: strategy, id }
}

#[test]
fn transitions_move_ids_between_running_idle_and_departed() {
    let index = UsageIndex::default();
    let s: Arc<str> = Arc::from("momentum");
    let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
    let empty = Summary { count: 0, pinned: 0, tracked: 0, first_seen: None, last_seen: None, retired: false };
    assert_eq!(index.summary(&s, a), empty);

    index.created(pin("momentum", a, "one"), at(1));
    index.created(pin("momentum", a, "two"), at(1));
    index.created(pin("momentum", a, "idle"), at(1));
    assert_eq!(index.summary(&s, a).pinned, 3);
    assert_eq!(index.summary(&s, a).first_seen, None, "never-started instances are not usage");
    index.started(&s, a, "one", at(10));
    index.started(&s, a, "two", at(20));
    index.started(&s, a, "two", at(21));
    let summary = index.summary(&s, a);
    assert_eq!((summary.count, summary.pinned), (2, 3));
    assert_eq!((summary.first_seen, summary.last_seen), (Some(at(10)), Some(at(21))));
    assert!(index.strategy_running("momentum"));

    index.stopped(&s, a, "one", at(30));
    index.repinned(a, "momentum", pin("momentum", b, "one"), at(30));
    index.started(&s, b, "one", at(30));
    assert_eq!(index.summary(&s, a).count, 1);
    assert_eq!(index.summary(&s, a).tracked, 3, "two, idle, and one (departed)");
    assert_eq!(index.page(&s, a, false, 0, 10), (vec!["two".to_owned()], 1));
    assert_eq!(index.page(&s, a, true, 0, 10), (vec!["two".into(), "idle".into(), "one".into()], 3));
    assert_eq!(index.page(&s, a, true, 1, 1), (vec!["idle".to_owned()], 3));
    assert_eq!(index.pinned_to(a), vec!["idle".to_owned(), "two".to_owned()]);
    assert_eq!(index.strategy_instances("momentum"), vec!["idle".to_owned(), "one".into(), "two".into()]);

    index.touch_running(at(60));
    assert_eq!(index.summary(&s, a).last_seen, Some(at(60)));
    index.stopped(&s, a, "two", at(70));
    index.touch_running(at(80));
    assert_eq!(index.summary(&s, a).last_seen, Some(at(70)), "stopped revisions are not touched");

    index.stopped(&s, b, "one", at(90));
    index.deleted(pin("momentum", b, "one"), at(90));
    assert!(!index.strategy_running("momentum"));
    assert_eq!(index.running_strategies(0, 10), (vec![], 0));
    assert_eq!(index.summary(&s, a).tracked, 2, "a deleted instance leaves every history");
}

#[test]
fn dirty_entries_round_trip_through_restore() {
    let index = UsageIndex::default();
    let s: Arc<str> = Arc::from("p");
    let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
    index.created(pin("p", a, "x"), at(0));
    index.started(&s, a, "x", at(1));
    index.stopped(&s, a, "x", at(2));
    index.repinned(a, "p", pin("p", b, "x"), at(2));
    index.created(pin("p", b, "y"), at(3));
    index.started(&s, b, "y", at(3));
    let mut dirty = index.take_dirty();
    dirty.sort_by_key(|p| p.hash);
    assert_eq!(dirty.len(), 2);
    assert!(index.take_dirty().is_empty(), "taken once");

    let restored = UsageIndex::default();
    restored.restore(dirty);
    let summary = restored.summary(&s, a);
    assert_eq!(
        (summary.count, summary.tracked, summary.first_seen, summary.last_seen),
        (0, 1, Some(at(1)), Some(at(2)))
    );
    assert_eq!(restored.summary(&s, b).count, 0, "running ids come back with their instances, not from here");
    restored.created(pin("p", a, "x"), at(5));
    assert_eq!(restored.summary(&s, a).tracked, 1, "an instance back on a revision it left is counted once");
}

#[test]
fn running_revisions_lists_only_revisions_in_use() {
    let index = UsageIndex::default();
    let s: Arc<str> = Arc::from("grid");
    let hashes: Vec<_> = (0u8..5).map(|i| RevisionHash::of(&[i])).collect();
    for (i, id) in ["x", "y", "z"].iter().enumerate() {
        index.created(pin("grid", hashes[i % 2], id), at(1));
        index.started(&s, hashes[i % 2], id, at(1));
    }
    let running = index.running_revisions(&s, None, 1);
    assert_eq!(running.len(), 2, "only the two revisions in use");
    let first = running.iter().find(|(hash, _, _)| *hash == hashes[0]).unwrap();
    assert_eq!(first.1.count, 2);
    assert_eq!(first.2, vec!["x".to_owned()], "ids are capped");
    let only = index.running_revisions(&s, Some(hashes[1]), 10);
    assert_eq!((only.len(), only[0].2.clone()), (1, vec!["y".to_owned()]));
    index.stopped(&s, hashes[1], "y", at(2));
    assert_eq!(index.running_revisions(&s, None, 10).len(), 1, "a pinned but stopped revision is not running");
    assert_eq!(index.running_ids(&s, hashes[0]), vec!["x".to_owned(), "z".to_owned()]);
}

#[test]
fn every_change_is_a_delta_and_the_mirror_matches_the_snapshot() {
    let index = UsageIndex::new(Arc::new(Bus::default()), None, Duration::ZERO);
    let s: Arc<str> = Arc::from("grid");
    let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
    let mut mirror = UsageMirror::default();
    mirror.apply(&ServerMessage::Snapshot(index.snapshot(false)));
    let mut live = index.bus().subscribe();

    let mut state = RegistryState::default();
    let changes = state.replace_strategy("grid", Some(strategy_with(&[a, b], &[("latest", b), ("v1", a)])), vec![]);
    index.changed(&state, &changes);
    index.created(pin("grid", a, "x"), at(1));
    index.started(&s, a, "x", at(2));
    index.failed(&s, a, "x", at(3));
    index.repinned(a, "grid", pin("grid", b, "x"), at(4));
    index.started(&s, b, "x", at(5));
    // v1 leaves `a`: nothing runs it and no tag points at it any more.
    let changes = state.replace_strategy("grid", Some(strategy_with(&[a, b], &[("latest", b)])), vec![]);
    index.changed(&state, &changes);

    // The heartbeat moves `lastSeen` of the running revision (`b`) only.
    index.touch_running(at(6));

    let mut kinds = Vec::new();
    while let Ok(delta) = live.try_recv() {
        kinds.push(delta.kind);
        mirror.apply(&ServerMessage::Delta((*delta).clone()));
    }
    use DeltaKind::*;
    assert_eq!(
        kinds,
        [
            RevisionAdded,
            RevisionAdded,
            TagMoved,
            TagMoved,
            InstanceCreated,
            InstanceStarted,
            InstanceFailed,
            InstanceRepinned,
            InstanceStarted,
            TagMoved,
            RevisionRetired,
            RevisionsSeen
        ]
    );
    let mut snapshot = index.snapshot(false);
    snapshot.revisions.iter_mut().for_each(|r| r.tags.sort());
    let mut mirrored: Vec<_> = mirror.revisions.values().cloned().collect();
    mirrored.iter_mut().for_each(|r| r.tags.sort());
    assert_eq!(mirrored, snapshot.revisions, "deltas alone rebuild the snapshot");
    assert_eq!(mirror.seq, snapshot.seq);
    assert!(snapshot.revisions.iter().find(|r| r.hash == a).unwrap().retired);
    let last_seen = |hash| snapshot.revisions.iter().find(|r| r.hash == hash).unwrap().last_seen;
    assert_eq!((last_seen(a), last_seen(b)), (Some(at(3)), Some(at(6))));
}

#[test]
fn the_heartbeat_is_one_delta_and_only_when_something_runs() {
    let index = UsageIndex::new(Arc::new(Bus::default()), None, Duration::ZERO);
    let s: Arc<str> = Arc::from("grid");
    let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
    let mut live = index.bus().subscribe();
    index.touch_running(at(1));
    assert!(live.try_recv().is_err(), "nothing runs: no delta");
    for (hash, id) in [(a, "x"), (b, "y")] {
        index.created(pin("grid", hash, id), at(2));
        index.started(&s, hash, id, at(2));
    }
    while live.try_recv().is_ok() {}
    index.touch_running(at(3));
    let seen = live.try_recv().expect("one heartbeat");
    assert_eq!(
        (seen.kind, seen.strategy.as_deref(), seen.hash, seen.last_seen),
        (DeltaKind::RevisionsSeen, None, None, Some(at(3)))
    );
    assert!(live.try_recv().is_err(), "one delta for both revisions");
}

#[test]
fn retirement_waits_for_the_grace_period() {
    let index = UsageIndex::new(Arc::new(Bus::default()), None, Duration::minutes(10));
    let s: Arc<str> = Arc::from("grid");
    let a = RevisionHash::of(b"a");
    let mut state = RegistryState::default();
    let changes = state.replace_strategy("grid", Some(strategy_with(&[a], &[])), vec![]);
    index.changed(&state, &changes);
    index.created(pin("grid", a, "x"), at(0));
    let now = OffsetDateTime::now_utc();
    index.started(&s, a, "x", now);
    index.stopped(&s, a, "x", now);
    let mut live = index.bus().subscribe();
    assert!(!index.summary(&s, a).retired, "inside the grace period");
    index.retire_due(now + Duration::minutes(5));
    assert!(live.try_recv().is_err());
    index.retire_due(now + Duration::minutes(11));
    assert_eq!(live.try_recv().unwrap().kind, DeltaKind::RevisionRetired);
    index.retire_due(now + Duration::minutes(12));
    assert!(live.try_recv().is_err(), "announced once");
}

fn strategy_with(hashes: &[RevisionHash], tags: &[(&str, RevisionHash)]) -> crate::registry::Strategy {
    let metadata = Arc::new(strata_shared::metadata::ModuleMetadata {
        name: "grid".into(),
        display_name: "grid".into(),
        description: None,
        tag: None,
        version: None,
        config: vec![],
        events: vec![],
    });
    crate::registry::Strategy {
        tags: tags.iter().map(|(t, h)| (t.to_string(), *h)).collect(),
        revisions: hashes
            .iter()
            .map(|h| {
                let revision = crate::registry::Revision {
                    strategy: Arc::from("grid"),
                    hash: *h,
                    tag: "v".into(),
                    path: String::new(),
                    size: 0,
                    metadata: metadata.clone(),
                };
                (*h, Arc::new(revision))
            })
            .collect(),
    }
}

proptest::proptest! {
    /// Pages at any offset, with and without `includeStopped`, and pages of
    /// pinned ids equal the same slice of a full ordered walk (the index
    /// finds the offset by rank instead of walking to it).
    #[test]
    fn pages_at_any_offset_match_a_full_walk(
        states in proptest::collection::vec(0u8..3, 0..120),
        offset in 0usize..130,
        limit in 1usize..40,
    ) {
        let index = UsageIndex::default();
        let s: Arc<str> = Arc::from("momentum");
        let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
        let (mut running, mut idle, mut departed) = (Vec::new(), Vec::new(), Vec::new());
        for (n, state) in states.iter().enumerate() {
            let id = format!("i{n:03}");
            index.created(pin("momentum", a, &id), at(1));
            match state {
                0 => {
                    index.started(&s, a, &id, at(2));
                    running.push(id);
                }
                1 => idle.push(id),
                _ => {
                    index.repinned(a, "momentum", pin("momentum", b, &id), at(3));
                    departed.push(id);
                }
            }
        }
        let mut stopped: Vec<String> = idle.iter().chain(&departed).cloned().collect();
        stopped.sort();
        let mut pinned: Vec<String> = running.iter().chain(&idle).cloned().collect();
        pinned.sort();
        let slice = |ids: Vec<String>| ids.into_iter().skip(offset).take(limit).collect::<Vec<_>>();
        let everything: Vec<String> = running.iter().cloned().chain(stopped).collect();
        proptest::prop_assert_eq!(index.page(&s, a, false, offset, limit), (slice(running.clone()), running.len()));
        proptest::prop_assert_eq!(index.page(&s, a, true, offset, limit), (slice(everything), states.len()));
        proptest::prop_assert_eq!(index.pinned_page(a, offset, limit), (slice(pinned), running.len() + idle.len()));
    }
}
