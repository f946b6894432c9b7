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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::NodeHandle;

#[derive(Debug, Default)]
struct Inner {
    attached: AtomicBool,
    draining: AtomicBool,
    rooms: AtomicU32,
    participants: AtomicU32,
}

/// What the node tells about itself; written by the run loop and the `Attach` client.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus(Arc<Inner>);

impl NodeStatus {
    /// Records whether the node is attached to at least one control-plane replica.
    pub fn set_attached(&self, attached: bool) {
        self.0.attached.store(attached, Ordering::Relaxed);
    }

    /// Whether the node is attached now.
    pub fn attached(&self) -> bool {
        self.0.attached.load(Ordering::Relaxed)
    }

    /// Records that the node drains.
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Records the node's rooms and participants.
    pub fn set_load(&self, rooms: u32, participants: u32) {
        self.0.rooms.store(rooms, Ordering::Relaxed);
        self.0.participants.store(participants, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Endpoint {
    node_id: String,
    status: NodeStatus,
    handle: NodeHandle,
}

async fn ready(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let status = &endpoint.status;
    if status.0.draining.load(Ordering::Relaxed) {
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
    let inner = &endpoint.status.0;
    Json(serde_json::json!({
        "nodeId": endpoint.node_id,
        "attached": inner.attached.load(Ordering::Relaxed),
        "draining": inner.draining.load(Ordering::Relaxed),
        "rooms": inner.rooms.load(Ordering::Relaxed),
        "participants": inner.participants.load(Ordering::Relaxed),
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
