//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Labels of reconcile errors: which controller, and the error's short reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

/// Every metric the operator exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// 1 while this replica holds the leader Lease (or runs with leader election off).
    pub leader: Gauge,
    /// Reconciles started, by controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by controller and reason.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds, by controller.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("appdb");
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        Self {
            registry,
            leader,
            reconciles,
            reconcile_errors,
            reconcile_duration,
        }
    }
}

impl Metrics {
    /// Counts one reconcile of `controller` for `object` and records how long `work` took. Everything `work` logs
    /// carries the object's namespace and name: the `reconcile` span's fields `namespace` and `object` (not `name`,
    /// which JSON logs use for the span's own name).
    pub async fn measure<T, K: kube::Resource>(
        &self,
        controller: &str,
        object: &K,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        use tracing::Instrument;
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        let meta = object.meta();
        let span = tracing::info_span!(
            "reconcile",
            controller,
            namespace = meta.namespace.as_deref().unwrap_or_default(),
            object = meta.name.as_deref().unwrap_or_default()
        );
        let started = std::time::Instant::now();
        let result = work.instrument(span).await;
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Counts a failed reconcile of `controller` by its short reason.
    pub fn count_error(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The registry, for modules that register metrics of their own.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::default();
        metrics.leader.set(1);
        let labels = ControllerLabels {
            controller: "privatenetwork".into(),
        };
        metrics.reconciles.get_or_create(&labels).inc();
        metrics.reconcile_duration.get_or_create(&labels).observe(0.002);
        metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: "privatenetwork".into(),
                reason: "CidrConflict".into(),
            })
            .inc();
        let text = metrics.encode();
        for name in [
            "appdb_leader 1",
            "appdb_reconciles_total{controller=\"privatenetwork\"} 1",
            "appdb_reconcile_duration_seconds",
            "appdb_reconcile_errors_total{controller=\"privatenetwork\",reason=\"CidrConflict\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
