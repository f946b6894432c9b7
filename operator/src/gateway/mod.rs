//! The gateway: what browsers talk to.
//!
//! - `GET /` and `GET /<tenant>/<room>` serve the web client (`web`);
//! - `GET /api/v1/rooms/<tenant>/<room>/signal` upgrades to the signalling WebSocket
//!   (`signalling`): the client joins there, and its SDP and candidates are relayed over the
//!   hosting node's `Attach` stream. The messages are typed in
//!   [`treffpunkt_proto::signalling`], shared with the Rust client and the tests;
//! - `GET /healthz` answers when the process serves.
//!
//! The gateway holds no policy of its own: who may join (name, room size, tenant policy) and
//! where a room is placed is decided by [`crate::admission`], which the WebSocket calls; the
//! media node decides nothing of that either.

mod signalling;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use treffpunkt_proto::grant::GrantKey;

use crate::admission::Admission;
use crate::fleet::Fleet;
use crate::store::Store;

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway<S> {
    /// Who may join, where rooms go, and the sessions opened for them.
    admission: Admission<S>,
    /// The relay of joined participants' signals.
    fleet: Arc<Fleet>,
}

impl<S: Store> Gateway<S> {
    /// A gateway over `store` that places rooms on the nodes of `fleet` and signs grants with
    /// `grant_key`.
    pub fn new(store: Arc<S>, fleet: Arc<Fleet>, grant_key: GrantKey) -> Self {
        Self {
            admission: Admission::new(store, fleet.clone(), grant_key),
            fleet,
        }
    }

    /// Removes new ad-hoc rooms that nobody is in a minute after they were created (see
    /// [`Admission::run_unjoined_sweeper`]); runs for ever, beside the server.
    pub async fn sweep_unjoined_rooms(self: Arc<Self>) {
        self.admission.run_unjoined_sweeper().await;
    }

    /// The HTTP routes of the gateway.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(web::landing_page))
            .route("/healthz", get(|| async { "ok" }))
            .route("/assets/{file}", get(web::asset))
            .route("/{tenant}/{room}", get(web::room_page))
            .route(
                "/api/v1/rooms/{tenant}/{room}/signal",
                get(signalling::upgrade::<S>),
            )
            .layer(axum::middleware::from_fn(web::security_headers))
            .with_state(self)
    }
}
