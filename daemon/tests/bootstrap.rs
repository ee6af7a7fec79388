//! Tests of `stratad bootstrap`, run as a real binary on fixture trees.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");

fn module(name: &str, tag: Option<&str>, body: &str) -> String {
    let tag = tag.map(|t| format!("tag: '{t}', ")).unwrap_or_default();
    format!(
        "// {body}\nmodule.exports = {{ metadata: {{ name: '{name}', {tag}displayName: 'Fixture', events: ['Trade'] }},\n  \
         create(env) {{ return {{ onTrade() {{}} }}; }} }};\n"
    )
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn bootstrap(root: &Path, extra: &[&str]) -> Output {
    Command::new(STRATAD).arg("bootstrap").arg("--root").arg(root).args(extra).output().expect("stratad runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(output), String::from_utf8_lossy(&output.stderr)))
}

/// Every file under `root` (relative path → content), hidden ones included.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn registry(root: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(root.join("registry.json")).unwrap()).unwrap()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `--write` and checks that a second `--write` has nothing to do and changes nothing.
fn write_twice(root: &Path) -> Output {
    let first = bootstrap(root, &["--write"]);
    assert_ok(&first);
    let after_first = tree(root);
    let second = bootstrap(root, &["--write", "--json"]);
    assert_ok(&second);
    let plan = json_of(&second);
    assert_eq!(plan["summary"]["nothingToDo"], true, "{plan:#}");
    assert_eq!(plan["applied"], Value::Null);
    assert_eq!(tree(root), after_first, "a second run changes nothing");
    let third = bootstrap(root, &[]);
    assert_ok(&third);
    assert!(stdout(&third).contains("Nothing to do."), "{}", stdout(&third));
    first
}

struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    /// Starts `stratad` on `strategies` and waits for its first load to finish.
    fn start(strategies: &Path, data: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(STRATAD)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--strategies-dir")
            .arg(strategies)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stratad starts");
        let daemon = Daemon { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let health = reqwest::blocking::get(format!("{}/healthz", daemon.url)).and_then(|r| r.json::<Value>());
            if health.is_ok_and(|h| h["status"] != "loading") {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("stratad did not come up");
    }

    fn export(&self) -> Value {
        reqwest::blocking::get(format!("{}/strategies/registry", self.url)).unwrap().json().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon started on `root` loads every revision of its registry.json with no error.
fn assert_daemon_loads_everything(root: &Path, data: &Path) {
    let revisions: usize =
        registry(root).as_object().unwrap().values().map(|s| s["hashes"].as_object().unwrap().len()).sum();
    let daemon = Daemon::start(root, data);
    let export = daemon.export();
    assert_eq!(export["errors"], json!([]), "{export:#}");
    assert_eq!(export["usage"].as_array().unwrap().len(), revisions, "{export:#}");
    let health: Value = reqwest::blocking::get(format!("{}/healthz", daemon.url)).unwrap().json().unwrap();
    assert_eq!(health["status"], "ok", "{health}");
}

#[test]
fn help_lists_the_bootstrap_flags() {
    let output = Command::new(STRATAD).args(["bootstrap", "--help"]).output().unwrap();
    assert_ok(&output);
    for flag in ["--root", "--write", "--usage", "--json", "--prune"] {
        assert!(stdout(&output).contains(flag), "bootstrap --help lacks {flag}");
    }
    // --prune needs --usage.
    let dir = tempfile::tempdir().unwrap();
    let output = bootstrap(dir.path(), &["--prune"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn flat_layout_dry_run_changes_nothing_then_write_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("strategies");
    let noop = module("noop", Some("v1.0.0"), "noop");
    let grid = module("grid", Some("v0.3.0"), "grid");
    write(&root, "noop.js", &noop);
    write(&root, "grid-legacy-name.js", &grid);
    write(&root, "README.txt", "not a strategy");
    let before = tree(&root);

    let dry = bootstrap(&root, &[]);
    assert_ok(&dry);
    let text = stdout(&dry);
    assert!(text.contains("dry run"), "{text}");
    assert!(text.contains(&format!("copy   noop.js -> noop/{}/noop.js", hex(noop.as_bytes()))), "{text}");
    assert!(text.contains("Summary: 2 new revision(s), 2 file(s) to copy, 2 original(s) to remove"), "{text}");
    assert_eq!(tree(&root), before, "a dry run writes nothing");

    let first = write_twice(&root);
    assert!(stdout(&first).contains("Applied: 2 file(s) copied and verified, registry.json written"));
    let files = tree(&root);
    let (hn, hg) = (hex(noop.as_bytes()), hex(grid.as_bytes()));
    assert_eq!(files[&format!("noop/{hn}/noop.js")], noop.as_bytes());
    assert_eq!(files[&format!("grid/{hg}/grid.js")], grid.as_bytes());
    assert!(files.contains_key("README.txt"), "unrelated files stay");
    assert!(!files.contains_key("noop.js") && !files.contains_key("grid-legacy-name.js"));
    let reg = registry(&root);
    assert_eq!(
        reg["noop"],
        json!({"tags": {"v1.0.0": format!("sha256:{hn}"), "latest": format!("sha256:{hn}")},
               "hashes": {format!("sha256:{hn}"): {"tag": "v1.0.0", "path": format!("noop/{hn}/noop.js")}}})
    );
    assert_daemon_loads_everything(&root, &dir.path().join("data"));
}

#[test]
fn tagged_layout_migrates_with_latest_by_semver_not_string_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("strategies");
    // The tag directory names the revision when the module has no metadata.tag.
    let versions = ["v1.2.0", "v1.9.0", "v1.10.0", "v1.10.0-rc.1", "experimental"];
    for v in versions {
        write(root, &format!("momentum/{v}/momentum.js"), &module("momentum", None, v));
    }
    let dry = bootstrap(root, &["--json"]);
    assert_ok(&dry);
    let plan = json_of(&dry);
    assert_eq!(plan["mode"], "dryRun");
    let order: Vec<&str> =
        plan["strategies"][0]["revisions"].as_array().unwrap().iter().map(|r| r["tag"].as_str().unwrap()).collect();
    assert_eq!(order, ["experimental", "v1.2.0", "v1.9.0", "v1.10.0-rc.1", "v1.10.0"], "registered oldest first");

    write_twice(root);
    let reg = registry(root);
    let latest = format!("sha256:{}", hex(module("momentum", None, "v1.10.0").as_bytes()));
    assert_eq!(reg["momentum"]["tags"]["latest"], latest);
    assert_eq!(reg["momentum"]["tags"]["v1.10.0"], latest);
    assert_eq!(reg["momentum"]["hashes"].as_object().unwrap().len(), 5);
    for v in versions {
        assert!(!root.join("momentum").join(v).exists(), "emptied tag directory {v} is removed");
    }
    assert_daemon_loads_everything(root, &dir.path().join("data"));
}

#[test]
fn a_module_that_fails_to_evaluate_is_reported_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "good.js", &module("good", Some("v1"), ""));
    write(root, "syntax.js", "module.exports = { metadata: {");
    write(root, "throws.js", "throw new Error('legacy boom');");
    write(root, "old/v2/old.js", "module.exports = { metadata: { name: 'old' } };");
    let before = tree(root);

    let dry = bootstrap(root, &[]);
    assert_eq!(dry.status.code(), Some(1), "{}", stdout(&dry));
    let text = stdout(&dry);
    assert!(text.contains("Problems (3)"), "{text}");
    assert!(
        text.contains("throws.js: evaluation: module failed to evaluate:") && text.contains("legacy boom"),
        "{text}"
    );
    assert!(text.contains("copy   good.js"), "the rest of the plan is still printed: {text}");

    let json = json_of(&bootstrap(root, &["--json"]));
    let problems: Vec<(&str, &str)> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(problems, [("old/v2/old.js", "evaluation"), ("syntax.js", "evaluation"), ("throws.js", "evaluation")]);

    let write = bootstrap(root, &["--write"]);
    assert_eq!(write.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&write.stderr).contains("not writing anything: the plan has 3 problem(s)"));
    assert_eq!(tree(root), before, "--write refuses a plan with problems");
}

#[test]
fn an_unreadable_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "good.js", &module("good", Some("v1"), ""));
    // A dangling symlink cannot be read.
    std::os::unix::fs::symlink(root.join("missing-target.js"), root.join("dangling.js")).unwrap();
    let output = bootstrap(root, &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let json = json_of(&output);
    assert_eq!(json["problems"][0]["path"], "dangling.js");
    assert_eq!(json["problems"][0]["kind"], "unreadable");
}

#[test]
fn duplicate_name_and_tag_with_different_bytes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "dup.js", &module("dup", Some("v1.0.0"), "one"));
    write(root, "dup/v1.0.0/dup.js", &module("dup", Some("v1.0.0"), "two"));
    // The same bytes in two places are one revision, not a duplicate.
    write(root, "same.js", &module("same", Some("v1.0.0"), "x"));
    write(root, "same/v1.0.0/same.js", &module("same", Some("v1.0.0"), "x"));
    let output = bootstrap(root, &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let json = json_of(&output);
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{json:#}");
    for p in problems {
        assert_eq!(p["kind"], "duplicateTag");
        assert!(p["message"].as_str().unwrap().contains("dup:v1.0.0 is claimed by files with different bytes"));
    }
    assert_eq!(json["strategies"][0]["name"], "same");
    assert_eq!(json["strategies"][0]["revisions"][0]["remove"], json!(["same.js", "same/v1.0.0/same.js"]));
}

#[test]
fn an_existing_registry_is_merged_and_its_tags_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("strategies");
    let data = dir.path().join("data");
    // An existing deployment: one revision, uploaded through the daemon.
    let old = module("momentum", Some("v1.0.0"), "old");
    {
        let daemon = Daemon::start(&root, &data);
        let client = reqwest::blocking::Client::new();
        let body = json!({"source": old, "aliases": ["prod"]});
        let r = client.post(format!("{}/strategies/modules", daemon.url)).json(&body).send().unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
    }
    let existing = registry(&root);
    let old_hash = format!("sha256:{}", hex(old.as_bytes()));
    assert_eq!(existing["momentum"]["tags"]["prod"], old_hash);

    let newer = module("momentum", Some("v2.0.0"), "newer");
    write(&root, "momentum.js", &newer);
    write(&root, "momentum/v1.0.0/momentum.js", &old); // already registered bytes
    write(&root, "grid.js", &module("grid", Some("v1"), ""));
    write_twice(&root);

    let reg = registry(&root);
    let new_hash = format!("sha256:{}", hex(newer.as_bytes()));
    assert_eq!(reg["momentum"]["tags"]["prod"], old_hash, "existing tags kept");
    assert_eq!(reg["momentum"]["tags"]["latest"], old_hash, "an existing latest is not moved");
    assert_eq!(reg["momentum"]["tags"]["v2.0.0"], new_hash);
    assert_eq!(reg["momentum"]["hashes"][&old_hash], existing["momentum"]["hashes"][&old_hash]);
    assert_eq!(reg["momentum"]["hashes"].as_object().unwrap().keys().collect::<Vec<_>>(), [&old_hash, &new_hash]);
    assert!(reg["grid"]["tags"]["latest"].is_string());
    assert!(!root.join("momentum/v1.0.0").exists(), "the legacy copy of a registered revision is removed");

    // A new file whose tag already points elsewhere is a conflict, not an overwrite.
    write(&root, "clash.js", &module("momentum", Some("prod"), "clash"));
    let output = bootstrap(&root, &["--write", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json_of(&output)["problems"][0]["kind"], "tagConflict");
    assert_eq!(registry(&root), reg, "nothing written");
    std::fs::remove_file(root.join("clash.js")).unwrap();
    assert_daemon_loads_everything(&root, &data);
}

/// A migrated tree with four revisions of `s` (tags v1…v4, v4 is latest) whose tag v1 was then
/// deleted, as `DELETE .../tags/v1?allowOrphan=true` would.
fn usage_fixture(root: &Path) -> [String; 4] {
    let sources: Vec<String> = (1..=4).map(|i| module("s", Some(&format!("v{i}")), "")).collect();
    for (i, src) in sources.iter().enumerate() {
        write(root, &format!("s{i}.js"), src);
    }
    assert_ok(&bootstrap(root, &["--write"]));
    let hashes: Vec<String> = sources.iter().map(|s| format!("sha256:{}", hex(s.as_bytes()))).collect();
    let mut reg = registry(root);
    reg["s"]["tags"].as_object_mut().unwrap().remove("v1");
    std::fs::write(root.join("registry.json"), serde_json::to_vec_pretty(&reg).unwrap()).unwrap();
    hashes.try_into().unwrap()
}

#[test]
fn a_usage_file_lists_candidates_and_prune_removes_only_retired_untagged_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("strategies");
    let [r1, r2, r3, r4] = usage_fixture(&root);
    let entry = |hash: &str, count: usize, retired: bool| {
        json!({"strategy": "s", "hash": hash, "count": count, "instances": vec!["i"; count],
               "firstSeen": if count > 0 { json!("2026-01-01T00:00:00Z") } else { Value::Null },
               "lastSeen": null, "retired": retired})
    };
    // r1: retired and untagged. r2: called retired by a stale export but tagged: kept.
    // r3: unused but tagged. r4: running.
    let export = json!({"registry": registry(&root), "errors": [],
        "usage": [entry(&r1, 0, true), entry(&r2, 0, true), entry(&r3, 0, false), entry(&r4, 1, false)]});
    let usage = dir.path().join("usage.json");
    std::fs::write(&usage, export.to_string()).unwrap();
    let usage = usage.to_str().unwrap();

    let dry = bootstrap(&root, &["--usage", usage, "--json"]);
    assert_ok(&dry);
    let report = &json_of(&dry)["usage"];
    assert_eq!(report["revisionsInExport"], 4);
    let candidates: Vec<(&str, bool)> = report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["hash"].as_str().unwrap(), c["prunable"].as_bool().unwrap()))
        .collect();
    assert_eq!(candidates, [(r1.as_str(), true), (r2.as_str(), false), (r3.as_str(), false)]);
    let text = stdout(&bootstrap(&root, &["--usage", usage]));
    assert!(text.contains("Pruning candidates (zero running instances):"), "{text}");
    assert!(text.contains("retired, untagged: --prune removes it"), "{text}");

    let before = tree(&root);
    assert_ok(&bootstrap(&root, &["--usage", usage, "--prune"]));
    assert_eq!(tree(&root), before, "--prune without --write is a dry run");

    let pruned = bootstrap(&root, &["--usage", usage, "--prune", "--write", "--json"]);
    assert_ok(&pruned);
    assert_eq!(json_of(&pruned)["applied"]["pruned"], 1);
    let reg = registry(&root);
    let kept: Vec<&String> = reg["s"]["hashes"].as_object().unwrap().keys().collect();
    assert_eq!(kept, [&r2, &r3, &r4]);
    assert!(!root.join(format!("s/{}", &r1["sha256:".len()..])).exists());
    for kept in [&r2, &r3, &r4] {
        assert!(root.join(format!("s/{}/s.js", &kept["sha256:".len()..])).exists());
    }
    let again = bootstrap(&root, &["--usage", usage, "--prune", "--write", "--json"]);
    assert_ok(&again);
    assert_eq!(json_of(&again)["summary"]["nothingToDo"], true);
    assert_daemon_loads_everything(&root, &dir.path().join("data"));
}

