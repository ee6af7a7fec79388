//! Synthetic registries for benchmarks and load tests: `strategies` ×
//! `revisions` real, valid modules on disk, their `registry.json`, and the
//! metadata cache pre-filled so a daemon starts on them without compiling.
//!
//! Each strategy's module is compiled once (its metadata depends only on the
//! name); its revisions differ by a comment line, hence by hash.

use std::path::Path;

use indexmap::IndexMap;
use strata_shared::RevisionHash;
use strata_shared::names::LATEST_TAG;

use crate::js::{self, JsLimits};
use crate::registry::file::{self, REGISTRY_FILE, RegistryDoc, RevisionDoc, StrategyDoc};
use crate::store::Store;

/// Why a fixture could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Writing files failed.
    #[error("cannot write fixture files: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata cache could not be filled.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The generated module did not validate (a bug in the generator).
    #[error("generated module does not validate: {0:?}")]
    Invalid(Vec<strata_shared::metadata::Diagnostic>),
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Strategy names, in order.
    pub strategies: Vec<String>,
    /// Every revision as `(strategy, hash, primary tag)`, in order.
    pub revisions: Vec<(String, RevisionHash, String)>,
}

/// The name of the `index`-th generated strategy.
pub fn strategy_name(index: usize) -> String {
    format!("strat-{index:05}")
}

/// The source of revision `revision` of strategy `name`.
pub fn module_source(name: &str, revision: usize) -> String {
    format!(
        r#"// generated revision {revision}
module.exports = {{
  metadata: {{
    name: "{name}",
    displayName: "Generated {name}",
    description: "synthetic strategy for benchmarks",
    config: [{{ name: "lookback", type: "int", default: 20, required: false }}],
    events: ["Trade", "Ticker"],
  }},
  create(env) {{
    let last = 0;
    return {{ onTrade(ctx, evt, payload, price) {{ last = price; }} }};
  }},
}};
"#
    )
}

/// Writes a registry of `strategies` × `revisions` under `root` and fills the
/// metadata cache of the database in `data_dir`. Tags: `v1.<r>.0` on every
/// revision, `latest` on the newest, `prod` on the middle one.
pub fn generate(root: &Path, data_dir: &Path, strategies: usize, revisions: usize) -> Result<Generated, FixtureError> {
    std::fs::create_dir_all(root)?;
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(data_dir)?;
    let mut doc = RegistryDoc::new();
    let mut generated = Generated { strategies: Vec::new(), revisions: Vec::new() };
    for s in 0..strategies {
        let name = strategy_name(s);
        let metadata = js::inspect_module(module_source(&name, 0).as_bytes(), &JsLimits::default())
            .map_err(FixtureError::Invalid)?;
        let mut entry = StrategyDoc { tags: IndexMap::new(), hashes: IndexMap::new() };
        let mut hashes = Vec::with_capacity(revisions);
        for r in 0..revisions {
            let source = module_source(&name, r);
            let hash = RevisionHash::of(source.as_bytes());
            let path = file::revision_path(&name, &hash);
            let full = root.join(&path);
            std::fs::create_dir_all(full.parent().expect("revision path has a parent"))?;
            std::fs::write(&full, &source)?;
            let tag = format!("v1.{r}.0");
            entry.tags.insert(tag.clone(), hash.to_string());
            entry.hashes.insert(hash.to_string(), RevisionDoc { tag: tag.clone(), path });
            generated.revisions.push((name.clone(), hash, tag));
            hashes.push(hash);
        }
        if let (Some(last), Some(middle)) = (hashes.last(), hashes.get(revisions / 2)) {
            entry.tags.insert(LATEST_TAG.into(), last.to_string());
            entry.tags.insert("prod".into(), middle.to_string());
        }
        store.save_metadata(hashes.iter().map(|h| (h, &metadata)))?;
        doc.insert(name.clone(), entry.to_value());
        generated.strategies.push(name);
    }
    file::write_atomic(&root.join(REGISTRY_FILE), &file::render_doc(&doc))?;
    Ok(generated)
}
