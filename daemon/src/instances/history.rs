//! Concurrent-history test of the lifecycle guard: several threads issue
//! random start / stop / update / re-pin / refresh / delete / read calls on
//! a few instances of a real daemon; every call's invocation and response
//! times and its result are recorded, and the history of each instance
//! (instances are independent) is checked for linearisability against a
//! sequential model with a Wing–Gong search (the idea of Knossos and
//! porcupine): some order of the calls, consistent with real time, must
//! explain every result.
//!
//! A second test runs the same history with a deliberately unguarded
//! `update` (the shape the code had before the guard: read the state under
//! the lock, release it, act later) and asserts the checker catches it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_shared::RevisionHash;
use strata_shared::api::{InstanceState, InstanceView, RefreshReason, RefreshRequest, UpdateInstanceRequest};

use super::{InstanceError, Instances};
use crate::store::{InstanceStore, InstanceWrite, StoredInstance, StoredState};

/// What the sequential model holds per instance (`None`: deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Model {
    running: bool,
    /// Pinned to revision B (else A, where its selector `hist:prod` points).
    on_b: bool,
    cfg: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Start,
    Stop,
    Update(i64),
    /// Re-pin onto B, keeping the selector.
    Repin,
    /// Refresh of the strategy: moves back to what `hist:prod` resolves to (A).
    Refresh,
    Delete,
    Read,
    /// After every thread finished: memory, runtime and database agree.
    Final,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The instance as the call answered or read it.
    View(Model),
    /// Deleted.
    Done,
    /// Re-pinned; whether it came from B.
    Moved { from_b: bool },
    /// Already where the move would take it.
    Unchanged,
    /// Refused because of its state: running or not.
    Conflict { running: bool },
    /// Refused because another transition held it (no effect).
    Busy,
    /// 404.
    Missing,
    /// At the end: the view, and the state the database holds.
    Final(Model, bool),
    /// Something the model never allows (a failed instance, a runtime on
    /// another config than its record, an unexpected error).
    Odd(String),
}

#[derive(Debug, Clone)]
struct Event {
    call: Call,
    seen: Seen,
    invoked: Duration,
    returned: Duration,
}

/// The sequential specification: the state after `call` answered `seen`
/// from `state`, or `None` if that answer is impossible there.
fn step(state: Option<Model>, call: Call, seen: &Seen) -> Option<Option<Model>> {
    let Some(m) = state else {
        return matches!(seen, Seen::Missing).then_some(None);
    };
    let same = |v: &Model, expected: Model| (*v == expected).then_some(Some(expected));
    match (call, seen) {
        (Call::Read, Seen::View(v)) => same(v, m),
        (Call::Start, Seen::View(v)) if !m.running => same(v, Model { running: true, ..m }),
        (Call::Start, Seen::Conflict { running: true }) if m.running => Some(state),
        (Call::Stop, Seen::View(v)) if m.running => same(v, Model { running: false, ..m }),
        (Call::Stop, Seen::Conflict { running: false }) if !m.running => Some(state),
        (Call::Update(cfg), Seen::View(v)) => same(v, Model { cfg, ..m }),
        (Call::Repin, Seen::Moved { from_b: false }) if !m.on_b => Some(Some(Model { on_b: true, ..m })),
        (Call::Repin, Seen::Unchanged) if m.on_b => Some(state),
        (Call::Refresh, Seen::Moved { from_b: true }) if m.on_b => Some(Some(Model { on_b: false, ..m })),
        (Call::Refresh, Seen::Unchanged) if !m.on_b => Some(state),
        (Call::Delete, Seen::Done) => Some(None),
        (Call::Final, Seen::Final(v, stored_running)) => (*v == m && *stored_running == m.running).then_some(state),
        _ => None,
    }
}

/// Why a history is not linearisable, if it is not.
fn check(initial: Model, events: &[Event]) -> Result<(), String> {
    // A refusal for being busy needs a transition in flight at the time;
    // it changes nothing, so the search leaves it out.
    let mutating = |e: &Event| !matches!(e.call, Call::Read | Call::Final) && e.seen != Seen::Busy;
    for busy in events.iter().filter(|e| e.seen == Seen::Busy) {
        let holder = events.iter().any(|e| mutating(e) && e.invoked < busy.returned && busy.invoked < e.returned);
        if !holder {
            return Err(format!("{busy:?} refused as busy with no transition in flight"));
        }
    }
    let events: Vec<&Event> = events.iter().filter(|e| e.seen != Seen::Busy).collect();
    assert!(events.len() <= 128, "history too long for the checker");
    let all = if events.len() == 128 { u128::MAX } else { (1u128 << events.len()) - 1 };
    let mut seen = HashSet::new();
    if search(&events, all, 0, Some(initial), &mut seen) {
        Ok(())
    } else {
        let mut lines: Vec<String> = events
            .iter()
            .map(|e| format!("{:>8?}..{:>8?} {:?} -> {:?}", e.invoked, e.returned, e.call, e.seen))
            .collect();
        lines.sort();
        Err(format!("no sequential order explains:\n{}", lines.join("\n")))
    }
}

