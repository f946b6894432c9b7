//! The control plane's metrics, served as OpenMetrics text at `/metrics`: reconciliations,
//! failures by reason, and how long reconciliations take; the gateway's joins by outcome,
//! refusals by code, open signalling connections and sessions moved between nodes; whether the
//! replica leads, and its build. No series names a participant, room or address.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// An outcome (of a join, of a move).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `admitted`, `refused`; `moved`, `failed`.
    pub outcome: &'static str,
}

/// A refusal's code, as the client is told it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// e.g. `room-full`, `platform-full`, `too-many-joins`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The metrics of the control plane.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    joins: Family<OutcomeLabels, Counter>,
    refusals: Family<CodeLabels, Counter>,
    connections: Gauge,
    moves: Family<OutcomeLabels, Counter>,
    leader: Gauge,
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
        let joins = Family::<OutcomeLabels, Counter>::default();
        let refusals = Family::<CodeLabels, Counter>::default();
        let moves = Family::<OutcomeLabels, Counter>::default();
        let (connections, leader) = (Gauge::default(), Gauge::default());
        registry.register("joins", "Joins at the gateway, by outcome", joins.clone());
        registry.register(
            "refusals",
            "Errors the gateway answered clients with, by code",
            refusals.clone(),
        );
        registry.register(
            "connections",
            "Signalling WebSockets open at the gateway",
            connections.clone(),
        );
        registry.register(
            "session_moves",
            "Sessions moved to another media node (their node left or drained), by outcome",
            moves.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The version running", build);
        Self {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            joins,
            refusals,
            connections,
            moves,
            leader,
        }
    }
}

/// Counts an open signalling connection until dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
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

    /// Counts a join that was `admitted` or `refused`.
    pub fn join(&self, admitted: bool) {
        let outcome = if admitted { "admitted" } else { "refused" };
        self.joins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts an error the gateway answered a client with.
    pub fn refusal(&self, code: &str) {
        let code = code.to_owned();
        self.refusals.get_or_create(&CodeLabels { code }).inc();
    }

    /// Counts a session moved to another node, or one that could not move.
    pub fn moved(&self, moved: bool) {
        let outcome = if moved { "moved" } else { "failed" };
        self.moves.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A signalling connection opened; it counts until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// Whether this replica leads now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
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
