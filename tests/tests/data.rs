//! End-to-end tests of SPEC §8 "Data" and the memory bound on logs: a
//! damaged `registry.json` or database is never taken for an empty one, a
//! full disk fails writes cleanly, and huge log lines and error messages are
//! cut when recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_shared::RevisionHash;
use strata_tests::{TestDaemon, instance_request, module};

/// `/healthz` as (status field, every error message).
async fn health(d: &TestDaemon) -> (String, Vec<String>) {
    let (status, body) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    let messages = errors.iter().map(|e| e["message"].as_str().unwrap().to_owned());
    (body["status"].as_str().unwrap().to_owned(), messages.collect())
}

/// Every kind of registry write: upload, tag move, tag delete, revision delete.
async fn registry_writes(d: &TestDaemon, v1: &str) -> Vec<(&'static str, StatusCode, Value)> {
    let mut answers = Vec::new();
    let (status, body) = d.post("/strategies/modules", json!({"source": module("gamma", 1), "tag": "v1"})).await;
    answers.push(("upload", status, body));
    let (status, body) = d.put("/strategies/modules/alpha/tags/prod", json!({"hash": v1})).await;
    answers.push(("tag move", status, body));
    let (status, body) = d.delete("/strategies/modules/alpha/tags/v1?allowOrphan=true").await;
    answers.push(("tag delete", status, body));
    let (status, body) = d.delete(&format!("/strategies/modules/alpha@{v1}")).await;
    answers.push(("revision delete", status, body));
    answers
}

/// Each damage of `registry.json` (beside the revision folders of two
/// strategies) boots degraded, refuses every registry write, leaves the file
/// exactly as found, and is repaired by putting the document back.
#[tokio::test]
async fn a_damaged_registry_json_beside_revision_folders_is_never_taken_for_an_empty_registry() {
    let damages: [(&str, Option<&[u8]>, &str); 4] = [
        ("0 bytes", Some(b""), "registry.json is empty (0 bytes) but revision folders such as"),
        ("blank", Some(b" \n"), "registry.json is empty (2 bytes)"),
        ("unparsable", Some(b"{ \"alpha\": "), "registry.json is not valid JSON"),
        ("missing", None, "registry.json is missing but revision folders such as"),
    ];
    for (name, damaged, expected) in damages {
        let d = TestDaemon::start().await;
        let v1 = d.upload(&module("alpha", 1), "v1").await;
        d.upload(&module("alpha", 2), "v2").await;
        d.upload(&module("beta", 1), "v1").await;
        let path = d.strategies_dir().join("registry.json");
        let good = std::fs::read(&path).unwrap();
        let d = d
            .restart_with(|dir| {
                let path = dir.join("strategies/registry.json");
                match damaged {
                    Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                    None => std::fs::remove_file(&path).unwrap(),
                }
            })
            .await;

        let (status, messages) = health(&d).await;
        assert_eq!(status, "degraded", "{name}: {messages:?}");
        assert!(messages[0].starts_with(expected), "{name}: {messages:?}");
        assert!(messages[0].contains("writes are refused"), "{name}: {messages:?}");
        let (status, _) = d.get("/strategies").await;
        assert_eq!(status, StatusCode::OK, "{name}: reads keep working");

        for (write, status, body) in registry_writes(&d, &v1).await {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {write} must be refused: {body}");
            assert!(body["error"].as_str().unwrap().contains("registry.json"), "{name}: {write}: {body}");
        }
        assert_eq!(std::fs::read(&path).ok().as_deref(), damaged, "{name}: the file is left exactly as found");
        assert!(!d.strategies_dir().join("gamma").exists(), "{name}: no revision written for a refused upload");

        // Repair: put the document back and re-read it.
        std::fs::write(&path, &good).unwrap();
        let (status, body) = d.post("/strategies/refresh", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(health(&d).await.0, "ok", "{name}");
        d.upload(&module("gamma", 1), "v1").await;
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let names: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, ["alpha", "beta", "gamma"], "{name}: nothing lost");
    }
}