/// Wing–Gong: try every call that may come next (invoked before any
/// remaining call returned) whose answer the model accepts; memoise the
/// (calls done, state) pairs already explored.
fn search(
    events: &[&Event],
    all: u128,
    done: u128,
    state: Option<Model>,
    explored: &mut HashSet<(u128, Option<Model>)>,
) -> bool {
    if done == all {
        return true;
    }
    if !explored.insert((done, state)) {
        return false;
    }
    let remaining = || (0..events.len()).filter(move |i| done & (1u128 << i) == 0);
    let first_return = remaining().map(|i| events[i].returned).min().expect("some call remains");
    for i in remaining() {
        let event = events[i];
        if event.invoked > first_return {
            continue;
        }
        if let Some(next) = step(state, event.call, &event.seen)
            && search(events, all, done | (1u128 << i), next, explored)
        {
            return true;
        }
    }
    false
}

/// A tiny seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const IDS: [&str; 3] = ["h0", "h1", "h2"];

fn module(variant: &str) -> String {
    format!(
        r#"// {variant}
module.exports = {{
  metadata: {{ name: "hist", displayName: "hist", events: ["Trade"],
    config: [{{ name: "v", type: "int", default: 0, required: false }}] }},
  create(env) {{ console.log("cfg " + env.config.v); return {{ onTrade() {{}} }}; }},
}};
"#
    )
}

/// How an update is made: the guarded one, or the unguarded shape.
type UpdateFn = fn(&Instances, &str, i64) -> Result<InstanceView, InstanceError>;

fn guarded_update(instances: &Instances, id: &str, cfg: i64) -> Result<InstanceView, InstanceError> {
    let request: UpdateInstanceRequest = serde_json::from_value(json!({"config": {"v": cfg}})).expect("request");
    instances.update(id, request)
}

impl Instances {
    /// The update as it was before the guard: the state is read under the
    /// lock, the lock released, and the record replaced and persisted later
    /// from what was read, with no claim and no generation check.
    fn update_unguarded(&self, id: &str, cfg: i64) -> Result<InstanceView, InstanceError> {
        let slot = self.slot(id)?;
        let (record, was_running) = {
            let s = slot.lock();
            if s.hidden() {
                return Err(InstanceError::NotFound(id.to_owned()));
            }
            (s.record.clone(), s.state == InstanceState::Running)
        };
        // Validating the config took this long.
        std::thread::sleep(Duration::from_millis(3));
        let mut config = record.config.clone();
        config.insert("v".into(), json!(cfg));
        let updated = StoredInstance { config, ..record };
        slot.lock().record = updated.clone();
        let state = if was_running { StoredState::Running } else { StoredState::Stopped };
        let write = InstanceWrite::Save { instance: updated, state, last_error: None, audits: Vec::new() };
        self.committer.enqueue(vec![write]).wait()?;
        if was_running {
            return self.restart(id);
        }
        self.view(id)
    }

    /// One consistent read of an instance, under its lock: its view, and
    /// `Odd` when it runs a runtime built with another config than its
    /// record's (the last `cfg` line its `create` logged).
    fn read_for_history(&self, id: &str) -> Option<Seen> {
        let Ok(slot) = self.slot(id) else { return Some(Seen::Missing) };
        let s = slot.lock();
        if s.hidden() {
            return Some(Seen::Missing);
        }
        let model = match s.state {
            InstanceState::Running | InstanceState::Stopped => model_of(&self.render(&s)),
            // Mid-transition: what a read sees there is not a model state.
            InstanceState::Starting | InstanceState::Stopping => return None,
            InstanceState::Failed => return Some(Seen::Odd(format!("failed: {:?}", s.last_error))),
        };
        if s.state == InstanceState::Running {
            let logged = s.shared.logs.lines().iter().rev().find_map(|l| l.message.strip_prefix("cfg ")?.parse().ok());
            if logged != Some(model.cfg) {
                return Some(Seen::Odd(format!(
                    "record says cfg {} but the runtime was built with {logged:?}",
                    model.cfg
                )));
            }
        }
        Some(Seen::View(model))
    }
}

