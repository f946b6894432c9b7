//! The control plane's metrics, served as OpenMetrics text at `/metrics`: reconciliations,
//! failures by reason, and how long reconciliations take.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Which reconciler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `tenant`, `room` or `mediapool`.
    pub controller: String,
}

/// Which reconciler failed, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `tenant`, `room` or `mediapool`.
    pub controller: String,
    /// A short, stable reason.
    pub reason: String,
}

/// The metrics of the reconcilers.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("treffpunkt");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register("reconciliations", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconciliation_failures",
            "Reconciliations that failed, by reason",
            failures.clone(),
        );
        registry.register_with_unit(
            "reconciliation_duration",
            "How long reconciliations take",
            Unit::Seconds,
            duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
        }
    }
}

/// Records a reconciliation's duration when dropped.
pub struct Measurement {
    started: Instant,
    histogram: Histogram,
}

impl Drop for Measurement {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconciliation of `controller` and measures it until the guard drops.
    pub fn reconcile(&self, controller: &str) -> Measurement {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        Measurement {
            started: Instant::now(),
            histogram: self.duration.get_or_create(&labels).clone(),
        }
    }

    /// Counts a failed reconciliation.
    pub fn failure(&self, controller: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliations_and_failures_are_counted() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("tenant"));
        metrics.failure("tenant", "kube");
        let text = metrics.encode();
        assert!(
            text.contains("treffpunkt_reconciliations_total{controller=\"tenant\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "treffpunkt_reconciliation_failures_total{controller=\"tenant\",reason=\"kube\"} 1"
        ));
        assert!(
            text.contains(
                "treffpunkt_reconciliation_duration_seconds_count{controller=\"tenant\"} 1"
            )
        );
    }
}
