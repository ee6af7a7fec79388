//! Model-based test of the revision usage index (issue: usage index).
//!
//! Random sequences of create / start / stop / fail / delete / refresh /
//! tag-move / re-pin run against a real daemon (registry on disk, SQLite,
//! QuickJS runtimes, simulated venue) and against a plain reference model.
//! After every step the usage index, the instance list and the Prometheus
//! gauges must all agree with the model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_daemon::registry::Upload;
use strata_daemon::{Config, Daemon};
use strata_shared::RevisionHash;
use strata_shared::api::{CreateInstanceRequest, InstanceState, RefreshRequest, ScopeEntry, StrategyRef};

const STRATEGY: &str = "model";
const REVISIONS: usize = 3;
const IDS: [&str; 4] = ["i0", "i1", "i2", "i3"];

fn source(revision: usize) -> String {
    format!(
        "// revision {revision}\nmodule.exports = {{ metadata: {{ name: '{STRATEGY}', displayName: 'M', events: ['Trade'] }}, \
         create() {{ return {{ onTrade() {{}} }}; }} }};"
    )
}

#[derive(Debug, Clone)]
enum Op {
    /// Create instance `id` with selector kind 0 = name, 1 = name:prod, 2 = name@hash of revision `rev`.
    Create {
        id: usize,
        kind: u8,
        rev: usize,
    },
    Start(usize),
    Stop(usize),
    Fail(usize),
    Delete(usize),
    /// Move `prod` (0) or `latest` (1) to revision `rev`.
    MoveTag {
        latest: bool,
        rev: usize,
    },
    /// Refresh everything (None) or one revision's instances.
    Refresh(Option<usize>),
    /// Re-pin every instance on revision `from` to `name@<to>`.
    Repin {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..IDS.len(), 0u8..3, 0..REVISIONS).prop_map(|(id, kind, rev)| Op::Create { id, kind, rev }),
        3 => (0..IDS.len()).prop_map(Op::Start),
        2 => (0..IDS.len()).prop_map(Op::Stop),
        1 => (0..IDS.len()).prop_map(Op::Fail),
        1 => (0..IDS.len()).prop_map(Op::Delete),
        2 => (any::<bool>(), 0..REVISIONS).prop_map(|(latest, rev)| Op::MoveTag { latest, rev }),
        2 => proptest::option::of(0..REVISIONS).prop_map(Op::Refresh),
        1 => (0..REVISIONS, 0..REVISIONS).prop_map(|(from, to)| Op::Repin { from, to }),
    ]
}

/// The reference model: plain maps, no indexes.
#[derive(Debug, Default)]
struct Model {
    hashes: Vec<RevisionHash>,
    tags: BTreeMap<&'static str, usize>,
    /// id → (selector, pinned revision, running)
    instances: BTreeMap<String, (String, usize, bool)>,
}