fn model_of(view: &InstanceView) -> Model {
    Model {
        running: view.state == InstanceState::Running,
        on_b: view.strategy.hash != view.resolves_to.expect("hist:prod resolves"),
        cfg: view.strategy.config["v"].as_i64().expect("v is an int"),
    }
}

/// Classifies an error answer.
fn refused(error: &InstanceError) -> Seen {
    match error {
        InstanceError::NotFound(_) => Seen::Missing,
        InstanceError::Conflict(m) if m.contains("is running") => Seen::Conflict { running: true },
        InstanceError::Conflict(m) if m.contains("is stopped") => Seen::Conflict { running: false },
        InstanceError::Conflict(m)
            if ["is busy", "is starting", "is stopping", "changed during"].iter().any(|w| m.contains(w)) =>
        {
            Seen::Busy
        }
        other => Seen::Odd(other.to_string()),
    }
}

fn answered(outcome: Result<InstanceView, InstanceError>) -> Seen {
    match outcome {
        Ok(view) => Seen::View(model_of(&view)),
        Err(error) => refused(&error),
    }
}

/// Runs one seeded history on a fresh daemon and returns it per instance.
fn run_history(seed: u64, update: UpdateFn) -> Vec<Vec<Event>> {
    let temp = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let config = crate::Config {
        listen: "127.0.0.1:0".parse().expect("loopback"),
        strategies_dir: temp.path().join("strategies"),
        data_dir: Some(temp.path().join("data")),
        load_threads: Some(1),
        ..crate::Config::default()
    };
    let running = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        let mut running = crate::boot(config, listener).await.expect("boot");
        running.wait_loaded().await;
        running
    });
    let daemon = running.daemon.clone();
    let upload = |variant: &str, tag: &str, latest: bool| {
        daemon
            .registry()
            .upload(crate::registry::Upload {
                source: module(variant),
                tag: Some(tag.into()),
                aliases: Vec::new(),
                promote_latest: latest,
                expected_strategy: None,
            })
            .expect("upload")
            .hash
    };
    let _a = upload("A", "prod", true);
    let b: RevisionHash = upload("B", "next", false);
    let instances: &Instances = daemon.instances();
    for id in IDS {
        let request = serde_json::from_value(json!({"id": id, "strategy": {"identifier": "hist:prod"},
                                                    "scope": {"sim": {"symbols": ["BTC-USDT"]}}}))
        .expect("create request");
        instances.create(request).expect("create");
    }

    let base = Instant::now();
    let history: Vec<(usize, Event)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u64)
            .map(|thread| {
                scope.spawn(move || {
                    let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(thread + 1) | 1);
                    let mut events = Vec::new();
                    for _ in 0..40 {
                        let target = rng.below(IDS.len() as u64) as usize;
                        let id = IDS[target];
                        let roll = rng.below(100);
                        let call = match roll {
                            0..25 => Call::Start,
                            25..45 => Call::Stop,
                            45..70 => Call::Update(rng.below(1000) as i64),
                            70..78 => Call::Repin,
                            78..84 => Call::Refresh,
                            84..86 => Call::Delete,
                            _ => Call::Read,
                        };
                        let invoked = base.elapsed();
                        let seen: Vec<(usize, Option<Seen>)> = match call {
                            Call::Start => vec![(target, Some(answered(instances.start(id))))],
                            Call::Stop => vec![(target, Some(answered(instances.stop(id))))],
                            Call::Update(cfg) => vec![(target, Some(answered(update(instances, id, cfg))))],
                            Call::Repin => {
                                let outcome = instances.repin_many(vec![(id.to_owned(), b, None)]).pop();
                                let seen = match outcome.expect("one outcome") {
                                    Ok(Some(from)) => Seen::Moved { from_b: from == b },
                                    Ok(None) => Seen::Unchanged,
                                    Err(error) => refused(&error),
                                };
                                vec![(target, Some(seen))]
                            }
                            Call::Refresh => {
                                let request = RefreshRequest { hashes: Vec::new(), strategies: vec!["hist".into()] };
                                let results = instances.refresh(&request).expect("refresh");
                                (0..IDS.len())
                                    .map(|index| {
                                        let result = results.iter().find(|r| r.instances == [IDS[index]]);
                                        let seen = match result {
                                            None => Seen::Missing,
                                            Some(r) if r.reason == RefreshReason::Refreshed => {
                                                Seen::Moved { from_b: r.previous_hash == Some(b) }
                                            }
                                            Some(r) if r.reason == RefreshReason::AlreadyPinned => Seen::Unchanged,
                                            Some(r) => match &r.error {
                                                Some(e) if e.contains("unknown instance") => Seen::Missing,
                                                Some(e) if e.contains("is busy") || e.contains("is st") => Seen::Busy,
                                                _ => Seen::Odd(format!("{r:?}")),
                                            },
                                        };
                                        (index, Some(seen))
                                    })
                                    .collect()
                            }
                            Call::Delete => {
                                let seen = match instances.delete(id) {
                                    Ok(()) => Seen::Done,
                                    Err(error) => refused(&error),
                                };
                                vec![(target, Some(seen))]
                            }
                            Call::Read | Call::Final => vec![(target, instances.read_for_history(id))],
                        };
                        let returned = base.elapsed();
                        for (index, seen) in seen {
                            if let Some(seen) = seen {
                                events.push((index, Event { call, seen, invoked, returned }));
                            }
                        }
                    }
                    events
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("history thread panicked")).collect()
    });

    // The end: memory, runtime and database must agree with the model.
    let stored = daemon.store().load_instances().expect("load");
    let mut per_instance: Vec<Vec<Event>> = vec![Vec::new(); IDS.len()];
    for (index, event) in history {
        per_instance[index].push(event);
    }
    for (index, id) in IDS.iter().enumerate() {
        let invoked = base.elapsed();
        let seen = match instances.read_for_history(id) {
            Some(Seen::View(model)) => {
                let row = stored.iter().find(|(record, _, _)| record.id == *id);
                match row {
                    Some((record, state, _))
                        if (record.hash == b) == model.on_b && record.config["v"].as_i64() == Some(model.cfg) =>
                    {
                        Seen::Final(model, *state == StoredState::Running)
                    }
                    other => Seen::Odd(format!("stored {other:?} differs from memory {model:?}")),
                }
            }
            Some(Seen::Missing) if stored.iter().all(|(record, _, _)| record.id != *id) => Seen::Missing,
            other => Seen::Odd(format!("at the end: {other:?}")),
        };
        per_instance[index].push(Event { call: Call::Final, seen, invoked, returned: base.elapsed() });
    }
    runtime.block_on(running.shutdown());
    per_instance
}

