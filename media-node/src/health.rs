//! The node's own small HTTP endpoint, on a port apart from media:
//!
//! - `GET /healthz` answers while the process serves (liveness);
//! - `GET /readyz` answers 200 only while the node is attached to the control plane and not
//!   draining (a node that cannot be given rooms is not ready);
//! - `GET /status` tells, as JSON, the node's id, how many rooms and participants it has,
//!   whether it drains, and what crossed each of its links to other nodes of spanning rooms
//!   (by the other node's id; never a room's name);
//! - `GET /metrics`: the node's metrics ([`crate::metrics`]), for Prometheus.
//!
//! It takes no commands: a node is drained by SIGTERM (the pod's end) or by the control plane
//! over the authenticated Attach stream (`POST /nodes/{node}/drain` on the control plane's admin
//! port), never by whoever reaches this port, which a host-network pool opens on the host.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::status::NodeStatus;

#[derive(Clone)]
struct Endpoint {
    node_id: String,
    status: NodeStatus,
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
        "links": status.links(),
    }))
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoint.status.metrics().encode(),
    )
}

/// Serves the endpoint on `address` until the process ends.
pub async fn serve(
    address: SocketAddr,
    node_id: String,
    status: NodeStatus,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(self::status))
        .route("/metrics", get(metrics))
        .with_state(Endpoint { node_id, status });
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router).await
}
