//! The daemon handle: a cheap clone over the daemon's shared state. The
//! start-up order that builds it is in [`crate::boot`].

use std::sync::Arc;

use crate::config::Config;
use crate::instances::Instances;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;
use crate::usage::UsageIndex;

/// A cheap-to-clone handle on the running daemon's state. Everything the API
/// needs goes through its methods; none of them hands out a lock.
#[derive(Debug, Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once the first load (and the demo seed, if any) has finished.
    ready: std::sync::atomic::AtomicBool,
    config: Config,
    metrics: Metrics,
    store: Arc<Store>,
    registry: Arc<Registry>,
    usage: Arc<UsageIndex>,
    instances: Arc<Instances>,
}

impl Daemon {
    /// The handle over the daemon's parts, not ready yet
    /// ([`Daemon::mark_ready`]).
    pub(crate) fn new(
        config: Config,
        metrics: Metrics,
        store: Arc<Store>,
        registry: Arc<Registry>,
        usage: Arc<UsageIndex>,
        instances: Arc<Instances>,
    ) -> Self {
        Daemon {
            inner: Arc::new(Inner { ready: Default::default(), config, metrics, store, registry, usage, instances }),
        }
    }

    /// Records that the first load (and the demo seed, if any) has finished.
    pub(crate) fn mark_ready(&self) {
        self.inner.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether start-up work (first load, demo seed) has finished.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The configuration it started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The SQLite store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The strategy registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The revision usage index.
    pub fn usage(&self) -> &UsageIndex {
        &self.inner.usage
    }

    /// The instance manager.
    pub fn instances(&self) -> &Instances {
        &self.inner.instances
    }

    /// Runs synchronous work (file I/O, fsync, SQLite, QuickJS) on the
    /// blocking pool, so it never stalls the async workers.
    pub async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Daemon) -> R + Send + 'static,
    ) -> Result<R, tokio::task::JoinError> {
        let daemon = self.clone();
        tokio::task::spawn_blocking(move || work(&daemon)).await
    }
}
