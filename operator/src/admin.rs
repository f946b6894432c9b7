//! A replica's admin endpoint: probes and metrics for the cluster, commands for operators.
//!
//! `/healthz`, `/readyz` and `/metrics` answer anyone who reaches the port (the kubelet and a
//! monitoring system; the chart's NetworkPolicy keeps the port inside the cluster). The
//! commands (`GET /nodes`, `POST /nodes/{node}/drain`) need the admin token of the keys' Secret
//! as a bearer token: `Authorization: Bearer <token>`. Without the right one they answer
//! `401 Unauthorized`; a platform whose Secret has no token (made by an earlier version) answers
//! them with `403 Forbidden` until the Secret is made again.
//!
//! `/readyz` answers 200 while the replica reaches the API server (its replica Lease renewed
//! within 20 s) and is not stopping; 503 with the reason otherwise, so that a replica cut off
//! from the API server gets no new participants.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::domain::NodeId;
use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// What the admin endpoint reaches.
#[derive(Clone)]
struct Admin {
    metrics: Metrics,
    fleet: Arc<Fleet>,
    /// The bearer token of the commands; none when the platform has none.
    token: Option<Arc<str>>,
    readiness: Readiness,
}

/// How long a replica stays ready without reaching the API server: its replica Lease is
/// renewed every 5 s and lasts 15 s.
const CONTACT_WITHIN: Duration = Duration::from_secs(20);

/// Whether a replica should be given new connections (`/readyz`): not while it stops, and not
/// when it has not reached the API server for a while (it could neither check nor make rooms,
/// and the other replicas no longer see it).
#[derive(Clone, Debug)]
pub struct Readiness {
    state: Arc<ReadinessState>,
}

#[derive(Debug)]
struct ReadinessState {
    contact: Mutex<Option<Instant>>,
    stopping: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            state: Arc::new(ReadinessState {
                contact: Mutex::new(None),
                stopping: AtomicBool::new(false),
            }),
        }
    }
}

impl Readiness {
    /// The API server answered just now.
    pub fn reached_the_api_server(&self) {
        *self.state.contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The replica is stopping: no new connections.
    pub fn stopping(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    /// Ready, or why not.
    fn verdict(&self, now: Instant) -> Result<(), String> {
        if self.state.stopping.load(Ordering::Relaxed) {
            return Err("stopping".to_owned());
        }
        let contact = *self.state.contact.lock().unwrap_or_else(|e| e.into_inner());
        let Some(contact) = contact else {
            return Err("the API server has not answered yet".to_owned());
        };
        let since = now.saturating_duration_since(contact);
        if since <= CONTACT_WITHIN {
            Ok(())
        } else {
            Err(format!(
                "no answer from the API server for {} s",
                since.as_secs()
            ))
        }
    }
}

async fn ready(State(admin): State<Admin>) -> (StatusCode, String) {
    match admin.readiness.verdict(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

/// The admin endpoint's routes over `fleet` and `metrics`; the commands need `token`.
pub fn router(
    metrics: Metrics,
    fleet: Arc<Fleet>,
    token: Option<String>,
    readiness: Readiness,
) -> Router {
    let admin = Admin {
        metrics,
        fleet,
        token: token.map(Arc::from),
        readiness,
    };
    let commands = Router::new()
        .route("/nodes", get(list_nodes))
        .route("/nodes/{node}/drain", post(drain_node))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorized));
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(commands)
        .with_state(admin)
}

/// Lets a command through only with the admin token.
async fn authorized(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let Some(token) = admin.token.as_deref() else {
        let message = "admin commands are off: the keys' Secret has no admin-token; delete the \
                       Secret and restart the control plane and the media nodes to make one";
        return (StatusCode::FORBIDDEN, message).into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !treffpunkt_proto::bearer::carries(given, token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the admin token is missing or wrong",
        )
            .into_response();
    }
    next.run(request).await
}

async fn serve_metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.encode(),
    )
}

/// `GET /nodes`: the media nodes attached to this replica.
async fn list_nodes(State(admin): State<Admin>) -> impl IntoResponse {
    let nodes: Vec<serde_json::Value> = admin
        .fleet
        .nodes()
        .into_iter()
        .map(|node| {
            serde_json::json!({
                "id": node.id.0,
                "pool": node.pool,
                "rooms": node.rooms,
                "participants": node.participants,
                "maxParticipants": node.max_participants,
                "draining": node.draining,
            })
        })
        .collect();
    axum::Json(nodes)
}

#[derive(Debug, serde::Deserialize)]
struct DrainQuery {
    #[serde(rename = "move", default = "moving")]
    move_sessions: bool,
    #[serde(default = "grace")]
    grace: u64,
}

fn moving() -> bool {
    true
}

fn grace() -> u64 {
    60
}

/// The longest grace a drain may ask for: a day.
const MAX_GRACE_SECONDS: u64 = 86_400;

/// `POST /nodes/{node}/drain?move=true&grace=60`: asks a node to drain.
async fn drain_node(
    State(admin): State<Admin>,
    Path(node): Path<String>,
    Query(query): Query<DrainQuery>,
) -> impl IntoResponse {
    if query.grace > MAX_GRACE_SECONDS {
        let message = format!("grace is at most {MAX_GRACE_SECONDS} seconds");
        return (StatusCode::BAD_REQUEST, message);
    }
    match admin.fleet.drain(
        &NodeId(node),
        query.move_sessions,
        Duration::from_secs(query.grace),
        false,
    ) {
        Ok(()) => (StatusCode::ACCEPTED, "draining".to_owned()),
        Err(error) => (StatusCode::NOT_FOUND, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_ready_while_it_reaches_the_api_server_and_does_not_stop() {
        let readiness = Readiness::default();
        let now = Instant::now();
        assert!(
            readiness.verdict(now).is_err(),
            "not before the first answer"
        );
        readiness.reached_the_api_server();
        assert_eq!(readiness.verdict(Instant::now()), Ok(()));
        let later = Instant::now() + CONTACT_WITHIN + Duration::from_secs(1);
        let why = readiness.verdict(later).unwrap_err();
        assert!(why.contains("no answer from the API server"), "{why}");
        readiness.reached_the_api_server();
        readiness.stopping();
        assert_eq!(
            readiness.verdict(Instant::now()),
            Err("stopping".to_owned())
        );
    }
}
