//! The control plane's metrics, served as OpenMetrics text at `/metrics`: reconciliations,
//! failures by reason, how long reconciliations take and the objects waiting for them; the
//! gateway's joins by outcome, refusals by code, open signalling connections, placement
//! conflicts between replicas and sessions moved between nodes; the requests the replica sends
//! the API server, by verb; whether the replica leads, and its build. No series names a
//! participant, room or address.

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

/// What a request to the API server does.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `get` (also lists), `watch`, `create`, `update`, `patch`, `delete`, `other`.
    pub verb: &'static str,
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
    backlog: Family<ControllerLabels, Gauge>,
    joins: Family<OutcomeLabels, Counter>,
    refusals: Family<CodeLabels, Counter>,
    connections: Gauge,
    moves: Family<OutcomeLabels, Counter>,
    placement_conflicts: Counter,
    api_requests: Family<VerbLabels, Counter>,
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
        let backlog = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "reconcile_backlog",
            "Objects whose latest spec their reconciler has not yet recorded in their status \
             (changes waiting, or reconciliations that keep failing)",
            backlog.clone(),
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
        let placement_conflicts = Counter::default();
        registry.register(
            "placement_conflicts",
            "Placements of a room that another replica changed first (then read again)",
            placement_conflicts.clone(),
        );
        let api_requests = Family::<VerbLabels, Counter>::default();
        // Every verb shows from the start, at zero until used.
        for verb in ["get", "watch", "create", "update", "patch", "delete"] {
            drop(api_requests.get_or_create(&VerbLabels { verb }));
        }
        registry.register(
            "api_requests",
            "Requests this replica sent the Kubernetes API server, by verb",
            api_requests.clone(),
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
            backlog,
            joins,
            refusals,
            connections,
            moves,
            placement_conflicts,
            api_requests,
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

    /// How many objects of `controller`'s kind wait for it.
    pub fn set_backlog(&self, controller: &str, objects: usize) {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        let objects = i64::try_from(objects).unwrap_or(i64::MAX);
        self.backlog.get_or_create(&labels).set(objects);
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

    /// Counts a placement that lost its compare-and-set to another replica.
    pub fn placement_conflict(&self) {
        self.placement_conflicts.inc();
    }

    /// A layer for the replica's Kubernetes client that counts its requests by verb.
    pub fn count_api_requests(&self) -> CountApiRequests {
        CountApiRequests(self.api_requests.clone())
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

/// Counts the requests of the service it wraps in `treffpunkt_api_requests_total`.
#[derive(Clone)]
pub struct CountApiRequests(Family<VerbLabels, Counter>);

impl<S> tower_layer::Layer<S> for CountApiRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            requests: self.0.clone(),
        }
    }
}

/// A service whose requests are counted by verb.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    requests: Family<VerbLabels, Counter>,
}

/// The Kubernetes verb of a request, from its method and, for reads, whether it watches.
fn verb<B>(request: &axum::http::Request<B>) -> &'static str {
    use axum::http::Method;
    let watches = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
    match *request.method() {
        Method::GET if watches => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for Counted<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let verb = verb(&request);
        self.requests.get_or_create(&VerbLabels { verb }).inc();
        self.inner.call(request)
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

    #[test]
    fn api_requests_are_counted_by_verb() {
        use axum::http::{Method, Request};
        let request = |method: Method, uri: &str| {
            Request::builder().method(method).uri(uri).body(()).unwrap()
        };
        let rooms = "/apis/treffpunkt.io/v1alpha1/rooms";
        for (method, uri, expected) in [
            (Method::GET, rooms.to_owned(), "get"),
            (
                Method::GET,
                format!("{rooms}?watch=true&timeoutSeconds=290"),
                "watch",
            ),
            (
                Method::GET,
                format!("{rooms}?resourceVersion=1&watch=true"),
                "watch",
            ),
            (
                Method::GET,
                format!("{rooms}?labelSelector=watch%3Dtrue"),
                "get",
            ),
            (Method::PATCH, format!("{rooms}/a?fieldManager=x"), "patch"),
            (Method::POST, rooms.to_owned(), "create"),
            (Method::DELETE, format!("{rooms}/a"), "delete"),
        ] {
            assert_eq!(verb(&request(method, &uri)), expected, "{uri}");
        }
    }
}
