//! Prometheus metrics. Each daemon owns its own `prometheus::Registry`, so
//! several daemons in one process (as in tests) never share counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Cache hit and miss counters of the selector resolver, reported by
/// `/metrics`.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    /// Lookups answered from the cache.
    pub hits: IntCounter,
    /// Lookups that had to resolve against the registry.
    pub misses: IntCounter,
}

/// Lifecycle actions counted per revision in `strategy_revision_instances_total`.
pub const REVISION_ACTIONS: [&str; 4] = ["start", "stop", "fail", "refresh"];

/// The `reason` labels of `strata_ws_disconnects_total`, one per way a
/// WebSocket connection ends (`stream::ws::Ended::reason`).
pub const WS_DISCONNECT_REASONS: [&str; 4] = ["client_gone", "send_timeout", "idle", "shutdown"];

/// Every metric the daemon exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Modules evaluated in QuickJS to extract their metadata.
    pub module_compilations: IntCounter,
    /// Revisions currently loaded.
    pub revisions_loaded: IntGauge,
    /// Registry entries that failed to load.
    pub registry_load_errors: IntGauge,
    /// Resolver cache hits and misses.
    pub resolver_cache: CacheCounters,
    /// HTTP request duration by method and route template.
    pub http_request_duration: HistogramVec,
    /// Running instances per revision (series removed with the revision).
    pub revision_instances: IntGaugeVec,
    /// Lifecycle actions per revision: start, stop, fail, refresh.
    pub revision_actions: IntCounterVec,
    /// Refresh results by reason code.
    pub refresh_results: IntCounterVec,
    /// JavaScript handler errors and sandbox interrupts.
    pub js: JsMetrics,
    /// Instances whose selector resolves elsewhere now, per strategy
    /// (computed at scrape time).
    pub instances_drifting: IntGaugeVec,
    /// Retired revisions per strategy (computed at scrape time).
    pub revisions_retired: IntGaugeVec,
    /// WebSocket subscribers connected now.
    pub ws_subscribers: IntGauge,
    /// Deltas written to WebSocket subscribers.
    pub ws_deltas_sent: IntCounter,
    /// Subscribers told to resync after falling behind (or resuming too late).
    pub ws_resyncs: IntCounter,
    /// Per write of live deltas to a subscriber: seconds from the oldest
    /// delta's publication to the end of the write.
    pub ws_delivery_lag: Histogram,
    /// Subscribers whose connection ended, by `reason` (`client_gone`,
    /// `send_timeout`, `idle`, `shutdown`).
    pub ws_disconnects: IntCounterVec,
}

