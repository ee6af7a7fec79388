//! Finding strategy files under the root of a legacy strategies directory.
//!
//! Three shapes are recognised, all relative to the root:
//! - the flat layout: `*.js` directly in the root;
//! - the older tagged layout: `<name>/<tag>/<name>.js`;
//! - the hashed layout the daemon uses: `<name>/<hex64>/<name>.js`, where the
//!   middle segment is 64 lowercase hex digits (already migrated, or copied by
//!   an interrupted `--write`).
//!
//! Hidden entries (names starting with `.`, such as the temporary files of an
//! interrupted atomic write) are skipped. Anything else is ignored. The result
//! is sorted by path, so plans are deterministic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use strata_shared::RevisionHash;

/// Where a discovered file sits, which decides what may be done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `<root>/<file>.js`.
    Flat,
    /// `<root>/<name>/<tag>/<name>.js`; carries the directory's name and tag.
    Tagged {
        /// The `<name>` directory.
        name: String,
        /// The `<tag>` directory.
        tag: String,
    },
    /// `<root>/<name>/<hex>/<name>.js`: already at a hashed path.
    Hashed {
        /// The `<name>` directory.
        name: String,
        /// The hash the directory claims.
        hash: RevisionHash,
    },
}

/// A strategy file found under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the root, with `/` separators.
    pub path: String,
    /// The layout it was found in.
    pub layout: Layout,
}

/// What [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Strategy files, sorted by path.
    pub found: Vec<Found>,
    /// Subdirectories that could not be listed (relative path, error).
    pub unreadable: Vec<(String, io::Error)>,
}

/// Lists the strategy files under `root`.
///
/// Fails only when the root itself cannot be listed; an unreadable
/// subdirectory is reported in [`Discovery::unreadable`] so the rest of the
/// tree is still planned.
pub fn discover(root: &Path) -> io::Result<Discovery> {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (name, path, is_dir) in list(root)? {
        if !is_dir {
            if name.ends_with(".js") {
                found.push(Found { path: name, layout: Layout::Flat });
            }
            continue;
        }
        let subdirs = match list(&path) {
            Ok(entries) => entries,
            Err(e) => {
                unreadable.push((name, e));
                continue;
            }
        };
        for (sub, sub_path, sub_is_dir) in subdirs {
            let file = format!("{name}.js");
            if !sub_is_dir || !sub_path.join(&file).is_file() {
                continue;
            }
            let layout = match sub.parse::<RevisionHash>() {
                Ok(hash) if hash.to_hex() == sub => Layout::Hashed { name: name.clone(), hash },
                _ => Layout::Tagged { name: name.clone(), tag: sub.clone() },
            };
            found.push(Found { path: format!("{name}/{sub}/{file}"), layout });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Discovery { found, unreadable })
}

/// The visible entries of `dir`: (file name, path, is a directory), sorted.
/// Entries whose names are not UTF-8 cannot be strategy names and are skipped;
/// symbolic links are followed.
fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf, bool)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let is_dir = path.is_dir();
        entries.push((name, path, is_dir));
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn finds_every_layout_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let hex = RevisionHash::of(b"x").to_hex();
        touch(root, "b.js");
        touch(root, "a.js");
        touch(root, "notes.txt");
        touch(root, ".registry.json.tmp-1");
        touch(root, "momentum/v1.0.0/momentum.js");
        touch(root, "momentum/v1.0.0/README.md");
        touch(root, "momentum/v2/other.js");
        touch(root, &format!("grid/{hex}/grid.js"));
        touch(root, &format!("grid/{hex}/.grid.js.tmp-7"));
        touch(root, &format!("grid/{}/grid.js", hex.to_uppercase()));

        let Discovery { found, unreadable } = discover(root).unwrap();
        assert!(unreadable.is_empty());
        let paths: Vec<_> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a.js".to_owned(),
                "b.js".to_owned(),
                format!("grid/{}/grid.js", hex.to_uppercase()),
                format!("grid/{hex}/grid.js"),
                "momentum/v1.0.0/momentum.js".to_owned(),
            ]
        );
        assert_eq!(found[0].layout, Layout::Flat);
        // Upper-case hex is not the daemon's layout: treated as a tag directory.
        assert!(matches!(&found[2].layout, Layout::Tagged { name, .. } if name == "grid"));
        assert_eq!(found[3].layout, Layout::Hashed { name: "grid".into(), hash: RevisionHash::of(b"x") });
        assert_eq!(found[4].layout, Layout::Tagged { name: "momentum".into(), tag: "v1.0.0".into() });
    }

    #[test]
    fn a_missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(discover(&dir.path().join("nope")).is_err());
    }
}
