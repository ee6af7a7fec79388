//! The on-disk registry: `registry.json` and the revision files beside it.
//!
//! `registry.json` is shared with existing deployments, so its shape is fixed
//! (SPEC §1.1). Key order is preserved on read and write: the order of a
//! strategy's `hashes` is the order revisions were added, which is how
//! "the newest remaining revision" is found when `latest` must move.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use strata_shared::RevisionHash;

/// File name of the registry document inside the strategies directory.
pub const REGISTRY_FILE: &str = "registry.json";

/// The whole `registry.json` document: strategy name → raw entry.
///
/// Entries stay raw JSON so that one malformed entry neither fails the whole
/// parse nor gets dropped when the daemon rewrites the file.
pub type RegistryDoc = IndexMap<String, serde_json::Value>;

/// One strategy's entry in `registry.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyDoc {
    /// Alias → revision hash (`latest`, `v1.2.0`, `prod`, …).
    #[serde(default)]
    pub tags: IndexMap<String, String>,
    /// `sha256:<hex>` → the revision's primary tag and relative path.
    #[serde(default)]
    pub hashes: IndexMap<String, RevisionDoc>,
}

impl StrategyDoc {
    /// Reads one raw entry of the document.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// The raw form written back into the document.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("strategy entry serialises")
    }
}

/// One revision's entry in `registry.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionDoc {
    /// The revision's primary tag (the one it was uploaded with).
    pub tag: String,
    /// Path relative to the strategies directory: `<name>/<hex>/<name>.js`.
    pub path: String,
}

/// The only path a revision may live at, relative to the strategies directory.
///
/// Fixing the shape (rather than trusting `path` from the document) is what
/// keeps every read and write inside the strategies directory.
pub fn revision_path(strategy: &str, hash: &RevisionHash) -> String {
    format!("{strategy}/{}/{strategy}.js", hash.to_hex())
}