/// The JavaScript runtime's counters, handed to every instance's host.
#[derive(Debug, Clone)]
pub struct JsMetrics {
    /// Handler calls (and promise jobs) that threw.
    pub handler_errors: IntCounter,
    /// Calls stopped by a sandbox limit, by `limit` (`cpu`, `memory`).
    pub interrupts: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let module_compilations = IntCounter::new(
            "strata_module_compilations_total",
            "Strategy modules evaluated in QuickJS to extract metadata (cache misses by hash).",
        )
        .expect("valid metric");
        let revisions_loaded =
            IntGauge::new("strata_registry_revisions", "Revisions currently loaded in the registry.")
                .expect("valid metric");
        let registry_load_errors =
            IntGauge::new("strata_registry_load_errors", "Registry entries that failed to load.")
                .expect("valid metric");
        let resolver_cache = CacheCounters {
            hits: IntCounter::new(
                "strata_resolver_cache_hits_total",
                "Selector resolutions answered from the LRU cache.",
            )
            .expect("valid metric"),
            misses: IntCounter::new(
                "strata_resolver_cache_misses_total",
                "Selector resolutions computed from the registry.",
            )
            .expect("valid metric"),
        };
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new("strata_http_request_duration_seconds", "HTTP request duration by route template."),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let revision_instances = IntGaugeVec::new(
            Opts::new("strategy_revision_instances", "Running instances per revision."),
            &["strategy", "hash"],
        )
        .expect("valid metric");
        let revision_actions = IntCounterVec::new(
            Opts::new("strategy_revision_instances_total", "Instance lifecycle actions per revision."),
            &["strategy", "hash", "action"],
        )
        .expect("valid metric");
        let refresh_results = IntCounterVec::new(
            Opts::new("strata_refresh_results_total", "Refresh results by reason code (one per instance or target)."),
            &["reason"],
        )
        .expect("valid metric");
        let js = JsMetrics {
            handler_errors: IntCounter::new(
                "strata_js_handler_errors_total",
                "Strategy handler calls and promise jobs that threw.",
            )
            .expect("valid metric"),
            interrupts: IntCounterVec::new(
                Opts::new(
                    "strata_js_interrupts_total",
                    "Handler calls stopped by a sandbox limit (the instance fails).",
                ),
                &["limit"],
            )
            .expect("valid metric"),
        };
        let instances_drifting = IntGaugeVec::new(
            Opts::new(
                "strata_instances_drifting",
                "Instances whose selector now resolves to another revision than their pin.",
            ),
            &["strategy"],
        )
        .expect("valid metric");
        let revisions_retired = IntGaugeVec::new(
            Opts::new("strata_revisions_retired", "Revisions with no running instance, no tag, past the grace period."),
            &["strategy"],
        )
        .expect("valid metric");
        let ws_subscribers = IntGauge::new("strata_ws_subscribers", "WebSocket usage-stream subscribers connected.")
            .expect("valid metric");
        let ws_deltas_sent = IntCounter::new("strata_ws_deltas_sent_total", "Deltas written to WebSocket subscribers.")
            .expect("valid metric");
        let ws_resyncs = IntCounter::new(
            "strata_ws_resyncs_total",
            "WebSocket subscribers sent a fresh snapshot after falling behind or resuming too late.",
        )
        .expect("valid metric");
        let ws_delivery_lag = Histogram::with_opts(
            HistogramOpts::new(
                "strata_ws_delivery_lag_seconds",
                "Per write of live deltas to a WebSocket subscriber: time from the oldest delta's publication to the end of the write.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let ws_disconnects = IntCounterVec::new(
            Opts::new(
                "strata_ws_disconnects_total",
                "WebSocket subscribers whose connection ended, by reason (send_timeout: a stalled reader was dropped).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // Every reason exported from the start (at 0), so rates and alerts
        // on one have a series before its first disconnect.
        for reason in WS_DISCONNECT_REASONS {
            ws_disconnects.with_label_values(&[reason]);
        }
        for collector in [
            Box::new(refresh_results.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ws_delivery_lag.clone()),
            Box::new(ws_disconnects.clone()),
            Box::new(js.handler_errors.clone()),
            Box::new(js.interrupts.clone()),
            Box::new(instances_drifting.clone()),
            Box::new(revisions_retired.clone()),
            Box::new(ws_subscribers.clone()),
            Box::new(ws_deltas_sent.clone()),
            Box::new(ws_resyncs.clone()),
            Box::new(revision_instances.clone()),
            Box::new(revision_actions.clone()),
            Box::new(module_compilations.clone()),
            Box::new(revisions_loaded.clone()),
            Box::new(registry_load_errors.clone()),
            Box::new(resolver_cache.hits.clone()),
            Box::new(resolver_cache.misses.clone()),
            Box::new(http_request_duration.clone()),
        ] {
            registry.register(collector).expect("metric registered once");
        }
        Self {
            registry,
            module_compilations,
            revisions_loaded,
            registry_load_errors,
            resolver_cache,
            http_request_duration,
            revision_instances,
            revision_actions,
            refresh_results,
            js,
            instances_drifting,
            revisions_retired,
            ws_subscribers,
            ws_deltas_sent,
            ws_resyncs,
            ws_delivery_lag,
            ws_disconnects,
        }
    }

    /// Removes every series of a deleted revision, so label cardinality
    /// follows the registry instead of growing forever.
    pub fn forget_revision(&self, strategy: &str, hash: &str) {
        let _ = self.revision_instances.remove_label_values(&[strategy, hash]);
        for action in REVISION_ACTIONS {
            let _ = self.revision_actions.remove_label_values(&[strategy, hash, action]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding never fails");
        String::from_utf8(buffer).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_disconnect_reason_is_exported_before_its_first_disconnect() {
        let text = Metrics::new().render();
        for reason in ["client_gone", "send_timeout", "idle", "shutdown"] {
            let series = format!("strata_ws_disconnects_total{{reason=\"{reason}\"}} 0");
            assert!(text.lines().any(|line| line == series), "{series} missing:\n{text}");
        }
    }
}