#[tokio::test]
async fn an_empty_or_missing_registry_json_without_revision_folders_is_a_fresh_registry() {
    for damaged in [Some(&b""[..]), None] {
        let d = TestDaemon::start().await;
        let d = d
            .restart_with(|dir| {
                let path = dir.join("strategies/registry.json");
                match damaged {
                    Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            })
            .await;
        assert_eq!(health(&d).await.0, "ok");
        d.upload(&module("alpha", 1), "v1").await;
        assert_eq!(health(&d).await.0, "ok");
    }
}

/// Boots on `dir` expecting the database to be refused; returns the message.
async fn refused_boot(dir: &Path) -> String {
    let config = strata_daemon::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        strategies_dir: dir.join("strategies"),
        data_dir: Some(dir.join("data")),
        ..strata_daemon::Config::default()
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    match strata_daemon::boot(config, listener).await {
        Ok(_) => panic!("a damaged database must not boot"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn an_empty_or_damaged_database_refuses_to_start_naming_the_file() {
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let damages: [(&str, &[u8], &str); 2] =
        [("0 bytes", b"", "is empty (0 bytes)"), ("random bytes", &noise, "file is not a database")];
    for (name, bytes, expected) in damages {
        let d = TestDaemon::start().await;
        d.upload(&module("alpha", 1), "v1").await;
        d.create_instance("kept-1", "alpha", false).await;
        let temp = d.stop().await.expect("owns its directory");
        let dir = temp.path();
        let db = dir.join("data/strata.db");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("data/strata.db{suffix}")));
        }
        std::fs::write(&db, bytes).unwrap();

        let message = refused_boot(dir).await;
        assert!(message.contains(&*db.to_string_lossy()), "{name}: names the file: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        // Compared whole, reported short: the noise is 200 KB.
        let after = std::fs::read(&db).unwrap();
        assert!(after == bytes, "{name}: the file changed ({} bytes, was {})", after.len(), bytes.len());
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped (lazily if a
/// file is still open in it).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Self { dir, _parent: parent })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system holding `path` (bounded: at most 8 MiB written).
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    for _ in 0..2048 {
        if file.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("the file system never filled up");
}

/// Every path under `dir` whose name starts with a dot (temporary files).
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(temporaries(&path));
        }
    }
    found
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_degrades_health_and_leaves_no_half_written_revision() {
    let mount = match Tmpfs::mount("2m") {
        Ok(mount) => mount,
        Err(error) => {
            println!("skipped: cannot mount a tmpfs: {error}");
            return;
        }
    };
    let d = TestDaemon::start_in(&mount.dir, |_| {}).await;
    d.upload(&module("alpha", 1), "v1").await;
    d.create_instance("before-1", "alpha", false).await;
    assert_eq!(health(&d).await.0, "ok");
    let registry = std::fs::read(d.strategies_dir().join("registry.json")).unwrap();
    let filler = mount.dir.join("filler");
    fill(&filler);

    // Uploads: a new revision of a known strategy and a new strategy.
    for (source, folder) in [(module("alpha", 2), "alpha"), (module("beta", 1), "beta")] {
        let (status, body) = d.post("/strategies/modules", json!({"source": source, "tag": "v9"})).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with("cannot write "), "{body}");
        let revision = d.strategies_dir().join(folder).join(RevisionHash::of(source.as_bytes()).to_hex());
        assert!(!revision.exists(), "no half-written revision folder: {}", revision.display());
    }
    assert!(!d.strategies_dir().join("beta").exists(), "no empty strategy folder");
    assert_eq!(temporaries(&d.strategies_dir()), Vec::<PathBuf>::new(), "no temporary file left");
    assert_eq!(std::fs::read(d.strategies_dir().join("registry.json")).unwrap(), registry, "registry.json intact");
    let (status, messages) = health(&d).await;
    assert_eq!(status, "degraded");
    assert!(messages.iter().any(|m| m.starts_with("writes to the strategies directory are failing")), "{messages:?}");

    // Creates: the database's WAL fills up within a few commits; the one that
    // fails leaves no instance behind.
    let mut failed = None;
    for i in 0..200 {
        let id = format!("full-{i}");
        let (status, body) = d.post("/strategy/instances", instance_request(&id, "alpha", "BTC-USDT", false)).await;
        if status == StatusCode::CREATED {
            continue;
        }
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{id}: {body}");
        failed = Some((id, i));
        break;
    }
    let (id, created) = failed.expect("a create fails on a full disk");
    let (status, _) = d.get(&format!("/strategy/instances/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a failed commit leaves no instance in memory");
    let (_, list) = d.get("/strategy/instances").await;
    assert_eq!(list["total"], json!(created + 1), "{list}");
    let (_, messages) = health(&d).await;
    assert!(messages.iter().any(|m| m.starts_with("writes to the database are failing")), "{messages:?}");

    // Space again: the next writes succeed and health is ok again.
    std::fs::remove_file(&filler).unwrap();
    d.upload(&module("beta", 1), "v1").await;
    d.create_instance(&id, "alpha", false).await;
    assert_eq!(health(&d).await, ("ok".to_owned(), vec![]));

    // Everything acknowledged survives a restart.
    let d = d.restart().await;
    let (_, list) = d.get("/strategy/instances").await;
    assert_eq!(list["total"], json!(created + 2), "{list}");
    d.stop().await;
}

/// A module that logs a 10 MiB line on its first trade and then throws a
/// 10 MiB error on every later one.
const LOUD: &str = r#"module.exports = {
  metadata: { name: "loud", displayName: "Loud", events: ["Trade"] },
  create(env) {
    let logged = false;
    return {
      onTrade() {
        if (!logged) { logged = true; env.helpers.log("y".repeat(10 * 1024 * 1024)); return; }
        throw new Error("z".repeat(10 * 1024 * 1024));
      },
    };
  },
};
"#;

/// A module whose `create` throws a 10 MiB error.
const THROWS: &str = r#"module.exports = {
  metadata: { name: "throws", displayName: "Throws", events: ["Trade"] },
  create() { throw new Error("w".repeat(10 * 1024 * 1024)); },
};
"#;

/// Asserts `text` was cut to 8 KiB and carries the truncation mark.
fn assert_truncated(text: &str, what: &str) {
    let mark = text.rfind("… [truncated, ").unwrap_or_else(|| panic!("{what} has no mark: {}", &text[..80]));
    assert!(mark <= 8192, "{what}: kept {mark} bytes");
    let original: usize =
        text[mark..].trim_start_matches("… [truncated, ").trim_end_matches(" bytes]").parse().unwrap();
    assert!(original >= 10 << 20, "{what}: the mark gives the original size ({original})");
    assert!(text.len() < 8192 + 64, "{what}: {} bytes", text.len());
}

#[tokio::test]
async fn ten_mib_log_lines_and_errors_are_truncated_when_recorded() {
    let d = TestDaemon::start().await;
    d.upload(LOUD, "v1").await;
    d.create_instance("loud-1", "loud", true).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let (status, body) = d.get("/strategy/instances/loud-1/logs").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let lines: Vec<String> =
            body["lines"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap().to_owned()).collect();
        if lines.iter().any(|l| l.starts_with('y')) && lines.iter().any(|l| l.contains("zzz")) {
            break lines;
        }
        assert!(Instant::now() < deadline, "no logged line and thrown error within 20 s: {lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_truncated(lines.iter().find(|l| l.starts_with('y')).unwrap(), "the logged line");
    assert_truncated(lines.iter().find(|l| l.contains("zzz")).unwrap(), "the thrown error's line");

    d.upload(THROWS, "v1").await;
    let (status, body) = d.post("/strategy/instances", instance_request("throws-1", "throws", "BTC-USDT", true)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "create() throws");
    assert!(body["error"].as_str().unwrap().len() < 9000, "the answer carries the cut error");
    let (_, view) = d.get("/strategy/instances/throws-1").await;
    assert_eq!(view["state"], "failed", "{}", view["state"]);
    assert_truncated(view["lastError"].as_str().unwrap(), "lastError");

    // The stored lastError is the cut one too.
    let d = d.restart().await;
    let (_, view) = d.get("/strategy/instances/throws-1").await;
    assert_truncated(view["lastError"].as_str().unwrap(), "lastError after a restart");
}