impl Model {
    fn resolve(&self, selector: &str) -> usize {
        match selector.split_once(['@', ':']) {
            None => self.tags["latest"],
            Some((_, "prod")) => self.tags["prod"],
            Some((_, hash)) => self.hashes.iter().position(|h| h.to_string() == hash).expect("known hash"),
        }
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    running: Option<strata_daemon::Running>,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> (Self, Model) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let config = Config {
            strategies_dir: dir.path().join("strategies"),
            data_dir: Some(dir.path().join("data")),
            ..Config::default()
        };
        let mut running = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            strata_daemon::boot(config, listener).await.unwrap()
        });
        runtime.block_on(running.wait_loaded());
        let daemon = running.daemon.clone();
        let mut model = Model::default();
        for revision in 0..REVISIONS {
            let upload = Upload {
                source: source(revision),
                tag: Some(format!("v{revision}")),
                promote_latest: true,
                ..Upload::default()
            };
            model.hashes.push(daemon.registry().upload(upload).unwrap().hash);
        }
        daemon.registry().move_tag(STRATEGY, "prod", &model.hashes[0].to_string()).unwrap();
        model.tags = BTreeMap::from([("latest", REVISIONS - 1), ("prod", 0)]);
        (Self { runtime, running: Some(running), daemon, _dir: dir }, model)
    }

    fn apply(&self, model: &mut Model, op: &Op) {
        let instances = self.daemon.instances();
        match *op {
            Op::Create { id, kind, rev } => {
                let selector = match kind {
                    0 => STRATEGY.to_owned(),
                    1 => format!("{STRATEGY}:prod"),
                    _ => format!("{STRATEGY}@{}", model.hashes[rev]),
                };
                let request = CreateInstanceRequest {
                    id: IDS[id].to_owned(),
                    strategy: StrategyRef { identifier: selector.clone(), config: Default::default() },
                    scope: [("sim".to_owned(), ScopeEntry { symbols: vec!["BTC-USDT".into()] })].into_iter().collect(),
                    auto_start: false,
                };
                let created = instances.create(request).is_ok();
                assert_eq!(created, !model.instances.contains_key(IDS[id]), "create {id}");
                if created {
                    let pinned = model.resolve(&selector);
                    model.instances.insert(IDS[id].to_owned(), (selector, pinned, false));
                }
            }
            Op::Start(id) => {
                let ok = instances.start(IDS[id]).is_ok();
                let expected = model.instances.get_mut(IDS[id]).filter(|i| !i.2);
                assert_eq!(ok, expected.is_some(), "start {id}");
                if let Some(instance) = expected {
                    instance.2 = true;
                }
            }
            Op::Stop(id) | Op::Fail(id) => {
                let ok = match op {
                    Op::Stop(_) => instances.stop(IDS[id]).is_ok(),
                    _ => instances.fail(IDS[id], "injected").is_ok(),
                };
                let expected = model.instances.get_mut(IDS[id]).filter(|i| i.2);
                assert_eq!(ok, expected.is_some(), "{op:?}");
                if let Some(instance) = expected {
                    instance.2 = false;
                }
            }
            Op::Delete(id) => {
                assert_eq!(instances.delete(IDS[id]).is_ok(), model.instances.remove(IDS[id]).is_some());
            }
            Op::MoveTag { latest, rev } => {
                let tag = if latest { "latest" } else { "prod" };
                self.daemon.registry().move_tag(STRATEGY, tag, &model.hashes[rev].to_string()).unwrap();
                model.tags.insert(tag, rev);
            }
            Op::Refresh(target) => {
                let request = RefreshRequest {
                    hashes: target.map(|rev| vec![model.hashes[rev].to_string()]).unwrap_or_default(),
                    strategies: vec![],
                };
                instances.refresh(&request).unwrap();
                let targets: Vec<String> = model
                    .instances
                    .iter()
                    .filter(|(_, i)| target.is_none_or(|rev| i.1 == rev))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in targets {
                    let resolved = model.resolve(&model.instances[&id].0);
                    model.instances.get_mut(&id).unwrap().1 = resolved;
                }
            }
            Op::Repin { from, to } => {
                let to_selector = format!("{STRATEGY}@{}", model.hashes[to]);
                instances.repin_all(model.hashes[from], &to_selector, model.hashes[to]);
                if from != to {
                    for instance in model.instances.values_mut().filter(|i| i.1 == from) {
                        *instance = (to_selector.clone(), to, instance.2);
                    }
                }
            }
        }
    }

    /// The index, the instance list and the gauges all agree with the model.
    fn check(&self, model: &Model, after: &Op) {
        let usage = self.daemon.usage();
        let metrics = self.daemon.metrics().render();
        let strategy: std::sync::Arc<str> = std::sync::Arc::from(STRATEGY);
        for (rev, hash) in model.hashes.iter().enumerate() {
            let pinned: Vec<&String> = model.instances.iter().filter(|(_, i)| i.1 == rev).map(|(id, _)| id).collect();
            let running: Vec<&String> =
                model.instances.iter().filter(|(_, i)| i.1 == rev && i.2).map(|(id, _)| id).collect();
            let summary = usage.summary(&strategy, *hash);
            assert_eq!(
                (summary.count, summary.pinned),
                (running.len(), pinned.len()),
                "revision {rev} after {after:?}"
            );
            let (page, total) = usage.page(&strategy, *hash, false, 0, 100);
            assert_eq!((page.iter().collect::<Vec<_>>(), total), (running.clone(), running.len()), "after {after:?}");

            let filter = strata_daemon::instances::InstanceFilter { hash: Some(*hash), ..Default::default() };
            let (views, total) = self.daemon.instances().list(&filter, 0, 100);
            let listed: Vec<&String> = views.iter().map(|v| &v.id).collect();
            assert_eq!((listed, total), (pinned.clone(), pinned.len()), "instance list by hash after {after:?}");
            for view in &views {
                let expected_running = model.instances[&view.id].2;
                assert_eq!(view.state == InstanceState::Running, expected_running, "{} after {after:?}", view.id);
            }

            let series = format!("strategy_revision_instances{{hash=\"{hash}\",strategy=\"{STRATEGY}\"}} ");
            let gauge = metrics
                .lines()
                .find_map(|line| line.strip_prefix(series.as_str()))
                .map_or(0, |value| value.trim().parse::<usize>().unwrap());
            assert_eq!(gauge, running.len(), "gauge of revision {rev} after {after:?}");
        }
        let any_running = model.instances.values().any(|i| i.2);
        assert_eq!(usage.strategy_running(STRATEGY), any_running, "running strategies after {after:?}");
        let all = self.daemon.instances().list(&Default::default(), 0, 100).1;
        assert_eq!(all, model.instances.len());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.shutdown());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_usage_index_agrees_with_a_reference_model(ops in proptest::collection::vec(op(), 1..30)) {
        let (harness, mut model) = Harness::new();
        for op in &ops {
            harness.apply(&mut model, op);
            harness.check(&model, op);
        }
    }
}