/// Parses `registry.json` bytes. Empty bytes are not a document: whether an
/// empty file is damage or a fresh registry is [`check_doc`]'s call.
pub fn parse_doc(bytes: &[u8]) -> Result<RegistryDoc, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Reads `registry.json` from `root`; `None` when it does not exist.
pub fn read_doc(root: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(root.join(REGISTRY_FILE)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Tells a fresh registry from a damaged one, given what [`read_doc`] found:
/// - absent, empty or blank, and no revision folder beside it: an empty registry;
/// - absent, empty or blank beside revision folders: damage (the document that
///   named those revisions was lost; writing a new one would drop them all);
/// - not a JSON object of entries: damage.
///
/// Damage is returned as the message operators see (relative names only).
pub fn check_doc(root: &Path, bytes: Option<&[u8]>) -> Result<RegistryDoc, String> {
    let blank = bytes.is_none_or(|b| b.iter().all(u8::is_ascii_whitespace));
    if !blank {
        return parse_doc(bytes.unwrap_or_default())
            .map_err(|e| format!("{REGISTRY_FILE} is not valid JSON: {e}; {REFUSED}"));
    }
    match find_revision_folder(root) {
        None => Ok(RegistryDoc::new()),
        Some(example) => {
            let what = match bytes {
                None => "is missing".to_owned(),
                Some(b) => format!("is empty ({} bytes)", b.len()),
            };
            Err(format!("{REGISTRY_FILE} {what} but revision folders such as {example} are beside it; {REFUSED}"))
        }
    }
}

/// How a damaged document's message ends.
const REFUSED: &str = "registry writes are refused until it is repaired (see docs/operations.md)";

/// The first revision folder (`<name>/<64 hex>`) under `root`, as a relative
/// path, if there is one.
pub fn find_revision_folder(root: &Path) -> Option<String> {
    let strategies = fs::read_dir(root).ok()?;
    for strategy in strategies.flatten() {
        let name = strategy.file_name();
        let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else { continue };
        let Ok(revisions) = fs::read_dir(strategy.path()) else { continue };
        for revision in revisions.flatten() {
            let hex = revision.file_name();
            let is_hash = hex.to_str().is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_hash && revision.file_type().is_ok_and(|t| t.is_dir()) {
                return Some(format!("{name}/{}", hex.to_string_lossy()));
            }
        }
    }
    None
}

/// Serialises the registry document the way it is written to disk.
pub fn render_doc(doc: &RegistryDoc) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("registry document serialises");
    bytes.push(b'\n');
    bytes
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the
/// same directory, fsync, rename over the target, fsync the directory.
///
/// A crash at any point leaves either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let file_name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = temp_path(dir, file_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn temp_path(dir: &Path, file_name: &std::ffi::OsStr) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(file_name);
    name.push(format!(".tmp-{}", std::process::id()));
    dir.join(name)
}

/// Writes a revision's bytes to `<root>/<name>/<hex>/<name>.js` durably,
/// creating (and fsyncing) the directories on the way. On failure (a full
/// disk) the temporary file and every directory this call created are
/// removed: nothing half-written or empty stays behind.
pub fn write_revision(root: &Path, strategy: &str, hash: &RevisionHash, bytes: &[u8]) -> io::Result<()> {
    let strategy_dir = root.join(strategy);
    let revision_dir = strategy_dir.join(hash.to_hex());
    let created_strategy_dir = !strategy_dir.exists();
    let created_revision_dir = !revision_dir.exists();
    let written = (|| {
        fs::create_dir_all(&revision_dir)?;
        write_atomic(&revision_dir.join(format!("{strategy}.js")), bytes)?;
        sync_dir(&strategy_dir)?;
        if created_strategy_dir {
            sync_dir(root)?;
        }
        Ok(())
    })();
    if written.is_err() {
        let created = [(created_strategy_dir, &strategy_dir), (created_revision_dir, &revision_dir)];
        if let Some((_, dir)) = created.iter().find(|(created, _)| *created) {
            let _ = fs::remove_dir_all(dir);
        }
    }
    written
}

/// Removes a revision's directory; a missing one is not an error.
pub fn remove_revision(root: &Path, strategy: &str, hash: &RevisionHash) -> io::Result<()> {
    let strategy_dir = root.join(strategy);
    match fs::remove_dir_all(strategy_dir.join(hash.to_hex())) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // The strategy directory goes too once its last revision is gone.
    if fs::read_dir(&strategy_dir).is_ok_and(|mut entries| entries.next().is_none()) {
        let _ = fs::remove_dir(&strategy_dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REGISTRY_FILE);
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(REGISTRY_FILE)]);
    }

    #[test]
    fn doc_round_trips_preserving_order() {
        let text = r#"{"b":{"tags":{"latest":"sha256:01"},"hashes":{"sha256:01":{"tag":"v1","path":"b/01/b.js"}}},"a":{"tags":{},"hashes":{}}}"#;
        let doc = parse_doc(text.as_bytes()).unwrap();
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(parse_doc(&render_doc(&doc)).unwrap(), doc);
    }

    #[test]
    fn an_empty_or_missing_document_beside_revisions_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Nothing beside it: a fresh registry, whether absent, empty or blank.
        for bytes in [None, Some(&b""[..]), Some(&b" \n"[..])] {
            assert!(check_doc(root, bytes).unwrap().is_empty());
        }
        // A folder that is not a revision folder changes nothing.
        fs::create_dir_all(root.join("legacy/v1")).unwrap();
        assert!(check_doc(root, Some(b"")).unwrap().is_empty());

        let hash = RevisionHash::of(b"x");
        write_revision(root, "noop", &hash, b"x").unwrap();
        let folder = format!("noop/{}", hash.to_hex());
        assert_eq!(find_revision_folder(root), Some(folder.clone()));
        let empty = check_doc(root, Some(b"")).unwrap_err();
        assert!(empty.starts_with("registry.json is empty (0 bytes) but revision folders such as"), "{empty}");
        assert!(empty.contains(&folder) && !empty.contains(&*root.to_string_lossy()), "{empty}");
        assert!(check_doc(root, None).unwrap_err().starts_with("registry.json is missing"));
        assert!(check_doc(root, Some(b"\n")).unwrap_err().contains("empty (1 bytes)"));
        assert!(check_doc(root, Some(b"{\"a\":")).unwrap_err().starts_with("registry.json is not valid JSON"));
        assert!(check_doc(root, Some(b"[]")).is_err(), "an array is not a registry");
        assert!(check_doc(root, Some(b"{}")).unwrap().is_empty(), "an explicit empty document is fine");
    }

    #[test]
    fn revision_files_are_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let hash = RevisionHash::of(b"x");
        write_revision(dir.path(), "noop", &hash, b"x").unwrap();
        let path = dir.path().join(revision_path("noop", &hash));
        assert_eq!(fs::read(&path).unwrap(), b"x");
        remove_revision(dir.path(), "noop", &hash).unwrap();
        assert!(!dir.path().join("noop").exists());
        remove_revision(dir.path(), "noop", &hash).unwrap();
    }
}
