//! The node's health endpoint for Kubernetes probes: `/healthz` answers while the process
//! serves, `/readyz` only while the node is attached to the control plane (a node that cannot
//! be given rooms is not ready).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether the node is attached to the control plane; set by the `Attach` client.
#[derive(Clone, Debug, Default)]
pub struct Attached(Arc<AtomicBool>);

impl Attached {
    /// Records whether the node is attached now.
    pub fn set(&self, attached: bool) {
        self.0.store(attached, Ordering::Relaxed);
    }

    /// Whether the node is attached now.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the probes on `address` until the process ends.
pub async fn serve(address: SocketAddr, attached: Attached) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if attached.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not attached to the control plane",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router).await
}