const INITIAL: Model = Model { running: false, on_b: false, cfg: 0 };

/// Every instance's history of a run, checked; the first violation.
fn violation(seed: u64, update: UpdateFn) -> Option<String> {
    run_history(seed, update)
        .iter()
        .enumerate()
        .find_map(|(index, events)| check(INITIAL, events).err().map(|e| format!("{} (seed {seed}): {e}", IDS[index])))
}

#[test]
fn concurrent_lifecycle_histories_are_linearisable() {
    for seed in 1..=5 {
        if let Some(violation) = violation(seed, guarded_update) {
            panic!("{violation}");
        }
    }
}

#[test]
fn the_checker_catches_an_unguarded_update() {
    let unguarded: UpdateFn = |instances, id, cfg| instances.update_unguarded(id, cfg);
    let caught = (1..=12).find_map(|seed| violation(seed, unguarded));
    assert!(caught.is_some(), "twelve histories with an unguarded update went unnoticed");
}

#[test]
fn the_checker_accepts_overlaps_and_rejects_impossible_orders() {
    let at = |a: u64, b: u64, call: Call, seen: Seen| Event {
        call,
        seen,
        invoked: Duration::from_millis(a),
        returned: Duration::from_millis(b),
    };
    let running = Model { running: true, ..INITIAL };
    // Two overlapping starts: one wins, the other sees it running.
    let overlapping = [
        at(0, 10, Call::Start, Seen::Conflict { running: true }),
        at(1, 9, Call::Start, Seen::View(running)),
        at(11, 12, Call::Read, Seen::View(running)),
    ];
    assert!(check(INITIAL, &overlapping).is_ok());
    // The same answers one after the other: the conflict came first, impossible.
    let sequential =
        [at(0, 1, Call::Start, Seen::Conflict { running: true }), at(2, 3, Call::Start, Seen::View(running))];
    assert!(check(INITIAL, &sequential).is_err());
    // A busy refusal with nothing in flight is a violation.
    assert!(check(INITIAL, &[at(0, 1, Call::Stop, Seen::Busy)]).is_err());
    // An update's config must be what later reads see.
    let lost =
        [at(0, 1, Call::Update(7), Seen::View(Model { cfg: 7, ..INITIAL })), at(2, 3, Call::Read, Seen::View(INITIAL))];
    assert!(check(INITIAL, &lost).is_err());
    // The database must say running when memory does.
    assert!(check(running, &[at(0, 1, Call::Final, Seen::Final(running, false))]).is_err());
}
