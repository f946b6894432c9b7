//! The gateway: what browsers talk to.
//!
//! - `GET /`, `GET /<tenant>` and `GET /<tenant>/<room>` serve the web client (`web`), and
//!   `GET /api/v1/tenants/<tenant>` a tenant's title, colour and logo;
//! - `GET /api/v1/rooms/<tenant>/<room>/signal` upgrades to the signalling WebSocket
//!   (`signalling`): the client joins there, and its SDP and candidates are relayed over the
//!   hosting node's `Attach` stream. The messages are typed in
//!   [`treffpunkt_proto::signalling`], shared with the Rust client and the tests;
//! - `GET /healthz` answers when the process serves.
//!
//! The gateway holds no policy of its own on who may join: who may join (name, room size,
//! tenant policy) and where a room is placed is decided by [`crate::admission`], which the
//! WebSocket calls; the media node decides nothing of that either.
//!
//! # Limits
//!
//! What the gateway does decide is how much of the server one client, and everyone together,
//! may hold, so that no client can exhaust it before it has even joined. Each limit is
//! configured in [`Limits`] (flags and environment variables in [`LimitArgs`]) and answered
//! with a stable code:
//!
//! | limit | default | where | answer |
//! |---|---|---|---|
//! | TCP connections per listener | 12,000 | `server` | `503`, closed |
//! | TCP connections per peer address | 60 | `server` | `429`, closed |
//! | time to send a request's headers | 10 s | `server` | closed |
//! | time with no byte moving (not a WebSocket) | 60 s | `server` | closed |
//! | signalling WebSockets | 10,000 | `signalling` | `server-busy`, closed |
//! | signalling WebSockets per client address | 20 | `signalling` | `too-many-connections`, closed |
//! | joins per client address per minute | 30 | `signalling` | `too-many-joins` |
//! | wrong passwords per client address and room per 10 minutes | 5 | `signalling` | `too-many-attempts` |
//! | time from opening a WebSocket to joining | 30 s | `signalling` | `join-timeout`, closed |
//! | a new ad-hoc room with nobody in it | 60 s | [`crate::admission`] | removed |
//!
//! A WebSocket beyond a cap is upgraded and then refused with a signalling `error` message
//! and closed, rather than refused with an HTTP status: a browser does not show a script why
//! an upgrade failed, and the person should read why. The client's address is the socket's
//! peer, or, from a trusted proxy only, the address that proxy names (`address`); IPv6
//! clients are counted by their /64. A WebSocket reads into a 4 KiB buffer and accepts frames
//! of at most 128 KiB, so that thousands of unjoined sockets cost little (about 11 KiB each).

mod address;
mod cli;
mod limits;
mod server;
mod signalling;
mod turn;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub use address::{ClientAddressHeader, IpNet, IpNetError, TrustedProxies};
pub use cli::{LimitArgs, TurnArgs};
pub use limits::{DEFAULT_LIMITS, Limits, codes};
pub use server::{MAX_HEAD_BYTES, Tls, serve};
pub use turn::{DEFAULT_LIFETIME as TURN_CREDENTIAL_LIFETIME, Turn};

use crate::admission::{Admission, Keys};
use crate::fleet::Fleet;
use crate::store::Store;

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway<S> {
    /// Who may join, where rooms go, and the sessions opened for them.
    admission: Admission<S>,
    /// The relay of joined participants' signals.
    fleet: Arc<Fleet>,
    /// What clients may open and how long they may take.
    limits: Limits,
    /// Open signalling WebSockets, in total and per client address.
    websockets: Arc<limits::Tally>,
    /// Joins per client address.
    joins: limits::JoinRate,
    /// Wrong passwords per client address and room.
    wrong_passwords: limits::WrongPasswords,
    /// The TURN servers participants are given credentials for, if the platform runs any.
    turn: Option<Turn>,
    /// Joins, refusals, connections and moves are counted here.
    metrics: crate::metrics::Metrics,
}

impl<S: Store> Gateway<S> {
    /// A gateway over `store` that places rooms on the nodes of `fleet`, signs grants and
    /// tickets with `keys`, and holds clients to `limits`.
    pub fn new(store: Arc<S>, fleet: Arc<Fleet>, keys: Keys, limits: Limits) -> Self {
        Self {
            admission: Admission::new(store, fleet.clone(), keys)
                .with_unjoined_ttl(limits.unjoined_room_ttl),
            fleet,
            websockets: limits::Tally::new(
                limits.max_websockets,
                limits.max_websockets_per_address,
            ),
            joins: limits::JoinRate::new(limits.joins_per_minute),
            wrong_passwords: limits::WrongPasswords::per(
                limits.wrong_passwords,
                limits::WRONG_PASSWORD_PERIOD,
            ),
            limits,
            turn: None,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Counts joins, refusals, connections and moves in `metrics` (the replica's, served on its
    /// admin port).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.admission.metrics = metrics.clone();
        self.metrics = metrics;
        self
    }

    /// Gives every participant credentials for `turn`'s servers, for networks that let only
    /// HTTPS out.
    pub fn with_turn(mut self, turn: Option<Turn>) -> Self {
        self.turn = turn;
        self
    }

    /// What tells a participant how to resume: `ticket`, and fresh TURN credentials; and the
    /// room's title, when it has one.
    fn session_message(
        &self,
        ticket: String,
        room_title: Option<String>,
    ) -> treffpunkt_proto::signalling::ServerMessage {
        let ice_servers = self
            .turn
            .iter()
            .map(|turn| turn.credentials(std::time::SystemTime::now()));
        treffpunkt_proto::signalling::ServerMessage::Session {
            ticket,
            ice_servers: ice_servers.collect(),
            room_title,
        }
    }

    /// Serves the gateway on `listener` under its limits, over TLS when `tls` is given, for as
    /// long as the task runs.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<Tls>) {
        let limits = self.limits.clone();
        serve(listener, self.router(), &limits, tls).await;
    }

    /// Removes new ad-hoc rooms that nobody is in once the configured time after they were
    /// created has passed (see
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
            .route("/{tenant}", get(web::tenant_page::<S>))
            .route("/{tenant}/{room}", get(web::room_page))
            .route("/api/v1/tenants/{tenant}", get(web::tenant_look::<S>))
            .fallback(web::not_found)
            .route(
                "/api/v1/rooms/{tenant}/{room}/signal",
                get(signalling::upgrade::<S>),
            )
            .layer(axum::middleware::from_fn(web::security_headers))
            .with_state(self)
    }
}
