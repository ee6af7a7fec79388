//! The `--demo` seed: our bundled example strategies and a few instances on
//! the simulated venue, created through the same paths as any operator's.

use strata_shared::api::{CreateInstanceRequest, Scope, ScopeEntry, StrategyRef};

use crate::instances::{InstanceError, Instances};
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

/// Demo instances: (id, selector, symbol, start it).
pub const DEMO_INSTANCES: &[(&str, &str, &str, bool)] = &[
    ("momentum-prod", "momentum:prod", "BTC-USDT", true),
    ("momentum-canary", "momentum", "BTC-USDT", true),
    ("mean-reversion-eth", "mean-reversion:prod", "ETH-USDT", true),
    ("grid-btc", "grid", "BTC-USDT", true),
    ("noop-idle", "noop:v1.0.0", "ETH-USDT", false),
];

/// Why the demo could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A bundled strategy was rejected.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A demo instance could not be created.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

/// Uploads the bundled strategies into an empty registry and creates the
/// demo instances. Returns how many revisions were added (zero when the
/// registry already had strategies: nothing is touched then).
pub fn seed(registry: &Registry, instances: &Instances) -> Result<usize, DemoError> {
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
        registry.upload(upload).inspect_err(|e| tracing::error!(file, error = %e, "bundled strategy rejected"))?;
    }
    for (id, selector, symbol, start) in DEMO_INSTANCES {
        let request = CreateInstanceRequest {
            id: (*id).to_owned(),
            strategy: StrategyRef { identifier: (*selector).to_owned(), config: Default::default() },
            scope: Scope::from([("sim".to_owned(), ScopeEntry { symbols: vec![(*symbol).to_owned()] })]),
            auto_start: *start,
        };
        match instances.create(request) {
            Ok(_) | Err(InstanceError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(DEMO_STRATEGIES.len())
}
