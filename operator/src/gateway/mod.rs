//! The gateway: what browsers talk to.
//!
//! - `GET /` and `GET /<tenant>/<room>` serve the web client ([`web`]);
//! - `GET /api/v1/rooms/<tenant>/<room>/signal` upgrades to the signalling WebSocket
//!   ([`signalling`]): the client joins there, and its SDP and candidates are relayed over the
//!   hosting node's `Attach` stream. The messages are typed in
//!   [`treffpunkt_proto::signalling`], shared with the Rust client and the tests;
//! - `GET /healthz` answers when the process serves.
//!
//! The gateway decides who may join (name, room size, tenant policy) and where a room is placed;
//! the media node decides nothing of that.

mod signalling;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use treffpunkt_proto::grant::GrantKey;

use crate::fleet::Fleet;
use crate::store::Store;

/// How long a grant for a node stays valid: long enough for the node to receive it, short
/// enough that a leaked one is useless.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(60);

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway<S> {
    store: Arc<S>,
    fleet: Arc<Fleet>,
    grant_key: GrantKey,
}

impl<S: Store> Gateway<S> {
    /// A gateway over `store` that places rooms on the nodes of `fleet` and signs grants with
    /// `grant_key`.
    pub fn new(store: Arc<S>, fleet: Arc<Fleet>, grant_key: GrantKey) -> Self {
        Self {
            store,
            fleet,
            grant_key,
        }
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
