//! The `--demo` seed: our bundled example strategies, uploaded through the
//! same path as any operator upload.

use crate::registry::{Registry, RegistryError, Upload};

/// Bundled example revisions, in upload order, with extra tags.
pub const DEMO_STRATEGIES: &[(&str, &str, &[&str])] = &[
    ("noop.js", include_str!("../demo/strategies/noop.js"), &[]),
    ("momentum-v1.0.0.js", include_str!("../demo/strategies/momentum-v1.0.0.js"), &[]),
    ("momentum-v1.1.0.js", include_str!("../demo/strategies/momentum-v1.1.0.js"), &["prod"]),
    ("momentum-v1.2.0.js", include_str!("../demo/strategies/momentum-v1.2.0.js"), &[]),
    ("mean-reversion.js", include_str!("../demo/strategies/mean-reversion.js"), &["prod"]),
    ("grid.js", include_str!("../demo/strategies/grid.js"), &[]),
];

/// Uploads the bundled strategies into an empty registry. Returns how many
/// revisions were added (zero when the registry already had strategies).
pub fn seed(registry: &Registry) -> Result<usize, RegistryError> {
    if registry.read(|state| !state.strategies().is_empty()) {
        return Ok(0);
    }
    for (file, source, aliases) in DEMO_STRATEGIES {
        let upload = Upload {
            source: (*source).to_owned(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            promote_latest: true,
            ..Upload::default()
        };
        registry.upload(upload).map_err(|e| {
            tracing::error!(file, error = %e, "bundled strategy rejected");
            e
        })?;
    }
    Ok(DEMO_STRATEGIES.len())
}
