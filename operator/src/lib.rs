//! Treffpunkt's control plane.
//!
//! One binary serves the browser-facing gateway and the endpoint media nodes attach to. Its
//! parts, from the inside out:
//!
//! - [`crd`]: the custom resources `Tenant`, `Room` and `MediaPool`, and their CRDs.
//! - [`domain`]: tenants, rooms, names, who may join and which node suits a new room. Pure: no
//!   Kubernetes, no gRPC, no HTTP.
//! - [`store`]: where tenants and rooms live, behind the [`store::Store`] trait: in memory for
//!   standalone mode, the Kubernetes API server in a cluster, read from the replica's
//!   [`watches`] (one watch of each kind, shared by the gateway, the reconcilers and the
//!   autoscaler).
//! - [`fleet`]: the media nodes attached over gRPC (`Attach`, served by [`fleet::attach::serve`]),
//!   their load, and the routing of every participant's session to the node that hosts its room.
//! - [`admission`]: the join as a use case over the store and the fleet: who may join, where a
//!   room is placed ([`domain::choose_node`] behind a compare-and-set on the Room), the signed
//!   grant for the node and the resume ticket for the client, resuming and moving sessions. No
//!   sockets, no HTTP.
//! - [`gateway`]: the web client, and the signalling WebSocket that calls [`admission`] and then
//!   relays the participant's messages over the hosting node's `Attach` stream. The messages
//!   themselves are typed in [`treffpunkt_proto::signalling`].
//! - [`reconcile`]: the reconcilers of `Tenant`, `Room` and `MediaPool`, and the [`autoscaler`]
//!   of the pools, run by the replica that holds the Lease ([`leader`]), with their
//!   [`metrics`].
//! - [`cluster`]: one control-plane replica in Kubernetes, with its [`admin`] endpoint (probes,
//!   metrics, and commands that need the admin token), the platform's [`keys`] (made,
//!   followed, rotated) and the [`replicas`] that serve now (each renews a Lease of its own;
//!   nodes behind one shared address learn from them where else to attach).
//! - [`seed`]: the Tenant and Room manifests (and Secrets) that seed standalone mode.
//! - [`invite`]: invitation links into invite-only rooms, signed with the tenant's own key.
//! - [`standalone`]: all of it plus one media node in one process, talking real gRPC over
//!   loopback, with an in-memory store: a meeting server on one machine, over HTTPS with a
//!   club's own certificate or one it makes itself ([`self_signed`]), and with a TURN server
//!   beside it when asked ([`coturn`]).
//!
//! # Following a join
//!
//! The browser opens the signalling WebSocket (`gateway::signalling`), within the gateway's
//! limits on connections per address and in total ([`gateway::Limits`]), and sends `join`;
//! [`admission::Admission::join`] checks the name, the tenant and the room, places the room
//! (the `admission::placement` module) and opens the session on the node through
//! [`fleet::Fleet::open_session`]; the WebSocket then relays the participant's messages,
//! converted by [`treffpunkt_proto::signalling::to_signal`], until they leave. A dropped
//! socket comes back with its ticket ([`admission::Admission::resume`]); a session whose node
//! goes away is moved ([`admission::Admission::move_session`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod autoscaler;
pub mod cluster;
pub mod coturn;
pub mod crd;
pub mod domain;
pub mod fleet;
pub mod gateway;
pub mod invite;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod replicas;
pub mod seed;
pub mod self_signed;
pub mod standalone;
pub mod store;
pub mod watches;