#[test]
fn a_usage_url_must_be_loopback_and_is_read_from_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("strategies");
    for bad in ["http://192.0.2.1:8880/strategies/registry", "https://127.0.0.1:8880/strategies/registry"] {
        let output = bootstrap(&root, &["--usage", bad]);
        assert_eq!(output.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&output.stderr).contains("only http:// URLs on a loopback host"));
    }

    let sources: Vec<String> = (1..=2).map(|i| module("u", Some(&format!("v{i}")), "")).collect();
    for (i, src) in sources.iter().enumerate() {
        write(&root, &format!("u/v{}/u.js", i + 1), src);
    }
    assert_ok(&bootstrap(&root, &["--write"]));
    let daemon = Daemon::start(&root, &dir.path().join("data"));
    let client = reqwest::blocking::Client::new();
    let deleted =
        client.delete(format!("{}/strategies/modules/u/tags/v1?allowOrphan=true", daemon.url)).send().unwrap();
    assert!(deleted.status().is_success(), "{:?}", deleted.text());
    let url = format!("{}/strategies/registry", daemon.url);

    let output = bootstrap(&root, &["--usage", &url, "--json"]);
    assert_ok(&output);
    let report = json_of(&output)["usage"].clone();
    assert_eq!(report["source"], url);
    let v1 = format!("sha256:{}", hex(sources[0].as_bytes()));
    let candidates = report["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "both revisions run nothing: {report:#}");
    assert_eq!(candidates[0]["hash"], v1);
    assert_eq!(candidates[0]["prunable"], true);
    assert_eq!(candidates[1]["prunable"], false);

    let pruned = bootstrap(&root, &["--usage", &url, "--prune", "--write"]);
    assert_ok(&pruned);
    drop(daemon);
    assert!(registry(&root)["u"]["hashes"].get(&v1).is_none());
    assert_daemon_loads_everything(&root, &dir.path().join("data"));
}

/// Starts `bootstrap --write` with the pause hook, waits until it pauses, and kills it with SIGKILL.
fn kill_9_at(root: &Path, point: &str) {
    let mut child = Command::new(STRATAD)
        .arg("bootstrap")
        .arg("--root")
        .arg(root)
        .arg("--write")
        .env("STRATA_BOOTSTRAP_TEST_PAUSE", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("bootstrap: paused at {point}"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Every legacy module is recoverable: its original is there, or registry.json names a copy
/// with exactly its bytes.
fn assert_recoverable(root: &Path, legacy: &[(String, String)]) {
    let reg = if root.join("registry.json").exists() { registry(root) } else { json!({}) };
    for (path, src) in legacy {
        if std::fs::read(root.join(path)).is_ok_and(|b| b == src.as_bytes()) {
            continue;
        }
        let h = hex(src.as_bytes());
        let entry = &reg["big"]["hashes"][format!("sha256:{h}")];
        let copy = std::fs::read(root.join(entry["path"].as_str().unwrap_or("-"))).unwrap_or_default();
        assert_eq!(copy, src.as_bytes(), "{path} is lost: neither the original nor a registered copy");
    }
}

#[test]
fn kill_9_midway_leaves_every_strategy_recoverable_and_a_rerun_finishes() {
    for point in ["copy:7", "registry:1", "remove:7"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("strategies");
        let legacy: Vec<(String, String)> = (0..20)
            .map(|i| {
                let path = if i % 2 == 0 { format!("big-{i}.js") } else { format!("big/t{i}/big.js") };
                (path, module("big", Some(&format!("v1.{i}.0")), &i.to_string()))
            })
            .collect();
        for (path, src) in &legacy {
            write(&root, path, src);
        }
        kill_9_at(&root, point);
        assert_recoverable(&root, &legacy);

        let rerun = bootstrap(&root, &["--write", "--json"]);
        assert_ok(&rerun);
        let applied = &json_of(&rerun)["applied"];
        match point {
            "copy:7" => assert_eq!(applied["copied"], 13, "{applied}"),
            "registry:1" => {
                assert_eq!((applied["copied"].as_u64(), applied["registryWritten"].as_bool()), (Some(0), Some(false)))
            }
            _ => assert_eq!(applied["removed"], 13, "{applied}"),
        }
        assert_recoverable(&root, &legacy);
        for (path, _) in &legacy {
            assert!(!root.join(path).exists(), "{point}: original {path} removed by the re-run");
        }
        let done = bootstrap(&root, &["--json"]);
        assert_eq!(json_of(&done)["summary"]["nothingToDo"], true);
        let reg = registry(&root);
        assert_eq!(reg["big"]["hashes"].as_object().unwrap().len(), 20);
        let latest = format!("sha256:{}", hex(legacy[19].1.as_bytes()));
        assert_eq!(reg["big"]["tags"]["latest"], latest, "v1.19.0 is the highest version");
        if point == "remove:7" {
            assert_daemon_loads_everything(&root, &dir.path().join("data"));
        }
    }
}

#[test]
fn kill_9_at_arbitrary_moments_never_loses_a_strategy() {
    // No hook: SIGKILL after growing delays, wherever the process is (evaluating, inside an
    // atomic write, between removals). Each kill must leave everything recoverable.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("strategies");
    let legacy: Vec<(String, String)> = (0..120)
        .map(|i| {
            let path = if i % 3 == 0 { format!("big/v2.{i}.0/big.js") } else { format!("big-{i}.js") };
            (path, module("big", Some(&format!("v2.{i}.0")), &i.to_string()))
        })
        .collect();
    for (path, src) in &legacy {
        write(&root, path, src);
    }
    for delay_ms in [150, 400, 800, 1500] {
        let mut child = Command::new(STRATAD)
            .arg("bootstrap")
            .arg("--root")
            .arg(&root)
            .arg("--write")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // it may have finished already
        child.wait().unwrap();
        assert_recoverable(&root, &legacy);
    }
    let rerun = bootstrap(&root, &["--write"]);
    assert_ok(&rerun);
    assert_recoverable(&root, &legacy);
    assert!(legacy.iter().all(|(path, _)| !root.join(path).exists()), "the re-run removed every original");
    assert_eq!(registry(&root)["big"]["hashes"].as_object().unwrap().len(), legacy.len());
    assert_daemon_loads_everything(&root, &dir.path().join("data"));
}
