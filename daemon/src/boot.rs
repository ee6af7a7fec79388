//! The start-up order: [`boot`] builds every part of the daemon, serves the
//! HTTP API, and loads the registry and the instances in the background.
//! This module is the composition root: it depends on [`crate::daemon`] and
//! [`crate::api`], which do not depend on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::instances::{InstanceOptions, Instances, LateSink};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryOptions};
use crate::store::{Store, StoreError};
use crate::stream::Bus;
use crate::usage::UsageIndex;
use crate::venue::Provider;
use crate::venue::sim::SimVenue;
use crate::{api, demo, instances};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened (the message names the file).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener's address could not be read.
    #[error("listener has no local address: {0}")]
    Listener(std::io::Error),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A started daemon: its handle, its address, and what stops it.
#[derive(Debug)]
pub struct Running {
    /// The daemon handle.
    pub daemon: Daemon,
    /// The address it serves on.
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
    loader: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the first registry load (and demo seeding) has finished.
    pub async fn wait_loaded(&mut self) {
        if let Some(loader) = self.loader.take() {
            let _ = loader.await;
        }
    }

    /// Stops accepting connections, finishes in-flight requests and returns.
    /// A first load still running is abandoned (it only reads; the process
    /// exits without waiting for it).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        for task in &self.background {
            task.abort();
        }
        // Stop every runtime without recording it: instances that were
        // running start again at the next boot.
        let _ = self.daemon.blocking(|d| d.instances().shutdown()).await;
        // Close the database now, not when the last task holding it is
        // dropped: nothing may touch the file after shutdown returns.
        let _ = self.daemon.blocking(|d| d.store().close()).await;
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Starts the daemon on `listener`. The start-up order, top to bottom:
/// directories, database, metrics, registry, venues, instance manager, HTTP
/// server; then in the background (so `/healthz` can report progress) the
/// registry load, the restore of every instance on its pinned hash, and the
/// demo seed when asked for.
pub async fn boot(config: Config, listener: TcpListener) -> Result<Running, BootError> {
    config.validate().map_err(BootError::Config)?;
    let data_dir = config.data_dir();
    for dir in [&config.strategies_dir, &data_dir] {
        std::fs::create_dir_all(dir).map_err(|source| BootError::CreateDir { path: dir.clone(), source })?;
    }
    let store = Arc::new(Store::open(&data_dir)?);
    let metrics = Metrics::new();
    let registry = Arc::new(Registry::new(
        RegistryOptions {
            root: config.strategies_dir.clone(),
            js_limits: config.js_limits(),
            resolver_cache_capacity: std::num::NonZeroUsize::new(config.resolver_cache_capacity.max(1))
                .expect("capacity is at least one"),
            load_threads: config
                .load_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        },
        store.clone(),
        metrics.clone(),
    ));

    // Venues deliver order reports to the instance manager, which needs the
    // venues: the sink is bound once the manager exists.
    let sink = Arc::new(LateSink::default());
    let venues: Vec<Arc<SimVenue>> =
        config.providers.iter().map(|p| SimVenue::new(p.sim_config(), sink.clone())).collect();
    let providers: Vec<Arc<dyn Provider>> = venues.iter().map(|v| v.clone() as Arc<dyn Provider>).collect();
    // The usage index learns every revision and tag from the registry and
    // publishes every change on the bus the WebSocket serves.
    let bus = Arc::new(Bus::new(config.usage.stream_replay, config.usage.stream_queue));
    let usage = Arc::new(UsageIndex::new(
        bus,
        Some(metrics.clone()),
        time::Duration::seconds(i64::try_from(config.usage.retire_after_secs).unwrap_or(i64::MAX)),
    ));
    registry.observe(usage.clone());
    let instances = Instances::new(
        registry.clone(),
        store.clone(),
        usage.clone(),
        providers,
        InstanceOptions {
            js_limits: config.js_limits(),
            sleep_cap: std::time::Duration::from_millis(config.runtime.sleep_cap_ms),
            max_orders_per_sec: config.runtime.max_orders_per_sec,
            queue_capacity: config.runtime.queue_capacity,
            workers: config
                .runtime
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            js_metrics: Some(metrics.js.clone()),
            log_limits: config.log_limits(),
        },
    );
    sink.bind(&instances);
    let mut background = instances::spawn_fanout(&instances);
    background.extend(venues.iter().map(|venue| venue.spawn()));
    background.push(tokio::spawn({
        // SPEC §2.1: lastSeen moves at least every 30 s while a revision runs.
        let (usage, instances) = (usage.clone(), instances.clone());
        let period = std::time::Duration::from_secs(config.usage.seen_every_secs);
        if period > std::time::Duration::from_secs(30) {
            tracing::warn!(
                ?period,
                "[usage] seen_every_secs is above 30: lastSeen of running revisions lags more than SPEC §2.1 allows"
            );
        }
        async move {
            let mut every = tokio::time::interval(period);
            // A pass delayed by a slow flush is not followed by catch-up passes.
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let now = time::OffsetDateTime::now_utc();
                usage.touch_running(now);
                usage.retire_due(now);
                let instances = instances.clone();
                let _ = tokio::task::spawn_blocking(move || instances.flush_usage()).await;
            }
        }
    }));

    let daemon = Daemon::new(config, metrics, store, registry, usage, instances);

    let addr = listener.local_addr().map_err(BootError::Listener)?;
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(daemon.clone(), listener, async {
        let _ = stop.await;
    }));
    tracing::info!(%addr, "listening");

    let loader = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let loaded = daemon.blocking(|d| d.registry().load()).await;
            match loaded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "registry load failed"),
                Err(e) => tracing::error!(error = %e, "registry load panicked"),
            }
            match daemon.blocking(|d| d.instances().restore()).await {
                Ok(Ok(count)) => {
                    tracing::info!(instances = count, "instances loaded; running ones restore in the background")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "instances could not be restored"),
                Err(e) => tracing::error!(error = %e, "instance restore panicked"),
            }
            if daemon.config().demo {
                match daemon.blocking(|d| demo::seed(d.registry(), d.instances())).await {
                    Ok(Ok(seeded)) if seeded > 0 => tracing::info!(revisions = seeded, "demo strategies seeded"),
                    Ok(Ok(_)) => tracing::info!("registry not empty; demo seed skipped"),
                    Ok(Err(e)) => tracing::error!(error = %e, "demo seed failed"),
                    Err(e) => tracing::error!(error = %e, "demo seed panicked"),
                }
            }
            daemon.mark_ready();
        }
    });
    Ok(Running { daemon, addr, shutdown, server, loader: Some(loader), background })
}
