//! The node's own small HTTP endpoint, on a port apart from media:
//!
//! - `GET /healthz` answers while the process serves (liveness);
//! - `GET /readyz` answers 200 only while the node is attached to the control plane and not
//!   draining (a node that cannot be given rooms is not ready);
//! - `GET /status` tells, as JSON, the node's id, rooms, participants and whether it drains;
//! - `POST /drain?move=true&grace=60` is the admin command to drain: the node takes no new
//!   rooms, its participants move to other nodes (or, with `move=false`, their meetings run
//!   until `grace` seconds have passed), and the process exits once it is empty.
//!
//! It belongs on a cluster-internal port: anyone who can reach it can drain the node.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::status::NodeStatus;
use crate::udp::NodeHandle;

#[derive(Clone)]
struct Endpoint {
    node_id: String,
    status: NodeStatus,
    handle: NodeHandle,
}

async fn ready(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let status = &endpoint.status;
    if status.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if status.attached() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not attached to the control plane",
        )
    }
}

async fn status(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let status = &endpoint.status;
    let (rooms, participants) = status.load();
    Json(serde_json::json!({
        "nodeId": endpoint.node_id,
        "attached": status.attached(),
        "draining": status.draining(),
        "rooms": rooms,
        "participants": participants,
    }))
}

#[derive(Debug, Deserialize)]
struct DrainQuery {
    #[serde(rename = "move", default = "default_move")]
    move_sessions: bool,
    #[serde(default = "default_grace")]
    grace: u64,
}

fn default_move() -> bool {
    true
}

fn default_grace() -> u64 {
    60
}

async fn drain(
    State(endpoint): State<Endpoint>,
    Query(query): Query<DrainQuery>,
) -> impl IntoResponse {
    endpoint
        .handle
        .drain(query.move_sessions, Duration::from_secs(query.grace))
        .await;
    (StatusCode::ACCEPTED, "draining")
}

/// Serves the endpoint on `address` until the process ends.
pub async fn serve(
    address: SocketAddr,
    node_id: String,
    status: NodeStatus,
    handle: NodeHandle,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(self::status))
        .route("/drain", post(drain))
        .with_state(Endpoint {
            node_id,
            status,
            handle,
        });
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router).await
}
